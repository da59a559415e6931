"""ModelRegistry.refuse on SQLite and PostgreSQL: a version a server refused to serve (Precompute's
KV-compression gate) is marked failed with the reason and, where it was active, its scope goes
back to the version before it in the same transaction; a second report changes nothing."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from blockrag.errors import ConflictError, InvalidRequestError, NotFoundError
from blockrag.registry import SHARED, ModelRegistry, ModelVersion, Promotion, open_index_engine

REASON = ("model version {} is not served: kv_compression fp8_head: answers drift from uncompressed KV by a mean "
          "answer-token KL of 0.0001 nats over 2 questions, above the gate's 3e-05")
REPLICAS = 4  # threads reporting the same refusal


@pytest.fixture
def registry(engine: sa.Engine, clock) -> ModelRegistry:
    return ModelRegistry(engine, clock=clock)


def register(registry: ModelRegistry, clock, tenant: str = SHARED) -> ModelVersion:
    clock.tick()
    return registry.register(tenant, "smollm2-135m-instruct", "fp-base")


def promote(registry: ModelRegistry, clock, *versions: ModelVersion) -> None:
    for v in versions:
        clock.tick()
        registry.promote(v.version_id, v.tenant)


def statuses(registry: ModelRegistry, *versions: ModelVersion) -> list[str]:
    return [registry.get(v.version_id).status for v in versions]


def test_a_refused_active_version_gives_way_to_the_one_before(registry: ModelRegistry, clock) -> None:
    a, b = register(registry, clock, "acme"), register(registry, clock, "acme")
    registry.set_evaluation(b.version_id, {"kl": 0.01, "accuracy": 0.75})
    promote(registry, clock, a, b)
    clock.tick()
    reason = REASON.format(b.version_id)
    refused = registry.refuse(b.version_id, reason)
    assert (refused.status, refused.refusal) == ("failed", reason)
    # the evaluation's figures stay; the refusal joins them
    assert refused.evaluation == {"kl": 0.01, "accuracy": 0.75, "refusal": {"reason": reason, "at": clock.now}}
    assert registry.get(b.version_id) == refused
    assert registry.active("acme").version_id == a.version_id
    assert statuses(registry, a, b) == ["active", "failed"]
    assert registry.history("acme")[-1] == Promotion(3, "acme", a.version_id, b.version_id, "rollback", clock.now)
    assert registry.get(a.version_id).promoted_at == clock.now
    with pytest.raises(ConflictError, match="failed"):
        registry.promote(b.version_id, "acme")


def test_a_second_report_changes_nothing(registry: ModelRegistry, clock) -> None:
    a, b = register(registry, clock, "acme"), register(registry, clock, "acme")
    promote(registry, clock, a, b)
    first = registry.refuse(b.version_id, REASON.format(b.version_id))
    history = registry.history("acme")
    clock.tick()
    assert registry.refuse(b.version_id, "another replica's figures") == first
    assert registry.history("acme") == history
    assert statuses(registry, a, b) == ["active", "failed"]
    assert registry.get(a.version_id).promoted_at == history[-1].at


def test_concurrent_reports_roll_back_once(url: str, registry: ModelRegistry, clock, in_threads) -> None:
    # every Precompute replica gates the version it loads and reports it: one rollback, not one per replica
    a, b = register(registry, clock, "acme"), register(registry, clock, "acme")
    promote(registry, clock, a, b)
    engines = [open_index_engine(url) for _ in range(REPLICAS)]
    try:
        in_threads(lambda i: ModelRegistry(engines[i]).refuse(b.version_id, f"replica {i}"), REPLICAS)
    finally:
        for e in engines:
            e.dispose()
    assert [(p.action, p.version_id, p.previous_version) for p in registry.history("acme")] == [
        ("promote", a.version_id, None), ("promote", b.version_id, a.version_id),
        ("rollback", a.version_id, b.version_id)]
    assert statuses(registry, a, b) == ["active", "failed"]
    assert registry.get(b.version_id).refusal in {f"replica {i}" for i in range(REPLICAS)}


def test_the_first_version_refused_gives_way_to_the_base_model(registry: ModelRegistry, clock) -> None:
    only = register(registry, clock, "acme")
    promote(registry, clock, only)
    registry.refuse(only.version_id, REASON.format(only.version_id))
    assert registry.active("acme") is None
    assert [(p.action, p.version_id, p.previous_version) for p in registry.history("acme")][-1] == (
        "rollback", None, only.version_id)
    with pytest.raises(ConflictError, match="no promotion"):
        registry.rollback("acme")


def test_a_refused_shared_version_gives_every_tenant_the_shared_one_before(registry: ModelRegistry, clock) -> None:
    s1, s2, own = register(registry, clock), register(registry, clock), register(registry, clock, "acme")
    promote(registry, clock, s1, s2, own)
    registry.refuse(s2.version_id, REASON.format(s2.version_id))
    assert registry.active("globex").version_id == s1.version_id  # no version of its own: the shared one
    assert registry.active("acme").version_id == own.version_id  # its own version was never the refused one
    assert len(registry.history("acme")) == 1


def test_the_rollback_skips_failed_versions_and_the_refused_one_deeper(registry: ModelRegistry, clock) -> None:
    a, b, c = (register(registry, clock) for _ in range(3))
    promote(registry, clock, a, b, c)
    registry.rollback(SHARED)  # b
    registry.rollback(SHARED)  # a
    promote(registry, clock, b, c)  # stack: a, b, c
    registry.refuse(b.version_id, "refused when it was loaded again")  # retired: no rollback, failed
    assert statuses(registry, a, b, c) == ["retired", "failed", "active"]
    registry.refuse(c.version_id, REASON.format(c.version_id))
    assert registry.active(SHARED).version_id == a.version_id  # b, below c, is failed now
    assert registry.rollback(SHARED) is None  # and stays skipped


def test_a_refused_candidate_is_failed_without_a_rollback(registry: ModelRegistry, clock) -> None:
    candidate = register(registry, clock, "acme")
    assert registry.refuse(candidate.version_id, "refused").status == "failed"
    assert registry.history("acme") == [] and registry.active("acme") is None
    # a version an operator marked failed gets the reason too: the first report of a refusal
    marked = register(registry, clock, "acme")
    registry.mark_failed(marked.version_id)
    assert registry.refuse(marked.version_id, "refused").refusal == "refused"
    assert register(registry, clock).refusal is None


def test_bad_reports(registry: ModelRegistry, clock) -> None:
    v = register(registry, clock)
    with pytest.raises(NotFoundError, match="mv_0000000000000000"):
        registry.refuse("mv_0000000000000000", "refused")
    for reason in ("", "nul\0", None):
        with pytest.raises(InvalidRequestError, match="reason"):
            registry.refuse(v.version_id, reason)  # type: ignore[arg-type]
    assert registry.get(v.version_id).status == "candidate"
