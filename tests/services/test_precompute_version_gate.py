"""Precompute gates each model version it loads under the deployment's KV compression, as it gates
the configured model at start: a promoted version whose adapter makes answers over compressed KV
drift past kv_compression_max_kl is not served (the load fails naming the version and the gate;
the replica keeps serving what it had, and `prepare`, which a generation replica's switch asks
first, raises the gate's error), one within it is served and written compressed.

On a tiny random Llama with a sharp final norm (tests/services/test_precompute_compression_gate.py)
under fp8_head over 2 questions, mean answer-token KL: the configured model 6.7e-6, a version with
small random LoRA weights (scale 0.05) 9.0e-6, one with large ones (scale 1.0) 1.1e-4; the gate's
3e-5 sits between them."""

from __future__ import annotations

import asyncio
import time

import pytest
from tiny_versions import random_adapter, register, save_sharp_tiny_llama

from blockrag.errors import ServiceUnavailableError
from blockrag.kvcache import KVCodec
from blockrag.kvcache.compression import KVCompression
from blockrag.kvcache.compression_gate import CompressionDriftError
from blockrag.registry import ModelRegistry
from blockrag.v1 import precompute_pb2 as pb
from blockrag_services.precompute.deployment import Precompute

TENANT = "acme"
MAX_KL = 3e-5


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


def precompute_with(precompute: Precompute, model_version: str) -> pb.PrecomputeResponse:
    return asyncio.run(precompute.Precompute(pb.PrecomputeRequest(
        texts=["Ferries leave at nine."], tenant=TENANT, model_version=model_version, return_kv=True)))


def test_a_version_past_the_gate_is_not_served(precompute, sharp_dir):
    version = promoted(precompute, sharp_dir, seed=2, scale=1.0)
    with pytest.raises(ServiceUnavailableError, match="is loading"):
        precompute.models.for_version(version.fingerprint, TENANT)
    failed = loaded_or_failed(precompute, version.version_id)["failed"][version.version_id]
    assert failed.startswith(f"CompressionDriftError: model version {version.version_id} is not served: "
                             f"kv_compression fp8_head: answers drift")
    assert f"above the gate's {MAX_KL:g}" in failed and "RollbackModelVersion" in failed
    with pytest.raises(ServiceUnavailableError, match=f"{version.version_id} failed to load on this replica"):
        precompute.models.for_version(version.fingerprint, TENANT)
    # a generation replica's switch asks prepare first: the gate's reason now, not a wait for a load
    with pytest.raises(CompressionDriftError, match=f"model version {version.version_id} is not served"):
        asyncio.run(precompute.prepare(version.fingerprint, TENANT))
    # the configured model still serves the tenant's requests that name no version
    reply = precompute_with(precompute, "")
    assert reply.model_version == precompute.models.configured.version


def test_a_version_within_the_gate_is_served_compressed(precompute, sharp_dir):
    version = promoted(precompute, sharp_dir, seed=1, scale=0.05)
    with pytest.raises(ServiceUnavailableError, match="is loading"):
        precompute.models.for_version(version.fingerprint, TENANT)
    assert version.version_id not in loaded_or_failed(precompute, version.version_id)["failed"]
    assert asyncio.run(precompute.prepare(version.fingerprint, TENANT)) is True
    reply = precompute_with(precompute, version.fingerprint)
    assert reply.model_version == version.fingerprint != precompute.models.configured.version
    assert KVCodec.read_header(reply.blocks[0].kv).compression is KVCompression.FP8_HEAD
