"""The orphan sweeper over a real index (SQLite, PostgreSQL) and real stores (a local directory,
an S3 server): it deletes old entry objects no row names, and nothing else."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest
from kv_parts import TENANT, TEXT, VERSION, clean, entry_objects, frame

from blockrag.errors import InvalidRequestError
from blockrag.kvcache.entry_writer import EntryWriter, entry_object_name
from blockrag.kvcache.index import CacheIndex, KVEntry
from blockrag.kvcache.key import CacheKey
from blockrag.kvcache.object_store import LocalObjectStore, ObjectStore
from blockrag.kvcache.s3_store import S3Config, S3ObjectStore
from blockrag.kvcache.sweeper import SweepReport, sweep_orphans

LATER = 2 * 3600.0


def later() -> float:
    return time.time() + LATER


@pytest.fixture
def index(url: str):
    index = CacheIndex.open(url)
    clean(url)
    index.register_blocks(TENANT, [(TEXT, 9), ("Another block.", 3)])
    yield index
    index.close()


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "kv")
    server = request.getfixturevalue("s3_server")
    return S3ObjectStore(S3Config(endpoint=server.endpoint, bucket=f"sweep-{secrets.token_hex(4)}",
                                  access_key=server.access_key, secret_key=server.secret_key))


def test_only_old_unnamed_entry_objects_go(url, index, store):
    (entry,) = EntryWriter(index, store).write(TENANT, VERSION, [frame(1)])  # named by its entry
    key = CacheKey.of(TENANT, VERSION, [5, 6])
    orphans = [store.put(entry_object_name(key), b"o" * n) for n in (10, 20)]  # no row names them
    others = [store.put(key.hex, b"opening block, kept by its bare key"),
              store.put("adapter-mv_0123.safetensors", b"distillation keeps its own objects")]
    # an entry committed without an intent (the CommitEntries RPC) is named too
    rpc_written = store.put(entry_object_name(key), b"r")
    index.commit_entries(TENANT, [KVEntry(index.register_blocks(TENANT, [("Another block.", 3)])[0], VERSION,
                                          rpc_written, 1)])
    assert sweep_orphans(index, store) == SweepReport(scanned=4, deleted=0, deleted_bytes=0, young=4,
                                                     expired_writes=0)
    dry = sweep_orphans(index, store, clock=later, dry_run=True)
    assert dry == SweepReport(scanned=4, deleted=2, deleted_bytes=30, young=0, expired_writes=0)
    assert len(entry_objects(store)) == 4  # a dry run deletes nothing
    assert sweep_orphans(index, store, clock=later) == dry
    assert sorted(entry_objects(store)) == sorted([entry.location, rpc_written])
    assert all(store.get(o) is None for o in orphans) and all(store.get(o) is not None for o in others)
    assert sweep_orphans(index, store, clock=later).deleted == 0  # nothing left to do


def test_grace_must_be_a_non_negative_number(url, index, store):
    for grace_s in (-1, "1h", True, float("nan")):  # NaN: every age compares false, no object would be old
        with pytest.raises(InvalidRequestError, match="grace_s"):
            sweep_orphans(index, store, grace_s=grace_s)


def test_partial_local_writes_go_after_the_grace_period(url, index, tmp_path):
    store = LocalObjectStore(tmp_path / "kv")
    store.put(entry_object_name(CacheKey.of(TENANT, VERSION, [1])), b"x")  # makes a fan-out directory
    (fan,) = [p for p in store.root.iterdir()]
    (fan / ".tmp-died").write_bytes(b"half a frame")  # a put killed before its rename
    assert sweep_orphans(index, store).partial_writes == 0  # it may be a put still going
    assert sweep_orphans(index, store, clock=later).partial_writes == 1
    assert [p.name for p in fan.iterdir()] == []
