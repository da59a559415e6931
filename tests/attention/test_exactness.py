"""The exactness property: cached blocks, re-rotated and concatenated, then prefill of the final
block, equal one masked forward of the whole prompt (float32, max abs difference <= 1e-4)."""

import pytest
import torch
from tiny_models import tiny_configs, tiny_model

from blockrag.attention import BlockAttentionEngine
from blockrag.attention.reference import reference_greedy, reference_logits

ARCHES = list(tiny_configs())
# block lengths of each prompt; "R" repeats the first block (the same KV twice in one prompt)
LAYOUTS = [[1], [1, 1, 1], [5, 1, 9, "R"], [17, 3, 8, 2], [2, 30]]


def _prompt(layout, seed):
    g = torch.Generator().manual_seed(seed)
    blocks = []
    for n in layout:
        blocks.append(blocks[0] if n == "R" else torch.randint(97, (n,), generator=g).tolist())
    return blocks, torch.randint(97, (6,), generator=g).tolist()


@pytest.fixture(scope="module", params=[(a, impl) for a in ARCHES for impl in ("sdpa", "block_sdpa")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def engine(request):
    arch, impl = request.param
    model = tiny_model(arch)
    model.set_attn_implementation(impl)
    return BlockAttentionEngine(model)


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
def test_prefill_equals_masked_reference(engine, layout):
    blocks, final = _prompt(layout, seed=len(layout))
    out = engine.prefill(engine.encode_blocks(blocks), final)
    ref = reference_logits(engine.model, blocks, final)
    assert out.logits.shape == (len(final), 97)
    assert (out.logits - ref).abs().max().item() <= 1e-4
    assert out.cached_tokens == sum(map(len, blocks)) and out.computed_tokens == len(final)


def test_any_order(engine):
    blocks, final = _prompt([4, 7, 2], seed=3)
    kvs = engine.encode_blocks(blocks)
    for order in ([2, 0, 1], [1, 2, 0]):
        out = engine.prefill([kvs[i] for i in order], final)
        ref = reference_logits(engine.model, [blocks[i] for i in order], final)
        assert (out.logits - ref).abs().max().item() <= 1e-4


def test_block_attention_differs_from_full_attention(engine):
    # guards the test above against a reference that silently ignores the mask
    blocks, final = _prompt([5, 6], seed=4)
    ref = reference_logits(engine.model, blocks, final)
    full = engine.full_prefill([t for b in blocks for t in b] + final, logits_to_keep=len(final)).logits
    assert (full - ref).abs().max().item() > 1e-3


def test_encode_blocks_equals_encode_block(engine):
    blocks, _ = _prompt([3, 1, 12, 5], seed=5)
    packed = engine.encode_blocks(blocks)
    for block, kv in zip(blocks, packed):
        alone = engine.encode_block(block)
        assert kv.token_ids == tuple(block)
        assert (kv.keys - alone.keys).abs().max().item() <= 1e-5
        assert (kv.values - alone.values).abs().max().item() <= 1e-5


def test_batches_split_by_max_batch_tokens():
    engine = BlockAttentionEngine(tiny_model("qwen2"), max_batch_tokens=10)
    blocks, final = _prompt([5, 4, 9, 1, 3], seed=6)  # batches [9], [5, 4], [3, 1] (rows x longest <= 10)
    out = engine.prefill(engine.encode_blocks(blocks), final)
    assert (out.logits - reference_logits(engine.model, blocks, final)).abs().max().item() <= 1e-4


def test_generate_equals_reference_greedy(engine):
    blocks, final = _prompt([4, 9, "R"], seed=7)
    got = list(engine.generate(engine.encode_blocks(blocks), final, max_new_tokens=10, stop_ids=[]))
    assert got == reference_greedy(engine.model, blocks, final, 10)
    assert len(got) == 10


def test_decode_grows_past_reserved_capacity(engine):
    # prefill reserves nothing; decoding through the cache object must still be exact
    blocks, final = _prompt([3, 4], seed=8)
    out = engine.prefill(engine.encode_blocks(blocks), final)
    token = int(out.logits[-1].argmax())
    with torch.inference_mode():
        step = engine._forward((token,), out.cached_tokens + out.computed_tokens, out.cache, 0)
    ref = reference_logits(engine.model, blocks, final + [token])[-1]
    assert (step[-1] - ref).abs().max().item() <= 1e-4


# -- block sink tokens ---------------------------------------------------------------------------

SINK = 3


@pytest.fixture(scope="module", params=ARCHES)
def sink_engine(request):
    model = tiny_model(request.param)
    model.set_attn_implementation("block_sdpa")
    return BlockAttentionEngine(model, sink_token_id=SINK)


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
def test_sinks_prefill_equals_masked_reference(sink_engine, layout):
    blocks, final = _prompt(layout, seed=len(layout))
    out = sink_engine.prefill(sink_engine.encode_blocks(blocks), final)
    ref = reference_logits(sink_engine.model, blocks, final, sink_token_id=SINK)
    assert (out.logits - ref).abs().max().item() <= 1e-4
    # every block takes one more position: its sink
    assert out.cached_tokens == sum(map(len, blocks)) + len(blocks)
    assert out.cached_tokens == sink_engine.context_length([len(b) for b in blocks])


def test_sinks_change_the_answer_and_the_fingerprint(sink_engine):
    # guards the test above: a reference (or engine) that dropped the sink would agree with the plain path
    blocks, final = _prompt([5, 6], seed=4)
    with_sink = reference_logits(sink_engine.model, blocks, final, sink_token_id=SINK)
    without = reference_logits(sink_engine.model, blocks, final)
    assert (with_sink - without).abs().max().item() > 1e-3
    plain = BlockAttentionEngine(sink_engine.model)
    assert plain.fingerprint != sink_engine.fingerprint
    assert BlockAttentionEngine(sink_engine.model, sink_token_id=SINK + 1).fingerprint != sink_engine.fingerprint


def test_sink_blocks_store_only_their_own_tokens(sink_engine):
    # the stored block is keyed by its own tokens and holds one KV row per token; the sink's KV
    # is the engine's, the same for every block
    kv = sink_engine.encode_block([5, 6, 7])
    assert kv.token_ids == (5, 6, 7) and kv.num_tokens == 3
    assert sink_engine.sink.token_ids == (SINK,) and sink_engine.sink.num_tokens == 1


def test_sinks_generate_equals_reference_greedy(sink_engine):
    blocks, final = _prompt([4, 9, "R"], seed=7)
    got = list(sink_engine.generate(sink_engine.encode_blocks(blocks), final, max_new_tokens=8, stop_ids=[]))
    assert got == reference_greedy(sink_engine.model, blocks, final, 8, sink_token_id=SINK)


def test_gate_passes_with_sinks(sink_engine):
    report = sink_engine.verify()
    assert report.logit_error <= 1e-4 and report.key_error <= 1e-4


def test_sink_token_out_of_vocabulary_is_refused():
    from blockrag.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError, match="sink_token_id"):
        BlockAttentionEngine(tiny_model("qwen2"), sink_token_id=97)
