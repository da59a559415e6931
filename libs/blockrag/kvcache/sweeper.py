"""The orphan sweeper: deletes KV objects that no cache index row names, once they are old enough.

Orphans come from crashes (a writer that died between its put and its commit, an eviction that
died between deleting rows and deleting objects) and from writes that lost a race and died
before deleting their copy. A sweep:

    1. expires the intents (kv_writes) older than the grace period: their writers are gone
       (EntryWriter redoes a write whose intent it finds expired), and deletes their objects;
    2. lists the store and deletes every entry object (kvcache.entry_writer.ENTRY_NAME) older
       than the grace period that neither an entry nor an intent names;
    3. removes what puts that died midway left (a local store's temp files) past the grace period.

An object being written is named by its intent from before it exists, so step 2 never takes
it; the grace period on the object's age is a second guard, for writers that commit without
intents (CacheIndex.commit_entries; the CommitEntries RPC refuses callers) and for clocks that disagree. Names
that are not entry names (the prompt's opening block, distillation checkpoints, entries written
before write ids existed) are never touched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from blockrag.errors import InvalidRequestError
from blockrag.kvcache.entry_writer import ENTRY_NAME
from blockrag.kvcache.index import CacheIndex
from blockrag.kvcache.index_sql import CHUNK
from blockrag.kvcache.object_store import ObjectInfo, ObjectStore

DEFAULT_GRACE_S = 3600.0  # far above any one write (encode + put + commit of a batch)


@dataclass(frozen=True)
class SweepReport:
    scanned: int  # entry objects listed
    deleted: int  # orphans deleted (dry run: that would be)
    deleted_bytes: int
    young: int  # younger than the grace period: not examined, kept
    expired_writes: int  # intents of writers gone, forgotten (their objects deleted)
    partial_writes: int = 0  # leftovers of puts that died midway (local temp files), removed


def sweep_orphans(index: CacheIndex, store: ObjectStore, *, grace_s: float = DEFAULT_GRACE_S,
                  dry_run: bool = False, clock: Callable[[], float] = time.time) -> SweepReport:
    """One sweep (see the module docstring); ``dry_run`` counts without deleting anything.

    Safe beside writers, readers and other sweeps: it deletes only objects no row names, and
    only after the rows had a grace period to appear."""
    if isinstance(grace_s, bool) or not isinstance(grace_s, int | float) or not grace_s >= 0:  # NaN too
        raise InvalidRequestError(f"grace_s must be a number of seconds >= 0, got {grace_s!r}")
    cutoff = clock() - grace_s
    expired = [] if dry_run else index.expire_writes(cutoff)
    for location in expired:
        store.delete(location)
    scanned = young = deleted = deleted_bytes = 0
    batch: list[ObjectInfo] = []

    def settle(batch: list[ObjectInfo]) -> None:
        nonlocal deleted, deleted_bytes
        named = index.named([o.location for o in batch])
        for o in batch:
            if o.location not in named:
                if not dry_run:
                    store.delete(o.location)
                deleted, deleted_bytes = deleted + 1, deleted_bytes + o.nbytes

    for info in store.list_objects():
        if not ENTRY_NAME.fullmatch(info.name):
            continue
        scanned += 1
        if info.modified_at >= cutoff:
            young += 1
            continue
        batch.append(info)
        if len(batch) >= CHUNK:
            settle(batch)
            batch = []
    if batch:
        settle(batch)
    partial = 0 if dry_run else store.remove_partial_writes(cutoff)
    return SweepReport(scanned, deleted, deleted_bytes, young, len(expired), partial)
