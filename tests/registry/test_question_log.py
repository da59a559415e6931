"""QuestionLog on SQLite and PostgreSQL: per-tenant reads, pruning by age and by count."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from blockrag.errors import InvalidRequestError
from blockrag.registry import LoggedQuestion, QuestionLog

DAY = 86_400.0


@pytest.fixture
def log(engine: sa.Engine, clock) -> QuestionLog:
    return QuestionLog(engine, retention_days=1, max_rows_per_tenant=3, clock=clock)


def ask(log: QuestionLog, clock, tenant: str, question: str, at: float) -> LoggedQuestion:
    clock.now = at
    return log.record(tenant, question, ["blk_a", "blk_b"], "fp-1")


def questions(rows: list[LoggedQuestion]) -> list[str]:
    return [r.question for r in rows]


def test_record_and_read_back(log: QuestionLog, clock) -> None:
    ids = ["blk_z", "blk_a", "blk_z"]  # order and repeats kept
    row = log.record("acme", "Wie rotiere ich die Schlüssel? ✓", ids, "mv_0123456789abcdef")
    assert row == LoggedQuestion(1, "acme", "Wie rotiere ich die Schlüssel? ✓", tuple(ids),
                                 "mv_0123456789abcdef", 1_000.0)
    assert log.recent("acme") == [row]
    assert log.record("acme", "no blocks", [], "fp").block_ids == ()


def test_recent_is_per_tenant_and_newest_first(log: QuestionLog, clock) -> None:
    for i, tenant in enumerate(["a", "b", "a", "a", "b"]):
        ask(log, clock, tenant, f"{tenant}{i}", 1_000.0)  # same instant: insertion order
    assert questions(log.recent("a")) == ["a3", "a2", "a0"]
    assert questions(log.recent("b")) == ["b4", "b1"]
    assert questions(log.recent("a", limit=2)) == ["a3", "a2"]
    assert log.recent("c") == []
    ask(log, clock, "", "default's", 1_000.0)  # "" is the CacheIndex's default tenant
    assert questions(log.recent("default")) == questions(log.recent("")) == ["default's"]


def test_prune_by_age(log: QuestionLog, clock) -> None:
    ask(log, clock, "a", "old", 0.0)
    ask(log, clock, "b", "old b", 0.5 * DAY)
    ask(log, clock, "a", "at the cutoff", 1.0 * DAY)
    ask(log, clock, "a", "new", 1.5 * DAY)
    assert log.prune(now=2.0 * DAY) == 2  # older than 1 day at 2 days: before 1 day
    assert questions(log.recent("a")) == ["new", "at the cutoff"]
    assert log.recent("b") == []
    assert log.prune(now=2.0 * DAY) == 0
    clock.now = 2.25 * DAY
    assert log.prune() == 1  # now defaults to the clock
    assert questions(log.recent("a")) == ["new"]


def test_prune_by_count_per_tenant(log: QuestionLog, clock) -> None:
    for i in range(5):
        ask(log, clock, "a", f"a{i}", 10.0 + i)
    ask(log, clock, "b", "b0", 9.0)
    assert log.prune(now=20.0) == 2  # a's two oldest; b under its cap
    assert questions(log.recent("a")) == ["a4", "a3", "a2"]
    assert questions(log.recent("b")) == ["b0"]
    assert log.prune(now=20.0) == 0


def test_prune_counts_each_row_once(log: QuestionLog, clock) -> None:
    for i in range(6):
        ask(log, clock, "a", f"a{i}", i * DAY)
    # Age removes a0..a3 (before day 4); the cap of 3 then has nothing left to remove.
    assert log.prune(now=5.0 * DAY) == 4
    assert questions(log.recent("a")) == ["a5", "a4"]


@pytest.mark.parametrize(
    ("tenant", "question", "block_ids", "model_version", "match"),
    [
        ("a", "", [], "fp", "question"),
        ("a", "nul\0", [], "fp", "question"),
        ("a", "q", "blk_a", "fp", "block_ids"),
        ("a", "q", [1], "fp", "block_ids"),
        ("a", "q", [], "", "model_version"),
        (None, "q", [], "fp", "tenant"),
    ],
)
def test_record_rejects_bad_input(
    engine: sa.Engine, log: QuestionLog, tenant: str, question: str, block_ids: object,
    model_version: str, match: str,
) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        log.record(tenant, question, block_ids, model_version)  # type: ignore[arg-type]
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM question_log")).scalar_one() == 0


@pytest.mark.parametrize(
    ("retention_days", "max_rows", "match"),
    [(0, 1, "retention_days"), (float("inf"), 1, "retention_days"), (1, 0, "max_rows")],
)
def test_config_is_checked(
    engine: sa.Engine, retention_days: float, max_rows: int, match: str
) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        QuestionLog(engine, retention_days, max_rows)
