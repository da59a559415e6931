"""AccessLog: hits reach the index in batches, by its own thread; a failed batch is kept."""

from __future__ import annotations

import time

from blockrag.errors import CacheIndexError
from blockrag.kvcache.index import CacheIndex, KVEntry
from blockrag.resolve import AccessLog


def hits(index: CacheIndex) -> dict[str, int]:
    with index.engine.begin() as conn:
        return dict(conn.exec_driver_sql("SELECT block_id, hits FROM kv_entries").fetchall())


def stored(index: CacheIndex, *texts: str) -> list[str]:
    ids = index.register_blocks("t", [(t, 1) for t in texts])
    index.commit_entries("t", [KVEntry(b, "v1", f"file:///kv/{b}", 1) for b in ids])
    return ids


def test_the_thread_writes_batches(index):
    a, b = stored(index, "a", "b")
    log = AccessLog(index, flush_every_s=0.05)
    for _ in range(3):
        log.record("t", "v1", [a])
    log.record("t", "v1", [a, b])
    assert hits(index) == {a: 0, b: 0}  # recorded in memory only
    deadline = time.monotonic() + 5
    while hits(index) != {a: 4, b: 1}:
        assert time.monotonic() < deadline, hits(index)
        time.sleep(0.02)
    log.close()


def test_a_full_log_flushes_early_and_close_writes_the_rest(index):
    a, b, c = stored(index, "a", "b", "c")
    log = AccessLog(index, flush_every_s=3600, max_pending=2)
    log.record("t", "v1", [a, b])  # two pending: the thread is woken
    deadline = time.monotonic() + 5
    while hits(index)[a] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    log.record("t", "v1", [c])
    log.close()
    assert hits(index) == {a: 1, b: 1, c: 1}


class FailingOnce(CacheIndex):
    def __init__(self, index: CacheIndex) -> None:
        super().__init__(index.engine)
        self.failures = 1

    def record_hits(self, *args, **kwargs) -> None:
        if self.failures:
            self.failures -= 1
            raise CacheIndexError("the database is restarting")
        super().record_hits(*args, **kwargs)


def test_a_failed_batch_is_kept_for_the_next_flush(index, caplog):
    (a,) = stored(index, "a")
    log = AccessLog(FailingOnce(index), flush_every_s=3600)
    log.record("t", "v1", [a])
    assert log.flush() == 0 and "not written yet" in caplog.text
    log.record("t", "v1", [a])
    assert log.flush() == 1 and hits(index) == {a: 2}
    log.close()
