"""Precompute gates the deployment's KV compression at start: a replica whose setting drifts past
kv_compression_max_kl on the configured model does not start (so neither does the platform); one
within it starts and writes compressed frames; none measures nothing."""

from __future__ import annotations

import pytest
from tiny_versions import save_sharp_tiny_llama

from blockrag.kvcache import KVCodec
from blockrag.kvcache.compression import KVCompression
from blockrag.kvcache.compression_gate import CompressionDriftError
from blockrag.v1 import precompute_pb2 as pb
from blockrag_services.precompute.deployment import Precompute


@pytest.fixture(scope="module")
def sharp_dir(tmp_path_factory):
    return save_sharp_tiny_llama(tmp_path_factory.mktemp("tiny"))


def args(tmp_path, model_dir, **settings) -> dict:
    return {"database_url": f"sqlite:///{tmp_path}/index.db", "object_store_url": str(tmp_path / "kv"),
            "model": {"model": str(model_dir), "device": "cpu", "adapter": "none"},
            "resources": {"torch_threads": 1}, "kv_compression_gate_questions": 2, **settings}


def test_a_setting_past_the_gate_stops_the_replica(tmp_path, sharp_dir):
    with pytest.raises(CompressionDriftError, match="kv_compression fp8_head: answers drift"):
        Precompute.func_or_class(args(tmp_path, sharp_dir, kv_compression="fp8_head", kv_compression_max_kl=1e-12))


def test_a_setting_within_the_gate_starts_and_writes_compressed_frames(tmp_path, sharp_dir):
    import asyncio

    precompute = Precompute.func_or_class(args(tmp_path, sharp_dir, kv_compression="int8_token"))
    reply = asyncio.run(precompute.Precompute(pb.PrecomputeRequest(texts=["Ferries leave at nine."], tenant="acme",
                                                                   return_kv=True)))
    assert KVCodec.read_header(reply.blocks[0].kv).compression is KVCompression.INT8_TOKEN


def test_none_measures_nothing(tmp_path, sharp_dir, monkeypatch):
    import blockrag.kvcache.compression_gate as gate

    def refuse(*a, **k):
        raise AssertionError("the gate ran for kv_compression none")

    monkeypatch.setattr(gate, "check_compression", refuse)
    Precompute.func_or_class(args(tmp_path, sharp_dir))  # kv_compression: none
    with pytest.raises(AssertionError, match="the gate ran"):  # and the patch is what the replica calls
        Precompute.func_or_class(args(tmp_path, sharp_dir, kv_compression="int8_head"))
