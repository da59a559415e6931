"""The statements behind the per-tenant quotas shared by every writer of one index: the tokens
precomputed per second (quota_tokens) and the KV bytes held by writes in flight (quota_holds).

An admission is one write transaction, under a lock per tenant:

    read    the tenant's stored bytes (its entries, plus the bytes its writes in flight hold)
            and the tokens it spent in the window, per second
    check   the caller's rule (resolve.TenantQuotas), which raises to refuse: nothing is written
    record  the tokens in the current second's row, the bytes in a hold named by the write's plan;
            the tenant's rows gone from the window (lapsed holds) are deleted on the way

The lock serializes the admissions of one tenant across threads, processes and replicas: on
PostgreSQL a transaction-scoped advisory lock keyed by the tenant (two writers that read the same
sum before either recorded would both be admitted; row locks cannot stop that, as the rows to be
added do not exist yet); on SQLite the write lock every write transaction takes (BEGIN IMMEDIATE).

Tokens admitted at time t go into the row of second ceil(t) and count until ceil(t) + window:
never less than the window, at most a second more (a quota is never exceeded by the rounding).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from blockrag.kvcache.index_schema import kv_entries, quota_holds, quota_tokens

HOLD_S = 900.0  # a hold its writer never ended (a crash) lapses after this: far above one write
KEPT_S = 3600.0  # maintenance deletes quota rows older than this (no quota window is longer)
# pg_advisory_xact_lock(class, key): the class keeps these keys apart from other advisory locks
# (the two-key space does not overlap the one-key space the migrations lock in)
_LOCK_CLASS = 0x71756F74  # b"quot"


@dataclass(frozen=True)
class Usage:
    """A tenant's usage as one admission sees it, under the tenant's lock."""

    stored_bytes: int  # KV bytes of its entries plus those its writes in flight hold (0 unless asked)
    spent: tuple[tuple[int, int], ...]  # (second, tokens) admitted in the window, oldest first

    @property
    def tokens(self) -> int:
        return sum(n for _, n in self.spent)


@dataclass(frozen=True)
class Charge:
    """What one admission asks and, if admitted, records."""

    at: float  # unix seconds, the quotas' clock
    window_s: float  # the rate quota's window
    tokens: int = 0  # precompute tokens to record (0: none)
    count_bytes: bool = False  # read the stored bytes (a bytes quota applies)
    nbytes: int = 0  # KV bytes to hold until ``plan``'s write ends (0: none)
    plan: str | None = None  # the write's plan id, which ends the hold (end_plan)
    hold_s: float = HOLD_S


def admit(conn: sa.Connection, tenant: str, charge: Charge, check: Callable[[Usage], None]) -> None:
    """Read the tenant's usage, let ``check`` refuse (by raising: the transaction then writes
    nothing), else record ``charge`` (see the module docstring)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(CAST(:lock_class AS integer), hashtext(:tenant))"),
                     {"lock_class": _LOCK_CLASS, "tenant": tenant})
    q, h, k = quota_tokens.c, quota_holds.c, kv_entries.c
    stored = 0
    if charge.count_bytes:
        stored = int(conn.execute(sa.select(sa.func.coalesce(sa.func.sum(k.nbytes), 0))
                                  .where(k.tenant == tenant)).scalar_one())
        stored += int(conn.execute(sa.select(sa.func.coalesce(sa.func.sum(h.nbytes), 0))
                                   .where(h.tenant == tenant, h.expires_at > charge.at)).scalar_one())
    start = charge.at - charge.window_s
    spent = tuple((int(s), int(n)) for s, n in conn.execute(
        sa.select(q.second, q.tokens).where(q.tenant == tenant, q.second > start).order_by(q.second)))
    check(Usage(stored, spent))
    conn.execute(sa.delete(quota_tokens).where(q.tenant == tenant, q.second <= start))
    conn.execute(sa.delete(quota_holds).where(h.tenant == tenant, h.expires_at <= charge.at))
    if charge.tokens:
        _add_tokens(conn, tenant, math.ceil(charge.at), charge.tokens)
    if charge.nbytes and charge.plan is not None:
        conn.execute(sa.insert(quota_holds), [dict(plan=charge.plan, tenant=tenant, nbytes=charge.nbytes,
                                                   expires_at=charge.at + charge.hold_s)])


def release_hold(conn: sa.Connection, plan: str) -> None:
    """End the bytes hold of ``plan`` (its write ended: its entries count now, or it failed)."""
    conn.execute(sa.delete(quota_holds).where(quota_holds.c.plan == plan))


def prune(conn: sa.Connection, now: float) -> int:
    """Delete every tenant's token rows older than KEPT_S and its lapsed holds, at ``now``; how many."""
    q, h = quota_tokens.c, quota_holds.c
    gone = conn.execute(sa.delete(quota_tokens).where(q.second < now - KEPT_S)).rowcount
    return gone + conn.execute(sa.delete(quota_holds).where(h.expires_at <= now)).rowcount


def _add_tokens(conn: sa.Connection, tenant: str, second: int, tokens: int) -> None:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(quota_tokens).values(tenant=tenant, second=second, tokens=tokens)
    conn.execute(stmt.on_conflict_do_update(index_elements=["tenant", "second"],
                                            set_={"tokens": quota_tokens.c.tokens + stmt.excluded.tokens}))
