"""TenantLabels: the value a metric's ``tenant`` label takes, bounded.

The tenant comes from client input (a request field, or a key's tenant), and every distinct label
value is a new series in every tenant-labelled metric: ten made-up tenants once added 440 series.
So known tenants (the fixed ones, plus those the sources list: tenants holding an API key or
having ingested documents) keep their name and every other tenant is folded into OTHER.

Sources are read again every ``refresh_s`` seconds (a revoked tenant drops out), and on a label
for a tenant not known yet, at most every ``miss_refresh_s`` seconds: a tenant that ingested a
moment ago is labelled by name on its first ask, while a stream of made-up tenants costs at most
one read per ``miss_refresh_s``. A process where no source was set (a one-shot CLI, a test)
knows no tenant list and labels every tenant as given.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

OTHER = "other"  # every tenant nobody configured, gave a key or let ingest
Source = Callable[[], Iterable[str] | None]  # the known tenants now; None: unknown this time (keep the last)


class TenantLabels:
    def __init__(self, fixed: Iterable[str] = ("default",), refresh_s: float = 30.0, miss_refresh_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        """``fixed``: tenants always known (the unauthenticated platform's ``default``)."""
        if not 0 <= miss_refresh_s <= refresh_s:
            raise ValueError(f"need 0 <= miss_refresh_s <= refresh_s, got {miss_refresh_s} and {refresh_s}")
        self.refresh_s, self.miss_refresh_s, self._clock = refresh_s, miss_refresh_s, clock
        self._fixed = frozenset(fixed)
        self._sources: dict[str, Source] = {}
        self._found: frozenset[str] = frozenset()
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def set_source(self, name: str, source: Source) -> None:
        """Also know the tenants ``source`` lists (read on the next label); it replaces an earlier
        source of that ``name`` (a replica rebuilt in one process)."""
        with self._lock:
            self._sources[name] = source
            self._read_at = float("-inf")

    def learn(self, tenant: str) -> None:
        """Know ``tenant`` now: this process just wrote its documents, so the sources list it from
        now on. Without it, a label read moments before the write (during the Ingest itself) kept
        the tenant OTHER for up to ``miss_refresh_s``, and its first ask counted as "other"."""
        if not self._sources:
            return
        with self._lock:
            self._found = self._found | {tenant}

    def label(self, tenant: str) -> str:
        """``tenant`` when known (or when no source was set), else OTHER."""
        if tenant in self._fixed or not self._sources:
            return tenant
        now = self._clock()
        with self._lock:
            age = now - self._read_at
            if age >= self.refresh_s or (tenant not in self._found and age >= self.miss_refresh_s):
                self._read(now)
            return tenant if tenant in self._found else OTHER

    def _read(self, now: float) -> None:
        found: set[str] = set()
        for source in self._sources.values():
            tenants = source()
            # a source that cannot answer now (its database down) keeps what was known
            found.update(self._found if tenants is None else tenants)
        self._found, self._read_at = frozenset(found), now


TENANT_LABELS = TenantLabels()  # the one the metrics helpers label through (blockrag.telemetry.metrics)


def learn_tenant(tenant: str) -> None:
    """TENANT_LABELS.learn, as a function: a Serve deployment's methods are pickled with the
    globals they name, and TenantLabels holds a lock (it cannot be pickled); a function of an
    importable module is pickled by reference."""
    TENANT_LABELS.learn(tenant)
