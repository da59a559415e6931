"""The registry's stores against real databases: a SQLite file and the PostgreSQL server."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from blockrag.kvcache.index import open_index_engine

TABLES = ("question_log", "distill_runs", "model_promotions", "model_versions")


class Clock:
    """A clock the test moves by hand, so order never depends on timer resolution."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float = 1.0) -> None:
        self.now += seconds


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/index.db"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engine(url: str) -> Iterator[sa.Engine]:
    engine = open_index_engine(url)
    if url.startswith("postgresql"):
        # The session's database is shared by the PostgreSQL cases: start each one empty.
        with engine.begin() as conn:
            conn.execute(sa.text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY"))
    yield engine
    engine.dispose()


@pytest.fixture
def in_threads() -> Callable[[Callable[[int], None], int], None]:
    """in_threads(work, n): run work(0..n-1) in n threads started together; re-raise the
    first failure in the test's thread."""
    return _in_threads


def _in_threads(work: Callable[[int], None], n: int) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(n)

    def run(i: int) -> None:
        try:
            start.wait()
            work(i)
        except BaseException as e:  # re-raised below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
