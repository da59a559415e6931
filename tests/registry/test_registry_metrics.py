"""The registry's stores count what they change, once, whoever calls them: run statuses
(blockrag_distill_runs_total), versions registered and changes of the active version."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY

from blockrag.errors import ConflictError
from blockrag.registry import SHARED, ModelRegistry, RunStore


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def runs(status: str) -> float:
    return sample("blockrag_distill_runs_total", status=status)


def test_each_run_transition_is_counted_once(engine: sa.Engine, clock) -> None:
    store = RunStore(engine, clock=clock)
    # made by the store: every status exists before any run, so dashboards have data at 0
    assert REGISTRY.get_sample_value("blockrag_distill_runs_total", {"status": "failed"}) is not None
    before = {s: runs(s) for s in ("running", "succeeded", "failed", "cancelled")}
    first = store.create("acme", {}, 3)
    store.set_status(first.run_id, "running")
    store.set_status(first.run_id, "succeeded")
    with pytest.raises(ConflictError):
        store.set_status(first.run_id, "failed")  # refused: not counted
    second = store.create("acme", {}, 3)
    store.set_status(second.run_id, "cancelled")
    after = {s: runs(s) - before[s] for s in before}
    assert after == {"running": 1, "succeeded": 1, "failed": 0, "cancelled": 1}


def test_versions_registered_and_changes_by_scope(engine: sa.Engine, clock) -> None:
    registry = ModelRegistry(engine, clock=clock)
    registered = sample("blockrag_model_versions_registered_total", tenant="acme")
    promotes = sample("blockrag_model_version_changes_total", tenant="acme", action="promote")
    rollbacks = sample("blockrag_model_version_changes_total", tenant="acme", action="rollback")
    shared = sample("blockrag_model_versions_registered_total", tenant="shared")

    clock.tick()
    first = registry.register("acme", "base", "fp")
    clock.tick()
    second = registry.register("acme", "base", "fp")
    registry.register(SHARED, "base", "fp")
    registry.promote(first.version_id, "acme")
    promoted_first = clock.now
    clock.tick()
    registry.promote(second.version_id, "acme")
    registry.promote(second.version_id, "acme")  # already active: nothing changed, nothing counted
    assert sample("blockrag_model_version_active_since_timestamp_seconds", tenant="acme") == clock.now
    registry.rollback("acme")  # back to the first version, active again from now
    clock.tick()

    assert sample("blockrag_model_versions_registered_total", tenant="acme") - registered == 2
    assert sample("blockrag_model_versions_registered_total", tenant="shared") - shared == 1
    assert sample("blockrag_model_version_changes_total", tenant="acme", action="promote") - promotes == 2
    assert sample("blockrag_model_version_changes_total", tenant="acme", action="rollback") - rollbacks == 1
    assert sample("blockrag_model_version_active_since_timestamp_seconds", tenant="acme") == clock.now - 1
    assert clock.now - 1 > promoted_first
    registry.rollback("acme")  # the base model serves the scope
    assert sample("blockrag_model_version_active_since_timestamp_seconds", tenant="acme") == 0
