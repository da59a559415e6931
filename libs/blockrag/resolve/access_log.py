"""AccessLog: cache hits counted in memory and written to the index in batches, off the request path.

A lookup is a read; counting its hits in the same call made every question a write transaction
(SQLite's one writer lock, PostgreSQL row locks on hot entries). Here a hit costs a dict update;
a background thread writes the counts every ``flush_every_s`` (or sooner once ``max_pending``
entries wait) in one transaction per (tenant, version). The counts drive eviction order and
warming, which need them roughly right, not per request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable

from blockrag.kvcache.index import CacheIndex

log = logging.getLogger("blockrag.resolve")

Batch = dict[tuple[str, str], Counter[str]]  # (tenant, model_version) -> block id -> hits


class AccessLog:
    """Thread-safe; ``close`` writes what is pending and stops the thread."""

    def __init__(self, index: CacheIndex, *, flush_every_s: float = 1.0, max_pending: int = 4096,
                 clock: Callable[[], float] = time.time):
        if flush_every_s <= 0 or max_pending < 1:
            raise ValueError(f"flush_every_s must be > 0 and max_pending >= 1; got {flush_every_s}, {max_pending}")
        self.index, self.flush_every_s, self.max_pending, self.clock = index, flush_every_s, max_pending, clock
        self._pending: Batch = {}
        self._size = 0  # distinct (tenant, version, block) pending
        self._at = 0.0  # the latest access pending
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="blockrag-access-log", daemon=True)
        self._thread.start()

    def record(self, tenant: str, model_version: str, block_ids: Iterable[str]) -> None:
        """Count one hit of each id (no I/O)."""
        with self._lock:
            counts = self._pending.setdefault((tenant, model_version), Counter())
            for block_id in block_ids:
                self._size += block_id not in counts
                counts[block_id] += 1
            self._at = self.clock()
            full = self._size >= self.max_pending
        if full:
            self._wake.set()

    def flush(self) -> int:
        """Write the pending counts now; the number of (block, version) counts written.

        A batch that fails is logged and kept for the next flush: the request paths that made
        the hits have long returned, so there is nobody to raise to."""
        with self._lock:
            batch, at = self._pending, self._at
            self._pending, self._size = {}, 0
        written = 0
        for (tenant, version), counts in batch.items():
            try:
                self.index.record_hits(tenant, version, counts, at)
                written += len(counts)
            except Exception as e:  # noqa: BLE001 - retried at the next flush (see docstring)
                log.warning("access log: %d hit counts of tenant %r not written yet (%s: %s)",
                            len(counts), tenant, type(e).__name__, e)
                self._requeue(tenant, version, counts)
        return written

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join()
        self.flush()

    def _requeue(self, tenant: str, version: str, counts: Counter[str]) -> None:
        with self._lock:
            if self._size >= self.max_pending:  # the index stays down: drop, do not grow
                return
            mine = self._pending.setdefault((tenant, version), Counter())
            self._size += sum(1 for b in counts if b not in mine)
            mine.update(counts)

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.flush_every_s)
            self._wake.clear()
            if not self._closed:
                self.flush()
