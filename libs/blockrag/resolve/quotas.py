"""TenantQuotas: per-tenant quotas on stored KV bytes and on precompute tokens per minute.

Checked by BlockWriter.plan after the texts are tokenized and before anything is registered,
encoded or stored, so a request over a quota costs a tokenization and one index transaction,
never KV. Both quotas are kept in the cache index, which every writer (every Precompute replica)
shares: an admission reads the tenant's usage and records its own in one transaction under a lock
per tenant (kvcache.index_usage), so N replicas together admit no more than the quota:

- stored bytes: the tenant's entries plus the bytes held by writes admitted and not yet ended
  (each admitted write holds what it may add until it ends), so two concurrent writes cannot both
  take the quota's last bytes;
- tokens per minute: the tokens admitted in the last 60 s, per second (the tokens of time t
  count until ceil(t) + 60 s: up to a second longer, never shorter).

There is no per-process fallback: every writer has an index. The clock is wall time (unix s),
shared by the replicas; a skew between their clocks shifts when tokens leave the window by as much.

A quota of 0 is no quota. Refusals are QuotaExceededError (RESOURCE_EXHAUSTED), whose message
says which quota, the figures, and what to do.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from blockrag.errors import InvalidRequestError, QuotaExceededError
from blockrag.kvcache.index import CacheIndex
from blockrag.kvcache.index_usage import Charge, Usage

WINDOW_S = 60.0  # the rate quota's window: tokens per minute


@dataclass(frozen=True)
class Quota:
    """One tenant's quotas; 0 means none."""

    max_stored_bytes: int = 0  # KV bytes of the tenant's entries in the index, every version
    max_precompute_tokens_per_minute: int = 0  # block tokens encoded in any 60 s

    def __post_init__(self) -> None:
        for name in ("max_stored_bytes", "max_precompute_tokens_per_minute"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidRequestError(f"quotas: {name} must be an int >= 0 (0: no quota), got {value!r}")


@dataclass
class TenantQuotas:
    """``default`` applies to every tenant not named in ``tenants``. Thread-safe; the usage lives
    in the cache index given to ``admit``."""

    default: Quota = field(default_factory=Quota)
    tenants: Mapping[str, Quota] = field(default_factory=dict)
    clock: Callable[[], float] = time.time  # unix seconds: replicas share the window through it

    @classmethod
    def of(cls, settings: object) -> TenantQuotas:
        """From a settings object with ``max_stored_bytes``, ``max_precompute_tokens_per_minute``
        and ``tenants`` (tenant -> mapping of either setting; the platform's config Quotas)."""
        default = Quota(settings.max_stored_bytes, settings.max_precompute_tokens_per_minute)
        tenants = dict(settings.tenants or {})
        for tenant, values in tenants.items():
            if not isinstance(tenant, str) or not tenant or not isinstance(values, Mapping):
                raise InvalidRequestError(f"quotas: tenants maps a tenant name to its quotas, got {tenant!r}: {values!r}")
            unknown = sorted(set(values) - {"max_stored_bytes", "max_precompute_tokens_per_minute"})
            if unknown:
                raise InvalidRequestError(f"quotas: unknown setting(s) {', '.join(map(str, unknown))} for tenant "
                                          f"{tenant!r}; known: max_precompute_tokens_per_minute, max_stored_bytes")
        return cls(default, {t: Quota(**{**default.__dict__, **dict(v)}) for t, v in tenants.items()})

    @property
    def active(self) -> bool:
        """Whether any tenant has a quota (else admit has nothing to check)."""
        return any(q != Quota() for q in (self.default, *self.tenants.values()))

    def quota(self, tenant: str) -> Quota:
        return self.tenants.get(tenant or "default", self.default)

    def check_room(self, tenant: str, stored_bytes: Callable[[], int]) -> None:
        """Refuse (QuotaExceededError) a tenant whose stored bytes already reach its quota: an
        Ingest asks before segmenting, since no block of it could be stored. ``stored_bytes()`` is
        asked only when the tenant has a bytes quota."""
        limit = self.quota(tenant).max_stored_bytes
        if limit and (stored := stored_bytes()) >= limit:
            raise QuotaExceededError(
                f"tenant {tenant!r} stores {stored} bytes of KV, at its quota of {limit} bytes: nothing more can be "
                f"stored; evict entries (blockrag-admin cache evict) or ask for a larger quota")

    def admit(self, tenant: str, tokens: int, new_bytes: int, index: CacheIndex, plan: str | None = None) -> None:
        """Refuse (QuotaExceededError) or admit encoding ``tokens`` block tokens that will store
        about ``new_bytes``, against the usage every writer of ``index`` recorded; an admitted
        request's tokens count against the rate from now on, and its bytes are held for ``plan``
        (a write plan id) until ``index.end_plan(plan)`` (or the hold lapses: index_usage.HOLD_S).
        A refusal records nothing."""
        quota = self.quota(tenant)
        if tokens <= 0 or quota == Quota():
            return
        limit = quota.max_precompute_tokens_per_minute
        now = self.clock()  # the charge's time, and what check's retry hint counts from

        def check(usage: Usage) -> None:
            if quota.max_stored_bytes and usage.stored_bytes + new_bytes > quota.max_stored_bytes:
                raise QuotaExceededError(
                    f"tenant {tenant!r} stores {usage.stored_bytes} bytes of KV and these blocks would add about "
                    f"{new_bytes}, over its quota of {quota.max_stored_bytes} bytes; evict entries (blockrag-admin "
                    f"cache evict) or ask for a larger quota")
            if not limit:
                return
            if tokens > limit:
                raise QuotaExceededError(
                    f"these blocks need {tokens} tokens of precompute, more than the whole quota of tenant "
                    f"{tenant!r} ({limit} tokens per minute); send fewer or smaller blocks per request")
            used = usage.tokens
            if used + tokens > limit:
                # the earliest moment enough of the window has expired for this request to fit
                freed, wait = 0, WINDOW_S
                for second, n in usage.spent:
                    freed += n
                    if used - freed + tokens <= limit:
                        wait = second + WINDOW_S - now
                        break
                raise QuotaExceededError(
                    f"tenant {tenant!r} had {used} tokens precomputed in the last minute and these blocks need "
                    f"{tokens} more, over its quota of {limit} tokens per minute; retry in {max(wait, 0.1):.0f} s")

        held = new_bytes if quota.max_stored_bytes and plan is not None else 0
        index.admit_usage(tenant, Charge(now, WINDOW_S, tokens=tokens if limit else 0,
                                         count_bytes=bool(quota.max_stored_bytes), nbytes=held, plan=plan), check)
