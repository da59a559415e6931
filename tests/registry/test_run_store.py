"""RunStore on SQLite and PostgreSQL: one run at a time per scope, transitions, cancel."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from blockrag.errors import ConflictError, InvalidRequestError, NotFoundError
from blockrag.registry import SHARED, ModelRegistry, Run, RunStore, open_index_engine

STATUSES = ("pending", "running", "succeeded", "failed", "cancelled")
LEGAL = {("pending", "running"), ("pending", "cancelled"), ("running", "succeeded"),
         ("running", "failed"), ("running", "cancelled")}
# How to bring a new run to each status.
PATHS = {"pending": [], "running": ["running"], "succeeded": ["running", "succeeded"],
         "failed": ["running", "failed"], "cancelled": ["cancelled"]}
CREATORS = 4  # threads


@pytest.fixture
def runs(engine: sa.Engine, clock) -> RunStore:
    return RunStore(engine, clock=clock)


def test_create_and_read_back(runs: RunStore) -> None:
    config = {"lr": 0.0002, "data": {"collections": ["handbook"], "max_tokens": 4096},
              "lora": {"r": 8, "targets": ["q_proj", "v_proj"]}, "resume": None}
    run = runs.create("acme", config, 100)
    assert re.fullmatch(r"run_[0-9a-f]{16}", run.run_id)
    assert run == Run(
        run_id=run.run_id, tenant="acme", status="pending", config=config, step=0,
        total_steps=100, metrics={}, checkpoint_key=None, version_id=None, error=None,
        created_at=1_000.0, updated_at=1_000.0, cancel_requested=False,
    )
    assert runs.get(run.run_id) == run and not run.finished


def test_one_run_going_per_scope(runs: RunStore) -> None:
    first = runs.create("a", {}, 10)
    with pytest.raises(ConflictError, match=first.run_id):
        runs.create("a", {}, 10)  # pending blocks the scope
    other, shared = runs.create("b", {}, 10), runs.create(SHARED, {}, 10)  # other scopes run
    runs.set_status(first.run_id, "running")
    with pytest.raises(ConflictError, match="already going"):
        runs.create("a", {}, 10)  # so does running
    runs.set_status(first.run_id, "succeeded")
    assert runs.create("a", {}, 10).status == "pending"  # free again once it ended
    assert {r.run_id for r in runs.list()} >= {first.run_id, other.run_id, shared.run_id}


def test_transitions(runs: RunStore) -> None:
    for i, (source, target) in enumerate((s, t) for s in STATUSES for t in STATUSES):
        run = runs.create(f"t{i}", {}, 10)
        for status in PATHS[source]:
            runs.set_status(run.run_id, status)
        if (source, target) in LEGAL:
            assert runs.set_status(run.run_id, target).status == target
        else:
            with pytest.raises(ConflictError, match=f"is {source}"):
                runs.set_status(run.run_id, target)
            assert runs.get(run.run_id).status == source


def test_end_with_error_or_version(engine: sa.Engine, runs: RunStore, clock) -> None:
    registry = ModelRegistry(engine)
    mine, other = registry.register("a", "m", "fp"), registry.register("b", "m", "fp")
    run = runs.create("a", {}, 10)
    runs.set_status(run.run_id, "running")
    with pytest.raises(InvalidRequestError, match="error goes with"):
        runs.set_status(run.run_id, "succeeded", error="oops")
    with pytest.raises(NotFoundError, match="mv_0000000000000000"):
        runs.set_status(run.run_id, "succeeded", version_id="mv_0000000000000000")
    with pytest.raises(ConflictError, match="scope"):
        runs.set_status(run.run_id, "succeeded", version_id=other.version_id)
    assert runs.get(run.run_id).status == "running"  # all or nothing
    clock.tick(5)
    done = runs.set_status(run.run_id, "succeeded", version_id=mine.version_id)
    assert (done.status, done.version_id, done.error, done.updated_at) == (
        "succeeded", mine.version_id, None, 1_005.0)
    assert done.finished
    failed = runs.create("a", {}, 10)
    runs.set_status(failed.run_id, "running")
    assert runs.set_status(failed.run_id, "failed", error="CUDA out of memory").error == (
        "CUDA out of memory")
    with pytest.raises(InvalidRequestError, match="status must be one of"):
        runs.set_status(failed.run_id, "done")


def test_progress(runs: RunStore, clock) -> None:
    run = runs.create("a", {}, 10)
    with pytest.raises(ConflictError, match="not running"):
        runs.update_progress(run.run_id, 1, {"loss": 1.0})
    runs.set_status(run.run_id, "running")
    clock.tick()
    at5 = runs.update_progress(run.run_id, 5, {"loss": 0.5, "kl": 0.25}, "ckpt/a/5")
    assert (at5.step, at5.metrics, at5.checkpoint_key, at5.updated_at) == (
        5, {"loss": 0.5, "kl": 0.25}, "ckpt/a/5", 1_001.0)
    at6 = runs.update_progress(run.run_id, 6, {"loss": 0.4, "tokens_per_s": 1234.5})
    assert (at6.step, at6.metrics, at6.checkpoint_key) == (
        6, {"loss": 0.4, "tokens_per_s": 1234.5}, "ckpt/a/5")  # metrics replaced, checkpoint kept
    for step, metrics, match in ((11, {}, "step"), (-1, {}, "step"), (True, {}, "step"),
                                 (7, {"loss": float("nan")}, "NaN"), (7, [1], "metrics")):
        with pytest.raises(InvalidRequestError, match=match):
            runs.update_progress(run.run_id, step, metrics)
    assert runs.get(run.run_id) == at6
    runs.set_status(run.run_id, "succeeded")
    with pytest.raises(ConflictError, match="succeeded"):
        runs.update_progress(run.run_id, 10, {})


def test_cancel(runs: RunStore) -> None:
    run = runs.create("a", {}, 10)
    assert runs.is_cancel_requested(run.run_id) is False
    runs.set_status(run.run_id, "running")
    assert runs.request_cancel(run.run_id).cancel_requested is True
    assert runs.request_cancel(run.run_id).status == "running"  # idempotent; the loop ends it
    assert runs.is_cancel_requested(run.run_id) is True
    runs.set_status(run.run_id, "cancelled")
    with pytest.raises(ConflictError, match="already ended"):
        runs.request_cancel(run.run_id)
    other = runs.create("a", {}, 10)
    assert runs.is_cancel_requested(other.run_id) is False  # the flag is per run
    for call in (runs.request_cancel, runs.is_cancel_requested, runs.get):
        with pytest.raises(NotFoundError, match="run_0000000000000000"):
            call("run_0000000000000000")


def test_list(runs: RunStore, clock) -> None:
    made = []
    for tenant in ("a", "b", "a", "a"):
        clock.tick()
        run = runs.create(tenant, {}, 1)
        runs.set_status(run.run_id, "cancelled")
        made.append(run.run_id)
    assert [r.run_id for r in runs.list()] == made[::-1]
    assert [r.run_id for r in runs.list("a", limit=2)] == [made[3], made[2]]
    assert runs.list("nobody") == []
    with pytest.raises(InvalidRequestError, match="limit"):
        runs.list(limit=0)


@pytest.mark.parametrize(
    ("tenant", "config", "total_steps", "match"),
    [
        (None, {}, 1, "tenant"),
        ("a", "lr=1", 1, "config"),
        ("a", {"x": {1, 2}}, 1, "JSON"),
        ("a", {}, 0, "total_steps"),
        ("a", {}, 1.5, "total_steps"),
    ],
)
def test_create_rejects_bad_input(
    runs: RunStore, tenant: str, config: object, total_steps: int, match: str
) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        runs.create(tenant, config, total_steps)  # type: ignore[arg-type]
    assert runs.list() == []


def test_concurrent_creates_one_wins(url: str, runs: RunStore, in_threads) -> None:
    engines = [open_index_engine(url) for _ in range(CREATORS // 2)]
    stores = [runs] * (CREATORS - len(engines)) + [RunStore(e) for e in engines]
    outcomes: list[str] = []

    def create(i: int) -> None:
        try:
            outcomes.append(stores[i].create("t", {"worker": i}, 10).run_id)
        except ConflictError:
            outcomes.append("conflict")

    try:
        in_threads(create, CREATORS)
    finally:
        for e in engines:
            e.dispose()
    assert sorted(outcomes).count("conflict") == CREATORS - 1
    assert [r.status for r in runs.list("t")] == ["pending"]
