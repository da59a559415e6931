"""A GPU replica's memory tiers (kvcache/tiers.py): a block evicted from GPU memory lands in pinned
host memory, the engine reads it from there exactly, and a hit moves it back to the GPU. Run with
`pytest -m gpu tests/gpu`."""

import pytest
import torch
from tiny_models import tiny_model

from blockrag.attention import BlockAttentionEngine
from blockrag.kvcache.tiers import replica_tiers

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_device_then_pinned_tiers_feed_the_engine():
    model = tiny_model("llama31").cuda()
    model.set_attn_implementation("block_sdpa")
    engine = BlockAttentionEngine(model, host_reads="direct")
    g = torch.Generator().manual_seed(0)
    blocks = [torch.randint(97, (40,), generator=g).tolist() for _ in range(2)]
    a, b = engine.encode_blocks(blocks)
    final = torch.randint(97, (6,), generator=g).tolist()
    expected = engine.prefill([a, b], final).logits
    tiers = replica_tiers("cuda", a.nbytes, pinned_bytes=2 * a.nbytes)  # GPU memory holds one block
    tiers.put("a", a)
    tiers.put("b", b)  # a moves to pinned host memory
    held = tiers.tiers[1].lru.get("a")
    assert held.keys.device.type == "cpu" and held.keys.is_pinned() and held.values.is_pinned()
    assert (engine.prefill([held, tiers.get("b")], final).logits - expected).abs().max().item() <= 1e-5
    back = tiers.get("a")  # promoted: on the GPU again, b now pinned
    assert back.keys.is_cuda and "a" in tiers.tiers[0].lru and "b" in tiers.tiers[1].lru
    assert (engine.prefill([back, tiers.get("b")], final).logits - expected).abs().max().item() <= 1e-5
