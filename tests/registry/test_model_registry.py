"""ModelRegistry on SQLite and PostgreSQL: versions, promotion, rollback, tenant scopes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from blockrag.errors import CacheIndexError, ConflictError, InvalidRequestError, NotFoundError
from blockrag.kvcache.index import CacheIndex
from blockrag.kvcache.index_engine import IndexConfig, create_index_engine
from blockrag.registry import SHARED, ModelRegistry, ModelVersion, Promotion, open_index_engine

PROMOTERS = 4  # threads
ROUNDS = 5  # promotions per thread


@pytest.fixture
def registry(engine: sa.Engine, clock) -> ModelRegistry:
    return ModelRegistry(engine, clock=clock)


def register(registry: ModelRegistry, clock, tenant: str = SHARED, **kwargs) -> ModelVersion:
    clock.tick()
    return registry.register(tenant, "smollm2-135m-instruct", "fp-base", **kwargs)


def statuses(registry: ModelRegistry, *versions: ModelVersion) -> list[str]:
    return [registry.get(v.version_id).status for v in versions]


def test_register_and_read_back(registry: ModelRegistry, clock) -> None:
    training = {"sources": ["handbook", "faq"], "steps": 200, "lora": {"r": 8, "alpha": 16.5},
                "note": "naïve ✓", "resume": None}
    base = register(registry, clock)
    v = register(registry, clock, "acme", adapter_key="adapters/acme/1.safetensors",
                 parent_version=base.version_id, training=training)
    assert re.fullmatch(r"mv_[0-9a-f]{16}", v.version_id) and v.version_id != base.version_id
    assert v == ModelVersion(
        version_id=v.version_id, tenant="acme", base_model="smollm2-135m-instruct",
        base_fingerprint="fp-base", adapter_key="adapters/acme/1.safetensors",
        parent_version=base.version_id, fingerprint=None, training=training, evaluation={},
        status="candidate", created_at=1_002.0, promoted_at=None,
    )
    assert registry.get(v.version_id) == v
    evaluation = {"kl": 0.0125, "accuracy": 0.75, "baseline_kl": 0.5, "per_task": [1, 2.5]}
    assert registry.set_evaluation(v.version_id, evaluation).evaluation == evaluation
    assert registry.get(v.version_id).evaluation == evaluation
    assert registry.set_fingerprint(v.version_id, "fp-merged").fingerprint == "fp-merged"
    assert registry.set_fingerprint(v.version_id, "fp-merged").fingerprint == "fp-merged"
    with pytest.raises(ConflictError, match="fp-merged"):
        registry.set_fingerprint(v.version_id, "fp-other")  # cache keys depend on it


def test_list_newest_first_by_scope(registry: ModelRegistry, clock) -> None:
    a1, s1, a2 = (register(registry, clock, scope) for scope in ("a", SHARED, "a"))
    assert [v.version_id for v in registry.list()] == [a2.version_id, s1.version_id, a1.version_id]
    assert [v.version_id for v in registry.list("a")] == [a2.version_id, a1.version_id]
    assert [v.version_id for v in registry.list(SHARED)] == [s1.version_id]
    assert registry.list("nobody") == []
    registry.promote(a1.version_id, "a")
    registry.promote(s1.version_id, SHARED)
    assert [v.version_id for v in registry.list(status="active")] == [s1.version_id, a1.version_id]
    assert [v.version_id for v in registry.list("a", status="candidate")] == [a2.version_id]


def test_unknown_ids(registry: ModelRegistry) -> None:
    for call in (
        lambda: registry.get("mv_0000000000000000"),
        lambda: registry.set_evaluation("mv_0000000000000000", {}),
        lambda: registry.mark_failed("mv_0000000000000000"),
        lambda: registry.promote("mv_0000000000000000", ""),
        lambda: registry.register("", "m", "fp", parent_version="mv_0000000000000000"),
    ):
        with pytest.raises(NotFoundError, match="mv_0000000000000000"):
            call()
    assert registry.list() == []


def test_promotion_chain_and_rollback_to_base(registry: ModelRegistry, clock) -> None:
    a, b, c = (register(registry, clock) for _ in range(3))
    assert registry.active("acme") is None  # nothing promoted: the base model serves
    for v in (a, b, c):
        clock.tick()
        promoted = registry.promote(v.version_id, SHARED)
        assert (promoted.status, promoted.promoted_at) == ("active", clock.now)
    assert statuses(registry, a, b, c) == ["retired", "retired", "active"]
    assert registry.active("acme").version_id == c.version_id  # shared serves every tenant
    assert registry.rollback(SHARED).version_id == b.version_id
    assert statuses(registry, a, b, c) == ["retired", "active", "retired"]
    assert registry.rollback(SHARED).version_id == a.version_id  # two steps back, not to c
    assert registry.rollback(SHARED) is None  # before a: the base model
    assert statuses(registry, a, b, c) == ["retired", "retired", "retired"]
    assert registry.active(SHARED) is None
    with pytest.raises(ConflictError, match="no promotion"):
        registry.rollback(SHARED)
    ids = [(p.action, p.version_id, p.previous_version) for p in registry.history(SHARED)]
    A, B, C = a.version_id, b.version_id, c.version_id
    assert ids == [("promote", A, None), ("promote", B, A), ("promote", C, B),
                   ("rollback", B, C), ("rollback", A, B), ("rollback", None, A)]
    assert [p.seq for p in registry.history(SHARED)] == [1, 2, 3, 4, 5, 6]


def test_rollback_undoes_the_latest_promotion_in_effect(registry: ModelRegistry, clock) -> None:
    a, b, c, d = (register(registry, clock) for _ in range(4))
    for v in (a, b, c):
        registry.promote(v.version_id, SHARED)
    assert registry.rollback(SHARED).version_id == b.version_id
    registry.promote(d.version_id, SHARED)
    assert registry.rollback(SHARED).version_id == b.version_id  # c stays undone
    assert registry.rollback(SHARED).version_id == a.version_id
    registry.promote(b.version_id, SHARED)  # a retired version may come back
    assert registry.promote(b.version_id, SHARED).status == "active"  # again: no change
    assert len(registry.history(SHARED)) == 8
    assert registry.rollback(SHARED).version_id == a.version_id


def test_failed_versions_are_never_served(registry: ModelRegistry, clock) -> None:
    x, a, b, bad = (register(registry, clock) for _ in range(4))
    assert registry.mark_failed(bad.version_id).status == "failed"
    assert registry.mark_failed(bad.version_id).status == "failed"  # idempotent
    with pytest.raises(ConflictError, match="failed"):
        registry.promote(bad.version_id, SHARED)
    assert registry.history(SHARED) == [] and registry.active(SHARED) is None
    for v in (x, a, b):
        registry.promote(v.version_id, SHARED)
    with pytest.raises(ConflictError, match="active"):
        registry.mark_failed(b.version_id)  # it serves: roll back first
    registry.mark_failed(a.version_id)  # retired, then found bad
    assert registry.rollback(SHARED).version_id == x.version_id  # a is skipped
    assert registry.rollback(SHARED) is None  # and stays undone: before x, the base model
    assert statuses(registry, x, a, b) == ["retired", "failed", "retired"]


def test_tenant_scopes(registry: ModelRegistry, clock) -> None:
    mine, shared = register(registry, clock, "a"), register(registry, clock, SHARED)
    for version, scope in ((mine, "b"), (mine, SHARED), (shared, "a")):
        with pytest.raises(ConflictError, match="scope"):
            registry.promote(version.version_id, scope)
    assert statuses(registry, mine, shared) == ["candidate", "candidate"]
    registry.promote(mine.version_id, "a")
    assert registry.active("a").version_id == mine.version_id
    assert registry.active("b") is None and registry.active(SHARED) is None  # no leak
    registry.promote(shared.version_id, SHARED)
    assert registry.active("b").version_id == shared.version_id
    assert registry.active("a").version_id == mine.version_id  # its own one first
    assert statuses(registry, mine, shared) == ["active", "active"]  # one per scope
    with pytest.raises(ConflictError):
        registry.rollback("b")  # scope b never promoted anything
    assert registry.rollback("a") is None
    assert registry.active("a").version_id == shared.version_id


def test_parent_rules(registry: ModelRegistry, clock) -> None:
    shared, of_a = register(registry, clock), register(registry, clock, "a")
    assert register(registry, clock, "b", parent_version=shared.version_id).tenant == "b"
    assert register(registry, clock, "a", parent_version=of_a.version_id).tenant == "a"
    for scope in ("b", SHARED):  # a's weights must not reach another scope
        with pytest.raises(ConflictError, match="cannot derive"):
            register(registry, clock, scope, parent_version=of_a.version_id)
    with pytest.raises(InvalidRequestError, match="fp-base"):
        registry.register("a", "other-model", "fp-other", parent_version=of_a.version_id)
    assert len(registry.list()) == 4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tenant": None}, "tenant"),
        ({"tenant": "x" * 256}, "tenant"),
        ({"base_model": ""}, "base_model"),
        ({"base_fingerprint": "a\0b"}, "base_fingerprint"),
        ({"training": [1, 2]}, "training"),
        ({"training": {"loss": float("nan")}}, "NaN"),
        ({"training": {1: "int key"}}, "string keys"),
        ({"training": {"f": object()}}, "JSON"),
        ({"fingerprint": ""}, "fingerprint"),
    ],
)
def test_register_rejects_bad_input(registry: ModelRegistry, kwargs: dict, match: str) -> None:
    args = {"tenant": "t", "base_model": "m", "base_fingerprint": "fp"} | kwargs
    with pytest.raises(InvalidRequestError, match=match):
        registry.register(args.pop("tenant"), args.pop("base_model"),
                          args.pop("base_fingerprint"), **args)
    assert registry.list() == []


def test_bad_input_elsewhere(registry: ModelRegistry, clock) -> None:
    v = register(registry, clock)
    with pytest.raises(InvalidRequestError, match="evaluation"):
        registry.set_evaluation(v.version_id, {"kl": float("inf")})
    with pytest.raises(InvalidRequestError, match="version_id"):
        registry.get(None)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="tenant"):
        registry.active(None)  # type: ignore[arg-type]
    assert registry.get(v.version_id).evaluation == {}


def test_concurrent_promotes_serialize(
    url: str, registry: ModelRegistry, clock, in_threads
) -> None:
    # Half the threads on the shared registry, half on engines of their own (as other
    # processes would be); every promote must see the one before it.
    versions = [[register(registry, clock, "t").version_id for _ in range(ROUNDS)]
                for _ in range(PROMOTERS)]
    engines = [open_index_engine(url) for _ in range(PROMOTERS // 2)]
    registries = [registry] * (PROMOTERS - len(engines)) + [ModelRegistry(e) for e in engines]
    try:
        in_threads(lambda i: [registries[i].promote(v, "t") for v in versions[i]], PROMOTERS)
    finally:
        for e in engines:
            e.dispose()
    history = registry.history("t")
    assert len(history) == PROMOTERS * ROUNDS
    # A chain: each promotion replaced the one just before it, none was lost.
    assert [p.previous_version for p in history] == [None] + [p.version_id for p in history[:-1]]
    active = [v for v in registry.list("t") if v.status == "active"]
    assert [v.version_id for v in active] == [history[-1].version_id]


def test_database_allows_one_active_version_per_scope(engine: sa.Engine) -> None:
    # The migration's partial unique index backs the registry up against any other writer.
    row = "('{id}', 't', 'm', 'fp', '', '{{}}', '{{}}', '{status}', 1.0)"
    insert = ("INSERT INTO model_versions (version_id, tenant, base_model, base_fingerprint, "
              "adapter_key, training, evaluation, status, created_at) VALUES ")
    with engine.begin() as conn:
        conn.execute(sa.text(insert + row.format(id="mv_1", status="active")))
        conn.execute(sa.text(insert + row.format(id="mv_2", status="retired")))
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(sa.text(insert + row.format(id="mv_3", status="active")))
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(sa.text(insert + row.format(id="mv_4", status="promoted")))


def test_built_from_a_cache_index(url: str) -> None:
    with CacheIndex.open(url) as index:
        registry = ModelRegistry(index.engine)
        v = registry.register("t", "m", "fp")
        assert registry.get(v.version_id) == v


def test_database_errors_are_typed(tmp_path: Path) -> None:
    engine = create_index_engine(IndexConfig(f"sqlite:///{tmp_path}/never-migrated.db"))
    with pytest.raises(CacheIndexError, match="model_versions"):
        ModelRegistry(engine).get("mv_0000000000000000")
    engine.dispose()
