"""Scheduled cache maintenance over a real SQLite index and a local object store, no Ray: a pass
brings a store over its high watermark down to its low one and sweeps an orphan object; the loop
outlives a pass that fails (the object store down) and keeps the store in bounds at the next one;
the config section is checked once, with messages that name the setting."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from pathlib import Path

import pytest
from kv_parts import entry_objects
from prometheus_client import REGISTRY

from blockrag.errors import InvalidRequestError, ObjectStoreError
from blockrag.kvcache.entry_writer import EntryFrame, EntryWriter, entry_object_name
from blockrag.kvcache.eviction import Watermarks
from blockrag.kvcache.index import CacheIndex
from blockrag.kvcache.key import CacheKey
from blockrag.kvcache.maintenance import CacheMaintenance, MaintenanceLoop, run_pass
from blockrag.kvcache.object_store import LocalObjectStore
from blockrag_services.config import PlatformConfig

SIZE = 100  # bytes per entry
BOUNDS = CacheMaintenance(interval_s=0.05, reader_grace_s=0, store=Watermarks(high_bytes=350, low_bytes=200))


@pytest.fixture
def index(tmp_path: Path):
    with CacheIndex.open(f"sqlite:///{tmp_path}/index.db") as index:
        yield index


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "kv")


def fill(index: CacheIndex, store, tenant: str, n: int) -> list[str]:
    ids = index.register_blocks(tenant, [(f"{tenant} block {i}", 2) for i in range(n)])
    for i, block_id in enumerate(ids):
        EntryWriter(index, store).write(tenant, "m1", [EntryFrame(block_id, CacheKey.of(tenant, "m1", [i]), b"k" * SIZE)])
    return ids


def stored_bytes(index: CacheIndex) -> int:
    return sum(u.bytes for u in index.usage())


def orphan(store: LocalObjectStore, age_s: float) -> str:
    """An entry object no row names (a writer that crashed before its commit), ``age_s`` old."""
    location = store.put(entry_object_name(CacheKey.of("a", "crashed", [9])), b"o" * 30)
    then = time.time() - age_s
    os.utime(location.removeprefix("file://"), (then, then))
    return location


def runs(outcome: str) -> float:
    return REGISTRY.get_sample_value("blockrag_cache_maintenance_runs_total", {"outcome": outcome}) or 0.0


def test_a_pass_evicts_down_to_the_low_watermark_and_sweeps_orphans(index, store):
    fill(index, store, "a", 3), fill(index, store, "b", 2)
    old, young = orphan(store, age_s=2 * 86400), orphan(store, age_s=3600)  # the default grace: a day
    report = run_pass(index, store, BOUNDS)
    assert (report.eviction.entries, report.eviction.bytes, report.eviction.by_reason) == (3, 300, {"store": 3})
    assert stored_bytes(index) == 200
    assert (report.sweep.deleted, report.sweep.deleted_bytes) == (1, 30)
    assert not store.exists(old) and store.exists(young)
    # objects follow rows: exactly the entries left, and the young orphan, have objects
    assert len(entry_objects(store)) == 2 + 1
    assert "evicted 3 entries (300 bytes; 3 by store), swept 1 orphan objects (30 bytes)" in report.summary()
    # within bounds: the next pass removes nothing
    again = run_pass(index, store, BOUNDS)
    assert (again.eviction.entries, again.sweep.deleted) == (0, 0)


class FlakyStore:
    """A local store that is down (ObjectStoreError on every call) while ``down`` is set."""

    def __init__(self, store: LocalObjectStore):
        self.store, self.down = store, False

    def __getattr__(self, name: str):
        method = getattr(self.store, name)

        def call(*args, **kwargs):
            if self.down:
                raise ObjectStoreError("cannot reach the object store: connection refused")
            return method(*args, **kwargs)

        return call


def wait_for(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_loop_survives_a_failing_pass_and_retries_at_the_next_interval(index, store, caplog):
    fill(index, store, "a", 5)  # 500 bytes: over the high watermark
    flaky = FlakyStore(store)
    flaky.down = True
    # sweep_grace_s 0: what a failed pass orphans is swept by the next one, not a day later
    loop = MaintenanceLoop(index, flaky, dataclasses.replace(BOUNDS, sweep_grace_s=0))
    ok, failed = runs("ok"), runs("failed")
    caplog.set_level(logging.INFO, logger="blockrag.kvcache.maintenance")
    loop.start()
    try:
        wait_for(lambda: loop.passes["failed"] >= 1)
        flaky.down = False
        wait_for(lambda: loop.passes["ok"] >= 1)
        assert loop.running
    finally:
        loop.stop(timeout=10)
    assert not loop.running
    failures = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert failures and failures[0].getMessage() == (
        "cache maintenance pass failed, retrying in 0.05 s: ObjectStoreError: cannot reach the object store: "
        "connection refused")
    # the failed pass deleted the rows, then could not reach their objects: the next one swept them
    passes = [r.getMessage() for r in caplog.records if r.getMessage().startswith("cache maintenance: evicted")]
    assert passes[0].startswith("cache maintenance: evicted 0 entries (0 bytes), swept 3 orphan objects (300 bytes)")
    assert stored_bytes(index) == 200 and len(entry_objects(store)) == 2
    assert runs("failed") - failed == loop.passes["failed"] and runs("ok") - ok == loop.passes["ok"]


def test_maintenance_is_on_by_default_and_off_at_zero():
    assert PlatformConfig().cache_maintenance == CacheMaintenance()
    assert CacheMaintenance().interval_s == 300 and CacheMaintenance().reader_grace_s == 2
    assert CacheMaintenance().policy().store is None  # no bounds configured: a pass only sweeps
    assert not CacheMaintenance(interval_s=0).enabled
    with pytest.raises(InvalidRequestError, match="cache maintenance is off"):
        MaintenanceLoop(None, None, CacheMaintenance(interval_s=0))


def test_the_config_section_builds_bounds_and_round_trips():
    config = PlatformConfig.from_args({"cache_maintenance": {
        "interval_s": 60, "reader_grace_s": 0.5, "ttl_s": 86400,
        "tenant": {"high_bytes": 1000, "low_bytes": 800}, "tenants": {"acme": {"high_bytes": 50, "low_bytes": 10}},
        "store": {"high_bytes": 5000, "low_bytes": 4000}}})
    policy = config.cache_maintenance.policy()
    assert policy.for_tenant("other") == Watermarks(1000, 800) and policy.for_tenant("acme") == Watermarks(50, 10)
    assert policy.store == Watermarks(5000, 4000) and policy.ttl_s == 86400
    assert config.cache_maintenance.reader_grace_s == 0.5
    assert PlatformConfig.from_args(config.to_args()) == config


@pytest.mark.parametrize(("section", "message"), [
    ({"interval_s": -1}, "cache_maintenance interval_s must be a finite number of seconds >= 0 (0: off), got -1"),
    ({"interval_s": math.nan}, "cache_maintenance interval_s must be a finite number of seconds >= 0 (0: off), got nan"),
    ({"interval_s": "300"}, "cache_maintenance interval_s must be a finite number of seconds >= 0 (0: off), got '300'"),
    ({"interval_s": True}, "cache_maintenance interval_s must be a finite number of seconds >= 0 (0: off), got True"),
    ({"reader_grace_s": -0.5}, "cache_maintenance reader_grace_s must be a finite number of seconds >= 0, got -0.5"),
    ({"reader_grace_s": math.inf}, "cache_maintenance reader_grace_s must be a finite number of seconds >= 0, got inf"),
    ({"sweep_grace_s": "1h"}, "cache_maintenance sweep_grace_s must be a finite number of seconds >= 0, got '1h'"),
    ({"ttl_s": 0}, "cache_maintenance ttl_s must be a finite number of seconds > 0 (null: no TTL), got 0"),
    ({"store": {"high_bytes": 10}},
     "cache_maintenance store must be a mapping of high_bytes and low_bytes (or null: no bound), "
     "got {'high_bytes': 10}"),
    ({"tenants": {"acme": {"high_bytes": 1, "low_bytes": 2}}},
     "cache_maintenance tenants.acme: watermarks need 0 < high_bytes and low_bytes <= high_bytes; got high 1, low 2"),
    ({"tenant": {"high_bytes": "1GB", "low_bytes": 1}},
     "cache_maintenance tenant: high_bytes must be an int >= 0 (bytes), got '1GB'"),
    ({"interval": 60}, "unknown setting(s) interval in cache_maintenance; known: interval_s, reader_grace_s, "
                       "store, sweep_grace_s, tenant, tenants, ttl_s"),
])
def test_bad_settings_are_refused_naming_them(section, message):
    with pytest.raises(InvalidRequestError) as error:
        PlatformConfig.from_args({"cache_maintenance": section})
    assert str(error.value) == message
