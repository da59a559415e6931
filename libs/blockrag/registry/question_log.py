"""QuestionLog: the questions tenants asked and the blocks that answered them.

Distillation trains on it, so it keeps what a tenant asked to that tenant: ``recent`` reads
one tenant's rows only. Tenants are named as in the CacheIndex ("" is "default"). Rows are
kept ``retention_days`` and at most ``max_rows_per_tenant`` per tenant; ``prune`` (called
periodically) deletes the rest, oldest first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from blockrag.errors import InvalidRequestError
from blockrag.kvcache.index import DEFAULT_TENANT, transaction
from blockrag.kvcache.index_schema import question_log
from blockrag.registry import _database as d

_Q = question_log.c
DAY_S = 86_400.0


@dataclass(frozen=True)
class LoggedQuestion:
    """A row of question_log."""

    id: int  # grows with every record: the order questions were logged in
    tenant: str
    question: str
    block_ids: tuple[str, ...]
    model_version: str
    created_at: float


class QuestionLog:
    """The question log in the index database (built with ``open_index_engine``, migrated)."""

    def __init__(
        self,
        engine: sa.Engine,
        retention_days: float,
        max_rows_per_tenant: int,
        *,
        clock: Callable[[], float] = time.time,
    ):
        """``retention_days`` > 0 and ``max_rows_per_tenant`` >= 1 (InvalidRequestError)."""
        self._engine = engine
        self.retention_s = d.positive(retention_days, "retention_days") * DAY_S
        self.max_rows_per_tenant = d.integer(max_rows_per_tenant, "max_rows_per_tenant", 1)
        self._clock = clock

    def record(
        self, tenant: str, question: str, block_ids: Sequence[str], model_version: str
    ) -> LoggedQuestion:
        """Log a question with the ids of the blocks it was answered from, in order."""
        if isinstance(block_ids, str) or not all(isinstance(b, str) for b in block_ids):
            raise InvalidRequestError(f"block_ids must be a list of ids; got {block_ids!r:.80}")
        row = dict(
            tenant=_tenant(tenant), question=d.text(question, "question"),
            block_ids=d.dump_json(list(block_ids), "block_ids", list),
            model_version=d.name(model_version, "model_version"), created_at=self._clock(),
        )
        with transaction(self._engine, "log question", write=True) as conn:
            new_id = conn.execute(sa.insert(question_log).returning(_Q.id), row).scalar_one()
        return _logged(dict(row, id=new_id))

    def recent(self, tenant: str, limit: int = 100) -> list[LoggedQuestion]:
        """The tenant's latest ``limit`` questions, newest first."""
        query = (
            sa.select(question_log)
            .where(_Q.tenant == _tenant(tenant))
            .order_by(_Q.id.desc())
            .limit(d.integer(limit, "limit", 1))
        )
        with transaction(self._engine, "read question log") as conn:
            return [_logged(r._asdict()) for r in conn.execute(query)]

    def prune(self, now: float | None = None) -> int:
        """Delete rows older than the retention (at ``now``, default the clock) and each
        tenant's oldest rows beyond the cap; how many were deleted."""
        cutoff = (self._clock() if now is None else now) - self.retention_s
        cap = self.max_rows_per_tenant
        with transaction(self._engine, "prune question log", write=True) as conn:
            deleted = conn.execute(sa.delete(question_log).where(_Q.created_at < cutoff)).rowcount
            over = conn.execute(
                sa.select(_Q.tenant)
                .group_by(_Q.tenant)
                .having(sa.func.count() > cap)
                .order_by(_Q.tenant)
            ).scalars().all()
            for tenant in over:
                # The newest row past the cap; it and everything older go.
                last = conn.execute(
                    sa.select(_Q.id)
                    .where(_Q.tenant == tenant)
                    .order_by(_Q.id.desc())
                    .offset(cap)
                    .limit(1)
                ).scalar_one()
                deleted += conn.execute(
                    sa.delete(question_log).where(_Q.tenant == tenant, _Q.id <= last)
                ).rowcount
        return deleted


def _tenant(tenant: object) -> str:
    return DEFAULT_TENANT if tenant == "" else d.name(tenant, "tenant")


def _logged(values: dict[str, object]) -> LoggedQuestion:
    values["block_ids"] = tuple(d.load_json(str(values["block_ids"])))
    return LoggedQuestion(**values)  # type: ignore[arg-type]
