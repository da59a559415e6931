"""The quotas hold across writers: two BlockWriters (two Precompute replicas, each with its own
TenantQuotas and its own engine) over one index database together stay within a tenant's
tokens per minute and stored bytes; concurrent admissions from threads and from two processes
never exceed them; the window slides with the (injected) clock; a refusal records nothing.
SQLite and the real PostgreSQL. Against the in-memory window each replica had its own minute,
and the bytes of a write in flight were not counted: every test here failed."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
import threading

import pytest
import sqlalchemy as sa
from fixtures.index_db import Clock
from fixtures.postgres import fresh_database

from blockrag.errors import QuotaExceededError
from blockrag.kvcache.index import CacheIndex
from blockrag.kvcache.index_usage import HOLD_S
from blockrag.resolve import BlockWriter, Quota, TenantQuotas
from blockrag.resolve.writer import kv_bytes_per_token

TEXTS = ["Ada Brenn signs every permit for long boats.", "Fishing boats unload at the eastern pier.",
         "A ferry to Skarvholm leaves twice a day.", "The Harbour Office of Tolvik opens at seven."]


@pytest.fixture(params=["sqlite", "postgres"])
def database(request, tmp_path):
    """The URL of an empty, migrated index database."""
    with contextlib.ExitStack() as stack:
        url = f"sqlite:///{tmp_path}/index.db" if request.param == "sqlite" else stack.enter_context(fresh_database())
        CacheIndex.open(url).close()
        yield url


@pytest.fixture
def replicas(database):
    """Two indexes over the database, as two replicas open it."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(CacheIndex.open(database)) for _ in range(2)]


def usage_rows(index: CacheIndex) -> tuple[list[tuple], list[tuple]]:
    """(quota_tokens rows, quota_holds rows): what an admission records."""
    with index.engine.connect() as conn:
        return ([tuple(r) for r in conn.execute(sa.text("SELECT tenant, second, tokens FROM quota_tokens "
                                                        "ORDER BY tenant, second"))],
                [tuple(r) for r in conn.execute(sa.text("SELECT tenant, nbytes, expires_at FROM quota_holds "
                                                        "ORDER BY tenant, plan"))])


def test_two_replicas_share_the_tokens_per_minute(replicas, runtime, objects):
    clock = Clock()
    n = [len(runtime.template.block_ids(t)) for t in TEXTS]
    assert n[2] <= n[0]  # so that B alone (n[1] + n[2]) would be within the quota
    limit = n[0] + n[1]
    a, b = (BlockWriter(index, objects, quotas=TenantQuotas(Quota(max_precompute_tokens_per_minute=limit),
                                                            clock=clock)) for index in replicas)
    a.write(runtime, "acme", [TEXTS[0]])  # at 1000
    clock.tick(30)
    b.write(runtime, "acme", [TEXTS[1]])  # at 1030: the quota is spent, across the two
    clock.tick(10)
    before = usage_rows(replicas[0])
    assert before == ([("acme", 1000, n[0]), ("acme", 1030, n[1])], [])
    with pytest.raises(QuotaExceededError) as refused:
        b.write(runtime, "acme", [TEXTS[2]])
    assert str(refused.value) == (
        f"tenant 'acme' had {limit} tokens precomputed in the last minute and these blocks need {n[2]} more, "
        f"over its quota of {limit} tokens per minute; retry in 20 s")
    assert usage_rows(replicas[0]) == before and replicas[0].stats().blocks == 2  # the refusal recorded nothing
    clock.tick(19)  # 1059: A's tokens of 1000 are still in the window
    with pytest.raises(QuotaExceededError, match="retry in 1 s"):
        a.write(runtime, "acme", [TEXTS[2]])
    clock.tick(1)  # 1060: they leave it, for both replicas
    assert a.write(runtime, "acme", [TEXTS[2]])[0].computed
    assert usage_rows(replicas[1]) == ([("acme", 1030, n[1]), ("acme", 1060, n[2])], [])  # 1000 pruned


def test_two_replicas_cannot_both_take_the_last_bytes(replicas, runtime, objects):
    """A's admitted write holds its bytes until it ends, so B's concurrent plan is refused; once
    A's entry is committed the entry counts instead of the hold; a hold its writer never ended
    lapses."""
    clock = Clock()
    per_token = kv_bytes_per_token(runtime)
    est = [len(runtime.template.block_ids(t)) * per_token for t in TEXTS]
    limit = est[0] + est[1] - 1
    a, b = (BlockWriter(index, objects, quotas=TenantQuotas(Quota(max_stored_bytes=limit), clock=clock))
            for index in replicas)
    plan = a.plan(runtime, "acme", [TEXTS[0]])  # admitted: holds est[0]
    assert usage_rows(replicas[1]) == ([], [("acme", est[0], 1000 + HOLD_S)])
    with pytest.raises(QuotaExceededError) as refused:
        b.plan(runtime, "acme", [TEXTS[1]])
    assert str(refused.value) == (
        f"tenant 'acme' stores {est[0]} bytes of KV and these blocks would add about {est[1]}, over its quota "
        f"of {limit} bytes; evict entries (blockrag-admin cache evict) or ask for a larger quota")
    (written,) = a.encode(runtime, "acme", plan)
    assert usage_rows(replicas[1]) == ([], [])  # the hold ended with the write: the entry counts now
    with pytest.raises(QuotaExceededError, match=f"stores {written.nbytes} bytes of KV"):
        b.plan(runtime, "acme", [TEXTS[1]])
    replicas[0].evict("acme", [written.block_id])
    b.plan(runtime, "acme", [TEXTS[1]])  # B's plan, never encoded (its replica died): its hold stays...
    with pytest.raises(QuotaExceededError, match=f"stores {est[1]} bytes of KV"):
        a.plan(runtime, "acme", [TEXTS[0]])
    clock.tick(HOLD_S)  # ...until it lapses
    assert a.write(runtime, "acme", [TEXTS[0]])[0].computed
    assert usage_rows(replicas[1]) == ([], [])


@pytest.mark.parametrize("quota", ["tokens", "bytes"])
def test_concurrent_admissions_from_threads_never_exceed_the_quota(database, quota):
    """8 threads, each a replica of its own (its index, its TenantQuotas), admit 7 tokens (or 70
    bytes) at a time, 10 times each, within one minute, against a quota of 100 (or 1000): 14
    admissions, whatever the interleaving."""
    limit = Quota(max_precompute_tokens_per_minute=100) if quota == "tokens" else Quota(max_stored_bytes=1000)
    threads, tries = 8, 10
    start = threading.Barrier(threads)
    admitted: list[int] = []

    def replica(i: int) -> None:
        clock = Clock()
        quotas = TenantQuotas(limit, clock=clock)
        with CacheIndex.open(database) as index:
            start.wait()
            for k in range(tries):
                clock.now = 1000.0 + k  # the replicas' clocks agree; the tries span 10 s of the minute
                try:
                    quotas.admit("acme", 7, 70, index, plan=f"pln_{i:02d}_{k:02d}")
                except QuotaExceededError:
                    continue
                admitted.append(1)

    workers = [threading.Thread(target=replica, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert not any(w.is_alive() for w in workers)
    assert len(admitted) == 14
    with CacheIndex.open(database) as index:
        tokens, holds = usage_rows(index)
    if quota == "tokens":
        assert sum(n for _, _, n in tokens) == 98 and holds == []
    else:
        assert tokens == [] and sum(n for _, n, _ in holds) == 980


# One replica process: admits 7 tokens per try at a fixed time once told to go; prints how many.
REPLICA = textwrap.dedent("""
    import sys
    from blockrag.errors import QuotaExceededError
    from blockrag.kvcache.index import CacheIndex
    from blockrag.resolve.quotas import Quota, TenantQuotas

    quotas = TenantQuotas(Quota(max_precompute_tokens_per_minute=100), clock=lambda: 1000.0)
    admitted = 0
    with CacheIndex.open(sys.argv[1]) as index:
        print("ready", flush=True)
        sys.stdin.readline()
        for _ in range(20):
            try:
                quotas.admit("acme", 7, 0, index)
                admitted += 1
            except QuotaExceededError:
                pass
    print(admitted, flush=True)
""")


def test_two_processes_never_exceed_the_quota_on_postgres():
    with fresh_database() as url:
        CacheIndex.open(url).close()
        procs = [subprocess.Popen([sys.executable, "-c", REPLICA, url], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True) for _ in range(2)]
        try:
            assert [p.stdout.readline().strip() for p in procs] == ["ready", "ready"]
            for p in procs:  # both go at once
                p.stdin.write("go\n")
                p.stdin.flush()
            counts = [int(p.communicate(timeout=120)[0]) for p in procs]
        finally:
            for p in procs:
                p.kill()
        assert sum(counts) == 14, counts
        with CacheIndex.open(url) as index:
            assert usage_rows(index) == ([("acme", 1000, 98)], [])
