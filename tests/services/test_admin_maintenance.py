"""The Admin deployment runs cache maintenance on the schedule of PlatformConfig.cache_maintenance,
and its EvictCache waits the configured reader pause: in-process (no Ray) over a SQLite index and
a local object store."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from blockrag.distill.runs import JobStores
from blockrag.kvcache.entry_writer import EntryFrame, EntryWriter
from blockrag.kvcache.key import CacheKey
from blockrag.v1 import admin_pb2 as pb
from blockrag_services.admin.deployment import Admin
from blockrag_services.config import PlatformConfig


def platform(tmp_path, **maintenance) -> PlatformConfig:
    return PlatformConfig.from_args({"database_url": f"sqlite:///{tmp_path}/index.db",
                                     "object_store_url": str(tmp_path / "kv"), "cache_maintenance": maintenance})


def admin(config: PlatformConfig) -> Admin:
    return Admin.func_or_class(config.to_args(), handles={}, runner=SimpleNamespace())


@pytest.fixture
def stores(tmp_path):
    stores = JobStores.open(platform(tmp_path).database, platform(tmp_path).object_store)
    yield stores
    stores.close()


def entries(stores, tenant: str, n: int, size: int = 100) -> None:
    ids = stores.index.register_blocks(tenant, [(f"{tenant} block {i}", 2) for i in range(n)])
    for i, block_id in enumerate(ids):
        EntryWriter(stores.index, stores.store).write(
            tenant, "m1", [EntryFrame(block_id, CacheKey.of(tenant, "m1", [i]), b"k" * size)])


def stored_bytes(stores) -> int:
    return sum(u.bytes for u in stores.index.usage())


def test_the_store_is_brought_within_its_bounds_on_schedule(tmp_path, stores):
    entries(stores, "acme", 3), entries(stores, "other", 2)
    replica = admin(platform(tmp_path, interval_s=0.05, reader_grace_s=0,
                             store={"high_bytes": 350, "low_bytes": 200}))
    try:
        deadline = time.monotonic() + 10
        while stored_bytes(stores) > 200:  # nobody calls EvictCache: the replica's loop does it
            assert time.monotonic() < deadline, "no scheduled pass evicted anything within 10 s"
            time.sleep(0.02)
        assert replica.maintenance.running
    finally:
        replica.maintenance.stop(timeout=10)
    assert stored_bytes(stores) == 200 and replica.maintenance.passes["ok"] >= 1


def test_no_loop_at_interval_zero(tmp_path, stores):
    assert admin(platform(tmp_path, interval_s=0)).maintenance is None


def test_evict_cache_waits_the_configured_reader_pause(tmp_path, stores):
    entries(stores, "acme", 3)
    replica = admin(platform(tmp_path, interval_s=0, reader_grace_s=0.3))
    request = pb.EvictCacheRequest(tenant_bounds=pb.Watermarks(high_bytes=150, low_bytes=100))
    started = time.monotonic()
    assert asyncio.run(replica.EvictCache(request)).entries == 2
    # the configured 0.3 s between rows and objects, not eviction's default of 2 s
    assert 0.3 <= time.monotonic() - started < 2.0
