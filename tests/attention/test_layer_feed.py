"""LayerFeed (layer_feed.py): blocks placed layer by layer in forward pre-hooks give the forward
exactly what placing them all first gives. On the CPU the schedule runs synchronously; the
streams and the pinned host path are tests/gpu/test_layer_feed_cuda.py."""

import pytest
import torch
from tiny_models import tiny_model

from blockrag.attention import BlockAttentionEngine
from blockrag.attention.cache import BlockCache
from blockrag.attention.layer_feed import AUTO_BYTES, LayerFeed, decoder_layers, feed_for, feeds

QUESTION = (5, 17, 33, 8, 61)


def setup(arch: str = "llama31"):
    engine = BlockAttentionEngine(tiny_model(arch))
    g = torch.Generator().manual_seed(3)
    blocks = [torch.randint(97, (n,), generator=g).tolist() for n in (7, 12, 5)]
    kvs, offsets, context = engine.layout(engine.encode_blocks(blocks))
    return engine, kvs, offsets, context


def empty_cache(engine, context):
    cache = BlockCache(engine.num_layers, engine.num_kv_heads, engine.head_dim, context + len(QUESTION),
                       engine.dtype, engine.device)
    cache.key_buffer.fill_(float("nan"))  # a row the forward reads unplaced poisons the logits
    cache.value_buffer.fill_(float("nan"))
    return cache


@pytest.mark.parametrize("slots, group", [(1, 1), (2, 1), (3, 1), (8, 1), (1, 2), (2, 2), (1, 3), (2, None)])
@pytest.mark.parametrize("arch", ["llama31", "qwen3"])
def test_fed_forward_equals_placing_every_block_first(arch, slots, group):
    engine, kvs, offsets, context = setup(arch)
    with torch.inference_mode():
        expected = engine.prefill(kvs, QUESTION).logits
        cache = empty_cache(engine, context)
        cache.set_length(context)
        feed = LayerFeed(kvs, offsets, engine.reencoder, cache.key_buffer, cache.value_buffer,
                         decoder_layers(engine.model), slots=slots, group=group)
        with feed:
            # nothing is placed before the forward reaches a layer: every row still NaN
            assert torch.isnan(cache.key_buffer[:, :, :, :context]).all()
            got = engine._forward(QUESTION, context, cache, 0)
        assert feed.placed == engine.num_layers
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_the_last_block_fed_and_the_first_placed_before_mix():
    engine, kvs, offsets, context = setup()
    with torch.inference_mode():
        expected = engine.prefill(kvs, QUESTION).logits
        cache = empty_cache(engine, context)
        cache.write_blocks(kvs[:2], offsets[:2], engine.reencoder)
        cache.set_length(context)
        with LayerFeed(kvs[2:], offsets[2:], engine.reencoder, cache.key_buffer, cache.value_buffer,
                       decoder_layers(engine.model), slots=2):
            got = engine._forward(QUESTION, context, cache, 0)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_hooks_go_when_the_forward_fails():
    engine, kvs, offsets, context = setup()
    layers = decoder_layers(engine.model)
    cache = empty_cache(engine, context)
    feed = LayerFeed(kvs, offsets, engine.reencoder, cache.key_buffer, cache.value_buffer, layers)
    with pytest.raises(RuntimeError, match="midway"), torch.inference_mode(), feed:
        assert all(layer._forward_pre_hooks for layer in layers)
        raise RuntimeError("midway")
    assert not any(layer._forward_pre_hooks for layer in layers)
    assert feed.placed == 0


def test_a_cpu_cache_is_never_fed_and_other_modes_place_everything_first():
    engine, kvs, offsets, context = setup()
    cache = empty_cache(engine, context)
    for mode in ("staged", "direct", "layered"):  # layered takes pinned host blocks for a CUDA cache only
        placed, placed_at, feed = feed_for(kvs, offsets, engine.reencoder, cache.key_buffer, cache.value_buffer,
                                           engine.model, mode)
        assert feed is None and placed == kvs and placed_at == offsets


def test_engine_takes_layered_and_refuses_unknown_host_reads():
    from blockrag.errors import InvalidRequestError

    engine = BlockAttentionEngine(tiny_model("llama31"), host_reads="layered")
    assert engine.host_reads == "layered"
    assert BlockAttentionEngine(tiny_model("llama31")).host_reads == "auto"
    with pytest.raises(InvalidRequestError, match="staged, direct, layered, auto"):
        BlockAttentionEngine(tiny_model("llama31"), host_reads="pcie")


def test_a_feed_checks_the_model_against_the_cache():
    engine, kvs, offsets, context = setup()
    cache = BlockCache(2, engine.num_kv_heads, engine.head_dim, context + 5, engine.dtype, engine.device)
    with pytest.raises(ValueError, match="3 decoder layers, the cache 2"):
        LayerFeed(kvs, offsets, engine.reencoder, cache.key_buffer, cache.value_buffer, decoder_layers(engine.model))


def test_auto_feeds_large_host_prompts_only():
    assert feeds("layered", 1) and not feeds("layered", 0)
    assert not feeds("auto", AUTO_BYTES - 1) and feeds("auto", AUTO_BYTES)
    assert not feeds("staged", 10 * AUTO_BYTES) and not feeds("direct", 10 * AUTO_BYTES)


def test_decoder_layers_is_none_for_a_model_without_a_layer_list():
    model = tiny_model("llama31")
    assert len(decoder_layers(model)) == 3
    model.get_decoder().layers = None  # decoder layers kept under another name
    assert decoder_layers(model) is None
