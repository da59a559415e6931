"""ModelRegistry: the served versions of the model, per tenant scope, and which one is active.

A version is the base model plus a LoRA adapter trained by block distillation. Its scope
(``tenant``) is the tenant whose data trained it, or SHARED ("") for shared data: a scoped
version serves its own tenant only; a shared one serves every tenant without an active version
of its own. Statuses: candidate (registered, not served) -> active (served in its scope, at
most one per scope) -> retired (replaced); failed (never served again): marked by an operator
(``mark_failed``), or by a server that refused to serve it (``refuse``: Precompute's KV-compression
gate), which also rolls its scope back when it was active.

``promote`` and ``rollback`` change a scope's active version in one transaction, serialized
per scope, and append to model_promotions: the history that rollback walks back, so that each
rollback undoes the latest promotion still in effect (skipping versions marked failed since).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from blockrag.errors import ConflictError, InvalidRequestError
from blockrag.kvcache.index import transaction
from blockrag.kvcache.index_schema import model_promotions, model_versions
from blockrag.registry import _database as d

_V, _P = model_versions.c, model_promotions.c
# The evaluation key of a refusal, {"reason": .., "at": ..}: a key of the JSON column rather than
# a column or a status of its own, which would need a migration; status is "failed" with it.
REFUSAL = "refusal"


@dataclass(frozen=True)
class ModelVersion:
    """A row of model_versions. ``training`` and ``evaluation`` are JSON objects."""

    version_id: str
    tenant: str  # scope: SHARED ("") or the one tenant it may serve
    base_model: str
    base_fingerprint: str
    adapter_key: str  # object-store key of the adapter; "" for the base model itself
    parent_version: str | None
    fingerprint: str | None  # the served fingerprint after merging; None until known
    training: dict[str, Any]
    evaluation: dict[str, Any]  # {} until evaluated
    status: str  # candidate | active | retired | failed
    created_at: float
    promoted_at: float | None  # when it last became active

    @property
    def refusal(self) -> str | None:
        """Why a server refused to serve it (``ModelRegistry.refuse``); None if none did."""
        refusal = self.evaluation.get(REFUSAL)
        return refusal.get("reason") if isinstance(refusal, dict) else None


@dataclass(frozen=True)
class Promotion:
    """A change of a scope's active version; version_id None is the base model."""

    seq: int
    tenant: str
    version_id: str | None
    previous_version: str | None
    action: str  # promote | rollback
    at: float


class ModelRegistry:
    """Model versions in the index database (built with ``open_index_engine``, migrated)."""

    def __init__(self, engine: sa.Engine, *, clock: Callable[[], float] = time.time):
        self._engine = engine
        self._clock = clock
        # imported here, not above: PlatformConfig's imports reach this module before the platform
        # sets PROMETHEUS_MULTIPROC_DIR, and prometheus_client reads it at its first import
        from blockrag.telemetry import metrics

        self._metrics = metrics

    def register(
        self,
        tenant: str,
        base_model: str,
        base_fingerprint: str,
        *,
        adapter_key: str = "",
        parent_version: str | None = None,
        fingerprint: str | None = None,
        training: Mapping[str, Any] | None = None,
    ) -> ModelVersion:
        """A new candidate version. A parent must exist, share the base fingerprint, and be
        shared or of the same scope (ConflictError otherwise: no leak across tenants)."""
        row = dict(
            version_id=d.new_id("mv_"), tenant=d.scope(tenant),
            base_model=d.name(base_model, "base_model"),
            base_fingerprint=d.name(base_fingerprint, "base_fingerprint"),
            adapter_key=d.text(adapter_key, "adapter_key", empty=True),
            parent_version=None if parent_version is None else _id(parent_version),
            fingerprint=None if fingerprint is None else d.name(fingerprint, "fingerprint"),
            training=d.dump_json({} if training is None else training, "training"),
            evaluation="{}", status="candidate", created_at=self._clock(), promoted_at=None,
        )
        with transaction(self._engine, "register model version", write=True) as conn:
            if parent_version is not None:
                parent = _get(conn, parent_version)
                if parent.tenant not in (d.SHARED, row["tenant"]):
                    raise ConflictError(
                        f"parent {parent.version_id} belongs to tenant {parent.tenant!r}; a "
                        f"version of scope {row['tenant']!r} cannot derive from it"
                    )
                if parent.base_fingerprint != base_fingerprint:
                    raise InvalidRequestError(
                        f"parent {parent.version_id} adapts base {parent.base_fingerprint!r}, "
                        f"not {base_fingerprint!r}"
                    )
            conn.execute(sa.insert(model_versions), row)
            version = _get(conn, str(row["version_id"]))
        self._metrics.observe_version_registered(version.tenant)
        return version

    def get(self, version_id: str) -> ModelVersion:
        """The version; NotFoundError if unknown."""
        with transaction(self._engine, "get model version") as conn:
            return _get(conn, _id(version_id))

    def list(self, tenant: str | None = None, status: str | None = None) -> list[ModelVersion]:
        """The versions of one scope (all scopes when None), of one status (any when None),
        newest first."""
        query = sa.select(model_versions).order_by(_V.created_at.desc(), _V.version_id.desc())
        if tenant is not None:
            query = query.where(_V.tenant == d.scope(tenant))
        if status is not None:
            query = query.where(_V.status == status)
        with transaction(self._engine, "list model versions") as conn:
            return [_version(r) for r in conn.execute(query)]

    def set_evaluation(self, version_id: str, evaluation: Mapping[str, Any]) -> ModelVersion:
        """Replace the version's evaluation (e.g. {"kl": .., "accuracy": .., "baseline_kl": ..})."""
        encoded = d.dump_json(evaluation, "evaluation")
        return self._update(version_id, "set evaluation", lambda _: {"evaluation": encoded})

    def set_fingerprint(self, version_id: str, fingerprint: str) -> ModelVersion:
        """Record the served fingerprint; it is set once (ConflictError for another value)."""
        fingerprint = d.name(fingerprint, "fingerprint")

        def change(version: ModelVersion) -> dict[str, object]:
            if version.fingerprint not in (None, fingerprint):
                raise ConflictError(
                    f"{version.version_id} already has fingerprint {version.fingerprint!r}; "
                    f"register a new version for other weights"
                )
            return {"fingerprint": fingerprint}

        return self._update(version_id, "set fingerprint", change)

    def mark_failed(self, version_id: str) -> ModelVersion:
        """Mark a version failed (idempotent); ConflictError while it is active."""

        def change(version: ModelVersion) -> dict[str, object]:
            if version.status == "active":
                raise ConflictError(
                    f"{version.version_id} is active for scope {version.tenant!r}; roll back "
                    f"or promote another version before marking it failed"
                )
            return {"status": "failed"}

        return self._update(version_id, "mark version failed", change)

    def refuse(self, version_id: str, reason: str) -> ModelVersion:
        """Record that a server refused to serve the version, ``reason`` saying why (Precompute's
        KV-compression gate: the KL it measured, the bound, the setting): in one transaction the
        version is marked failed with ``evaluation["refusal"] = {"reason", "at"}`` and, when it is
        active, its scope (every tenant it serves) is rolled back to the version active before it,
        as ``rollback`` does; the history's entry is that rollback (previous_version: the refused
        version). A version whose refusal is recorded already is returned unchanged: every replica
        that runs the gate reports it. The refusal is final: serving the same weights under another
        setting takes a new version."""
        version_id, reason = _id(version_id), d.text(reason, "reason")
        with transaction(self._engine, "refuse model version", write=True) as conn:
            tenant = _get(conn, version_id).tenant  # the scope is fixed at registration
            d.lock_scope(conn, d.VERSIONS_LOCK, tenant)  # against a concurrent promote or rollback
            version = _get(conn, version_id, lock=True)
            if version.refusal is not None:
                return version
            rolled_back, target = version.status == "active", None
            if rolled_back:
                stack = [v for v in _promotion_stack(conn, tenant) if v != version_id]
                target = _rollback_target(conn, stack)
                self._activate(conn, tenant, target, version_id, "rollback")  # retires it first
            evaluation = {**version.evaluation, REFUSAL: {"reason": reason, "at": self._clock()}}
            conn.execute(sa.update(model_versions).where(_V.version_id == version_id).values(
                status="failed", evaluation=d.dump_json(evaluation, "evaluation")))
            version = _get(conn, version_id)
            since = None if target is None else _get(conn, target).promoted_at
        if rolled_back:
            self._metrics.observe_version_change(tenant, "rollback", since)
        return version

    def active(self, tenant: str) -> ModelVersion | None:
        """The version serving ``tenant``: its own active one, else the shared active one,
        else None (serve the base model)."""
        tenant = d.scope(tenant)
        query = sa.select(model_versions).where(
            _V.status == "active", _V.tenant.in_([tenant, d.SHARED])
        )
        with transaction(self._engine, "get active version") as conn:
            found = {r.tenant: _version(r) for r in conn.execute(query)}
        return found.get(tenant) or found.get(d.SHARED)

    def promote(self, version_id: str, tenant: str) -> ModelVersion:
        """Make the version active in its scope, which must be ``tenant`` (ConflictError
        otherwise, or for a failed version); the scope's previous active version is retired.
        Promoting the active version changes nothing."""
        version_id, tenant = _id(version_id), d.scope(tenant)
        with transaction(self._engine, "promote model version", write=True) as conn:
            d.lock_scope(conn, d.VERSIONS_LOCK, tenant)
            version = _get(conn, version_id, lock=True)  # against a concurrent mark_failed
            if version.tenant != tenant:
                raise ConflictError(
                    f"{version_id} was trained for scope {version.tenant!r} and cannot serve "
                    f"scope {tenant!r}"
                )
            if version.status == "failed":
                raise ConflictError(f"{version_id} is marked failed and cannot be promoted")
            if version.status == "active":
                return version
            current = _active_id(conn, tenant)
            self._activate(conn, tenant, version_id, current, "promote")
            version = _get(conn, version_id)
        self._metrics.observe_version_change(tenant, "promote", version.promoted_at)
        return version

    def rollback(self, tenant: str) -> ModelVersion | None:
        """Undo the latest promotion in effect in the scope: reactivate the version active
        before it (None: the base model). ConflictError when there is nothing to undo."""
        tenant = d.scope(tenant)
        with transaction(self._engine, "roll back model version", write=True) as conn:
            d.lock_scope(conn, d.VERSIONS_LOCK, tenant)
            stack = _promotion_stack(conn, tenant)
            current = _active_id(conn, tenant)
            if not stack or current is None:
                raise ConflictError(f"scope {tenant!r} has no promotion to roll back")
            target = _rollback_target(conn, stack[:-1])
            self._activate(conn, tenant, target, current, "rollback")
            version = None if target is None else _get(conn, target)
        self._metrics.observe_version_change(tenant, "rollback", None if version is None else version.promoted_at)
        return version

    def history(self, tenant: str) -> list[Promotion]:
        """The scope's promotions and rollbacks, oldest first."""
        query = sa.select(model_promotions).where(_P.tenant == d.scope(tenant)).order_by(_P.seq)
        with transaction(self._engine, "read promotion history") as conn:
            return [Promotion(*r) for r in conn.execute(query)]

    def _activate(self, conn: sa.Connection, tenant: str, version_id: str | None,
                  current: str | None, action: str) -> None:
        """Retire ``current``, activate ``version_id`` (in this order: the unique index allows
        one active version per scope at every moment) and record the change."""
        now, update = self._clock(), sa.update(model_versions)
        if current is not None:
            conn.execute(update.where(_V.version_id == current).values(status="retired"))
        if version_id is not None:
            conn.execute(update.where(_V.version_id == version_id)
                         .values(status="active", promoted_at=now))
        conn.execute(sa.insert(model_promotions), dict(
            tenant=tenant, version_id=version_id, previous_version=current, action=action, at=now
        ))

    def _update(self, version_id: str, action: str,
                change: Callable[[ModelVersion], dict[str, object]]) -> ModelVersion:
        """Lock the row, let ``change`` check it and name the new values, write them."""
        version_id = _id(version_id)
        with transaction(self._engine, action, write=True) as conn:
            values = change(_get(conn, version_id, lock=True))
            conn.execute(
                sa.update(model_versions).where(_V.version_id == version_id).values(**values)
            )
            return _get(conn, version_id)


def _promotion_stack(conn: sa.Connection, tenant: str) -> list[str]:
    """The versions promoted in the scope and not rolled back, oldest first: a promotion
    pushes its version; a rollback pops the top, then down to the version it returned to."""
    stack: list[str] = []
    query = sa.select(_P.action, _P.version_id).where(_P.tenant == tenant).order_by(_P.seq)
    for action, version_id in conn.execute(query):
        if action == "promote":
            stack.append(version_id)
            continue
        if stack:
            stack.pop()
        while stack and stack[-1] != version_id:
            stack.pop()
    return stack


def _rollback_target(conn: sa.Connection, stack: list[str]) -> str | None:
    """The latest version of ``stack`` (a promotion stack without the version rolled back) not
    marked failed since; None: the base model."""
    for candidate in reversed(stack):
        if _get(conn, candidate, lock=True).status != "failed":
            return candidate
    return None


def _active_id(conn: sa.Connection, tenant: str) -> str | None:
    query = sa.select(_V.version_id).where(_V.tenant == tenant, _V.status == "active")
    return conn.execute(query).scalar_one_or_none()


def _get(conn: sa.Connection, version_id: str, *, lock: bool = False) -> ModelVersion:
    return _version(d.get_row(conn, _V.version_id, version_id, f"unknown model version {version_id!r}", lock=lock))


def _version(row: sa.Row) -> ModelVersion:
    values = row._asdict()
    values["training"] = d.load_json(values["training"])
    values["evaluation"] = d.load_json(values["evaluation"])
    return ModelVersion(**values)


def _id(value: object) -> str:
    return d.name(value, "version_id")
