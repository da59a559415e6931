"""PostgreSQL stopped and started for real under the cache index (issue 14, item 6): a cluster of
the test's own (fixtures.pg_cluster; the machine's shared server is never touched).

While it is down every request that needs the index fails at once with CacheIndexError, which
the servicers answer UNAVAILABLE (retriable); once it is back the very next request succeeds on
the same engine (its pooled connections died with the server), and every committed row is there,
the hit counts the access log could not write included. A crash between a write's put and its
commit leaves no entry naming a missing object, only intents and objects the sweeper clears.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
import sqlalchemy as sa

from blockrag.errors import CacheIndexError
from blockrag.kvcache.entry_writer import ENTRY_NAME
from blockrag.kvcache.index import CacheIndex, block_id_for
from blockrag.kvcache.memory_tier import ByteLRU
from blockrag.kvcache.object_store import LocalObjectStore
from blockrag.kvcache.sweeper import sweep_orphans
from blockrag.resolve import AccessLog, BlockRef, BlockResolver, BlockWriter, LocalEncoder, StoreTier
from blockrag_services.errors import status_of

TENANT = "acme"
TEXTS = [f"Harbour {i}: the office of pier {i} opens at {6 + i} in the morning." for i in range(4)]
NEW = [f"Ferry {i} leaves the eastern pier for Skarvholm at {9 + i} o'clock." for i in range(3)]
FAIL_FAST_S = 5.0  # a refused connection answers in milliseconds; this only guards against a hang


@pytest.fixture
def index(pg_cluster):
    index = CacheIndex.open(pg_cluster.url)
    yield index
    index.close()


@pytest.fixture
def objects(tmp_path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "kv")


def replica(index, objects) -> BlockResolver:
    store = StoreTier(index, objects, threads=2, access=AccessLog(index, flush_every_s=3600))
    return BlockResolver(LocalEncoder(BlockWriter(index, objects)), store=store, memory=ByteLRU(1 << 26))


def resolve(resolver, runtime, texts):
    return asyncio.run(resolver.resolve(runtime, TENANT, [BlockRef(block_id_for(TENANT, t)) for t in texts]))


def snapshot(index) -> dict[str, list[tuple]]:
    """Every committed row the index's tables hold (hit counts and access times left out)."""
    queries = {
        "blocks": "SELECT tenant, block_id, text, token_count FROM blocks",
        "documents": "SELECT tenant, collection, document_id FROM documents",
        "document_blocks": "SELECT tenant, block_id, position FROM document_blocks",
        "kv_entries": "SELECT tenant, block_id, model_version, location, nbytes FROM kv_entries",
    }
    with index.engine.begin() as conn:
        return {table: sorted(tuple(r) for r in conn.exec_driver_sql(sql)) for table, sql in queries.items()}


def table(index, sql: str) -> list[tuple]:
    with index.engine.begin() as conn:
        return sorted(tuple(r) for r in conn.execute(sa.text(sql)))


def refused_fast(call) -> CacheIndexError:
    """``call`` fails with CacheIndexError, answered UNAVAILABLE, within FAIL_FAST_S."""
    started = time.monotonic()
    with pytest.raises(CacheIndexError, match="Connection refused") as failed:
        call()
    elapsed = time.monotonic() - started
    assert elapsed < FAIL_FAST_S, f"took {elapsed:.1f} s to fail"
    assert status_of(failed.value)[0] == grpc.StatusCode.UNAVAILABLE
    return failed.value


def test_requests_fail_fast_while_postgres_restarts_then_recover_with_no_committed_row_lost(
        tiny, index, objects, pg_cluster):
    BlockWriter(index, objects).write(tiny, TENANT, TEXTS)
    index.register_blocks(TENANT, [(t, len(tiny.template.block_ids(t))) for t in TEXTS], "harbour", "guide")
    reader = replica(index, objects)
    assert resolve(reader, tiny, TEXTS).tiers() == {"store": 4}  # 4 hits pending in its access log
    committed = snapshot(index)
    assert len(committed["kv_entries"]) == 4 and len(committed["document_blocks"]) == 4

    pg_cluster.stop("fast")  # a clean restart: the server closes every client's connection
    refused_fast(lambda: index.lookup(TENANT, [block_id_for(TENANT, TEXTS[0])], tiny.version))
    refused_fast(lambda: resolve(replica(index, objects), tiny, TEXTS))  # a question
    refused_fast(lambda: BlockWriter(index, objects).write(tiny, TENANT, NEW))  # an ingest
    assert reader.store.access.flush() == 0  # kept for the next flush, not dropped

    pg_cluster.start()
    # the first request after the restart succeeds: the pool's dead connections are replaced
    assert resolve(replica(index, objects), tiny, TEXTS).tiers() == {"store": 4}
    assert snapshot(index) == committed
    assert reader.store.access.flush() == 4
    assert table(index, "SELECT block_id, hits FROM kv_entries") == sorted(
        (block_id_for(TENANT, t), 1) for t in TEXTS)
    written = BlockWriter(index, objects).write(tiny, TENANT, NEW)
    assert [w.computed for w in written] == [True] * 3 and len(snapshot(index)["kv_entries"]) == 7


class StopsPostgresAfterPut(LocalObjectStore):
    """The store of a writer whose database crashes after its first object landed, before the
    write's commit."""

    def __init__(self, root, cluster) -> None:
        super().__init__(root)
        self.cluster = cluster

    def put(self, name: str, data: bytes) -> str:
        location = super().put(name, data)
        if self.cluster.running:
            self.cluster.stop("immediate")  # a crash: no shutdown checkpoint, recovery at start
        return location


def test_postgres_crashing_between_put_and_commit_leaves_no_entry_naming_a_missing_object(
        tiny, index, objects, pg_cluster, tmp_path):
    BlockWriter(index, objects).write(tiny, TENANT, TEXTS)
    committed = snapshot(index)

    crashing = StopsPostgresAfterPut(tmp_path / "kv", pg_cluster)
    refused_fast(lambda: BlockWriter(index, crashing).write(tiny, TENANT, NEW))
    assert not pg_cluster.running

    pg_cluster.start()
    assert snapshot(index)["kv_entries"] == committed["kv_entries"]  # nothing of the crashed write
    rows = index.lookup(TENANT, [block_id_for(TENANT, t) for t in NEW], tiny.version)
    assert [(r.known, r.hit) for r in rows] == [(True, False)] * 3
    # every entry names an object that exists; the crashed write's objects are orphans under intents
    assert all(objects.exists(location) for *_, location, _ in committed["kv_entries"])
    entry_objects = {o.location for o in objects.list_objects() if ENTRY_NAME.fullmatch(o.name)}
    orphans = entry_objects - {location for *_, location, _ in committed["kv_entries"]}
    assert len(orphans) == 3 and len(table(index, "SELECT location FROM kv_writes")) == 3

    report = sweep_orphans(index, objects, grace_s=0)
    assert (report.expired_writes, table(index, "SELECT location FROM kv_writes")) == (3, [])
    assert not any(objects.exists(location) for location in orphans)
    assert resolve(replica(index, objects), tiny, TEXTS).tiers() == {"store": 4}
    assert resolve(replica(index, objects), tiny, NEW).tiers() == {"computed": 3}  # recomputed, now stored
    assert len(snapshot(index)["kv_entries"]) == 7
