"""The shared opening: every block is encoded after the prompt's opening block (which every
prompt starts with), a fixed gap of positions apart. The cached path must equal one masked
forward in which each block sees its own copy of the opening and itself; with gap 0 the first
block after the opening gets exactly the KV that full attention computes there."""

import pytest
import torch
from tiny_models import tiny_configs, tiny_model

from blockrag.attention import BlockAttentionEngine
from blockrag.attention.layout import Opening, sequence_layout
from blockrag.attention.reference import reference_greedy, reference_logits
from blockrag.errors import InvalidBlockError, InvalidRequestError

TOKENS = (5, 17, 42, 8)
OPENING = Opening(TOKENS, gap=37)
LAYOUTS = [[1], [5, 1, 9, "R"], [17, 3, 8, 2]]


def _prompt(layout, seed):
    g = torch.Generator().manual_seed(seed)
    blocks = []
    for n in layout:
        blocks.append(blocks[0] if n == "R" else torch.randint(97, (n,), generator=g).tolist())
    return [list(TOKENS), *blocks], torch.randint(97, (6,), generator=g).tolist()


@pytest.fixture(scope="module", params=list(tiny_configs()))
def engine(request):
    model = tiny_model(request.param)
    model.set_attn_implementation("block_sdpa")
    return BlockAttentionEngine(model, opening=OPENING)


def test_layout_gives_every_block_its_own_copy_of_the_opening():
    # opening (2 tokens) | block 1 (2) | block 2 (1) | final (2): each block after a copy of the
    # opening ending 3 positions before it; the final sees the opening and the blocks, no copy
    layout = sequence_layout([[7, 8], [1, 2], [3]], [4, 5], opening=Opening((7, 8), gap=3))
    assert layout.ids == [7, 8, 7, 8, 1, 2, 7, 8, 3, 4, 5]
    assert layout.positions == [0, 1, -3, -2, 2, 3, -1, 0, 4, 5, 6]
    assert layout.index == [0, 1, 4, 5, 8, 9, 10]
    assert layout.allowed.int().tolist() == [
        [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # opening
        [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],  # copy before block 1
        [0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0],  # block 1
        [0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0],  # copy before block 2
        [0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0],  # block 2
        [1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0],  # final
        [1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 1]]


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
def test_prefill_equals_masked_reference(engine, layout):
    blocks, final = _prompt(layout, seed=len(layout))
    out = engine.prefill(engine.encode_blocks(blocks), final)
    ref = reference_logits(engine.model, blocks, final, opening=OPENING)
    assert (out.logits - ref).abs().max().item() <= 1e-4
    # the opening is a block of the prompt; blocks take their own positions only
    assert out.cached_tokens == sum(map(len, blocks)) == engine.context_length([len(b) for b in blocks])


def test_the_opening_changes_the_answer_and_the_fingerprint(engine):
    # guards the test above: a reference or engine that ignored the opening would agree with plain blocks
    blocks, final = _prompt([5, 6], seed=4)
    shared = reference_logits(engine.model, blocks, final, opening=OPENING)
    alone = reference_logits(engine.model, blocks, final)
    assert (shared - alone).abs().max().item() > 1e-3
    assert BlockAttentionEngine(engine.model).fingerprint != engine.fingerprint
    assert BlockAttentionEngine(engine.model, opening=Opening(TOKENS[:-1], gap=37)).fingerprint != engine.fingerprint
    assert BlockAttentionEngine(engine.model, opening=Opening(TOKENS, gap=36)).fingerprint != engine.fingerprint


def test_with_gap_zero_the_first_passage_gets_the_full_attention_kv(engine):
    # the passage right after the opening is encoded exactly as full attention encodes it there
    adjacent = BlockAttentionEngine(engine.model, opening=Opening(TOKENS, gap=0))
    passage = [9, 33, 61, 2, 70]
    full = adjacent._encode_rows([(*TOKENS, *passage)], start=0)[0]
    kv = adjacent.encode_block(passage)
    rotated = adjacent.reencoder.rotate(kv.keys, len(TOKENS))
    assert (rotated - full.keys[:, :, len(TOKENS):]).abs().max().item() <= 1e-4
    assert (kv.values - full.values[:, :, len(TOKENS):]).abs().max().item() <= 1e-5
    # and the gap moves the opening away: the same passage's KV differs
    assert (engine.encode_block(passage).values - kv.values).abs().max().item() > 1e-4


@pytest.mark.parametrize("layout", [[5, 1, 9], [3]], ids=str)
def test_a_lead_block_first_equals_the_reference_with_the_first_passage_read_exactly(engine, layout):
    # encode_lead: the first passage encoded right after the opening, as full attention reads it
    # there; the prompt [opening, lead, blocks...] equals the mask in which block 1 is global
    blocks, final = _prompt(layout, seed=11 + len(layout))
    kvs = engine.encode_blocks(blocks)
    kvs[1] = engine.encode_lead(blocks[1])
    out = engine.prefill(kvs, final)
    ref = reference_logits(engine.model, blocks, final, opening=OPENING, global_blocks={1})
    assert (out.logits - ref).abs().max().item() <= 1e-4
    # guards: the lead form differs from the cached form, and so does the answer it gives
    assert (kvs[1].values - engine.encode_block(blocks[1]).values).abs().max().item() > 1e-4
    assert (ref - reference_logits(engine.model, blocks, final, opening=OPENING)).abs().max().item() > 1e-4


def test_without_an_opening_a_lead_block_is_the_block():
    plain = BlockAttentionEngine(tiny_model("qwen2"))
    lead, block = plain.encode_lead([4, 5, 6]), plain.encode_block([4, 5, 6])
    assert torch.equal(lead.keys, block.keys) and torch.equal(lead.values, block.values)


def test_blocks_store_only_their_own_tokens(engine):
    kv = engine.encode_block([5, 6, 7])
    assert kv.token_ids == (5, 6, 7) and kv.num_tokens == 3
    # the opening itself is encoded once, alone at the start, and handed out as it is
    assert engine.encode_block(TOKENS) is engine.opening_kv
    assert engine.opening_kv.token_ids == TOKENS


def test_generate_equals_reference_greedy(engine):
    blocks, final = _prompt([4, 9, "R"], seed=7)
    got = list(engine.generate(engine.encode_blocks(blocks), final, max_new_tokens=8, stop_ids=[]))
    assert got == reference_greedy(engine.model, blocks, final, 8, opening=OPENING)


def test_gate_passes_with_an_opening(engine):
    report = engine.verify()
    assert report.logit_error <= 1e-4 and report.key_error <= 1e-4


def test_a_prompt_without_the_opening_is_refused(engine):
    kvs = engine.encode_blocks([[5, 6, 7], [8, 9]])
    with pytest.raises(InvalidBlockError, match="first block must be that opening"):
        engine.prefill(kvs, [1, 2])
    # a question with no context blocks at all needs no opening
    assert engine.prefill([], [1, 2]).logits.shape[0] == 2


def test_opening_and_sinks_together_are_refused():
    with pytest.raises(InvalidRequestError, match="not both"):
        BlockAttentionEngine(tiny_model("qwen2"), sink_token_id=3, opening=OPENING)


def test_a_negative_gap_or_an_empty_opening_is_refused():
    with pytest.raises(InvalidRequestError, match="gap >= 0"):
        Opening(TOKENS, gap=-1)
    with pytest.raises(InvalidRequestError, match="at least one token"):
        Opening((), gap=5)
