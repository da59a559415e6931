"""The registry's stores against real databases: a SQLite file and the PostgreSQL server."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from fixtures.index_db import Clock

from blockrag.kvcache.index import open_index_engine

TABLES = ("question_log", "distill_runs", "model_promotions", "model_versions")


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
