"""Statements of the CacheIndex that SQLite and PostgreSQL spell alike only through care:
upserts, DELETE ... RETURNING, bounded IN lists and the LRU walk of eviction."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from blockrag.kvcache.index_schema import kv_entries

# Values per IN (...) list: well under SQLite's bound-parameter limit, whatever its build.
CHUNK = 500
T = TypeVar("T")


class EntryRow(NamedTuple):
    block_id: str
    model_version: str
    location: str
    nbytes: int


def chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    """``items`` in slices of at most CHUNK."""
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def upsert(
    conn: sa.Connection,
    table: sa.Table,
    rows: list[dict[str, object]],
    keys: Sequence[str],
    update: Sequence[str] = (),
) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE SET ``update`` (DO NOTHING when empty).

    ``rows`` must not repeat a key (PostgreSQL refuses to update a row twice in one statement)
    and should be sorted by key, so concurrent upserts lock rows in one order.
    """
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table)
    if update:
        stmt = stmt.on_conflict_do_update(
            index_elements=list(keys), set_={c: stmt.excluded[c] for c in update}
        )
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=list(keys))
    conn.execute(stmt, rows)


def delete_entries(conn: sa.Connection, *where: sa.ColumnElement[bool]) -> list[EntryRow]:
    """Delete the matching kv_entries in one statement; the rows it deleted."""
    c = kv_entries.c
    stmt = sa.delete(kv_entries).where(*where).returning(
        c.block_id, c.model_version, c.location, c.nbytes
    )
    return [EntryRow(*row) for row in conn.execute(stmt)]


def evict_lru(conn: sa.Connection, tenant: str, max_bytes: int) -> list[EntryRow]:
    """Delete the tenant's least recently used entries until its entries total at most
    ``max_bytes``; the deleted rows, least recently used first."""
    return [row for _, row in evict_lru_of(conn, tenant, max_bytes)]


def evict_idle(conn: sa.Connection, tenant: str | None, before: float) -> list[tuple[str, EntryRow]]:
    """Delete the entries of ``tenant`` (None: every tenant) last accessed before ``before``;
    (tenant, row) of each, sorted."""
    c = kv_entries.c
    mine = [] if tenant is None else [c.tenant == tenant]
    stmt = sa.delete(kv_entries).where(c.last_access_at < before, *mine).returning(
        c.tenant, c.block_id, c.model_version, c.location, c.nbytes)
    return sorted((owner, EntryRow(*row)) for owner, *row in conn.execute(stmt))


def evict_lru_of(conn: sa.Connection, tenant: str | None, max_bytes: int) -> list[tuple[str, EntryRow]]:
    """Delete the least recently used entries of ``tenant`` (None: of every tenant, the whole
    store) until they total at most ``max_bytes``; (tenant, row) of each, least recently used
    first."""
    c = kv_entries.c
    mine = [] if tenant is None else [c.tenant == tenant]
    total = int(conn.execute(sa.select(sa.func.coalesce(sa.func.sum(c.nbytes), 0)).where(*mine)).scalar_one())
    if total <= max_bytes:
        return []
    # Ties in last access are broken by key, so the order is deterministic.
    oldest_first = (
        sa.select(c.tenant, c.block_id, c.model_version, c.nbytes)
        .where(*mine)
        .order_by(c.last_access_at, c.tenant, c.block_id, c.model_version)
    )
    victims: list[tuple[str, str, str]] = []
    for owner, block_id, model_version, nbytes in conn.execute(oldest_first):
        if total <= max_bytes:
            break
        victims.append((owner, block_id, model_version))
        total -= nbytes
    deleted: dict[tuple[str, str, str], tuple[str, EntryRow]] = {}
    key = sa.tuple_(c.tenant, c.block_id, c.model_version)
    for chunk in chunks(victims):
        stmt = sa.delete(kv_entries).where(key.in_(chunk)).returning(
            c.tenant, c.block_id, c.model_version, c.location, c.nbytes)
        for owner, *row in conn.execute(stmt):
            deleted[(owner, row[0], row[1])] = (owner, EntryRow(*row))
    return [deleted[k] for k in victims if k in deleted]
