"""Eviction over the real SQLite and PostgreSQL and a local object store: watermarks per tenant
and for the store, least recently used first, TTL; rows before objects, so a crash in between
leaves only orphans for the sweeper, and a reader that looked an entry up still gets its object."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from kv_parts import clean, entry_objects, evict_in_process, rows

from blockrag.errors import InvalidRequestError
from blockrag.kvcache.entry_writer import EntryFrame, EntryWriter
from blockrag.kvcache.eviction import EvictionPolicy, EvictionReport, Watermarks, evict
from blockrag.kvcache.index import CacheIndex
from blockrag.kvcache.key import CacheKey
from blockrag.kvcache.object_store import LocalObjectStore
from blockrag.kvcache.sweeper import sweep_orphans

SIZE = 100  # bytes per entry


@pytest.fixture
def index(url: str, clock):
    index = CacheIndex.open(url, clock=clock)
    clean(url)
    yield index
    index.close()


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "kv")


def fill(index: CacheIndex, store: LocalObjectStore, clock, tenant: str, n: int) -> list[str]:
    """``n`` entries of SIZE bytes, committed one clock tick apart (the first is the least recent)."""
    texts = [f"{tenant} block {i}" for i in range(n)]
    ids = index.register_blocks(tenant, [(t, 2) for t in texts])
    writer = EntryWriter(index, store)
    for i, block_id in enumerate(ids):
        clock.tick()
        writer.write(tenant, "m1", [EntryFrame(block_id, CacheKey.of(tenant, "m1", [i, 1]), bytes([i]) * SIZE)])
    return ids


def stored(index: CacheIndex, tenant: str, ids: list[str]) -> list[bool]:
    return [r.hit for r in index.lookup(tenant, ids, "m1")]


def no_sleep(_: float) -> None:
    pass


def test_a_tenant_over_its_high_watermark_goes_down_to_its_low_one(url, index, store, clock):
    a, b = fill(index, store, clock, "a", 5), fill(index, store, clock, "b", 2)
    clock.tick()
    index.record_hits("a", "m1", {a[0]: 1})  # the oldest, used again: now the most recent
    policy = EvictionPolicy(tenant=Watermarks(high_bytes=350, low_bytes=200))
    report = evict(index, store, policy, sleep=no_sleep)
    assert report == EvictionReport(entries=3, bytes=300, by_tenant={"a": (3, 300)}, by_reason={"tenant": 3})
    assert stored(index, "a", a) == [True, False, False, False, True] and stored(index, "b", b) == [True, True]
    # objects follow rows: exactly the entries left have objects
    assert sorted(entry_objects(store)) == sorted(r[2] for r in rows(url, "kv_entries"))
    # at its low watermark, under its high one: nothing more to do
    assert evict(index, store, policy, sleep=no_sleep).entries == 0


def test_bounds_of_one_tenant_the_store_and_a_ttl(url, index, store, clock):
    a, b = fill(index, store, clock, "a", 4), fill(index, store, clock, "b", 4)
    policy = EvictionPolicy(tenants={"b": Watermarks(250, 250)}, store=Watermarks(high_bytes=500, low_bytes=400))
    report = evict(index, store, policy, sleep=no_sleep)
    # b: 400 > 250, down to 200; then the store: 600 > 500, down to 400 (a's two oldest)
    assert report.by_reason == {"tenant": 2, "store": 2} and report.by_tenant == {"a": (2, 200), "b": (2, 200)}
    assert stored(index, "a", a) == [False, False, True, True] and stored(index, "b", b) == [False, False, True, True]
    clock.tick(100)
    index.record_hits("b", "m1", {b[3]: 1})
    report = evict(index, store, EvictionPolicy(ttl_s=50), clock=clock, sleep=no_sleep)
    assert report.by_reason == {"ttl": 3} and stored(index, "b", b) == [False, False, False, True]
    assert len(entry_objects(store)) == 1


def test_only_the_named_tenant_is_evicted(url, index, store, clock):
    fill(index, store, clock, "a", 3), fill(index, store, clock, "b", 3)
    policy = EvictionPolicy(tenant=Watermarks(100, 100), store=Watermarks(100, 100))
    assert evict(index, store, policy, tenant="b", sleep=no_sleep).by_tenant == {"b": (2, 200)}


def test_a_reader_that_looked_an_entry_up_still_gets_its_object(url, index, store, clock):
    (block,) = fill(index, store, clock, "a", 1)
    (row,) = index.lookup("a", [block], "m1")  # a generation replica's lookup, just before eviction
    read: list[bytes | None] = []
    report = evict(index, store, EvictionPolicy(tenant=Watermarks(50, 0)), reader_grace_s=5.0,
                   sleep=lambda s: read.append(store.get(row.location)))  # its get, during the pause
    assert report.entries == 1 and read == [bytes([0]) * SIZE]
    assert not index.lookup("a", [block], "m1")[0].hit and store.get(row.location) is None


def test_a_bad_reader_grace_is_refused_before_any_row_goes(url, index, store, clock):
    ids = fill(index, store, clock, "a", 2)
    for grace in (-1, float("nan")):
        with pytest.raises(InvalidRequestError, match="reader_grace_s"):
            evict(index, store, EvictionPolicy(tenant=Watermarks(50, 0)), reader_grace_s=grace)
    assert stored(index, "a", ids) == [True, True]


def test_a_crash_between_rows_and_objects_leaves_orphans_only(url, index, store, clock):
    ids = fill(index, store, clock, "a", 4)
    process = multiprocessing.get_context("spawn").Process(target=evict_in_process,
                                                           args=(url, str(store.root), 300, 100))
    process.start()
    process.join()
    assert process.exitcode == 17
    assert stored(index, "a", ids) == [False, False, False, True]  # rows gone in one transaction
    assert len(entry_objects(store)) == 4  # no object deleted: every row left names an object
    report = sweep_orphans(index, store, grace_s=0)
    assert report.deleted == 3 and list(entry_objects(store)) == [rows(url, "kv_entries")[0][2]]


@pytest.mark.parametrize(("make", "match"), [
    (lambda: Watermarks(0, 0), "high_bytes"),
    (lambda: Watermarks(10, 20), "low_bytes <= high_bytes"),
    (lambda: Watermarks(-1, 0), "high_bytes"),
    (lambda: EvictionPolicy(ttl_s=0), "ttl_s"),
    (lambda: EvictionPolicy(ttl_s=float("nan")), "ttl_s"),  # NaN: nothing is ever idle, silently
    (lambda: EvictionPolicy(tenant=(10, 5)), "Watermarks"),
])
def test_bad_policies_are_refused(make, match):
    with pytest.raises(InvalidRequestError, match=match):
        make()
