"""BlockResolver on the CPU, no Ray: a tiny model, a real SQLite index and a local object store.

A cold question costs one encoder call for all its missing blocks; another replica (a resolver
with its own memory) finds them in the store, fetched concurrently, and its hits reach the index
only when the access log flushes; a corrupt entry is recomputed; limits refuse before any work."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import torch

from blockrag.errors import LimitExceededError, NotFoundError
from blockrag.kvcache.index import CacheIndex, block_id_for
from blockrag.kvcache.index_engine import IndexConfig
from blockrag.kvcache.memory_tier import ByteLRU
from blockrag.kvcache.object_store import LocalObjectStore
from blockrag.resolve import AccessLog, BlockRef, BlockResolver, BlockWriter, LocalEncoder, ResolveLimits, StoreTier

TEXTS = ["The Harbour Office of Tolvik opens at seven.", "Ada Brenn signs every permit for long boats.",
         "Fishing boats unload at the eastern pier.", "A ferry to Skarvholm leaves twice a day."]
TENANT = "acme"


class CountingEncoder(LocalEncoder):
    """The real local encoder, counting its calls and the texts of each."""

    def __init__(self, writer: BlockWriter) -> None:
        super().__init__(writer)
        self.calls: list[list[str]] = []

    async def encode(self, runtime, tenant, texts, progress=None):
        self.calls.append(list(texts))
        return await super().encode(runtime, tenant, texts, progress)


class SlowStore(LocalObjectStore):
    """A local store whose gets take a while (as an S3 get does), recording how many overlap."""

    def __init__(self, root) -> None:
        super().__init__(root)
        self.active = self.peak = 0
        self.lock = threading.Lock()

    def get(self, location: str):
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(0.05)
        try:
            return super().get(location)
        finally:
            with self.lock:
                self.active -= 1


def replica(index: CacheIndex, objects, limits: ResolveLimits = ResolveLimits(), memory_bytes: int = 1 << 26):
    """A resolver as one replica holds it: its own memory tier and access log, the shared index
    and store. (resolver, encoder)."""
    encoder = CountingEncoder(BlockWriter(index, objects, limits))
    store = StoreTier(index, objects, threads=4, access=AccessLog(index, flush_every_s=3600))
    return BlockResolver(encoder, store=store, memory=ByteLRU(memory_bytes), limits=limits), encoder


def resolve(resolver: BlockResolver, runtime, refs, **kwargs):
    return asyncio.run(resolver.resolve(runtime, TENANT, refs, **kwargs))


def texts(*items: str) -> list[BlockRef]:
    return [BlockRef.of(TENANT, text=t) for t in items]


def same(a, b) -> bool:
    return a.token_ids == b.token_ids and torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)


def hits(index: CacheIndex) -> dict[str, int]:
    with index.engine.begin() as conn:
        return dict(conn.exec_driver_sql("SELECT block_id, hits FROM kv_entries").fetchall())


def test_cold_blocks_cost_one_encoder_call_then_come_from_the_store_and_memory(runtime, index, objects):
    first, encoder = replica(index, objects)
    refs = texts(*TEXTS[:3], TEXTS[0])  # a repeated block is resolved once
    cold = resolve(first, runtime, refs)
    assert encoder.calls == [TEXTS[:3]]
    assert [b.tier for b in cold.blocks] == ["computed"] * 4 and cold.tiers() == {"computed": 4}
    assert cold.prefix.tier == "computed"  # nothing stored yet, the opening included
    for block, text in zip(cold.blocks, [*TEXTS[:3], TEXTS[0]]):  # the engine's KV (batched: to rounding)
        alone = runtime.engine.encode_block(runtime.template.block_ids(text))
        assert block.kv.token_ids == alone.token_ids
        assert torch.allclose(block.kv.keys, alone.keys, atol=1e-5) and torch.allclose(block.kv.values, alone.values,
                                                                                      atol=1e-5)
    assert cold.computed_tokens == cold.context_tokens

    second, other_encoder = replica(index, objects)  # another replica: the store, no encoding
    warm = resolve(second, runtime, refs, question_tokens=5)
    assert other_encoder.calls == [] and warm.prefix.tier == "store"
    assert [b.tier for b in warm.blocks] == ["store"] * 4 and warm.computed_tokens == 0
    assert all(same(a.kv, b.kv) for a, b in zip(cold.blocks, warm.blocks))
    again = resolve(second, runtime, refs)
    assert again.tiers() == {"memory": 4} and again.prefix.tier == "memory"

    # hits were counted off the request path: nothing in the index until the log flushes
    ids = [block_id_for(TENANT, t) for t in TEXTS[:3]]
    assert hits(index) == dict.fromkeys(ids, 0)
    second.store.access.flush()
    assert hits(index) == {ids[0]: 2, ids[1]: 2, ids[2]: 2}  # the store read, then memory; once per block


def test_store_entries_are_fetched_concurrently(runtime, index, tmp_path):
    slow = SlowStore(tmp_path / "slow")
    writer, _ = replica(index, slow)
    resolve(writer, runtime, texts(*TEXTS))
    reader, encoder = replica(index, slow)
    warm = resolve(reader, runtime, texts(*TEXTS))
    assert warm.tiers() == {"store": 4} and encoder.calls == []
    # four gets in flight at once (threads=4), not one after another: counted, not timed (a
    # wall-clock bound failed on the loaded 2-core machine)
    assert slow.peak >= 4


def test_lookup_takes_no_write_lock(runtime, tmp_path):
    """A question over stored blocks is answered while another process holds SQLite's write lock
    (a lookup that counted hits in its transaction would wait for it, then fail)."""
    url = f"sqlite:///{tmp_path}/index.db"
    objects = LocalObjectStore(tmp_path / "kv")
    writer, _ = replica(CacheIndex.open(url), objects)
    resolve(writer, runtime, texts(*TEXTS[:2]))
    impatient = CacheIndex.open(IndexConfig(url, sqlite_busy_timeout_s=0.1))
    reader, encoder = replica(impatient, objects)
    other = sqlite3.connect(tmp_path / "index.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer, mid-transaction
    try:
        assert resolve(reader, runtime, texts(*TEXTS[:2])).tiers() == {"store": 2} and encoder.calls == []
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert reader.store.access.flush() == 2  # the counts went in once the lock was free


def test_a_corrupt_or_missing_entry_is_recomputed_by_itself(runtime, index, objects):
    first, _ = replica(index, objects)
    resolve(first, runtime, texts(*TEXTS[:3]))
    damaged, lost = (row.location for row in index.lookup(TENANT, [block_id_for(TENANT, t) for t in TEXTS[1:3]],
                                                           runtime.version))
    damaged = Path(urlsplit(damaged).path)
    data = bytearray(damaged.read_bytes())
    data[-10] ^= 0xFF
    damaged.write_bytes(bytes(data))
    objects.delete(lost)
    # by id only: the resolver reads the texts of the blocks it must recompute from the index
    refs = [BlockRef(block_id_for(TENANT, t)) for t in TEXTS[:3]]
    reader, encoder = replica(index, objects)
    mended = resolve(reader, runtime, refs)
    assert [b.tier for b in mended.blocks] == ["store", "computed", "computed"] and mended.corrupt == 1
    assert encoder.calls == [TEXTS[1:3]]
    fresh, encoder = replica(index, objects)
    assert resolve(fresh, runtime, refs).tiers() == {"store": 3} and encoder.calls == []


def test_versions_never_share_entries(runtime, other_runtime, index, objects):
    resolver, encoder = replica(index, objects)
    resolve(resolver, runtime, texts(TEXTS[0]))
    other = resolve(resolver, other_runtime, texts(TEXTS[0]))  # same replica, same text, another version
    assert other.tiers() == {"computed": 1} and other.prefix.tier == "computed" and len(encoder.calls) == 2
    assert not same(other.blocks[0].kv, resolve(resolver, runtime, texts(TEXTS[0])).blocks[0].kv)


def test_unknown_ids_are_not_found(runtime, index, objects):
    resolver, encoder = replica(index, objects)
    with pytest.raises(NotFoundError, match=r"unknown block id\(s\) blk_nope for tenant 'acme'"):
        resolve(resolver, runtime, [BlockRef("blk_nope"), *texts(TEXTS[0])])
    assert encoder.calls == []


def test_limits_refuse_before_any_work(runtime, index, objects):
    setup, _ = replica(index, objects)
    stored = resolve(setup, runtime, texts(*TEXTS))
    tokens = [b.tokens for b in stored.blocks]
    limits = ResolveLimits(max_context_blocks=3, max_context_tokens=sum(tokens[:3]) + 2)
    resolver, encoder = replica(index, objects, limits)
    with pytest.raises(LimitExceededError, match="4 context blocks, over the limit of 3"):
        resolve(resolver, runtime, texts(*TEXTS))
    ids = [BlockRef(block_id_for(TENANT, t)) for t in TEXTS]
    opening = len(runtime.template.prefix_ids())
    with pytest.raises(LimitExceededError, match=rf"context \({opening + sum(tokens)} tokens\) and question \(0\)"):
        # known from the index, the opening block included
        resolve(replica(index, objects, ResolveLimits(max_context_tokens=opening + sum(tokens) - 1))[0], runtime, ids)
    with pytest.raises(LimitExceededError, match=r"and question \(400\) exceed the limit"):
        resolve(resolver, runtime, texts(*TEXTS[:3]), question_tokens=400)
    with pytest.raises(LimitExceededError, match="over the limit of 8 tokens"):  # one block, at the writer
        resolve(replica(index, objects, ResolveLimits(max_block_tokens=8))[0], runtime, texts("a new " * 20))
    assert encoder.calls == []


def test_without_a_store_every_block_is_encoded_and_kept_in_memory_only(runtime):
    resolver = BlockResolver(LocalEncoder(), memory=ByteLRU(1 << 26))
    first = asyncio.run(resolver.resolve(runtime, TENANT, texts(*TEXTS[:2])))
    second = asyncio.run(resolver.resolve(runtime, TENANT, texts(*TEXTS[:2])))
    assert first.tiers() == {"computed": 2} and second.tiers() == {"memory": 2}
    with pytest.raises(NotFoundError):  # no index: an id alone names nothing
        asyncio.run(resolver.resolve(runtime, TENANT, [BlockRef("blk_nope")]))


def stored_counts(index: CacheIndex, objects) -> tuple[int, int, int]:
    """(blocks registered, entries committed, objects stored)."""
    stats = index.stats()
    return stats.blocks, stats.entries, sum(1 for p in objects.root.rglob("*") if p.is_file())


def test_limits_count_new_texts_repeats_and_the_question_before_any_work(runtime, index, objects):
    """Blocks given by text that nobody stored yet are tokenized and counted before the encoder
    is called (they used to be encoded and stored, then refused); a repeated block counts each
    time it appears in the prompt; the question counts before any lookup."""
    opening = len(runtime.template.prefix_ids())
    n = [len(runtime.template.block_ids(t)) for t in TEXTS]
    exact = opening + sum(n[:3]) + 7  # the three blocks and a question of 7 tokens fit exactly
    resolver, encoder = replica(index, objects, ResolveLimits(max_context_tokens=exact, max_question_tokens=7))
    with pytest.raises(LimitExceededError) as refused:
        resolve(resolver, runtime, texts(*TEXTS[:3]), question_tokens=8)
    assert str(refused.value) == "the question is 8 tokens, over the limit of 7"
    with pytest.raises(LimitExceededError) as refused:
        resolve(resolver, runtime, texts(*TEXTS), question_tokens=7)
    assert str(refused.value) == (f"context ({opening + sum(n)} tokens) and question (7) exceed the limit of "
                                  f"{exact} tokens; pass fewer blocks")
    with pytest.raises(LimitExceededError, match=rf"context \({opening + n[0] * 2 + n[1] + n[2]} tokens\)"):
        resolve(resolver, runtime, texts(*TEXTS[:3], TEXTS[0]), question_tokens=7)
    assert encoder.calls == [] and stored_counts(index, objects) == (0, 0, 0)
    fits = resolve(resolver, runtime, texts(*TEXTS[:3]), question_tokens=7)
    assert fits.context_tokens + 7 == exact and encoder.calls == [TEXTS[:3]]
    # known now: by id, with one new text over the limit, refused before the new one is encoded
    ids = [BlockRef(block_id_for(TENANT, t)) for t in TEXTS[:3]]
    other, encoder = replica(index, objects, ResolveLimits(max_context_tokens=exact))
    before = stored_counts(index, objects)
    with pytest.raises(LimitExceededError, match=rf"context \({opening + sum(n)} tokens\) and question \(0\)"):
        resolve(other, runtime, [*ids, *texts(TEXTS[3])])
    assert encoder.calls == [] and stored_counts(index, objects) == before


def test_ingest_limits_are_checked_on_the_request_alone():
    from blockrag.resolve import IngestLimits

    limits = IngestLimits(max_ingest_documents=3, max_document_bytes=10, max_ingest_bytes=25)
    limits.check([("a", "x" * 10), ("b", "é" * 5), ("c", "y" * 5)])  # 25 bytes: at every limit
    with pytest.raises(LimitExceededError) as refused:
        limits.check([("a", "x"), ("b", "é" * 6), ("c", "y")])  # 12 bytes in 6 characters
    assert str(refused.value) == "document 'b' is 12 bytes, over the limit of 10 per document; split it"
    with pytest.raises(LimitExceededError) as refused:
        limits.check([("a", "x" * 10), ("b", "x" * 10), ("c", "x" * 6)])
    assert str(refused.value) == "the documents total 26 bytes, over the limit of 25 per request; send them in batches"
    with pytest.raises(LimitExceededError, match="4 documents in one request, over the limit of 3"):
        limits.check([(str(i), "x") for i in range(4)])
    with pytest.raises(LimitExceededError, match=r"document 'a' is 11 bytes.* \(2 documents are\)"):
        limits.check([("a", "x" * 11), ("b", "x" * 11)])


def test_each_memory_tier_reports_its_own_lookups(runtime, index, objects):
    # Two host tiers, the first too small for two blocks: lookups walk them in order, and the
    # replica's counters follow each tier's own hits and misses (not the tiers summed).
    from prometheus_client import REGISTRY

    from blockrag.kvcache.tiers import MemoryTier, MemoryTiers

    block = resolve(replica(index, objects)[0], runtime, texts(TEXTS[0])).blocks[0].kv.nbytes
    memory = MemoryTiers([MemoryTier("first", ByteLRU(block + block // 2)), MemoryTier("second", ByteLRU(1 << 26))])
    encoder = CountingEncoder(BlockWriter(index, objects, ResolveLimits()))
    store = StoreTier(index, objects, threads=4, access=AccessLog(index, flush_every_s=3600))
    resolver = BlockResolver(encoder, store=store, memory=memory, service="tiers-test")
    for _ in range(3):
        resolve(resolver, runtime, texts(*TEXTS[:2]))
    each = memory.tier_stats()
    assert each["second"].hits > 0 and each["first"].misses > each["second"].misses
    for name, stats in each.items():
        for result, count in (("hit", stats.hits), ("miss", stats.misses)):
            labels = {"service": "tiers-test", "tier": name, "result": result}
            assert REGISTRY.get_sample_value("blockrag_replica_cache_tier_lookups_total", labels) == count
