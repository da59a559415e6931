"""EntryWriter against the real SQLite and PostgreSQL and a local object store: many clients
writing one block end with one entry and one object; a crash between the steps of a write never
leaves an entry naming a missing object, and the sweeper clears what the crash left."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path

import pytest
from kv_parts import (
    TENANT,
    TEXT,
    VERSION,
    clean,
    crash_in_process,
    entry_objects,
    frame,
    rows,
    write_in_process,
)

from blockrag.errors import CacheIndexError
from blockrag.kvcache.entry_writer import ENTRY_NAME, EntryWriter, entry_object_name
from blockrag.kvcache.index import CacheIndex, KVEntry
from blockrag.kvcache.key import CacheKey
from blockrag.kvcache.object_store import LocalObjectStore
from blockrag.kvcache.sweeper import SweepReport, sweep_orphans

CLIENTS = 6
LATER = 2 * 3600.0  # a sweep's clock this far ahead sees every object past its grace period


@pytest.fixture
def index(url: str):
    index = CacheIndex.open(url)
    clean(url)
    index.register_blocks(TENANT, [(TEXT, 9)])
    yield index
    index.close()


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "kv")


def later() -> float:
    return time.time() + LATER


def assert_one_entry_and_its_object(url: str, store: LocalObjectStore) -> str:
    (row,) = rows(url, "kv_entries")
    assert row[:2] == (frame(0).block_id, VERSION)
    assert list(entry_objects(store)) == [row[2]]  # its object, and no other
    assert rows(url, "kv_writes") == []
    return row[2]


def test_object_names_are_the_key_and_a_write_id() -> None:
    key = CacheKey.of(TENANT, VERSION, [1, 2])
    first, second = entry_object_name(key), entry_object_name(key)
    assert first != second and first.startswith(key.hex + ".") and len(first) == 64 + 1 + 16
    assert ENTRY_NAME.fullmatch(first) and not ENTRY_NAME.fullmatch(key.hex)


@pytest.mark.parametrize("replace", [False, True], ids=["ingest", "recompute"])
def test_clients_in_threads_end_with_one_entry_and_one_object(url, index, store, replace):
    replace_before = None
    if replace:  # an entry stored before every client found it corrupt: each means to replace it
        EntryWriter(index, store).write(TENANT, VERSION, [frame(99)])
        replace_before = index.now()
    start = threading.Barrier(CLIENTS)
    got: dict[int, str] = {}

    def client(i: int) -> None:
        with CacheIndex.open(url) as own:  # a connection pool of its own, as another replica
            start.wait()
            (entry,) = EntryWriter(own, store).write(TENANT, VERSION, [frame(i)], replace_before=replace_before)
            got[i] = entry.location

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    location = assert_one_entry_and_its_object(url, store)
    assert set(got.values()) == {location}  # every client was told where the one entry lives
    data = store.get(location)
    assert data[0] in range(CLIENTS) and data == bytes([data[0]]) * len(data)  # one client's whole frame
    assert index.lookup(TENANT, [frame(0).block_id], VERSION)[0].nbytes == len(data)


def test_clients_in_processes_end_with_one_entry_and_one_object(url, index, store):
    start_at = time.time() + 3.0  # spawned interpreters take a while to import; then all at once
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        got = pool.starmap(write_in_process, [(url, str(store.root), i, start_at) for i in range(4)])
    location = assert_one_entry_and_its_object(url, store)
    assert set(got) == {location}


def test_a_crash_between_put_and_commit_leaves_no_entry_and_is_swept(url, index, store):
    process = multiprocessing.get_context("spawn").Process(
        target=crash_in_process, args=(url, str(store.root), "put", 1))
    process.start()
    process.join()
    assert process.exitcode == 17
    (orphan,) = entry_objects(store)
    assert rows(url, "kv_entries") == [] and rows(url, "kv_writes") == [(orphan,)]
    assert not index.lookup(TENANT, [frame(0).block_id], VERSION)[0].hit  # nobody looks for it
    # within the grace period the write may still be going: kept
    assert sweep_orphans(index, store) == SweepReport(scanned=1, deleted=0, deleted_bytes=0, young=1,
                                                     expired_writes=0)
    assert list(entry_objects(store)) == [orphan]
    report = sweep_orphans(index, store, clock=later)
    assert (report.expired_writes, entry_objects(store), rows(url, "kv_writes")) == (1, {}, [])
    # a client after the crash writes the block as if nothing happened
    EntryWriter(index, store).write(TENANT, VERSION, [frame(2)])
    assert store.get(assert_one_entry_and_its_object(url, store)) == frame(2).frame


def test_a_crash_after_commit_leaves_the_losing_copy_to_the_sweeper(url, index, store):
    (winner,) = EntryWriter(index, store).write(TENANT, VERSION, [frame(1)])
    process = multiprocessing.get_context("spawn").Process(
        target=crash_in_process, args=(url, str(store.root), "delete", 2))  # loses, dies deleting its copy
    process.start()
    process.join()
    assert process.exitcode == 17
    assert rows(url, "kv_entries") == [(frame(0).block_id, VERSION, winner.location)]
    assert len(entry_objects(store)) == 2 and rows(url, "kv_writes") == []
    report = sweep_orphans(index, store, clock=later)
    assert (report.scanned, report.deleted, report.deleted_bytes) == (2, 1, len(frame(2).frame))
    assert store.get(assert_one_entry_and_its_object(url, store)) == frame(1).frame


class SweptDuringPut:
    """A writer slower than the grace period: the sweeper runs (its clock past the grace period)
    between this store's put and the writer's commit, ``times`` times."""

    def __init__(self, store: LocalObjectStore, index: CacheIndex, times: int):
        self.store, self.index, self.times = store, index, times

    def put(self, name: str, data: bytes) -> str:
        location = self.store.put(name, data)
        if self.times:
            self.times -= 1
            sweep_orphans(self.index, self.store, clock=later)
        return location

    def __getattr__(self, name: str):
        return getattr(self.store, name)


def test_a_write_whose_intent_was_swept_is_redone(url, index, store):
    (entry,) = EntryWriter(index, SweptDuringPut(store, index, times=1)).write(TENANT, VERSION, [frame(3)])
    assert assert_one_entry_and_its_object(url, store) == entry.location
    assert store.get(entry.location) == frame(3).frame


def test_a_write_swept_twice_fails_and_leaves_nothing(url, index, store):
    with pytest.raises(CacheIndexError, match="grace period"):
        EntryWriter(index, SweptDuringPut(store, index, times=2)).write(TENANT, VERSION, [frame(3)])
    assert (rows(url, "kv_entries"), rows(url, "kv_writes"), entry_objects(store)) == ([], [], {})


def test_recompute_replaces_only_an_entry_older_than_its_finding(url, index, store):
    writer = EntryWriter(index, store)
    found_bad_at = index.now()
    (old,) = writer.write(TENANT, VERSION, [frame(1)])
    (new,) = writer.write(TENANT, VERSION, [frame(2)])  # plain ingest: the stored entry stays
    # committed after the caller found the entry bad: another client's fresh one, kept
    assert writer.write(TENANT, VERSION, [frame(2)], replace_before=found_bad_at) == [old] == [new]
    (new,) = writer.write(TENANT, VERSION, [frame(2)], replace_before=index.now())  # found bad since: replaced
    assert new != old and new == KVEntry(frame(0).block_id, VERSION, new.location, len(frame(2).frame))
    assert store.get(assert_one_entry_and_its_object(url, store)) == frame(2).frame


def test_a_recompute_deletes_only_objects_named_for_its_block(url, index, store):
    """A row replaced by a recompute may name an object that is not this block's (planted at
    another tenant's live entry, issue 14): that one stays; this block's own old objects, with a
    write id or from before write ids (its bare key), go."""
    writer = EntryWriter(index, store)
    planted = store.put(entry_object_name(CacheKey.of("other-tenant", VERSION, [1, 2])), b"theirs")
    index.commit_entries(TENANT, [KVEntry(frame(0).block_id, VERSION, planted, 6)])
    (mine,) = writer.write(TENANT, VERSION, [frame(1)], replace_before=index.now())
    assert mine.location != planted and store.get(planted) == b"theirs"

    legacy = store.put(frame(0).key.hex, b"old")  # an entry written before write ids
    index.commit_entries(TENANT, [KVEntry(frame(0).block_id, VERSION, legacy, 3)])
    writer.write(TENANT, VERSION, [frame(2)], replace_before=index.now())
    assert not store.exists(legacy) and store.get(planted) == b"theirs"
