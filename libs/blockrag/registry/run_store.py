"""RunStore: block distillation runs, their progress and their end.

One run at a time per tenant scope: ``create`` refuses while a run of the scope is pending or
running. Status moves pending -> running -> succeeded | failed | cancelled, or pending ->
cancelled, nothing else. Cancelling is cooperative: ``request_cancel`` raises a flag that the
training loop polls with ``is_cancel_requested`` before it ends the run as cancelled.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from blockrag.errors import ConflictError, InvalidRequestError, NotFoundError
from blockrag.kvcache.index import transaction
from blockrag.kvcache.index_schema import RUN_STATUSES, distill_runs, model_versions
from blockrag.registry import _database as d

_R = distill_runs.c
FINISHED = frozenset({"succeeded", "failed", "cancelled"})
TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"running", "cancelled"}),
    "running": frozenset({"succeeded", "failed", "cancelled"}),
}


@dataclass(frozen=True)
class Run:
    """A row of distill_runs. ``config`` and ``metrics`` are JSON objects."""

    run_id: str
    tenant: str  # scope: SHARED ("") or a tenant
    status: str  # pending | running | succeeded | failed | cancelled
    config: dict[str, Any]
    step: int
    total_steps: int
    metrics: dict[str, Any]  # the latest reported: loss, kl, tokens_per_s...
    checkpoint_key: str | None  # object-store key of the latest checkpoint
    version_id: str | None  # the model version it registered
    error: str | None
    created_at: float
    updated_at: float
    cancel_requested: bool

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class RunStore:
    """Distillation runs in the index database (built with ``open_index_engine``, migrated)."""

    def __init__(self, engine: sa.Engine, *, clock: Callable[[], float] = time.time):
        self._engine = engine
        self._clock = clock
        # imported here, not above: PlatformConfig's imports reach this module before the platform
        # sets PROMETHEUS_MULTIPROC_DIR, and prometheus_client reads it at its first import
        from blockrag.telemetry.metrics import observe_distill_run

        self._observe = observe_distill_run
        self._observe(None)  # every status's series exists, at 0, before the first run

    def create(self, tenant: str, config: Mapping[str, Any], total_steps: int) -> Run:
        """A new pending run; ConflictError while another run of the scope is going."""
        tenant = d.scope(tenant)
        now = self._clock()
        row = dict(
            run_id=d.new_id("run_"), tenant=tenant, status="pending",
            config=d.dump_json(config, "config"), step=0,
            total_steps=d.integer(total_steps, "total_steps", 1), metrics="{}",
            checkpoint_key=None, version_id=None, error=None, created_at=now, updated_at=now,
            cancel_requested=False,
        )
        with transaction(self._engine, "create distillation run", write=True) as conn:
            d.lock_scope(conn, d.RUNS_LOCK, tenant)
            going = conn.execute(
                sa.select(_R.run_id, _R.status)
                .where(_R.tenant == tenant, _R.status.in_(["pending", "running"]))
            ).first()
            if going is not None:
                raise ConflictError(
                    f"a distillation run is already going for scope {tenant!r}: "
                    f"{going.run_id} ({going.status}); wait for it or cancel it"
                )
            conn.execute(sa.insert(distill_runs), row)
            return _get(conn, str(row["run_id"]))

    def get(self, run_id: str) -> Run:
        """The run; NotFoundError if unknown."""
        with transaction(self._engine, "get distillation run") as conn:
            return _get(conn, _id(run_id))

    def list(self, tenant: str | None = None, limit: int = 50) -> list[Run]:
        """The latest ``limit`` runs of one scope (all scopes when None), newest first."""
        query = (
            sa.select(distill_runs)
            .order_by(_R.created_at.desc(), _R.run_id.desc())
            .limit(d.integer(limit, "limit", 1))
        )
        if tenant is not None:
            query = query.where(_R.tenant == d.scope(tenant))
        with transaction(self._engine, "list distillation runs") as conn:
            return [_run(r) for r in conn.execute(query)]

    def update_progress(
        self,
        run_id: str,
        step: int,
        metrics: Mapping[str, Any],
        checkpoint_key: str | None = None,
    ) -> Run:
        """Record a running run's step (0..total_steps) and latest metrics, and its newest
        checkpoint when given; ConflictError unless the run is running."""
        encoded = d.dump_json(metrics, "metrics")
        if checkpoint_key is not None:
            d.text(checkpoint_key, "checkpoint_key")

        def change(run: Run, _: sa.Connection) -> dict[str, object]:
            if run.status != "running":
                raise ConflictError(f"run {run.run_id} is {run.status}, not running")
            values: dict[str, object] = dict(
                step=d.integer(step, "step", 0, run.total_steps), metrics=encoded
            )
            if checkpoint_key is not None:
                values["checkpoint_key"] = checkpoint_key
            return values

        return self._update(run_id, "update run progress", change)

    def set_status(
        self,
        run_id: str,
        status: str,
        error: str | None = None,
        version_id: str | None = None,
    ) -> Run:
        """Move the run to ``status`` along a legal transition (ConflictError otherwise).
        ``error`` goes with failed or cancelled; ``version_id`` names the version the run
        registered, which must exist and share the run's scope."""
        if status not in RUN_STATUSES:
            raise InvalidRequestError(f"status must be one of {RUN_STATUSES}; got {status!r:.80}")
        if error is not None:
            if status not in ("failed", "cancelled"):
                raise InvalidRequestError(f"an error goes with failed or cancelled, not {status}")
            d.text(error, "error")
        if version_id is not None:
            d.name(version_id, "version_id")

        def change(run: Run, conn: sa.Connection) -> dict[str, object]:
            if status not in TRANSITIONS.get(run.status, ()):
                raise ConflictError(
                    f"run {run.run_id} is {run.status}; it cannot become {status} (allowed: "
                    f"{', '.join(sorted(TRANSITIONS.get(run.status, ()))) or 'none, it ended'})"
                )
            values: dict[str, object] = {"status": status}
            if error is not None:
                values["error"] = error
            if version_id is not None:
                _check_version(conn, version_id, run)
                values["version_id"] = version_id
            return values

        run = self._update(run_id, f"set run status to {status}", change)
        self._observe(status)  # here, once per transition, whoever moved the run
        return run

    def request_cancel(self, run_id: str) -> Run:
        """Ask the run to stop (idempotent); ConflictError if it already ended."""

        def change(run: Run, _: sa.Connection) -> dict[str, object]:
            if run.finished:
                raise ConflictError(f"run {run.run_id} already ended ({run.status})")
            return {"cancel_requested": True}

        return self._update(run_id, "request run cancel", change)

    def is_cancel_requested(self, run_id: str) -> bool:
        """Whether a cancel was requested; NotFoundError if unknown."""
        with transaction(self._engine, "read run cancel flag") as conn:
            flag = conn.execute(
                sa.select(_R.cancel_requested).where(_R.run_id == _id(run_id))
            ).scalar_one_or_none()
        if flag is None:
            raise NotFoundError(f"unknown distillation run {run_id!r}")
        return bool(flag)

    def _update(
        self, run_id: str, action: str, change: Callable[[Run, sa.Connection], dict[str, object]]
    ) -> Run:
        """Lock the run's row, let ``change`` check it and name the new values, write them."""
        run_id = _id(run_id)
        with transaction(self._engine, action, write=True) as conn:
            run = _get(conn, run_id, lock=True)
            values = change(run, conn)
            conn.execute(
                sa.update(distill_runs)
                .where(_R.run_id == run_id)
                .values(updated_at=self._clock(), **values)
            )
            return _get(conn, run_id)


def _check_version(conn: sa.Connection, version_id: str, run: Run) -> None:
    v = model_versions.c
    scope = conn.execute(
        sa.select(v.tenant).where(v.version_id == version_id)
    ).scalar_one_or_none()
    if scope is None:
        raise NotFoundError(f"unknown model version {version_id!r}")
    if scope != run.tenant:
        raise ConflictError(
            f"run {run.run_id} of scope {run.tenant!r} cannot claim {version_id} of scope "
            f"{scope!r}"
        )


def _get(conn: sa.Connection, run_id: str, *, lock: bool = False) -> Run:
    return _run(d.get_row(conn, _R.run_id, run_id, f"unknown distillation run {run_id!r}", lock=lock))


def _run(row: sa.Row) -> Run:
    values = row._asdict()
    values["config"] = d.load_json(values["config"])
    values["metrics"] = d.load_json(values["metrics"])
    values["cancel_requested"] = bool(values["cancel_requested"])
    return Run(**values)


def _id(value: object) -> str:
    return d.name(value, "run_id")
