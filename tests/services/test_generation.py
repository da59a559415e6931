"""Generation and Precompute with model versions, called in-process (no Ray): the cache index,
Precompute and Generation servicers over one SQLite index and a local object store, each calling
the next through stand-in handles, on a tiny random Llama with versions registered from real
adapters. A promotion reaches Generate after the refresh without a failed answer, and the first
answer on the new version finds its blocks already re-encoded (warmed); tenants never share a
version; the question log records completed answers only, and only when it is on."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from tiny_versions import random_adapter, register, save_tiny_llama

from blockrag.errors import NotFoundError, ServiceUnavailableError
from blockrag.kvcache import KVCodec
from blockrag.kvcache.index import open_index_engine
from blockrag.kvcache.object_store import open_object_store
from blockrag.registry import ModelRegistry, QuestionLog
from blockrag.v1 import generation_pb2 as pb
from blockrag.v1 import precompute_pb2
from blockrag_services.cache_index.deployment import CacheIndexService
from blockrag_services.generation.deployment import Generation
from blockrag_services.handles import CACHE_INDEX, PRECOMPUTE
from blockrag_services.precompute.deployment import Precompute

TEXTS = ["The Harbour Office of Tolvik opens at seven. Ada Brenn signs every permit for long boats.",
         "Fishing boats unload at the eastern pier. The ice house beside it was rebuilt in 1998.",
         "A ferry to Skarvholm leaves twice a day in summer; the crossing takes fifty minutes."]


class InProcess:
    """A deployment handle stand-in: handle.Method.remote(...) awaits the servicer's method."""

    def __init__(self, target) -> None:
        self.target = target

    def __getattr__(self, name: str):
        method = getattr(self.target, name)
        return SimpleNamespace(remote=lambda *args: method(*args))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def adapter(tiny_dir):
    return random_adapter(tiny_dir, seed=3)


@pytest.fixture
def platform(tmp_path, tiny_dir):
    """Build the services of one test; platform.generation(**settings) adds a Generation."""
    args = {"database_url": f"sqlite:///{tmp_path}/index.db", "object_store_url": str(tmp_path / "kv"),
            "model": {"model": str(tiny_dir), "device": "cpu"}, "resources": {"torch_threads": 1},
            "model_refresh_s": 0.1, "warm_blocks": 8}
    cache = CacheIndexService.func_or_class(args)
    precompute = Precompute.func_or_class(args, handles={CACHE_INDEX: InProcess(cache)})
    handles = {CACHE_INDEX: InProcess(cache), PRECOMPUTE: InProcess(precompute)}
    engine = open_index_engine(args["database_url"])
    built = []

    def generation(**settings) -> Generation:
        built.append(Generation.func_or_class({**args, **settings}, handles=handles))
        return built[-1]

    yield SimpleNamespace(generation=generation, precompute=precompute, registry=ModelRegistry(engine),
                          store=open_object_store(args["object_store_url"]), engine=engine,
                          log=QuestionLog(engine, retention_days=30, max_rows_per_tenant=100))
    for service in [*built, precompute]:
        service.models.close()
    engine.dispose()


async def ask(generation: Generation, tenant: str, context=None) -> pb.Usage:
    context = context or [pb.ContextBlock(text=t) for t in TEXTS]
    request = pb.GenerateRequest(context=context, question="Who signs the permits?", max_new_tokens=3,
                                 tenant=tenant)
    responses = [r async for r in generation.Generate(request)]
    assert responses[-1].done
    return responses[-1].usage


async def settled(generation: Generation) -> None:
    """Until the question-log writes under way are done."""
    while generation.pending:
        await asyncio.sleep(0.01)


async def ask_until(generation: Generation, tenant: str, version: str, timeout: float = 60) -> list[pb.Usage]:
    """Ask until an answer comes from `version`; every answer on the way must succeed."""
    answers, deadline = [], time.monotonic() + timeout
    while not answers or answers[-1].model_version != version:
        assert time.monotonic() < deadline, f"still on {answers[-1].model_version[:12]}"
        answers.append(await ask(generation, tenant))
        await asyncio.sleep(0.02)
    return answers


def test_generate_follows_promotion_and_rollback_with_warmed_blocks_and_logs_questions(platform, adapter):
    async def scenario():
        generation = platform.generation(question_log=True)
        base = generation.models.configured.version
        first = await ask(generation, "acme")
        assert first.model_version == base and first.blocks_by_tier["computed"] == 3

        version = register(platform.registry, platform.store, "acme", *adapter, name="acme-v1.safetensors")
        platform.registry.promote(version.version_id, "acme")
        answers = await ask_until(generation, "acme", version.fingerprint)
        assert {a.model_version for a in answers[:-1]} <= {base}  # the old version until the switch
        # warmed before the switch: the new version's first answer computes none of its blocks
        assert dict(answers[-1].blocks_by_tier) == {"store": 3}, answers[-1]
        assert (await ask(generation, "globex")).model_version == base  # acme's version is acme's only

        platform.registry.rollback("acme")
        back = await ask_until(generation, "acme", base)
        assert dict(back[-1].blocks_by_tier) == {"memory": 3}  # the base's entries never left

        with pytest.raises(NotFoundError):  # failed before its first token: not logged
            await ask(generation, "acme", [pb.ContextBlock(block_id="blk_" + "0" * 32)])
        await settled(generation)
        rows = platform.log.recent("acme", limit=100)
        asked = [first, *answers, *back]
        assert [r.model_version for r in reversed(rows)] == [a.model_version for a in asked]
        assert {r.block_ids for r in rows} == {tuple(first.block_ids)}
        assert rows[0].question == "Who signs the permits?"
        assert [r.model_version for r in platform.log.recent("globex")] == [base]

        quiet = platform.generation()  # the log is opt-in
        await ask(quiet, "initech")
        await settled(quiet)
        assert platform.log.recent("initech") == []

    asyncio.run(scenario())


def test_precompute_encodes_for_a_named_version_of_the_tenant_only(platform, adapter):
    async def scenario():
        version = register(platform.registry, platform.store, "acme", *adapter, name="acme-v1.safetensors")
        named = precompute_pb2.PrecomputeRequest(texts=TEXTS[:1], model_version=version.fingerprint, tenant="globex")
        with pytest.raises(NotFoundError, match="not served for tenant 'globex'"):
            await platform.precompute.Precompute(named)
        named.tenant = "acme"
        with pytest.raises(ServiceUnavailableError, match="is loading"):
            await platform.precompute.Precompute(named)
        while not await platform.precompute.prepare(version.fingerprint, "acme"):
            await asyncio.sleep(0.05)
        reply = await platform.precompute.Precompute(named)
        assert reply.model_version == version.fingerprint and reply.blocks[0].computed
        kv = KVCodec.decode(platform.store.get(reply.blocks[0].location), version.fingerprint)
        assert kv.num_tokens == reply.blocks[0].token_count

        unnamed = await platform.precompute.Precompute(precompute_pb2.PrecomputeRequest(texts=TEXTS[:1], tenant="acme"))
        assert unnamed.model_version == platform.precompute.models.configured.version  # nothing promoted yet

    asyncio.run(scenario())
