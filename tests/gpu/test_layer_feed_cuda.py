"""Blocks in pinned host memory fed layer by layer (host_reads="layered", layer_feed.py): the
copies on a side stream, the placement of layer l in its pre-hook after an event; the same logits
and tokens as blocks placed from the device, eager, graphed and held. Run with `pytest -m gpu`."""

import pytest
import torch
from tiny_models import tiny_model

from blockrag.attention import BlockAttentionEngine
from blockrag.attention.cache import BlockCache
from blockrag.attention.layer_feed import LayerFeed, decoder_layers, fed_by_layer

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

LENGTHS = [40, 7, 100, 33]
QUESTION = [3, 14, 15, 92, 65, 35, 8]


@pytest.fixture(scope="module")
def model():
    model = tiny_model("llama31").cuda()
    model.set_attn_implementation("block_sdpa")
    return model


def _blocks(engine, seed=0):
    g = torch.Generator().manual_seed(seed)
    kvs = engine.encode_blocks([torch.randint(97, (n,), generator=g).tolist() for n in LENGTHS])
    return kvs, [kv.to("cpu").pin_memory() for kv in kvs]


@pytest.mark.parametrize("graphs", [False, True], ids=["eager", "graphed"])
def test_layered_prefill_equals_device_blocks(model, graphs):
    engine = BlockAttentionEngine(model, cuda_graphs=graphs, graph_context_tokens=256, graph_decode_tokens=64,
                                  host_reads="layered")
    device, host = _blocks(engine)
    assert all(fed_by_layer(kv, torch.empty(1, device="cuda")) for kv in host)
    expected = engine.prefill(device, QUESTION).logits  # graphed: a replay; layered: eager forward
    for _ in range(3):  # the staging and side stream reused run after run
        got = engine.prefill(host, QUESTION).logits
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    engine.host_reads = "staged"
    torch.testing.assert_close(engine.prefill(host, QUESTION).logits, expected, rtol=1e-4, atol=1e-4)


def test_layered_held_answer_equals_device_blocks(model):
    engine = BlockAttentionEngine(model, cuda_graphs=True, graph_context_tokens=256, graph_decode_tokens=64,
                                  host_reads="layered")
    device, host = _blocks(engine, seed=1)
    expected = list(engine.generate(device, QUESTION, 40, stop_ids=[]))
    assert list(engine.generate(host, QUESTION, 40, stop_ids=[])) == expected
    assert not engine._graphs.held


@pytest.mark.parametrize("slots, group", [(1, 1), (2, 1), (1, 2), (2, None)])
def test_slots_reused_group_after_group_on_streams(model, slots, group):
    engine = BlockAttentionEngine(model, cuda_graphs=False)
    device, host = _blocks(engine, seed=2)
    kvs, offsets, context = engine.layout(device)
    _, host_offsets, _ = engine.layout(host)
    with torch.inference_mode():
        reference = BlockCache(engine.num_layers, engine.num_kv_heads, engine.head_dim, context, engine.dtype, "cuda")
        reference.write_blocks(kvs, offsets, engine.reencoder)
        cache = BlockCache(engine.num_layers, engine.num_kv_heads, engine.head_dim, context + len(QUESTION),
                           engine.dtype, "cuda")
        cache.key_buffer.fill_(float("nan"))
        cache.set_length(context)
        with LayerFeed(host, host_offsets, engine.reencoder, cache.key_buffer, cache.value_buffer,
                       decoder_layers(model), slots=slots, group=group):
            engine._forward(tuple(QUESTION), context, cache, 1)
        torch.cuda.synchronize()
    assert torch.equal(cache.key_buffer[:, :, :, :context], reference.key_buffer)
    assert torch.equal(cache.value_buffer[:, :, :, :context], reference.value_buffer)
