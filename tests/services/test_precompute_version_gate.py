"""Precompute gates each model version it loads under the deployment's KV compression, as it gates
the configured model at start: a promoted version whose adapter makes answers over compressed KV
drift past kv_compression_max_kl is not served (the load fails naming the version and the gate;
the replica keeps serving what it had, and `prepare`, which a generation replica's switch asks
first, raises the gate's error), one within it is served and written compressed. A refused
version is reported to the model registry once (marked failed, its scope rolled back to the
version before it) and never loaded again by the replica.

On a tiny random Llama with a sharp final norm (tests/services/test_precompute_compression_gate.py)
under fp8_head over 2 questions, mean answer-token KL: the configured model 6.7e-6, a version with
small random LoRA weights (WITHIN: seed 2, scale 0.05) 5.7e-6, one with large ones (PAST: seed 2,
scale 2.0) 1.1e-4; the gate's 3e-5 sits between them. (Scale 1.0 passes with A matrices seeded:
1.3e-5; it failed only with A drawn from wherever the global generator was after the fixture.)"""

from __future__ import annotations

import asyncio
import time

import pytest
import torch
from tiny_versions import random_adapter, register, save_sharp_tiny_llama

from blockrag.errors import CacheIndexError, NotFoundError, ServiceUnavailableError
from blockrag.kvcache import KVCodec
from blockrag.kvcache.compression import KVCompression
from blockrag.kvcache.compression_gate import CompressionDriftError
from blockrag.model_runtime import ModelRuntime
from blockrag.registry import ModelRegistry, ModelVersion
from blockrag.v1 import precompute_pb2 as pb
from blockrag_services.precompute.deployment import Precompute, gated_versions

TENANT = "acme"
MAX_KL = 3e-5
WITHIN, PAST = {"seed": 2, "scale": 0.05}, {"seed": 2, "scale": 2.0}  # random adapters each side of it


@pytest.fixture(scope="module")
def sharp_dir(tmp_path_factory):
    return save_sharp_tiny_llama(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def precompute(tmp_path, sharp_dir):
    precompute = Precompute.func_or_class({
        "database_url": f"sqlite:///{tmp_path}/index.db", "object_store_url": str(tmp_path / "kv"),
        "model": {"model": str(sharp_dir), "device": "cpu", "adapter": "none"}, "resources": {"torch_threads": 1},
        "kv_compression": "fp8_head", "kv_compression_gate_questions": 2, "kv_compression_max_kl": MAX_KL,
        "model_refresh_s": 3600})  # the configured model passes at start
    yield precompute
    precompute.models.close()


def promoted(precompute: Precompute, sharp_dir, seed: int, scale: float):
    registry = ModelRegistry(precompute.database)
    # PEFT draws the A matrices from torch's global generator (random_adapter seeds B only): the
    # same adapter whatever ran before in the process
    torch.manual_seed(seed)
    adapter, fingerprint = random_adapter(sharp_dir, seed, scale=scale)
    version = register(registry, precompute.store, TENANT, adapter, fingerprint, f"adapter-{seed}")
    return registry.promote(version.version_id, TENANT)


def loaded_or_failed(precompute: Precompute, version_id: str) -> dict:
    """Ask for the version (its load starts in the background) and wait for the load to end."""
    deadline = time.monotonic() + 600  # a bound on a hang, not a speed check
    while time.monotonic() < deadline:
        described = precompute.models.describe()
        if version_id in described["failed"] or any(e["version_id"] == version_id for e in described["loaded"]):
            return described
        time.sleep(0.2)
    raise AssertionError(f"{version_id} neither loaded nor failed: {precompute.models.describe()}")


class Reports:
    """The registry as gated_versions reports to it, counting the reports; the first ``failing``
    ones fail as an unreachable database would."""

    def __init__(self, registry: ModelRegistry, failing: int = 0):
        self.registry, self.failing, self.calls = registry, failing, []

    def refuse(self, version_id: str, reason: str) -> ModelVersion:
        self.calls.append(version_id)
        if len(self.calls) <= self.failing:
            raise CacheIndexError("refuse model version failed: the database is unreachable")
        return self.registry.refuse(version_id, reason)


@pytest.fixture
def loads(monkeypatch) -> list[str]:
    """The version ids ModelRuntime.load_version loads from now on (a version's base and adapter)."""
    calls, load_version = [], ModelRuntime.load_version.__func__

    def counted(cls, spec, adapter, version_id=""):
        calls.append(version_id)
        return load_version(cls, spec, adapter, version_id)

    monkeypatch.setattr(ModelRuntime, "load_version", classmethod(counted))
    return calls


def precompute_with(precompute: Precompute, model_version: str) -> pb.PrecomputeResponse:
    return asyncio.run(precompute.Precompute(pb.PrecomputeRequest(
        texts=["Ferries leave at nine."], tenant=TENANT, model_version=model_version, return_kv=True)))


def test_a_version_past_the_gate_is_not_served(precompute, sharp_dir):
    version = promoted(precompute, sharp_dir, **PAST)
    with pytest.raises(ServiceUnavailableError, match="is loading"):
        precompute.models.for_version(version.fingerprint, TENANT)
    failed = loaded_or_failed(precompute, version.version_id)["failed"][version.version_id]
    assert failed.startswith(f"CompressionDriftError: model version {version.version_id} is not served: "
                             f"kv_compression fp8_head: answers drift")
    assert f"above the gate's {MAX_KL:g}" in failed and "marks it failed and rolls its promotion back" in failed
    # reported before the load failed: the registry no longer names it, so nothing asks for it again
    with pytest.raises(NotFoundError, match="is not served for tenant"):
        precompute.models.for_version(version.fingerprint, TENANT)
    # a generation replica's switch asks prepare first: the gate's reason now, not a wait for a load
    with pytest.raises(CompressionDriftError, match=f"model version {version.version_id} is not served"):
        asyncio.run(precompute.prepare(version.fingerprint, TENANT))
    # the configured model still serves the tenant's requests that name no version
    reply = precompute_with(precompute, "")
    assert reply.model_version == precompute.models.configured.version


def test_a_version_within_the_gate_is_served_compressed(precompute, sharp_dir):
    version = promoted(precompute, sharp_dir, **WITHIN)
    with pytest.raises(ServiceUnavailableError, match="is loading"):
        precompute.models.for_version(version.fingerprint, TENANT)
    assert version.version_id not in loaded_or_failed(precompute, version.version_id)["failed"]
    assert asyncio.run(precompute.prepare(version.fingerprint, TENANT)) is True
    reply = precompute_with(precompute, version.fingerprint)
    assert reply.model_version == version.fingerprint != precompute.models.configured.version
    assert KVCodec.read_header(reply.blocks[0].kv).compression is KVCompression.FP8_HEAD


def test_a_refused_version_gives_way_in_the_registry(precompute, sharp_dir):
    registry = precompute.registry
    good = promoted(precompute, sharp_dir, **WITHIN)
    bad = promoted(precompute, sharp_dir, **PAST)
    with pytest.raises(ServiceUnavailableError, match="is loading"):
        precompute.models.for_version(bad.fingerprint, TENANT)
    failed = loaded_or_failed(precompute, bad.version_id)["failed"][bad.version_id]
    refused = registry.get(bad.version_id)
    # the gate's reason (KL measured, bound, setting) where blockrag-admin shows it
    assert refused.status == "failed" and f"CompressionDriftError: {refused.refusal}" == failed
    assert "kv_compression fp8_head" in refused.refusal and f"above the gate's {MAX_KL:g}" in refused.refusal
    assert registry.active(TENANT).version_id == good.version_id
    last = registry.history(TENANT)[-1]
    assert (last.action, last.version_id, last.previous_version) == ("rollback", good.version_id, bad.version_id)


def test_the_gated_loader_reports_a_refusal_once_and_never_reloads(precompute, sharp_dir, loads):
    version = promoted(precompute, sharp_dir, **PAST)
    reports, refused = Reports(precompute.registry), {}
    load = gated_versions(precompute.config, precompute.store, reports, refused)
    for _ in range(3):  # ServedModels retries a failed load every RETRY_FAILED_S while the registry names it
        with pytest.raises(CompressionDriftError, match=f"model version {version.version_id} is not served"):
            load(version)
    assert [v for v in loads if v] == [version.version_id] and reports.calls == [version.version_id]
    assert set(refused) == {version.fingerprint}
    assert precompute.registry.get(version.version_id).status == "failed"


def test_a_refusal_the_registry_missed_is_reported_at_the_next_load(precompute, sharp_dir, loads):
    version = promoted(precompute, sharp_dir, **PAST)
    reports = Reports(precompute.registry, failing=1)
    load = gated_versions(precompute.config, precompute.store, reports, {})
    with pytest.raises(CompressionDriftError, match="above the gate's"):
        load(version)
    assert precompute.registry.active(TENANT).version_id == version.version_id  # not recorded yet
    for _ in range(2):
        with pytest.raises(CompressionDriftError, match="above the gate's"):
            load(version)
    assert [v for v in loads if v] == [version.version_id] and reports.calls == [version.version_id] * 2
    assert precompute.registry.active(TENANT) is None and precompute.registry.get(version.version_id).refusal
