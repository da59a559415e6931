"""Parts of the consistency tests, importable by the processes they spawn: an index over a URL
cleaned per test, frames of known bytes, and what the store and index hold."""

from __future__ import annotations

import os

import sqlalchemy as sa
from fixtures.index_db import empty_index_tables

from blockrag.kvcache.entry_writer import ENTRY_NAME, EntryFrame, EntryWriter
from blockrag.kvcache.index import CacheIndex, block_id_for
from blockrag.kvcache.index_engine import IndexConfig, create_index_engine
from blockrag.kvcache.key import CacheKey
from blockrag.kvcache.object_store import LocalObjectStore, ObjectStore

TENANT, VERSION, TEXT = "acme", "m1", "Ferries to Skarvholm leave twice a day."
FRAME_BYTES = 64 << 10


def clean(url: str) -> None:
    """Empty the index tables (the PostgreSQL database is shared by the session's tests)."""
    empty_index_tables(url)


def frame(writer: int, text: str = TEXT) -> EntryFrame:
    """The block of ``text``; its bytes tell which writer made them."""
    return EntryFrame(block_id_for(TENANT, text), CacheKey.of(TENANT, VERSION, [len(text), 7]),
                      bytes([writer]) * FRAME_BYTES)


def entry_objects(store: ObjectStore) -> dict[str, bytes]:
    """location -> bytes of every entry object in the store."""
    return {o.location: store.get(o.location) for o in store.list_objects() if ENTRY_NAME.fullmatch(o.name)}


def rows(url: str, table: str) -> list[tuple]:
    engine = create_index_engine(IndexConfig(url))
    try:
        with engine.begin() as conn:
            columns = "block_id, model_version, location" if table == "kv_entries" else "location"
            return [tuple(r) for r in conn.execute(sa.text(f"SELECT {columns} FROM {table}"))]
    finally:
        engine.dispose()


def write_in_process(url: str, root: str, writer: int, start_at: float) -> str:
    """One client in its own process: wait for the common start, write the block, return the
    location in effect (run through multiprocessing's spawn)."""
    import time

    index = CacheIndex.open(url)
    try:
        time.sleep(max(0.0, start_at - time.time()))
        (entry,) = EntryWriter(index, LocalObjectStore(root)).write(TENANT, VERSION, [frame(writer)])
        return entry.location
    finally:
        index.close()


class CrashAfter:
    """An ObjectStore that kills its process (os._exit: no cleanup, no exception handlers) right
    after the real ``put`` or before the real ``delete``: a crash between two steps of a write."""

    def __init__(self, store: ObjectStore, step: str):
        self.store, self.step = store, step

    def put(self, name: str, data: bytes) -> str:
        location = self.store.put(name, data)
        if self.step == "put":
            os._exit(17)
        return location

    def delete(self, location: str) -> None:
        if self.step == "delete":
            os._exit(17)
        self.store.delete(location)

    def __getattr__(self, name: str):
        return getattr(self.store, name)


def crash_in_process(url: str, root: str, step: str, writer: int) -> None:
    """Write the block through a store that crashes at ``step`` (never returns)."""
    index = CacheIndex.open(url)
    EntryWriter(index, CrashAfter(LocalObjectStore(root), step)).write(TENANT, VERSION, [frame(writer)])


def evict_in_process(url: str, root: str, high: int, low: int) -> None:
    """Evict through a store that crashes at its first object delete (never returns)."""
    from blockrag.kvcache.eviction import EvictionPolicy, Watermarks, evict

    index = CacheIndex.open(url)
    evict(index, CrashAfter(LocalObjectStore(root), "delete"), EvictionPolicy(tenant=Watermarks(high, low)),
          reader_grace_s=0)
