"""Cache maintenance: eviction (kvcache.eviction) and the orphan sweep (kvcache.sweeper) run
together every ``interval_s`` while the platform runs, so the store stays within its configured
bounds without anyone running ``blockrag-admin cache evict`` by hand.

``CacheMaintenance`` is the typed config (PlatformConfig.cache_maintenance), checked once when the
platform's config is built; ``run_pass`` is one pass; ``MaintenanceLoop`` runs passes on a thread
of its own. A pass that fails (the object store or the database down) is logged, counted and tried
again one interval later: the loop outlives it, since a dead loop would let the store grow unseen.

Several loops (one per Admin replica) may run at once: eviction deletes rows by key in a
transaction and the sweep deletes only what no row names, so a second pass finds less to do.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from blockrag.defaults import CACHE_MAINTENANCE_INTERVAL_S as DEFAULT_INTERVAL_S
from blockrag.errors import BlockRAGError, InvalidRequestError
from blockrag.kvcache.eviction import DEFAULT_READER_GRACE_S, EvictionPolicy, EvictionReport, Watermarks, evict
from blockrag.kvcache.index import CacheIndex
from blockrag.kvcache.object_store import ObjectStore
from blockrag.kvcache.sweeper import SweepReport, sweep_orphans

log = logging.getLogger("blockrag.kvcache.maintenance")

# Longer than the sweeper's own default (an hour, for `blockrag-admin cache sweep`): a background
# sweep has no hurry, orphans come from crashes only, and a day keeps it clear of any slow writer
# and of clocks that disagree between the store and the platform.
DEFAULT_SWEEP_GRACE_S = 86400.0


def _seconds(value: object, name: str, *, positive: bool = False, note: str = "") -> float:
    """``value`` as seconds: a finite number >= 0 (> 0 if ``positive``); bools, strings, NaN and
    infinity refused."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf \
            or (positive and value == 0):
        raise InvalidRequestError(f"cache_maintenance {name} must be a finite number of seconds "
                                  f"{'>' if positive else '>='} 0{note}, got {value!r}")
    return float(value)


def _watermarks(value: object, name: str) -> Watermarks | None:
    """A mapping {high_bytes, low_bytes} of the YAML (or Watermarks) as Watermarks; None: no bound."""
    if value is None or isinstance(value, Watermarks):
        return value
    if not isinstance(value, Mapping) or set(value) != {"high_bytes", "low_bytes"}:
        raise InvalidRequestError(
            f"cache_maintenance {name} must be a mapping of high_bytes and low_bytes (or null: no bound), "
            f"got {value!r}")
    try:
        return Watermarks(value["high_bytes"], value["low_bytes"])
    except InvalidRequestError as e:
        raise InvalidRequestError(f"cache_maintenance {name}: {e}") from e


@dataclass(frozen=True)
class CacheMaintenance:
    """When maintenance runs and what it bounds. Sizes are bytes of stored KV (the index's
    nbytes, what `blockrag-admin cache stats` shows per tenant); None: no bound. On by default:
    with no bound or TTL configured a pass evicts nothing and only sweeps day-old orphans."""

    interval_s: float = DEFAULT_INTERVAL_S  # between passes, the first one interval after start; 0: off
    # between deleting rows and their objects, for readers that looked a row up just before
    # (kvcache.eviction); scheduled passes and `blockrag-admin cache evict` both wait this long
    reader_grace_s: float = DEFAULT_READER_GRACE_S
    sweep_grace_s: float = DEFAULT_SWEEP_GRACE_S  # orphan objects younger than this are kept
    tenant: Watermarks | None = None  # each tenant's entries
    tenants: dict[str, Watermarks] = field(default_factory=dict)  # tenants with bounds of their own
    store: Watermarks | None = None  # every tenant's entries together
    ttl_s: float | None = None  # entries not accessed for this long go

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: the YAML's values, checked and converted once here
        set_(self, "interval_s", _seconds(self.interval_s, "interval_s", note=" (0: off)"))
        set_(self, "reader_grace_s", _seconds(self.reader_grace_s, "reader_grace_s"))
        set_(self, "sweep_grace_s", _seconds(self.sweep_grace_s, "sweep_grace_s"))
        if self.ttl_s is not None:
            set_(self, "ttl_s", _seconds(self.ttl_s, "ttl_s", positive=True, note=" (null: no TTL)"))
        set_(self, "tenant", _watermarks(self.tenant, "tenant"))
        set_(self, "store", _watermarks(self.store, "store"))
        if not isinstance(self.tenants, Mapping):
            raise InvalidRequestError(
                f"cache_maintenance tenants must be a mapping of tenant -> watermarks, got {self.tenants!r}")
        set_(self, "tenants", {str(t): _watermarks(m, f"tenants.{t}") for t, m in self.tenants.items()})

    @property
    def enabled(self) -> bool:
        return self.interval_s > 0

    def policy(self) -> EvictionPolicy:
        return EvictionPolicy(tenant=self.tenant, tenants=self.tenants, store=self.store, ttl_s=self.ttl_s)


@dataclass(frozen=True)
class MaintenanceReport:
    eviction: EvictionReport
    sweep: SweepReport
    seconds: float

    def summary(self) -> str:
        e, s = self.eviction, self.sweep
        reasons = ", ".join(f"{n} by {reason}" for reason, n in sorted(e.by_reason.items()))
        return (f"evicted {e.entries} entries ({e.bytes} bytes{'; ' + reasons if reasons else ''}), "
                f"swept {s.deleted} orphan objects ({s.deleted_bytes} bytes) and {s.expired_writes} expired "
                f"writes, in {self.seconds:.1f} s")


def run_pass(index: CacheIndex, store: ObjectStore, settings: CacheMaintenance, *,
             clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> MaintenanceReport:
    """One pass: evict by ``settings`` (rows, the reader pause, objects), sweep orphans, then prune
    the quota rows of tenants gone quiet (an admission prunes its own tenant's). Raises what any
    raises (ObjectStoreError, CacheIndexError...): the caller retries."""
    started = time.monotonic()
    eviction = evict(index, store, settings.policy(), reader_grace_s=settings.reader_grace_s, clock=clock,
                     sleep=sleep)
    # after eviction: objects of a pass that died between rows and objects are swept once old
    sweep = sweep_orphans(index, store, grace_s=settings.sweep_grace_s, clock=clock)
    index.prune_usage(clock())
    return MaintenanceReport(eviction, sweep, time.monotonic() - started)


class MaintenanceLoop:
    """Runs ``run_pass`` every ``settings.interval_s`` on a daemon thread until ``stop()``."""

    def __init__(self, index: CacheIndex, store: ObjectStore, settings: CacheMaintenance, *,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep):
        if not settings.enabled:
            raise InvalidRequestError("cache maintenance is off (interval_s 0): there is no loop to run")
        self.index, self.store, self.settings = index, store, settings
        self.clock, self.sleep = clock, sleep
        self.passes: Counter[str] = Counter()  # outcome ("ok", "failed") -> passes so far
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cache-maintenance", daemon=True)
        # imported here, not above: PlatformConfig imports this module before the platform sets
        # PROMETHEUS_MULTIPROC_DIR, and prometheus_client reads it at its first import
        from blockrag.telemetry import observe_cache_maintenance

        self._observe = observe_cache_maintenance
        self._observe(None)  # the series exist, at 0, before the first pass

    def start(self) -> MaintenanceLoop:
        log.info("cache maintenance every %g s: %s", self.settings.interval_s, self.settings)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """End the loop after the pass in progress, if any (waits up to ``timeout``)."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def run_once(self) -> MaintenanceReport | None:
        """One pass, logged and counted; None if it failed (logged with its cause)."""
        try:
            report = run_pass(self.index, self.store, self.settings, clock=self.clock, sleep=self.sleep)
        except Exception as e:  # noqa: BLE001 - the loop must outlive a pass: the next one retries
            self.passes["failed"] += 1
            self._observe("failed")
            # a typed error (a store or database down) says it all; anything else is a bug: its traceback
            log.warning("cache maintenance pass failed, retrying in %g s: %s: %s", self.settings.interval_s,
                        type(e).__name__, e, exc_info=not isinstance(e, BlockRAGError))
            return None
        self.passes["ok"] += 1
        e, s = report.eviction, report.sweep
        self._observe("ok", evicted=(e.entries, e.bytes), swept=(s.deleted, s.deleted_bytes))
        log.info("cache maintenance: %s", report.summary())
        return report

    def _run(self) -> None:
        while not self._stop.wait(self.settings.interval_s):
            self.run_once()
