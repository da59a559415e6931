"""Calls between deployments on the request path, counted in-process (no Ray): the cache index,
Precompute and Generation servicers over one SQLite index and a local object store, on a tiny
random Llama, each reaching the others through recording stand-in handles.

A question over 8 cached blocks of a collection costs one call (Search); over 8 cached block ids,
none; over 8 blocks nobody has cached, one call to Precompute, whose answer carries the KV (the
object store is not read), and Precompute calls nobody."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY
from tiny_versions import save_tiny_llama

from blockrag.errors import InvalidRequestError
from blockrag.kvcache.object_store import LocalObjectStore
from blockrag.scheduler import SchedulerBusyError, SchedulerSettings
from blockrag.v1 import generation_pb2 as pb
from blockrag.v1 import precompute_pb2
from blockrag_services.cache_index.deployment import CacheIndexService
from blockrag_services.generation.deployment import Generation
from blockrag_services.handles import CACHE_INDEX, PRECOMPUTE
from blockrag_services.precompute.deployment import Precompute

TENANT = "acme"
TOWNS = ["Tolvik", "Orsa", "Brennholt", "Skarvholm", "Veldmark", "Auna", "Kessel", "Lindvik"]


class Recorded:
    """A deployment handle stand-in: awaits the servicer's method, recording (app, method)."""

    def __init__(self, app: str, target, calls: list[tuple[str, str]]) -> None:
        self.app, self.target, self.calls = app, target, calls

    def __getattr__(self, name: str):
        method = getattr(self.target, name)

        def remote(*args):
            self.calls.append((self.app, name))
            return method(*args)

        return SimpleNamespace(remote=remote)


class CountingStore(LocalObjectStore):
    def __init__(self, root) -> None:
        super().__init__(root)
        self.gets = 0

    def get(self, location: str):
        self.gets += 1
        return super().get(location)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def platform(tmp_path, tiny_dir):
    args = {"database_url": f"sqlite:///{tmp_path}/index.db", "object_store_url": str(tmp_path / "kv"),
            "model": {"model": str(tiny_dir), "device": "cpu"}, "resources": {"torch_threads": 1}}
    calls: list[tuple[str, str]] = []
    cache = CacheIndexService.func_or_class(args)
    precompute = Precompute.func_or_class(args, handles={CACHE_INDEX: Recorded(CACHE_INDEX, cache, calls)})
    generation = Generation.func_or_class(args, handles={CACHE_INDEX: Recorded(CACHE_INDEX, cache, calls),
                                                         PRECOMPUTE: Recorded(PRECOMPUTE, precompute, calls)})
    store = CountingStore(tmp_path / "kv")
    generation.blocks.store.store = store  # the same directory, its reads counted
    yield SimpleNamespace(generation=generation, precompute=precompute, index=cache.index, calls=calls, store=store)
    generation.blocks.store.close()
    for service in (generation, precompute):
        service.models.close()
    cache.index.close()


def ask(generation: Generation, **fields) -> pb.Usage:
    async def run():
        request = pb.GenerateRequest(question="What happens in town?", max_new_tokens=2, tenant=TENANT, **fields)
        return [r async for r in generation.Generate(request)]

    responses = asyncio.run(run())
    assert responses[-1].done
    return responses[-1].usage


def test_calls_between_deployments_per_question(platform):
    texts = [f"In town, {town} keeps its harbour office open until {7 + i} o'clock." for i, town in enumerate(TOWNS)]
    ids = platform.index.register_blocks(TENANT, [(t, 16) for t in texts], "towns", "guide")
    asyncio.run(platform.precompute.Precompute(precompute_pb2.PrecomputeRequest(texts=texts, tenant=TENANT)))
    assert platform.calls == []  # Precompute writes to the index database itself

    # 8 blocks stored by Precompute, new to this replica: Search, then the store (no index call)
    first = ask(platform.generation, collection="towns", top_k=8)
    assert platform.calls == [(CACHE_INDEX, "Search")]
    assert dict(first.blocks_by_tier) == {"store": 8} and sorted(first.block_ids) == sorted(ids)
    platform.calls.clear()
    again = ask(platform.generation, collection="towns", top_k=8)
    assert platform.calls == [(CACHE_INDEX, "Search")] and dict(again.blocks_by_tier) == {"memory": 8}
    platform.calls.clear()
    by_id = ask(platform.generation, context=[pb.ContextBlock(block_id=b) for b in ids])
    assert platform.calls == [] and dict(by_id.blocks_by_tier) == {"memory": 8}

    # 8 blocks nobody has: one Precompute call, whose answer carries the KV: nothing read back
    gets = platform.store.gets
    fresh = [f"The archive code of {town} is {uuid.uuid4().hex}." for town in TOWNS]
    cold = ask(platform.generation, context=[pb.ContextBlock(text=t) for t in fresh])
    assert platform.calls == [(PRECOMPUTE, "Precompute")]
    assert dict(cold.blocks_by_tier) == {"computed": 8} and platform.store.gets == gets
    # ... and Precompute still stored and committed them for the other replicas
    rows = platform.index.lookup(TENANT, list(cold.block_ids), platform.generation.models.configured.version)
    assert all(r.hit for r in rows)
    assert all(platform.store.get(r.location) for r in rows)

    # the hits of the asks above reach the index when the access log flushes, not before
    platform.generation.blocks.store.access.flush()
    with platform.index.engine.begin() as conn:
        counted = dict(conn.exec_driver_sql("SELECT block_id, hits FROM kv_entries").fetchall())
    assert [counted[b] for b in ids] == [3] * 8  # the store read, then memory twice


def test_precompute_returns_the_kv_only_when_asked(platform):
    text = "Kessel has a lighthouse that nobody has climbed since 1911."
    request = precompute_pb2.PrecomputeRequest(texts=[text], tenant=TENANT)
    stored = asyncio.run(platform.precompute.Precompute(request))
    assert stored.blocks[0].computed and stored.blocks[0].kv == b""
    again = asyncio.run(platform.precompute.Precompute(request))
    assert not again.blocks[0].computed  # stored: skipped
    request.return_kv = True
    back = asyncio.run(platform.precompute.Precompute(request))
    assert back.blocks[0].computed and back.blocks[0].kv == platform.store.get(back.blocks[0].location)


@pytest.mark.parametrize(("bad", "message"), [
    (pb.Document(id="d\0", text="Second."), "the id of document 1"),
    (pb.Document(id="d" * 256, text="Second."), "the id of document 1"),
    (pb.Document(id="two", text="Sec\0ond."), "the text of document 1"),
])
def test_a_refused_ingest_calls_no_other_deployment(platform, bad, message):
    """A name or text the index would refuse at the second document is refused before the first
    is recorded: the fuzzing found the first document left behind in the collection."""
    request = pb.IngestRequest(collection="c", tenant=TENANT, documents=[pb.Document(id="one", text="First."), bad])
    with pytest.raises(InvalidRequestError, match=message):
        asyncio.run(platform.generation.Ingest(request))
    assert platform.calls == [] and platform.index.list_collection(TENANT, "c") == []


def _stream(generation: Generation, question: str, max_new_tokens: int, **fields):
    return generation.Generate(pb.GenerateRequest(question=question, max_new_tokens=max_new_tokens, tenant=TENANT,
                                                  **fields))


def test_concurrent_answers_are_decoded_together_each_as_alone(platform):
    generation = platform.generation
    texts = [f"{town} holds its market on day {3 + i} of the month." for i, town in enumerate(TOWNS[:4])]
    context = [pb.ContextBlock(text=t) for t in texts]
    questions = [f"When is the market in {town}?" for town in TOWNS[:3]]

    async def text_of(question):  # one answer at a time
        return "".join([r.text async for r in _stream(generation, question, 16, context=context)])

    alone = [asyncio.run(text_of(q)) for q in questions]
    made = generation._scheduler(generation.models.configured)._batch  # the answers above made it
    widths: list[int] = []
    step = made.step
    made.step = lambda: widths.append(len(made.running)) or step()  # answers in each step's decode

    async def together():
        return await asyncio.gather(*(text_of(q) for q in questions))

    assert asyncio.run(together()) == alone
    assert max(widths) == 3  # the three answers were decoded in the same steps, not one after another


def answer_metrics() -> tuple[float | None, ...]:
    """The replica's (running, waiting, refused) answers, as this process exposes them."""
    names = ("blockrag_answers_running", "blockrag_answers_waiting", "blockrag_answers_refused_total")
    return tuple(REGISTRY.get_sample_value(n, {"service": "generation"}) for n in names)


def test_a_full_replica_refuses_before_any_work(platform):
    generation = platform.generation
    generation.config = dataclasses.replace(generation.config, scheduler=SchedulerSettings(slots=1, max_waiting=0))
    cached = [pb.ContextBlock(text="Orsa keeps a ferry to Auna.")]
    ask(generation, context=cached)  # the opening and the block cached in this replica
    running, waiting, refused_before = answer_metrics()
    assert (running, waiting) == (0, 0)  # nothing left running by the answers before

    async def run():
        # holding the engine's lock keeps the first answer in its slot (no step can run)
        async with generation.engine_lock:
            stream = _stream(generation, "Where does the ferry go?", 32, context=cached)  # long: it still runs when read
            first = asyncio.ensure_future(stream.__anext__())
            answers = generation._scheduler(generation.models.configured)
            while answers.idle():
                await asyncio.sleep(0.01)
            assert answer_metrics()[:2] in ((0, 1), (1, 0))  # queued, or prefilled before we took the lock
            platform.calls.clear()
            fresh = [pb.ContextBlock(text=f"Kessel's archive code is {uuid.uuid4().hex}.")]
            with pytest.raises(SchedulerBusyError, match="generating 1 answers with 0 waiting") as refused:
                await _stream(generation, "What is the code?", 4, context=fresh).__anext__()
            assert platform.calls == []  # its new block was not sent to Precompute
            assert answer_metrics()[2] == refused_before + 1
        await first
        during = answer_metrics()
        await stream.aclose()
        while not answers.idle():
            await asyncio.sleep(0.01)
        return refused.value, during, answer_metrics()

    error, during, after = asyncio.run(run())
    assert error.retry_after_s == 1.0
    assert during == (1, 0, refused_before + 1)  # the first answer streams
    assert after == (0, 0, refused_before + 1)  # ... and its consumer left: its slot is free
