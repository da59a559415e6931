"""The S3 server killed for real (SIGKILL to the rclone process) during generation and during
ingest, then started again on the same port over the same objects (issue 14, item 6).

Generation goes on by recomputing: an entry the index lists but the store cannot give is a miss,
logged once for the request, the KV answered without being stored, the index left as it was;
once the server is back the entries are read again. A write that cannot store fails UNAVAILABLE and
leaves nothing a reader can see: no entry, no object, no block text (the blocks its plan registered
are forgotten, its intents dropped). Which documents of an Ingest failed: test_ingest_outage.py.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

import grpc
import pytest
import torch

from blockrag.errors import ObjectStoreError
from blockrag.kvcache.entry_writer import ENTRY_NAME
from blockrag.kvcache.index import CacheIndex, block_id_for
from blockrag.kvcache.memory_tier import ByteLRU
from blockrag.kvcache.s3_store import S3Config, S3ObjectStore
from blockrag.kvcache.sweeper import sweep_orphans
from blockrag.resolve import AccessLog, BlockRef, BlockResolver, BlockWriter, LocalEncoder, StoreTier
from blockrag.telemetry.metrics import KV_ENTRIES_REJECTED, OBJECT_STORE_UNAVAILABLE
from blockrag_services.errors import status_of

TENANT = "acme"
TEXTS = [f"Harbour {i}: the office of pier {i} opens at {6 + i} in the morning." for i in range(4)]
NEW = [f"Ferry {i} leaves the eastern pier for Skarvholm at {9 + i} o'clock." for i in range(4)]
OUTAGE_BOUND_S = 30.0  # refused connections, three retries each: a few seconds; never a hang


class KillAfterLookup(StoreTier):
    """A replica's store tier whose server dies between the index's answer and the reads: the
    request has been told the entries exist when the store goes."""

    def __init__(self, index, store, s3) -> None:
        super().__init__(index, store, threads=4, access=AccessLog(index, flush_every_s=3600))
        self.s3 = s3

    def lookup(self, tenant, block_ids, version):
        rows = super().lookup(tenant, block_ids, version)
        self.s3.kill()
        return rows


@pytest.fixture
def index(tmp_path):
    index = CacheIndex.open(f"sqlite:///{tmp_path}/index.db")
    yield index
    index.close()


@pytest.fixture
def bucket(restartable_s3) -> S3ObjectStore:
    server = restartable_s3.server
    return S3ObjectStore(S3Config(endpoint=server.endpoint, bucket=f"faults-{secrets.token_hex(4)}",
                                  access_key=server.access_key, secret_key=server.secret_key))


def replica(index, bucket, store: StoreTier | None = None) -> BlockResolver:
    """A fresh generation replica (empty memory) over the shared index and bucket."""
    store = store or StoreTier(index, bucket, threads=4, access=AccessLog(index, flush_every_s=3600))
    return BlockResolver(LocalEncoder(BlockWriter(index, bucket)), store=store, memory=ByteLRU(1 << 26))


def resolve(resolver: BlockResolver, runtime, texts):
    return asyncio.run(resolver.resolve(runtime, TENANT, [BlockRef(block_id_for(TENANT, t)) for t in texts]))


def entries(index) -> dict[str, str]:
    with index.engine.begin() as conn:
        return dict(conn.exec_driver_sql("SELECT block_id, location FROM kv_entries").fetchall())


def intents(index) -> int:
    with index.engine.begin() as conn:
        return conn.exec_driver_sql("SELECT count(*) FROM kv_writes").scalar_one()


def block_count(index) -> int:
    with index.engine.begin() as conn:
        return conn.exec_driver_sql("SELECT count(*) FROM blocks").scalar_one()


def stored_files(s3) -> set[str]:
    return {p.name for p in s3.server.root.rglob("*") if p.is_file()}


def rejected() -> dict[str, float]:
    return {r: KV_ENTRIES_REJECTED.labels(reason=r)._value.get() for r in ("corrupt", "foreign")}


def test_generation_recomputes_while_s3_is_down_and_reads_the_store_once_it_is_back(
        tiny, index, bucket, restartable_s3, caplog):
    BlockWriter(index, bucket).write(tiny, TENANT, TEXTS)
    cold = resolve(replica(index, bucket), tiny, TEXTS)  # the writer's entries, and the opening stored
    assert cold.tiers() == {"store": 4} and cold.prefix.tier == "computed"
    listed, files, before = entries(index), stored_files(restartable_s3), rejected()
    reads, writes = unavailable("read"), unavailable("write")

    # the server dies after the index said where every entry is
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="blockrag.resolve"):
        during = resolve(replica(index, bucket, KillAfterLookup(index, bucket, restartable_s3)), tiny, TEXTS)
    elapsed = time.monotonic() - started
    assert restartable_s3.process is None  # killed for real
    assert during.tiers() == {"computed": 4} and during.prefix.tier == "computed" and during.corrupt == 0
    for a, b in zip(cold.blocks, during.blocks):
        assert a.kv.token_ids == b.kv.token_ids
        assert torch.allclose(a.kv.keys, b.kv.keys, atol=1e-5) and torch.allclose(a.kv.values, b.kv.values, atol=1e-5)
    assert torch.allclose(cold.prefix.kv.keys, during.prefix.kv.keys, atol=1e-5)
    assert elapsed < OUTAGE_BOUND_S, f"a request over a dead store took {elapsed:.1f} s"
    # logged once for the request's 4 entries (not per entry), once for the recomputed blocks not
    # stored, once each for the opening's read and write; not counted as corrupt or foreign
    messages = [r.getMessage() for r in caplog.records if r.name == "blockrag.resolve"]
    assert sum("unreachable for 4 KV entries of tenant 'acme'" in m for m in messages) == 1
    assert sum("4 recomputed block(s) of tenant 'acme' answered but not stored" in m for m in messages) == 1
    assert len(messages) == 4, messages
    assert rejected() == before
    # counted: 4 entries and the opening not read, 4 recomputed blocks and the opening not kept
    assert (unavailable("read") - reads, unavailable("write") - writes) == (5, 5)
    # nothing written while it was down: the index lists the same objects, the bucket holds them
    assert entries(index) == listed

    restartable_s3.start()
    assert stored_files(restartable_s3) == files
    after = resolve(replica(index, bucket), tiny, TEXTS)
    assert after.tiers() == {"store": 4} and after.prefix.tier == "store"
    assert all(torch.equal(a.kv.keys, b.kv.keys) for a, b in zip(cold.blocks, after.blocks))


def unavailable(operation: str) -> float:
    return OBJECT_STORE_UNAVAILABLE.labels(operation=operation)._value.get()


def test_a_dead_s3_from_the_start_of_a_request_is_a_miss_and_memory_serves_the_next(tiny, index, bucket,
                                                                                    restartable_s3):
    BlockWriter(index, bucket).write(tiny, TENANT, TEXTS[:2])
    restartable_s3.kill()
    resolver = replica(index, bucket)
    assert resolve(resolver, tiny, TEXTS[:2]).tiers() == {"computed": 2}
    again = resolve(resolver, tiny, TEXTS[:2])  # the replica's memory holds what it recomputed
    assert again.tiers() == {"memory": 2} and again.prefix.tier == "memory"


def test_ingest_with_s3_killed_mid_write_fails_unavailable_and_leaves_nothing_visible(
        tiny, index, bucket, restartable_s3):
    BlockWriter(index, bucket).write(tiny, TENANT, TEXTS)  # committed before the outage
    listed = entries(index)

    def kill_after_first_group(done: int, total: int) -> None:
        if restartable_s3.process is not None:
            assert done < total  # encoding is under way: more groups to come
            restartable_s3.kill()

    writer = BlockWriter(index, bucket, batch_tokens=16)  # one group per block or so
    started = time.monotonic()
    with pytest.raises(ObjectStoreError, match="cannot reach S3 to write") as refused:
        writer.write(tiny, TENANT, NEW, progress=kill_after_first_group)
    assert time.monotonic() - started < OUTAGE_BOUND_S
    code, message = status_of(refused.value)
    assert code == grpc.StatusCode.UNAVAILABLE and "check that the server runs" in message

    # no entry for any new block, the committed ones untouched; the blocks the plan registered
    # are forgotten (no text a reader could find), the write's intents dropped with them
    assert entries(index) == listed
    rows = index.lookup(TENANT, [block_id_for(TENANT, t) for t in NEW], tiny.version)
    assert [(r.known, r.hit) for r in rows] == [(False, False)] * 4
    assert index.get_blocks(TENANT, [block_id_for(TENANT, t) for t in TEXTS + NEW])[4:] == [None] * 4
    assert block_count(index) == 4 and intents(index) == 0

    restartable_s3.start()
    assert not [o for o in bucket.list_objects() if o.location not in listed.values()]  # no object appeared
    report = sweep_orphans(index, bucket, grace_s=0)
    assert (report.expired_writes, report.deleted, intents(index)) == (0, 0, 0)
    assert entries(index) == listed

    # the same ingest again succeeds, and a fresh replica reads everything from the store
    again = BlockWriter(index, bucket).write(tiny, TENANT, NEW)
    assert all(w.computed and ENTRY_NAME.fullmatch(w.location.rsplit("/", 1)[-1]) for w in again)
    assert resolve(replica(index, bucket), tiny, TEXTS + NEW).tiers() == {"store": 8}
