"""The Admin servicer's cache maintenance RPCs (SweepCache, EvictCache), called in-process (no
Ray) over a SQLite index and a local object store: thin translations of kvcache.sweeper and
kvcache.eviction, errors typed (their gRPC status is tests/services/test_errors.py's)."""

from __future__ import annotations

import asyncio
import os
import time
from types import SimpleNamespace

import pytest

from blockrag.distill.runs import JobStores
from blockrag.errors import InvalidRequestError
from blockrag.kvcache.entry_writer import EntryFrame, EntryWriter, entry_object_name
from blockrag.kvcache.key import CacheKey
from blockrag.v1 import admin_pb2 as pb
from blockrag.v1 import cache_index_pb2 as index_pb
from blockrag_services.admin.deployment import Admin
from blockrag_services.config import PlatformConfig


@pytest.fixture
def config(tmp_path) -> PlatformConfig:
    return PlatformConfig(database_url=f"sqlite:///{tmp_path}/index.db", object_store_url=str(tmp_path / "kv"))


@pytest.fixture
def stores(config):
    stores = JobStores.open(config.database, config.object_store)
    yield stores
    stores.close()


class Remote:
    """A Ray method stand-in: .remote(...) gives an awaitable of fn's result."""

    def __init__(self, fn):
        self.fn = fn

    def remote(self, *args):
        async def result():
            return self.fn(*args)

        return result()


@pytest.fixture
def admin(config, stores):
    tiers = [dict(tier="device", entries=1, bytes=32, capacity_bytes=1 << 19, hits=4, misses=2, evictions=0),
             dict(tier="pinned", entries=1, bytes=32, capacity_bytes=1 << 19, hits=1, misses=1, evictions=3)]
    replica = dict(replica="generation#1", entries=2, bytes=64, capacity_bytes=1 << 20, hits=5, misses=1, tiers=tiers)
    handles = {"cache_index": SimpleNamespace(Stats=Remote(lambda request: index_pb.StatsResponse(entries=6))),
               "generation": SimpleNamespace(replica_cache_stats=Remote(lambda: replica))}
    runner = SimpleNamespace()  # no distillation here: never called
    return Admin.func_or_class(config.to_args(), handles=handles, runner=runner)


def call(coroutine):
    return asyncio.run(coroutine)


def entries(stores, tenant: str, n: int, size: int) -> list[str]:
    ids = stores.index.register_blocks(tenant, [(f"{tenant} block {i}", 2) for i in range(n)])
    writer = EntryWriter(stores.index, stores.store)
    for i, block_id in enumerate(ids):
        writer.write(tenant, "m1", [EntryFrame(block_id, CacheKey.of(tenant, "m1", [i]), b"k" * size)])
    return ids


def test_sweep_deletes_old_orphans_only(admin, stores):
    entries(stores, "acme", 1, 10)
    old = stores.store.put(entry_object_name(CacheKey.of("acme", "m1", [7])), b"o" * 30)
    young = stores.store.put(entry_object_name(CacheKey.of("acme", "m1", [8])), b"y")
    path = old.removeprefix("file://")
    os.utime(path, (time.time() - 7200, time.time() - 7200))  # written two hours ago
    dry = call(admin.SweepCache(pb.SweepCacheRequest(dry_run=True)))  # the default grace: an hour
    assert (dry.scanned, dry.deleted, dry.deleted_bytes, dry.young) == (3, 1, 30, 2)
    assert stores.store.exists(old)
    done = call(admin.SweepCache(pb.SweepCacheRequest()))
    assert (done.deleted, done.deleted_bytes) == (1, 30) and not stores.store.exists(old)
    assert stores.store.exists(young)
    with pytest.raises(InvalidRequestError, match="grace_s"):
        call(admin.SweepCache(pb.SweepCacheRequest(grace_s=-1)))


def test_evict_by_tenant_bounds(admin, stores):
    acme, other = entries(stores, "acme", 4, 100), entries(stores, "other", 2, 100)
    request = pb.EvictCacheRequest(tenant_bounds=pb.Watermarks(high_bytes=300, low_bytes=100), tenant="acme")
    reply = call(admin.EvictCache(request))
    assert (reply.entries, reply.bytes, dict(reply.by_reason)) == (3, 300, {"tenant": 3})
    assert [(t.tenant, t.entries, t.bytes) for t in reply.tenants] == [("acme", 3, 300)]
    assert [r.hit for r in stores.index.lookup("acme", acme, "m1")] == [False, False, False, True]
    assert all(r.hit for r in stores.index.lookup("other", other, "m1"))
    store_wide = pb.EvictCacheRequest(store_bounds=pb.Watermarks(high_bytes=250, low_bytes=200))
    assert call(admin.EvictCache(store_wide)).entries == 1
    with pytest.raises(InvalidRequestError, match="low_bytes <= high_bytes"):
        call(admin.EvictCache(pb.EvictCacheRequest(tenant_bounds=pb.Watermarks(high_bytes=1, low_bytes=2))))


def test_stats_give_each_tenants_bytes(admin, stores):
    entries(stores, "acme", 4, 100), entries(stores, "other", 2, 10)
    reply = call(admin.CacheStats(pb.CacheStatsRequest()))
    assert reply.index.entries == 6 and reply.replicas[0].hits == 5
    assert [(t.tier, t.hits, t.misses, t.evictions) for t in reply.replicas[0].tiers] == [("device", 4, 2, 0),
                                                                                          ("pinned", 1, 1, 3)]
    assert [(t.tenant, t.entries, t.bytes) for t in reply.tenants] == [("acme", 4, 400), ("other", 2, 20)]
    one = call(admin.CacheStats(pb.CacheStatsRequest(tenant="other")))
    assert [(t.tenant, t.bytes) for t in one.tenants] == [("other", 20)]
