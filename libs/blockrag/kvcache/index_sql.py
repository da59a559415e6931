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
    c = kv_entries.c
    total = int(
        conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(c.nbytes), 0)).where(c.tenant == tenant)
        ).scalar_one()
    )
    if total <= max_bytes:
        return []
    # Ties in last access are broken by key, so the order is deterministic.
    oldest_first = (
        sa.select(c.block_id, c.model_version, c.nbytes)
        .where(c.tenant == tenant)
        .order_by(c.last_access_at, c.block_id, c.model_version)
    )
    victims: list[tuple[str, str]] = []
    for block_id, model_version, nbytes in conn.execute(oldest_first):
        if total <= max_bytes:
            break
        victims.append((block_id, model_version))
        total -= nbytes
    deleted: dict[tuple[str, str], EntryRow] = {}
    key = sa.tuple_(c.block_id, c.model_version)
    for chunk in chunks(victims):
        for row in delete_entries(conn, c.tenant == tenant, key.in_(chunk)):
            deleted[(row.block_id, row.model_version)] = row
    return [deleted[k] for k in victims if k in deleted]
