"""The quota rows of the cache index (kvcache.index_usage) do not grow without bound: an admission
deletes its tenant's rows gone from the window and lapsed holds, and a maintenance pass deletes
those of tenants gone quiet (older than KEPT_S). SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from fixtures.index_db import Clock, empty_index_tables

from blockrag.errors import QuotaExceededError
from blockrag.kvcache.index import CacheIndex
from blockrag.kvcache.index_usage import KEPT_S, Charge, Usage
from blockrag.kvcache.maintenance import CacheMaintenance, run_pass
from blockrag.kvcache.object_store import LocalObjectStore

@pytest.fixture
def index(url: str) -> Iterator[CacheIndex]:
    index = CacheIndex.open(url)  # on the real clock
    empty_index_tables(url)
    yield index
    index.close()


def rows(index: CacheIndex) -> list[tuple]:
    with index.engine.connect() as conn:
        return ([("tokens", *r) for r in conn.execute(sa.text("SELECT tenant, second, tokens FROM quota_tokens "
                                                              "ORDER BY tenant, second"))]
                + [("hold", *r) for r in conn.execute(sa.text("SELECT tenant, plan, nbytes FROM quota_holds "
                                                              "ORDER BY tenant, plan"))])


def admit(index: CacheIndex, tenant: str, at: float, tokens: int, nbytes: int = 0, plan: str | None = None) -> Usage:
    seen: list[Usage] = []
    index.admit_usage(tenant, Charge(at, 60.0, tokens=tokens, count_bytes=True, nbytes=nbytes, plan=plan,
                                     hold_s=100.0), seen.append)
    return seen[0]


def test_an_admission_prunes_its_tenants_rows_and_sees_its_window(index: CacheIndex) -> None:
    admit(index, "a", 1000.0, 5, nbytes=50, plan="pln_a1")
    admit(index, "a", 1000.5, 2)  # the same second (ends at 1001) as 1000.2 would be: one row
    admit(index, "b", 1000.0, 7)
    usage = admit(index, "a", 1040.0, 1)
    assert usage == Usage(50, ((1000, 5), (1001, 2))) and usage.tokens == 7
    # 1099.5: the seconds ending at 1000 and 1001 left the window (and are deleted); the hold stands
    assert admit(index, "a", 1099.5, 3) == Usage(50, ((1040, 1),))
    assert rows(index) == [("tokens", "a", 1040, 1), ("tokens", "a", 1100, 3), ("tokens", "b", 1000, 7),
                           ("hold", "a", "pln_a1", 50)]
    # 1100.5: the hold lapsed at 1100, the second ending at 1040 left; b's rows are b's to prune
    assert admit(index, "a", 1100.5, 0) == Usage(0, ((1100, 3),))
    assert rows(index) == [("tokens", "a", 1100, 3), ("tokens", "b", 1000, 7)]


def test_a_refused_admission_records_and_prunes_nothing(index: CacheIndex) -> None:
    admit(index, "a", 1000.0, 5, nbytes=50, plan="pln_a1")
    before = rows(index)

    def refuse(usage: Usage) -> None:
        raise QuotaExceededError("over")

    with pytest.raises(QuotaExceededError):
        index.admit_usage("a", Charge(1200.0, 60.0, tokens=3, nbytes=9, plan="pln_a2"), refuse)
    assert rows(index) == before


def test_maintenance_prunes_the_rows_of_quiet_tenants(index: CacheIndex, tmp_path) -> None:
    clock = Clock()
    admit(index, "quiet", clock.now, 5, nbytes=50, plan="pln_q")
    admit(index, "busy", clock.now + KEPT_S - 10, 5)
    clock.tick(KEPT_S + 1)  # the quiet tenant's second (1000) and hold (until 1100) are over an hour old
    run_pass(index, LocalObjectStore(tmp_path / "kv"), CacheMaintenance(), clock=clock)
    assert rows(index) == [("tokens", "busy", int(1000 + KEPT_S - 10), 5)]
