"""EntryWriter: KV frames into the object store and their entries into the cache index, so that
concurrent writers, crashes and the orphan sweeper never leave an entry naming a missing object.

Each write puts a NEW object: ``entry_object_name`` is the cache key plus a random write id, so
no object is ever overwritten or deleted while another writer is putting the same name (with
names shared by content, an eviction or a sweep deleting key K could land right after a
concurrent writer re-put K and before it committed its row: a row naming a deleted object).

    1. begin_writes   the intents (kv_writes rows) name the objects about to exist
    2. put            each frame, to its unique name (atomic: temp file + rename, one S3 PUT)
    3. finish_writes  intents swapped for kv_entries rows in one transaction; where another
                      writer committed the block first its row stays, and ours is unneeded
                      (a recompute replaces only entries older than when it found them bad)
    4. delete         the unneeded objects (losing copies, objects replaced)

A put that fails (the store unreachable) drops the write's intents at once: what it may have
put is named by no row, and the sweeper deletes it once older than its grace period. A crash
after 1 or 2 leaves an intent and perhaps an object: no entry, so no reader looks for it; the
sweeper (kvcache.sweeper) expires the intent after its grace period and deletes the
object. A crash after 3 leaves unneeded objects that no row names: swept too. Many clients
ingesting one block at once therefore end with one entry and, once step 4 ran (or the sweep),
one object.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from blockrag.errors import CacheIndexError, ObjectStoreError
from blockrag.kvcache.index import CacheIndex, KVEntry
from blockrag.kvcache.key import CacheKey
from blockrag.kvcache.object_store import ObjectStore

log = logging.getLogger("blockrag.kvcache")

# "<64 hex cache key>.<16 hex write id>": the only names the sweeper may delete. Objects under
# other names share the store and are not the index's (the prompt's opening block, kept by its
# bare cache key; distillation checkpoints and adapters; entries written before write ids).
ENTRY_NAME = re.compile(r"[0-9a-f]{64}\.[0-9a-f]{16}")
ATTEMPTS = 2  # a write whose intent the sweeper expired (it outlived the grace period) is redone once


def entry_object_name(key: CacheKey) -> str:
    """A fresh object name for one write of ``key``'s KV."""
    return f"{key.hex}.{secrets.token_hex(8)}"


@dataclass(frozen=True)
class EntryFrame:
    """One block's KV to store: its id, its cache key and the encoded frame (KVCodec)."""

    block_id: str
    key: CacheKey
    frame: bytes


class EntryWriter:
    def __init__(self, index: CacheIndex, store: ObjectStore):
        self.index, self.store = index, store

    def write(self, tenant: str, model_version: str, frames: Sequence[EntryFrame], *,
              replace_before: float | None = None) -> list[KVEntry]:
        """Store every frame and commit its entry; the entry in effect per frame, in order (a
        concurrent writer's when it committed the block first).

        ``replace_before``: when the caller found the stored entries missing or corrupt (the
        index's clock, ``CacheIndex.now``); ours replace entries committed before then. None:
        an existing entry always stays.
        The blocks must be registered (InvalidRequestError). CacheIndexError when a write
        outlived the sweeper's grace period twice."""
        pending = {f.block_id: f for f in frames}  # one write per block (the last frame given)
        kept: dict[str, KVEntry] = {}
        for _ in range(ATTEMPTS):
            if not pending:
                break
            names = {b: entry_object_name(f.key) for b, f in pending.items()}
            entries = {b: KVEntry(b, model_version, self.store.location_for(n), len(pending[b].frame))
                       for b, n in names.items()}
            kept.update(self._write(tenant, entries, names, pending, replace_before))
            pending = {b: f for b, f in pending.items() if b not in kept}
        if pending:
            raise CacheIndexError(
                f"{len(pending)} KV write(s) of tenant {tenant!r} outlived the orphan sweeper's grace period "
                f"twice (their objects were swept before their entries committed); raise the grace period")
        return [kept[f.block_id] for f in frames]

    def _write(self, tenant: str, entries: dict[str, KVEntry], names: dict[str, str],
               frames: dict[str, EntryFrame], replace_before: float | None) -> dict[str, KVEntry]:
        self.index.begin_writes(tenant, list(entries.values()))
        try:
            for block_id, name in names.items():
                self.store.put(name, frames[block_id].frame)
        except ObjectStoreError:
            # nothing of this write commits: its intents go now, so the blocks it was for are free
            # to forget (BlockWriter), and what it put is an orphan the sweeper deletes by its age.
            # A crash here (or an index that cannot answer) leaves the intents for the sweeper
            self.index.abandon_writes([e.location for e in entries.values()])
            raise
        done = self.index.finish_writes(tenant, list(entries.values()), replace_before=replace_before)
        # expired: the sweeper may have looked before our put landed, so the object is ours to delete.
        # A replaced row may have named an object that is not this block's (planted, swapped: its
        # frame was refused as foreign); it may be another tenant's live entry, so only objects named
        # for these frames' cache keys go now, the rest is the sweeper's once no row names them
        keys = {self.store.location_for(f.key.hex) for f in frames.values()}
        for location in done.unneeded + done.expired:
            # "<key>.<write id>", or the bare "<key>" of an entry written before write ids (whose
            # store root may hold a dot of its own)
            if location in keys or location.rsplit(".", 1)[0] in keys:
                self.store.delete(location)
        if done.expired:
            log.warning("%d KV write(s) of tenant %r were expired by the orphan sweeper before they committed; "
                        "writing them again", len(done.expired), tenant)
        sizes = {e.location: e.nbytes for e in entries.values()}
        # a winner's size is taken as ours: one block's frame under one version has one size
        return {b: KVEntry(b, v, loc, sizes.get(loc, entries[b].nbytes)) for (b, v), loc in done.kept.items()}
