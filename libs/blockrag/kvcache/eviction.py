"""Eviction: bounds on the KV entries of each tenant and of the whole store, least recently used
first, with high and low watermarks and an optional TTL.

A tenant (or the store) over its high watermark loses its least recently used entries until it
is at its low watermark, so eviction runs in bursts rather than on every write. Entries not
accessed for ``ttl_s`` go whatever the sizes. ``last_access_at`` is what the index records:
commits, and hits counted in batches by resolve.AccessLog (up to its flush interval late).

Order, and what a crash leaves:

    1. the rows are deleted (one transaction per tenant and bound): no reader looks them up again
    2. a pause of ``reader_grace_s`` (the platform's cache_maintenance.reader_grace_s, 2 s by
       default, for scheduled passes and `blockrag-admin cache evict` alike: kvcache.maintenance)
    3. their objects are deleted

A crash after 1 leaves objects no row names: the orphan sweeper (kvcache.sweeper) deletes them.
No order leaves a row naming a deleted object, so no reader is ever sent to a missing one.

"In use", and why eviction never breaks a generation in flight: a generation replica reads a
stored block once (StoreTier: lookup, then get) and decodes it into its own memory; the request
holds that KV (resolve.Resolution) until its answer ends, and the memory tier dropping its copy
does not free it. So a stored entry is in use only between a reader's lookup and its get: the
pause of step 2 covers that window (a get is one request, bounded by the store's timeout). A
reader slower than the pause misses the object and recomputes the block: slower, never wrong.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from blockrag.errors import InvalidRequestError
from blockrag.kvcache.index import DEFAULT_TENANT, CacheIndex, Evicted
from blockrag.kvcache.object_store import ObjectStore

DEFAULT_READER_GRACE_S = 2.0


def _bytes(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRequestError(f"{what} must be an int >= 0 (bytes), got {value!r}")
    return value


@dataclass(frozen=True)
class Watermarks:
    """Evict once over ``high_bytes``, down to ``low_bytes``."""

    high_bytes: int
    low_bytes: int

    def __post_init__(self) -> None:
        _bytes(self.high_bytes, "high_bytes")
        _bytes(self.low_bytes, "low_bytes")
        if not 0 < self.high_bytes or self.low_bytes > self.high_bytes:
            raise InvalidRequestError(
                f"watermarks need 0 < high_bytes and low_bytes <= high_bytes; got high {self.high_bytes}, "
                f"low {self.low_bytes}")


@dataclass(frozen=True)
class EvictionPolicy:
    """What to bound; every part optional (None: no bound)."""

    tenant: Watermarks | None = None  # each tenant's entries
    tenants: Mapping[str, Watermarks] = field(default_factory=dict)  # tenants with bounds of their own
    store: Watermarks | None = None  # every tenant's entries together
    ttl_s: float | None = None  # entries not accessed for this long go

    def __post_init__(self) -> None:
        if self.ttl_s is not None and (isinstance(self.ttl_s, bool) or not isinstance(self.ttl_s, int | float)
                                       or not self.ttl_s > 0):  # NaN too
            raise InvalidRequestError(f"ttl_s must be a number of seconds > 0 (or None), got {self.ttl_s!r}")
        for name, marks in [("tenant", self.tenant), ("store", self.store), *self.tenants.items()]:
            if marks is not None and not isinstance(marks, Watermarks):
                raise InvalidRequestError(f"the bounds of {name!r} must be Watermarks, got {type(marks).__name__}")

    def for_tenant(self, tenant: str) -> Watermarks | None:
        return self.tenants.get(tenant, self.tenant)


@dataclass(frozen=True)
class EvictionReport:
    entries: int
    bytes: int
    by_tenant: dict[str, tuple[int, int]]  # tenant -> (entries, bytes)
    by_reason: dict[str, int]  # "ttl", "tenant", "store" -> entries


def _check_grace(reader_grace_s: object) -> None:
    if isinstance(reader_grace_s, bool) or not isinstance(reader_grace_s, int | float) or not reader_grace_s >= 0:
        raise InvalidRequestError(f"reader_grace_s must be a number of seconds >= 0, got {reader_grace_s!r}")


def drop_objects(store: ObjectStore, locations: list[str], *, reader_grace_s: float = DEFAULT_READER_GRACE_S,
                 sleep: Callable[[float], None] = time.sleep) -> None:
    """Delete the objects of entries whose rows are already gone, after ``reader_grace_s``: a
    reader that looked a row up just before it went still gets its object (module docstring)."""
    _check_grace(reader_grace_s)
    if locations and reader_grace_s:
        sleep(reader_grace_s)
    for location in locations:
        store.delete(location)


def evict(index: CacheIndex, store: ObjectStore, policy: EvictionPolicy, *, tenant: str | None = None,
          reader_grace_s: float = DEFAULT_READER_GRACE_S, clock: Callable[[], float] = time.time,
          sleep: Callable[[float], None] = time.sleep) -> EvictionReport:
    """Apply ``policy`` (to ``tenant`` only when given: its TTL and its bounds, not the store's);
    rows first, then, after ``reader_grace_s``, objects (see the module docstring)."""
    _check_grace(reader_grace_s)  # before any row goes
    tenant = None if tenant is None else tenant or DEFAULT_TENANT
    gone: list[tuple[str, Evicted]] = []
    if policy.ttl_s is not None:
        gone += [("ttl", e) for e in index.evict_idle(clock() - policy.ttl_s, tenant)]
    for usage in index.usage():
        marks = policy.for_tenant(usage.tenant)
        if (tenant is None or usage.tenant == tenant) and marks is not None and usage.bytes > marks.high_bytes:
            gone += [("tenant", e) for e in index.evict_least_recent(marks.low_bytes, usage.tenant)]
    if policy.store is not None and tenant is None:
        if sum(u.bytes for u in index.usage()) > policy.store.high_bytes:
            gone += [("store", e) for e in index.evict_least_recent(policy.store.low_bytes)]
    drop_objects(store, [e.entry.location for _, e in gone], reader_grace_s=reader_grace_s, sleep=sleep)
    by_tenant: dict[str, tuple[int, int]] = {}
    for _, e in gone:
        n, size = by_tenant.get(e.tenant, (0, 0))
        by_tenant[e.tenant] = (n + 1, size + e.entry.nbytes)
    return EvictionReport(len(gone), sum(e.entry.nbytes for _, e in gone), dict(sorted(by_tenant.items())),
                          dict(Counter(reason for reason, _ in gone)))
