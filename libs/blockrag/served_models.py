"""ServedModels: the model runtimes one replica serves, following the registry's active versions.

A replica starts with the configured model (PlatformConfig.model) and, when a ModelRegistry is
given, the shared scope's active version. ``for_tenant`` answers with the runtime of the
tenant's active version (``registry.active``: its own, else the shared one, else None = the
configured model), reading the registry at most every ``refresh_s`` per tenant, so that a
promotion or a rollback reaches every replica without a restart.

A change of version never makes a request wait or fail: the new version is loaded in one
background thread (the base model fresh, the version's adapter from the object store merged,
the correctness gate), then the ``warm`` hook re-encodes the tenant's most-hit blocks for it
(and makes sure Precompute serves it), and only then does the tenant switch; meanwhile the
runtime it had keeps serving. A load or a warm-up that fails leaves the tenant where it was
(logged, in ``describe``) and is tried again after RETRY_FAILED_S. A request
captures its runtime once, so an answer in flight ends on the version it started with.

``for_version`` serves Precompute requests that name a version (its fingerprint, the cache
keys' model version). At most ``max_loaded`` runtimes stay loaded: the least recently used
goes first, never the configured one, one leased by a request (``lease``) or one a switch is
moving from or to.

``follow_promotions`` (Precompute's replicas): a daemon thread reads the registry every
``refresh_s`` and loads, in the background, every version that became active since its last
look. A generation replica switching a tenant asks one Precompute replica to load the new
version before it switches (warming); the others learn of the promotion this way, so a miss
after the switch finds the version loaded on whichever replica it reaches, instead of an
UNAVAILABLE "is loading" and a retry there. (Serve has no call to every replica.)

Tenant safety: a version of scope A serves tenant A only. The registry's ``active`` scopes
already; both lookups check the scope again here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from blockrag.errors import CacheIndexError, ConflictError, ModelLoadError, NotFoundError, ServiceUnavailableError
from blockrag.kvcache.object_store import ObjectStore
from blockrag.model_runtime import ModelRuntime, ModelSpec
from blockrag.registry import SHARED, ModelRegistry, ModelVersion

log = logging.getLogger("blockrag.served_models")

CONFIGURED = ""  # the key of the configured model's runtime (version ids start with "mv_")
# One model load at a time in a process: transformers builds a model on the meta device and
# then fills it, and two builds at once in one process (a generation and a precompute replica's
# ServedModels in one test process, both following a promotion) can see each other's init
# context and fail with "Cannot copy out of meta tensor". Serve's replicas are processes of
# their own, so this costs them nothing.
_LOADS = threading.Lock()
RETRY_FAILED_S = 60.0  # a version that failed to load is tried again after this long

# (tenant, old model version, new model version): re-encode the tenant's hot blocks for the
# new version; model versions are fingerprints, as in cache keys. Runs in the loader thread.
WarmHook = Callable[[str, str, str], None]
VersionLoader = Callable[[ModelVersion], ModelRuntime]


@dataclass
class _Loaded:
    runtime: ModelRuntime
    version: ModelVersion | None  # None: the configured model
    last_used: float
    leases: int = 0

    def serves(self, tenant: str) -> bool:
        return self.version is None or self.version.tenant in (SHARED, tenant)


@dataclass
class _Tenant:
    current: str  # key of the runtime serving it
    checked_at: float  # when the registry was last read for it
    target: str | None = None  # key of the runtime it is switching to (loading or warming)


class ServedModels:
    """The runtimes of one replica. Thread-safe; loads and warm-ups run in one background thread."""

    def __init__(
        self,
        spec: ModelSpec,
        threads: int | None = None,
        registry: ModelRegistry | None = None,
        store: ObjectStore | None = None,
        *,
        warm: WarmHook | None = None,
        refresh_s: float = 2.0,
        max_loaded: int = 3,
        configured: ModelRuntime | None = None,
        load_version: VersionLoader | None = None,
        clock: Callable[[], float] = time.monotonic,
        follow_promotions: bool = False,
    ):
        """spec, threads: the configured model (loaded here unless `configured` is given).
        registry and store: where versions and their adapters are (None: serve the configured
        model only). load_version: how a version becomes a runtime (default: the base of
        `spec` with the version's adapter from `store`)."""
        if max_loaded < 2:
            raise ValueError(f"max_loaded must be >= 2 (the configured model and one version), got {max_loaded}")
        if registry is not None and store is None and load_version is None:
            raise ValueError("a registry needs the object store that holds the versions' adapters")
        self.spec, self.registry, self.store = spec, registry, store
        self.refresh_s, self.max_loaded = refresh_s, max_loaded
        self._warm, self._clock = warm, clock
        self._load = load_version or (version_loader(spec, store) if store is not None else None)
        self._lock = threading.Lock()
        self._loaded: dict[str, _Loaded] = {}
        self._tenants: dict[str, _Tenant] = {}
        self._loading: dict[str, ModelVersion] = {}  # key -> version queued or loading (for_version)
        self._failed: dict[str, tuple[float, str]] = {}  # key -> (when, why) of a failed load
        self._warm_failed: dict[tuple[str, str], tuple[float, str]] = {}  # (tenant, key) -> (when, why)
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="served-models")
        self._active_seen: set[str] | None = None  # version ids active at the last load_promoted
        self._stop = threading.Event()
        if configured is None:
            with _LOADS:
                configured = ModelRuntime.load(spec, threads)
        runtime = configured
        self._loaded[CONFIGURED] = _Loaded(runtime, None, clock())
        self._preload_shared()
        if follow_promotions and registry is not None:
            threading.Thread(target=self._follow_promotions, name="served-models-promotions", daemon=True).start()

    @property
    def configured(self) -> ModelRuntime:
        return self._loaded[CONFIGURED].runtime

    # -- lookups ---------------------------------------------------------------------------------

    def for_tenant(self, tenant: str) -> ModelRuntime:
        """The runtime serving ``tenant`` now; starts a switch in the background when the
        registry names another version. An unreachable registry leaves a tenant on its runtime
        (CacheIndexError only for a tenant this replica has not served yet)."""
        now = self._clock()
        with self._lock:
            state = self._tenants.get(tenant)
            if self.registry is None or (state is not None and now - state.checked_at < self.refresh_s):
                return self._use(state.current if state else CONFIGURED, now)
        try:
            version = self.registry.active(tenant)  # outside the lock: a query
        except CacheIndexError as e:
            with self._lock:
                state = self._tenants.get(tenant)
                if state is None:
                    raise  # nothing known of the tenant: no model to answer with
                # the registry only steers switches: keep serving, read it again after the interval
                state.checked_at = now
                log.warning("model registry unreachable (%s); tenant %r stays on %s", e, tenant,
                            state.current or "the configured model")
                return self._use(state.current, now)
        if version is not None and version.tenant not in (SHARED, tenant):
            raise ConflictError(f"the registry named {version.version_id} of scope {version.tenant!r} for "
                                f"tenant {tenant!r}; it serves its own scope only")
        with self._lock:
            return self._follow(tenant, version, now)

    def for_version(self, model_version: str, tenant: str) -> ModelRuntime:
        """The runtime whose fingerprint is ``model_version``, for ``tenant``: NotFoundError
        when no version of the tenant's scope (or the shared one) has it, ServiceUnavailableError
        while it loads (the load starts here) or after it failed to."""
        now = self._clock()
        with self._lock:
            for loaded in self._loaded.values():
                if loaded.runtime.version == model_version and loaded.serves(tenant):
                    return self._use_entry(loaded, now)
            for key, version in self._loading.items():
                if version.fingerprint == model_version and version.tenant in (SHARED, tenant):
                    raise _loading(version)
        if self.registry is None:
            raise NotFoundError(self._unknown(model_version, tenant))
        known = [v for v in self.registry.list() if v.fingerprint == model_version
                 and v.tenant in (SHARED, tenant) and v.status != "failed"]
        if not known:
            raise NotFoundError(self._unknown(model_version, tenant))
        version = known[0]
        with self._lock:
            if version.version_id in self._loaded:  # loaded meanwhile
                return self._use(version.version_id, now)
            self._check_not_failed(version, now)
            if version.version_id not in self._loading:
                self._loading[version.version_id] = version
                self._loader.submit(self._load_only, version)
        raise _loading(version)

    @contextmanager
    def lease(self, runtime: ModelRuntime) -> Iterator[ModelRuntime]:
        """Keep ``runtime`` loaded while a request uses it (``with models.lease(rt):``)."""
        entry = self._entry_of(runtime, +1)
        try:
            yield runtime
        finally:
            if entry is not None:
                self._entry_of(runtime, -1)

    def describe(self) -> dict:
        """What this replica serves (plain types): the loaded runtimes (version_id, "" for the
        configured model; scope; model_version; leases; the tenants each serves), the switches
        under way (tenant -> version_id) and the failed loads and warm-ups (-> why)."""
        with self._lock:
            serving: dict[str, list[str]] = {}
            for tenant, state in self._tenants.items():
                serving.setdefault(state.current, []).append(tenant)
            loaded = [{"version_id": key, "scope": e.version.tenant if e.version else None,
                       "model_version": e.runtime.version, "leases": e.leases, "load_seconds": e.runtime.load_seconds,
                       "tenants": sorted(serving.get(key, []))} for key, e in self._loaded.items()]
            switching = {t: s.target for t, s in self._tenants.items() if s.target is not None}
            failed = {k: why for k, (_, why) in self._failed.items()}
            failed.update({f"{k} (warming for {t})": why for (t, k), (_, why) in self._warm_failed.items()})
            return {"loaded": loaded, "switching": switching, "failed": failed}

    def load_promoted(self) -> list[str]:
        """Start loading, in the background, the versions that became active since the last
        call and are not loaded here; their ids. The first call only notes what is active (the
        shared scope's version is loaded at start already). A version that does not fit
        (max_loaded, all in use) is left to the first request that needs it."""
        if self.registry is None:
            return []
        active = {v.version_id: v for v in self.registry.list(status="active")}  # every refresh_s: in SQL
        with self._lock:
            seen, self._active_seen = self._active_seen, set(active)
            if seen is None:
                return []
            new = [v for key, v in active.items() if key not in seen and key not in self._loaded
                   and key not in self._loading and not self._failed_recently(key, self._clock())]
            for version in new:
                self._loading[version.version_id] = version
                self._loader.submit(self._load_only, version, True)
        for version in new:
            log.info("%s became active (scope %r): loading it ahead of its first request", version.version_id,
                     version.tenant)
        return [v.version_id for v in new]

    def _follow_promotions(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                self.load_promoted()
            except Exception as e:  # noqa: BLE001 - a background thread: the registry may be down; next time
                log.warning("reading the registry for promotions failed: %s", e)

    def close(self) -> None:
        """Stop the loader thread (a load under way finishes first) and the promotions follower."""
        self._stop.set()
        self._loader.shutdown(wait=True, cancel_futures=True)

    # -- switching -------------------------------------------------------------------------------

    def _follow(self, tenant: str, version: ModelVersion | None, now: float) -> ModelRuntime:
        """Under the lock: record the registry's answer for the tenant and start a switch."""
        key = version.version_id if version else CONFIGURED
        state = self._tenants.get(tenant)
        if state is None:  # first request here: serve what is loaded, nothing to warm from
            state = self._tenants[tenant] = _Tenant(key if key in self._loaded else CONFIGURED, now)
        state.checked_at = now
        if key == state.current:
            state.target = None  # e.g. a rollback before the switch ended: the switch is dropped
        elif state.target != key and not self._failed_recently(key, now) and not _recent(
                self._warm_failed.get((tenant, key)), now):
            state.target = key
            self._loader.submit(self._switch, tenant, version)
        return self._use(state.current, now)

    def _switch(self, tenant: str, version: ModelVersion | None) -> None:
        """In the loader thread: load, warm, then move the tenant to the version. A failure
        leaves the tenant where it was (a version that does not load, or whose warm-up fails:
        Precompute may not serve it, so misses after a switch would fail)."""
        key = version.version_id if version else CONFIGURED
        with self._lock:
            if self._tenants.get(tenant, _Tenant(CONFIGURED, 0.0)).target != key:
                return  # superseded by a later change
        try:
            runtime = self._ensure(version)
        except Exception as e:  # noqa: BLE001 - a background thread: nobody to raise to; logged and retried
            log.error("loading %s for tenant %r failed: %s", key, tenant, e, exc_info=e)
            self._give_up(tenant, key, self._failed, key, e)
            return
        with self._lock:
            state = self._tenants.get(tenant)
            if state is None or state.target != key:
                return
            pinned = [self._loaded[state.current], self._loaded[key]]  # both stay loaded while warming
            for entry in pinned:
                entry.leases += 1
        try:
            old = pinned[0].runtime.version
            if self._warm is not None and old != runtime.version:
                self._warm(tenant, old, runtime.version)
        except Exception as e:  # noqa: BLE001 - as above
            log.error("warming tenant %r for %s failed, not switching yet: %s", tenant, key, e, exc_info=e)
            self._give_up(tenant, key, self._warm_failed, (tenant, key), e)
            return
        finally:
            with self._lock:
                for entry in pinned:
                    entry.leases -= 1
        with self._lock:
            state = self._tenants.get(tenant)
            if state is not None and state.target == key:
                state.current, state.target = key, None
                self._warm_failed.pop((tenant, key), None)
                log.info("tenant %r now served by %s (model version %s)", tenant, key or "the configured model",
                         runtime.version[:16])

    def _give_up(self, tenant: str, key: str, failures: dict, failure_key, error: Exception) -> None:
        with self._lock:
            failures[failure_key] = (self._clock(), f"{type(error).__name__}: {error}")
            state = self._tenants.get(tenant)
            if state is not None and state.target == key:
                state.target = None

    def _load_only(self, version: ModelVersion, ahead: bool = False) -> None:
        """In the loader thread: load a version for for_version (or ahead of it: load_promoted)."""
        try:
            self._ensure(version)
        except Exception as e:  # noqa: BLE001 - a background thread; for_version reports it
            if ahead and isinstance(e, ServiceUnavailableError):  # no room now: not the version's fault
                log.info("not loading %s ahead of its first request: %s", version.version_id, e)
                return
            log.error("loading %s failed: %s", version.version_id, e, exc_info=e)
            with self._lock:
                self._failed[version.version_id] = (self._clock(), f"{type(e).__name__}: {e}")
        finally:
            with self._lock:
                self._loading.pop(version.version_id, None)

    def _ensure(self, version: ModelVersion | None) -> ModelRuntime:
        """The version's runtime, loaded (in the calling thread) if it is not yet."""
        if version is None:
            return self.configured  # always loaded
        key = version.version_id
        with self._lock:
            if key in self._loaded:
                return self._loaded[key].runtime
            self._make_room()
        log.info("loading %s (scope %r, adapter %r)", key, version.tenant, version.adapter_key)
        with _LOADS:
            runtime = self._load(version)
        if version.fingerprint is not None and runtime.version != version.fingerprint:
            raise ModelLoadError(
                f"{key} loads as model version {runtime.version[:16]}..., not the {version.fingerprint[:16]}... it "
                f"was registered with: serve it with the model, dtype and sinks it was trained with")
        with self._lock:
            self._make_room()  # a for_version load may have finished meanwhile
            self._loaded[key] = _Loaded(runtime, version, self._clock())
            self._failed.pop(key, None)
        log.info("loaded %s in %.1f s (model version %s)", key, runtime.load_seconds, runtime.version[:16])
        return runtime

    def _make_room(self) -> None:
        """Under the lock: evict until one more runtime fits (ServiceUnavailableError if none can go)."""
        while len(self._loaded) >= self.max_loaded:
            busy = {s.current for s in self._tenants.values() if s.target is not None}
            busy |= {s.target for s in self._tenants.values() if s.target is not None}
            current = {s.current for s in self._tenants.values()}
            candidates = [k for k, l in self._loaded.items() if k != CONFIGURED and l.leases == 0 and k not in busy]
            if not candidates:
                raise ServiceUnavailableError(
                    f"all {len(self._loaded)} loaded model versions are in use (max_loaded {self.max_loaded}); "
                    f"raise max_loaded_models or wait for requests to finish")
            victim = min(candidates, key=lambda k: (k in current, self._loaded[k].last_used))
            del self._loaded[victim]
            for state in self._tenants.values():
                if state.current == victim:  # idle tenant: back to the configured model until reloaded
                    state.current, state.checked_at = CONFIGURED, float("-inf")
            log.info("unloaded %s to make room (max_loaded %d)", victim, self.max_loaded)

    def _preload_shared(self) -> None:
        """Load the shared scope's active version now, so a new replica serves it from its first
        request; a failure is logged and the configured model serves until a retry works."""
        if self.registry is None:
            return
        version = self.registry.active(SHARED)
        if version is None or version.tenant != SHARED:
            return
        try:
            self._ensure(version)
        except Exception as e:  # noqa: BLE001 - the replica still serves the configured model
            log.error("could not load the shared active version %s at start: %s", version.version_id, e, exc_info=e)
            self._failed[version.version_id] = (self._clock(), f"{type(e).__name__}: {e}")

    # -- helpers ---------------------------------------------------------------------------------

    def _use(self, key: str, now: float) -> ModelRuntime:
        return self._use_entry(self._loaded[key], now)

    @staticmethod
    def _use_entry(entry: _Loaded, now: float) -> ModelRuntime:
        entry.last_used = now
        return entry.runtime

    def _entry_of(self, runtime: ModelRuntime, change: int) -> _Loaded | None:
        with self._lock:
            for entry in self._loaded.values():
                if entry.runtime is runtime:
                    entry.leases += change
                    return entry
        return None  # unloaded meanwhile: the request keeps its reference until it ends

    def _failed_recently(self, key: str, now: float) -> bool:
        return _recent(self._failed.get(key), now)

    def _check_not_failed(self, version: ModelVersion, now: float) -> None:
        if self._failed_recently(version.version_id, now):
            raise ServiceUnavailableError(
                f"model version {version.version_id} failed to load on this replica "
                f"({self._failed[version.version_id][1]}); it is retried after {RETRY_FAILED_S:.0f} s: fix the "
                f"version's adapter or mark it failed")

    def _unknown(self, model_version: str, tenant: str) -> str:
        return (f"model version {model_version[:16]}... is not served for tenant {tenant!r}: this replica serves "
                f"{self.configured.version[:16]}... and the registry's versions of the tenant's scope and the "
                f"shared one; leave model_version empty to use the tenant's active version")


def version_loader(spec: ModelSpec, store: ObjectStore) -> VersionLoader:
    """The default VersionLoader: the base model of `spec` with the version's adapter read from
    `store` (none for a version of the base itself, adapter_key "")."""

    def load(version: ModelVersion) -> ModelRuntime:
        from blockrag.distill.checkpoints import load_adapter

        adapter = load_adapter(store, version.adapter_key) if version.adapter_key else None
        return ModelRuntime.load_version(spec, adapter, version.version_id)

    return load


def _recent(failure: tuple[float, str] | None, now: float) -> bool:
    return failure is not None and now - failure[0] < RETRY_FAILED_S


def _loading(version: ModelVersion) -> ServiceUnavailableError:
    return ServiceUnavailableError(
        f"model version {version.version_id} ({(version.fingerprint or '')[:16]}...) is loading on this replica; "
        f"retry in a few seconds")
