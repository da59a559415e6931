"""Generate over a collection, called in-process (no Ray) on a tiny random Llama: the context
blocks are the cache index's Search hits, the best last (next to the question), computed from
the texts the hits carry (no GetBlocks, no listing of the collection); a question that shares
no word with the collection gets its first blocks; an unknown collection is NOT_FOUND."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from tiny_versions import save_tiny_llama

from blockrag.errors import NotFoundError
from blockrag.v1 import generation_pb2 as pb
from blockrag_services.cache_index.deployment import CacheIndexService
from blockrag_services.generation.deployment import Generation
from blockrag_services.handles import CACHE_INDEX, PRECOMPUTE
from blockrag_services.precompute.deployment import Precompute

TEXTS = ["The Harbour Office of Tolvik opens at seven.", "Ada Brenn signs every permit for long boats.",
         "Fishing boats unload at the eastern pier.", "A ferry to Skarvholm leaves twice a day."]


class Recorded:
    """A deployment handle stand-in that records which methods were called."""

    def __init__(self, target, calls: list[str]) -> None:
        self.target, self.calls = target, calls

    def __getattr__(self, name: str):
        method = getattr(self.target, name)

        def remote(*args):
            self.calls.append(name)
            return method(*args)

        return SimpleNamespace(remote=remote)


@pytest.fixture
def platform(tmp_path_factory, tmp_path):
    tiny = save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
    args = {"database_url": f"sqlite:///{tmp_path}/index.db", "object_store_url": str(tmp_path / "kv"),
            "model": {"model": str(tiny), "device": "cpu"}, "resources": {"torch_threads": 1}}
    calls: list[str] = []
    cache = CacheIndexService.func_or_class(args)
    precompute = Precompute.func_or_class(args, handles={CACHE_INDEX: Recorded(cache, [])})
    generation = Generation.func_or_class(args, handles={CACHE_INDEX: Recorded(cache, calls),
                                                         PRECOMPUTE: Recorded(precompute, [])})
    yield SimpleNamespace(generation=generation, index=cache.index, calls=calls)
    for service in (generation, precompute):
        service.models.close()
    cache.index.close()


def ask(generation: Generation, question: str, collection: str, top_k: int) -> pb.Usage:
    async def run():
        request = pb.GenerateRequest(question=question, collection=collection, top_k=top_k, max_new_tokens=2,
                                     tenant="acme")
        return [r async for r in generation.Generate(request)]

    responses = asyncio.run(run())
    assert responses[-1].done
    return responses[-1].usage


def test_collection_questions_use_search_hits(platform) -> None:
    ids = platform.index.register_blocks("acme", [(t, 12) for t in TEXTS], "tolvik", "guide")
    platform.index.register_blocks("globex", [("Who signs permits? Everybody signs permits.", 8)], "tolvik", "x")

    usage = ask(platform.generation, "Who signs the permits for boats?", "tolvik", 2)
    expected = [h.block_id for h in platform.index.search("acme", "tolvik", "Who signs the permits for boats?", 2)]
    assert expected[0] == ids[1]  # the permit block ranks first: it holds both "permit" and "boat"
    # in the prompt, the best hit goes last (next to the question)
    assert list(usage.block_ids) == expected[::-1] and dict(usage.blocks_by_tier) == {"computed": 2}
    assert platform.calls[0] == "Search" and "GetBlocks" not in platform.calls
    assert "ListCollection" not in platform.calls

    # no word in common: the collection's first blocks, in document order
    platform.calls.clear()
    usage = ask(platform.generation, "Qwxyz?", "tolvik", 3)
    assert list(usage.block_ids) == ids[:3]
    assert platform.calls[:2] == ["Search", "ListCollection"] and "GetBlocks" not in platform.calls

    with pytest.raises(NotFoundError, match="collection 'nowhere' has no documents for tenant 'acme'"):
        ask(platform.generation, "Who signs the permits?", "nowhere", 2)
