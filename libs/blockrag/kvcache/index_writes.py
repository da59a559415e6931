"""The statements behind KV writes in flight (kv_writes) and the orphan sweep's questions.

A write is two steps around the object's put (kvcache.entry_writer says why):

    begin_writes   INSERT kv_writes (the intent: this location is being written)
    ...            the writer puts the object
    finish_writes  DELETE its kv_writes rows and upsert kv_entries, in ONE transaction

so every object a writer puts is named by a kv_writes row or a kv_entries row from before it
exists until its entry is evicted; the sweeper deletes only objects that neither names.

Before either step, a write plan claims the blocks it registers (block_claims, in the transaction
that registers them) until its write ends: a block is forgotten (CacheIndex.forget_blocks) only
when no document, entry, intent or claim names it, so a writer whose write failed cannot delete a
block another writer planned and has not yet begun to write.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from sqlalchemy.dialects import postgresql, sqlite

from blockrag.kvcache.index_schema import block_claims, kv_entries, kv_writes
from blockrag.kvcache.index_sql import chunks, upsert

Key = tuple[str, str]  # (block_id, model_version)


@dataclass(frozen=True)
class Finished:
    """What ``finish_writes`` decided, as locations (the caller maps them back to entries).

    ``kept``: (block, version) -> the location its row names now (ours, or a concurrent
    writer's that won); ``unneeded``: objects no row names any more (our losing copies, the
    objects our rows replaced), to delete; ``expired``: our writes whose intent the sweeper
    expired (their objects may be gone: not committed)."""

    kept: dict[Key, str]
    unneeded: list[str]
    expired: list[str]


def begin_writes(conn: sa.Connection, tenant: str, rows: Sequence[tuple[str, str, str]], now: float) -> None:
    """Record intents, given as (location, block_id, model_version); locations are unique."""
    conn.execute(sa.insert(kv_writes), [
        dict(location=loc, tenant=tenant, block_id=b, model_version=v, started_at=now) for loc, b, v in rows])


def finish_writes(conn: sa.Connection, tenant: str, rows: list[dict[str, object]], *,
                  replace_before: float | None) -> Finished:
    """Swap our intents for kv_entries rows (``rows``: kv_entries values, one per key, sorted).

    An entry another writer committed while we wrote wins, and ours is unneeded: clients that
    ingest one block at once end with its one object. With ``replace_before`` (unix seconds,
    when the caller found the stored entry missing or corrupt), ours replaces an entry
    committed before then, and the replaced object is unneeded; one committed since is fresh
    and stays. The times come from the writers' clocks: a skew costs at worst an extra replace
    (the replaced object is deleted, a reader of it recomputes) or a corrupt entry kept once
    more (its next reader recomputes again)."""
    w = kv_writes.c
    ours: set[str] = set()
    for chunk in chunks([str(r["location"]) for r in rows]):
        ours.update(conn.execute(sa.delete(kv_writes).where(w.location.in_(chunk)).returning(w.location)).scalars())
    live = [r for r in rows if r["location"] in ours]
    expired = [str(r["location"]) for r in rows if r["location"] not in ours]
    if not live:
        return Finished({}, [], expired)
    key_of = {str(r["location"]): (str(r["block_id"]), str(r["model_version"])) for r in live}
    replace = replace_before is not None
    before = _entries(conn, tenant, list(key_of.values()), lock=replace)
    stale = [r for r in live if replace and key_of[str(r["location"])] in before
             and before[key_of[str(r["location"])]][1] < replace_before]
    if stale:
        upsert(conn, kv_entries, stale, keys=("tenant", "block_id", "model_version"),
               update=("location", "nbytes", "created_at", "last_access_at"))
    replacing = {str(r["location"]) for r in stale}
    fresh = [r for r in live if r["location"] not in replacing]
    if fresh:  # DO NOTHING where a row exists: the other writer's stays
        upsert(conn, kv_entries, fresh, keys=("tenant", "block_id", "model_version"))
    kept = {key: loc for key, (loc, _) in _entries(conn, tenant, list(key_of.values()), lock=False).items()}
    unneeded = [before[key_of[str(r["location"])]][0] for r in stale]
    unneeded += [loc for loc, key in key_of.items() if kept.get(key) != loc]
    return Finished(kept, sorted(unneeded), expired)


def abandon_writes(conn: sa.Connection, locations: Sequence[str]) -> None:
    """Delete the intents of a write that failed before committing (its writer says so; the
    objects it may have put are then named by no row, and the sweeper takes them by their age)."""
    w = kv_writes.c
    for chunk in chunks(sorted(set(locations))):
        conn.execute(sa.delete(kv_writes).where(w.location.in_(chunk)))


def expire_writes(conn: sa.Connection, before: float) -> list[str]:
    """Delete intents started before ``before`` (their writers crashed or outlived the grace
    period); their locations."""
    w = kv_writes.c
    return sorted(conn.execute(sa.delete(kv_writes).where(w.started_at < before).returning(w.location)).scalars())


def claim_blocks(conn: sa.Connection, plan: str, tenant: str, block_ids: Sequence[str], now: float) -> None:
    """Claim ``block_ids`` (registered in this transaction) for ``plan`` until ``release_claims``."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(dialect.insert(block_claims).on_conflict_do_nothing(), [
        dict(plan=plan, tenant=tenant, block_id=b, claimed_at=now) for b in sorted(set(block_ids))])


def release_claims(conn: sa.Connection, plan: str) -> None:
    conn.execute(sa.delete(block_claims).where(block_claims.c.plan == plan))


def expire_claims(conn: sa.Connection, before: float) -> None:
    """Delete the claims made before ``before``: their writers crashed or outlived the grace period
    (the blocks are then left as after a crash, registered and unused)."""
    conn.execute(sa.delete(block_claims).where(block_claims.c.claimed_at < before))


def named(conn: sa.Connection, locations: Sequence[str]) -> set[str]:
    """Those of ``locations`` that a kv_entries or kv_writes row names."""
    k, w = kv_entries.c, kv_writes.c
    found: set[str] = set()
    for chunk in chunks(sorted(set(locations))):
        found.update(conn.execute(sa.select(k.location).where(k.location.in_(chunk))).scalars())
        found.update(conn.execute(sa.select(w.location).where(w.location.in_(chunk))).scalars())
    return found


def _entries(conn: sa.Connection, tenant: str, keys: list[Key], *, lock: bool) -> dict[Key, tuple[str, float]]:
    """(location, created_at) of the entries of ``keys`` that exist."""
    k = kv_entries.c
    out: dict[Key, tuple[str, float]] = {}
    for chunk in chunks(keys):
        query = sa.select(k.block_id, k.model_version, k.location, k.created_at).where(
            k.tenant == tenant, sa.tuple_(k.block_id, k.model_version).in_(chunk))
        if lock and conn.dialect.name == "postgresql":
            query = query.with_for_update()  # a concurrent replace waits; SQLite holds its write lock already
        out.update(((b, v), (loc, at)) for b, v, loc, at in conn.execute(query))
    return out
