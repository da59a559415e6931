"""ServedModels on a tiny random Llama: versions registered with real adapter blobs in a local
object store and a registry on SQLite. A promotion is followed after the refresh interval, a
rollback goes back, the old runtime serves while the new one loads and warms, a tenant never gets
another tenant's version, at most max_loaded runtimes stay loaded."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tiny_versions import random_adapter, register, save_tiny_llama

from blockrag.errors import CacheIndexError, ConflictError, NotFoundError, ServiceUnavailableError
from blockrag.kvcache.index import open_index_engine
from blockrag.kvcache.object_store import LocalObjectStore
from blockrag.model_runtime import ModelRuntime, ModelSpec
from blockrag.registry import SHARED, ModelRegistry, ModelVersion
from blockrag.served_models import RETRY_FAILED_S, ServedModels, version_loader


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def spec(tiny_dir) -> ModelSpec:
    return ModelSpec(model=str(tiny_dir), device="cpu")


@pytest.fixture(scope="module")
def base(spec) -> ModelRuntime:
    return ModelRuntime.load(spec)


@pytest.fixture(scope="module")
def adapters(tiny_dir):
    """Two adapters (the second with block sinks) and their served fingerprints."""
    return [random_adapter(tiny_dir, seed=1), random_adapter(tiny_dir, seed=2, sink_token_id=1)]


class Env:
    def __init__(self, tmp_path: Path, spec: ModelSpec, base: ModelRuntime, adapters) -> None:
        self.engine = open_index_engine(f"sqlite:///{tmp_path}/index.db")
        self.registry = ModelRegistry(self.engine)
        self.store = LocalObjectStore(tmp_path / "kv")
        self.spec, self.base, self.adapters = spec, base, adapters
        self.clock = Clock()
        self.models: list[ServedModels] = []

    def version(self, tenant: str, which: int = 0, name: str | None = None) -> ModelVersion:
        adapter, fingerprint = self.adapters[which]
        return register(self.registry, self.store, tenant, adapter, fingerprint,
                        name or f"adapter-{tenant or 'shared'}-{which}.safetensors")

    def served(self, **kwargs) -> ServedModels:
        kwargs = {"registry": self.registry, "store": self.store, "refresh_s": 2.0, "configured": self.base,
                  "clock": self.clock, **kwargs}
        models = ServedModels(self.spec, **kwargs)
        self.models.append(models)
        return models

    def settle(self, models: ServedModels, tenant: str, version: str) -> ModelRuntime:
        """Past the refresh interval, until the tenant is served by `version` (a fingerprint)."""
        self.clock.now += 2.0
        wait_for(lambda: models.for_tenant(tenant).version == version)
        return models.for_tenant(tenant)


@pytest.fixture
def env(tmp_path, spec, base, adapters):
    env = Env(tmp_path, spec, base, adapters)
    yield env
    for models in env.models:
        models.close()
    env.engine.dispose()


def test_without_versions_the_configured_model_serves_every_tenant(env):
    models = env.served()
    assert models.for_tenant("acme") is env.base and models.for_tenant("globex") is env.base
    assert models.for_version(env.base.version, "acme") is env.base
    with pytest.raises(NotFoundError, match="leave model_version empty"):
        models.for_version("f" * 64, "acme")
    plain = ServedModels(env.spec, configured=env.base)  # no registry at all
    assert plain.for_tenant("acme") is env.base
    with pytest.raises(NotFoundError):
        plain.for_version(env.adapters[0][1], "acme")


def test_a_promotion_is_followed_after_the_refresh_and_a_rollback_goes_back(env):
    warmed = []
    models = env.served(warm=lambda *args: warmed.append(args))
    assert models.for_tenant("acme") is env.base
    version = env.version(SHARED)
    env.registry.promote(version.version_id, SHARED)
    env.clock.now += 1.0  # within the refresh interval: the registry is not read again
    for _ in range(5):
        assert models.for_tenant("acme") is env.base
    time.sleep(0.2)
    assert models.for_tenant("acme") is env.base and warmed == []

    served = env.settle(models, "acme", version.fingerprint)
    assert served.version == env.adapters[0][1] != env.base.version  # the adapter is merged
    assert served.engine.sink_token_id is None
    assert warmed == [("acme", env.base.version, version.fingerprint)]  # before the switch
    assert models.for_version(version.fingerprint, "globex") is served  # shared: every tenant

    env.registry.rollback(SHARED)
    assert env.settle(models, "acme", env.base.version) is env.base
    assert warmed[-1] == ("acme", version.fingerprint, env.base.version)

    sinks = env.version(SHARED, which=1)  # a version with block sinks
    env.registry.promote(sinks.version_id, SHARED)
    assert env.settle(models, "acme", sinks.fingerprint).engine.sink_token_id == 1


def test_the_registry_is_read_at_most_once_per_refresh_interval(env):
    reads = []
    registry = env.registry

    class Counting(ModelRegistry):
        def active(self, tenant):
            reads.append(tenant)
            return registry.active(tenant)

    models = env.served(registry=Counting(env.engine))
    reads.clear()  # the start read the shared scope
    for _ in range(20):
        models.for_tenant("acme")
        env.clock.now += 0.05
    assert reads == ["acme"]
    env.clock.now += 2.0
    models.for_tenant("acme")
    assert reads == ["acme", "acme"]


def test_an_unreachable_registry_leaves_known_tenants_on_their_runtime(env):
    down = threading.Event()
    registry = env.registry

    class Flaky(ModelRegistry):
        def active(self, tenant):
            if down.is_set():
                raise CacheIndexError("could not get active version: connection refused")
            return registry.active(tenant)

    models = env.served(registry=Flaky(env.engine))
    version = env.version(SHARED)
    env.registry.promote(version.version_id, SHARED)
    assert env.settle(models, "acme", version.fingerprint).version == version.fingerprint
    down.set()
    for _ in range(3):
        env.clock.now += 2.0
        assert models.for_tenant("acme").version == version.fingerprint
    with pytest.raises(CacheIndexError):
        models.for_tenant("globex")  # never served here: no version to answer with


def test_the_previous_runtime_serves_while_the_new_one_loads_and_warms(env):
    loading, warming, release_load, release_warm = (threading.Event() for _ in range(4))
    seen_while_warming = []

    def slow_load(version):
        loading.set()
        release_load.wait(30)
        return version_loader(env.spec, env.store)(version)

    def slow_warm(tenant, old, new):
        seen_while_warming.append(models.for_tenant(tenant).version)
        warming.set()
        release_warm.wait(30)

    models = env.served(load_version=slow_load, warm=slow_warm)
    version = env.version("acme")
    env.registry.promote(version.version_id, "acme")
    env.clock.now += 2.0
    started = time.monotonic()
    assert models.for_tenant("acme") is env.base
    assert time.monotonic() - started < 1.0  # the request did not wait for the load
    assert loading.wait(30)
    for _ in range(10):  # while loading, past several refreshes: still the old runtime, no second load
        env.clock.now += 2.0
        assert models.for_tenant("acme") is env.base
    release_load.set()
    assert warming.wait(30)
    env.clock.now += 2.0
    assert models.for_tenant("acme") is env.base  # loaded, but still warming
    release_warm.set()
    wait_for(lambda: models.for_tenant("acme").version == version.fingerprint)
    assert seen_while_warming == [env.base.version]


def test_a_version_of_one_tenant_never_serves_another(env):
    models = env.served()
    acme = env.version("acme", which=0)
    env.registry.promote(acme.version_id, "acme")
    assert env.settle(models, "acme", acme.fingerprint).version == acme.fingerprint
    for _ in range(3):
        env.clock.now += 2.0
        assert models.for_tenant("globex") is env.base  # although acme's is loaded here
    with pytest.raises(NotFoundError, match="not served for tenant 'globex'"):
        models.for_version(acme.fingerprint, "globex")
    assert models.for_version(acme.fingerprint, "acme").version == acme.fingerprint

    shared = env.version(SHARED, which=1)
    env.registry.promote(shared.version_id, SHARED)
    assert env.settle(models, "globex", shared.fingerprint).version == shared.fingerprint
    env.clock.now += 2.0
    assert models.for_tenant("acme").version == acme.fingerprint  # its own before the shared one

    class Leaky(ModelRegistry):  # a registry bug must not leak a version either
        def active(self, tenant):
            return acme

    with pytest.raises(ConflictError, match="serves its own scope only"):
        env.served(registry=Leaky(env.engine)).for_tenant("globex")


def test_for_version_loads_a_registered_version_in_the_background(env):
    models = env.served()
    candidate = env.version("acme")  # registered, never promoted: Precompute may still be asked for it
    with pytest.raises(ServiceUnavailableError, match=f"{candidate.version_id} .* is loading on this replica"):
        models.for_version(candidate.fingerprint, "acme")
    wait_for(lambda: _loaded(models, candidate.fingerprint, "acme"))
    with pytest.raises(NotFoundError):
        models.for_version(candidate.fingerprint, "globex")

    missing = env.registry.register(SHARED, "tiny-llama", candidate.base_fingerprint, adapter_key="gone.safetensors",
                                    fingerprint="e" * 64)
    with pytest.raises(ServiceUnavailableError, match="is loading"):
        models.for_version(missing.fingerprint, "acme")
    wait_for(lambda: "failed to load" in _error(models, missing.fingerprint, "acme"))
    assert "is not in the object store" in _error(models, missing.fingerprint, "acme")


def test_a_version_that_fails_to_load_leaves_the_tenant_where_it_was_and_is_retried(env):
    attempts = []

    def load(version):
        attempts.append(version.version_id)
        runtime = version_loader(env.spec, env.store)(version)
        return runtime if len(attempts) > 1 else dataclasses.replace(runtime, version="d" * 64)

    models = env.served(load_version=load)
    version = env.version(SHARED)
    env.registry.promote(version.version_id, SHARED)
    env.clock.now += 2.0
    models.for_tenant("acme")
    wait_for(lambda: version.version_id in models.describe()["failed"])
    assert models.describe()["switching"] == {}
    with pytest.raises(ServiceUnavailableError, match="failed to load on this replica .*ModelLoadError.*not the"):
        models.for_version(version.fingerprint, "acme")
    for _ in range(3):  # within the retry delay: not tried again
        env.clock.now += 2.0
        assert models.for_tenant("acme") is env.base
    assert attempts == [version.version_id]
    env.clock.now += RETRY_FAILED_S
    assert env.settle(models, "acme", version.fingerprint).version == version.fingerprint
    assert len(attempts) == 2


def test_a_failed_warm_up_keeps_the_old_runtime_until_a_retry_succeeds(env):
    """Warming also makes sure Precompute serves the new version: without it, misses would fail."""
    calls = []

    def warm(tenant, old, new):
        calls.append((tenant, old, new))
        if len(calls) == 1:
            raise ServiceUnavailableError("precompute did not load it")

    models = env.served(warm=warm)
    version = env.version(SHARED)
    env.registry.promote(version.version_id, SHARED)
    env.clock.now += 2.0
    assert models.for_tenant("acme") is env.base
    wait_for(lambda: f"{version.version_id} (warming for acme)" in models.describe()["failed"])
    for _ in range(3):
        env.clock.now += 2.0
        assert models.for_tenant("acme") is env.base
    assert len(calls) == 1
    env.clock.now += RETRY_FAILED_S
    assert env.settle(models, "acme", version.fingerprint).version == version.fingerprint
    assert calls == [("acme", env.base.version, version.fingerprint)] * 2
    assert models.describe()["failed"] == {}


def test_a_promotion_is_loaded_ahead_of_its_first_request(env):
    """Precompute's replicas: a version that became active is loaded before any request names it."""
    models = env.served()
    assert models.load_promoted() == []  # the first look only notes what is active
    version = env.version("acme")
    assert models.load_promoted() == []  # registered, not active
    env.registry.promote(version.version_id, "acme")
    assert models.load_promoted() == [version.version_id]
    wait_for(lambda: version.fingerprint in _versions(models))
    assert models.for_version(version.fingerprint, "acme").version == version.fingerprint  # no "is loading"
    assert models.load_promoted() == []  # once per promotion
    with pytest.raises(NotFoundError):
        models.for_version(version.fingerprint, "globex")  # loaded ahead, still its tenant's only

    following = env.served(follow_promotions=True, refresh_s=0.05)  # the same, by itself
    wait_for(lambda: following._active_seen is not None)
    shared = env.version(SHARED, which=1)
    env.registry.promote(shared.version_id, SHARED)
    wait_for(lambda: shared.fingerprint in _versions(following))


def test_a_promotion_that_does_not_fit_is_left_to_its_first_request_not_failed(env):
    stub = lambda version: dataclasses.replace(env.base, version=version.fingerprint)  # noqa: E731
    models = env.served(load_version=stub, max_loaded=2)
    first, second = (env.registry.register(SHARED, "tiny-llama", "b" * 64, adapter_key="", fingerprint=f"{i}" * 64)
                     for i in (1, 2))
    models.load_promoted()
    with pytest.raises(ServiceUnavailableError):
        models.for_version(first.fingerprint, "acme")
    wait_for(lambda: _loaded(models, first.fingerprint, "acme"))
    with models.lease(models.for_version(first.fingerprint, "acme")):  # the one free slot is in use
        env.registry.promote(second.version_id, SHARED)
        assert models.load_promoted() == [second.version_id]
        wait_for(lambda: not models._loading)
        assert second.fingerprint not in _versions(models) and models.describe()["failed"] == {}
    with pytest.raises(ServiceUnavailableError, match="is loading"):  # not "failed to load"
        models.for_version(second.fingerprint, "acme")
    wait_for(lambda: _loaded(models, second.fingerprint, "acme"))


def test_at_most_max_loaded_runtimes_least_recently_used_first(env):
    """A stub loader (the base runtime under the version's fingerprint): only the bookkeeping counts."""
    loads = []

    def stub(version):
        loads.append(version.version_id)
        return dataclasses.replace(env.base, version=version.fingerprint)

    models = env.served(load_version=stub, max_loaded=3)
    versions = [env.registry.register(SHARED, "tiny-llama", "b" * 64, adapter_key="", fingerprint=f"{i}" * 64)
                for i in range(4)]

    def load(v):
        with pytest.raises(ServiceUnavailableError):
            models.for_version(v.fingerprint, "acme")
        wait_for(lambda: _loaded(models, v.fingerprint, "acme"))
        env.clock.now += 1.0

    load(versions[0])
    load(versions[1])
    models.for_version(versions[0].fingerprint, "acme")  # v0 used more recently than v1
    env.clock.now += 1.0
    load(versions[2])  # full (configured, v0, v1): v1 goes
    assert _versions(models) == {env.base.version, versions[0].fingerprint, versions[2].fingerprint}
    with models.lease(models.for_version(versions[2].fingerprint, "acme")):
        env.clock.now += 1.0
        models.for_version(versions[0].fingerprint, "acme")  # v0 more recent, but v2 is in use
        load(versions[3])
        assert _versions(models) == {env.base.version, versions[2].fingerprint, versions[3].fingerprint}
    assert loads == [v.version_id for v in versions]
    with pytest.raises(ValueError, match="max_loaded"):
        env.served(max_loaded=1)


def test_concurrent_requests_see_the_old_or_the_new_runtime_and_nothing_else(env):
    models = env.served()
    version = env.version(SHARED)
    env.registry.promote(version.version_id, SHARED)
    seen, errors = set(), []

    def request(i: int) -> None:
        try:
            for _ in range(200):
                seen.add(models.for_tenant(f"t{i % 3}").version)
                env.clock.now += 0.01
        except Exception as e:  # noqa: BLE001 - re-raised below
            errors.append(e)

    threads = [threading.Thread(target=request, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert seen <= {env.base.version, version.fingerprint}
    for tenant in ("t0", "t1", "t2"):
        assert env.settle(models, tenant, version.fingerprint).version == version.fingerprint


def _loaded(models: ServedModels, fingerprint: str, tenant: str) -> bool:
    try:
        return models.for_version(fingerprint, tenant).version == fingerprint
    except ServiceUnavailableError:
        return False


def _error(models: ServedModels, fingerprint: str, tenant: str) -> str:
    try:
        models.for_version(fingerprint, tenant)
    except ServiceUnavailableError as e:
        return str(e)
    return ""


def _versions(models: ServedModels) -> set[str]:
    return {d["model_version"] for d in models.describe()["loaded"]}



def test_a_version_trained_with_an_opening_serves_with_it_and_another_opening_is_refused(spec, tiny_dir):
    from blockrag.errors import ModelLoadError

    from blockrag.attention.layout import Opening

    opening = Opening(tuple(ModelRuntime.load(spec).template.prefix_ids()), gap=100)
    adapter, fingerprint = random_adapter(tiny_dir, seed=3, opening=opening)
    runtime = ModelRuntime.load_version(spec, adapter, "v-opening")
    assert runtime.engine.opening == opening and runtime.version == fingerprint
    assert runtime.describe()["opening_tokens"] == len(opening.tokens)
    # the prompts the platform builds start with the opening, so the engine takes them
    kvs = runtime.engine.encode_blocks([runtime.template.prefix_ids(), runtime.block_ids("Some passage.")])
    assert runtime.engine.prefill(kvs, runtime.template.final_ids("Why?")).logits.shape[0] > 0
    other, _ = random_adapter(tiny_dir, seed=3, opening=Opening(opening.tokens[:-1], gap=100))
    with pytest.raises(ModelLoadError, match="v-other: its adapter was trained with another prompt opening"):
        ModelRuntime.load_version(spec, other, "v-other")
