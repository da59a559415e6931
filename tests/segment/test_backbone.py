"""Backbone: window plans, which token each candidate's features are read at (encoder: either side
of the cut; causal: before the cut and before the next candidate), and the real default encoder."""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaModel

from blockrag.errors import ModelLoadError
from blockrag.segment.backbone import CAUSAL, ENCODER, Backbone, WindowPlan
from blockrag.segment.candidates import find_candidates

LINES = ["Cats purr softly on the warm windowsill.", "Kittens chase each other across the rug.",
         "Rockets burn liquid fuel to reach orbit.", "Boosters separate high above the launch pad."]
SHORT = "\n".join(LINES)


# --- WindowPlan -------------------------------------------------------------------------------

@pytest.mark.parametrize("length, window, overlap, starts", [
    (10, 4, 1, [0, 3, 6]),
    (11, 4, 1, [0, 3, 6, 9]),
    (20, 8, 4, [0, 4, 8, 12]),
    (8, 8, 2, [0]),        # fits one window
    (3, 8, 2, [0]),
    (0, 8, 2, [0]),
    (5, 4, 4, [0, 1]),     # overlap >= window: read as window - 1 (stride 1), so the end is covered
    (7, 4, 9, [0, 1, 2, 3]),
])
def test_window_plan_starts(length, window, overlap, starts):
    assert WindowPlan.of(length, window, overlap).starts == starts


@pytest.mark.parametrize("length", [1, 7, 31, 32, 33, 100, 257])
@pytest.mark.parametrize("window, overlap", [(8, 2), (16, 6), (32, 8), (5, 4), (4, 0), (4, 4), (3, 7)])
def test_window_plan_covers_and_overlaps(length, window, overlap):
    plan = WindowPlan.of(length, window, overlap)
    covered = set()
    for s in plan.starts:
        assert 0 <= s < max(length, 1)
        covered |= set(range(s, min(s + window, length)))
    assert covered == set(range(length))
    shared = min(overlap, window - 1)  # an overlap of a whole window or more reads as window - 1
    for s, t in zip(plan.starts, plan.starts[1:]):
        assert t - s == window - shared
        assert min(s + window, length) - t >= shared  # consecutive windows share `shared` tokens


def test_window_plan_best_is_farthest_from_an_edge():
    plan = WindowPlan.of(20, 8, 4)  # [0, 8) [4, 12) [8, 16) [12, 20)
    assert plan.best((2,)) == 0
    assert plan.best((6,)) == 1      # margins: 1 in window 0, 2 in window 1
    assert plan.best((9, 10)) == 1   # margin 1 in windows 1 and 2: the earlier wins the tie
    assert plan.best((13,)) == 2     # margin 2 in window 2, 1 in window 3
    assert plan.best((19,)) == 3     # only the last window holds the end of the text
    assert plan.best((3, 4)) == 0    # both held by window 0 (margin 3) and window 1 (margin 0)
    assert plan.margin(1, (3, 4)) == -1 and plan.margin(0, (3, 4)) == 3


# --- which token a candidate is read at: a word tokenizer whose ids are token positions and a
# model that echoes (id, position in its window), so a feature row says exactly what was read --

class WordTokenizer:
    """Whitespace tokens; a token's id is its index in the text."""

    pad_token_id = 0

    def __call__(self, text, add_special_tokens=False, return_offsets_mapping=False):
        words = list(re.finditer(r"\S+", text))
        return {"input_ids": list(range(len(words))), "offset_mapping": [(m.start(), m.end()) for m in words]}


class Echo(nn.Module):
    """last_hidden_state[b, t] = (input id, t): the token read and its place in the window."""

    config = SimpleNamespace(hidden_size=2)

    def forward(self, input_ids, attention_mask):
        positions = torch.arange(input_ids.shape[1]).expand_as(input_ids)
        return SimpleNamespace(last_hidden_state=torch.stack([input_ids, positions], dim=-1).float())


def words_before(text: str, offset: int) -> int:
    return len(text[:offset].split())


def read_positions(backbone: Backbone, text: str):
    """Per candidate: (token of a, window start of a, token of b, window start of b)."""
    offsets = [c.offset for c in find_candidates(text)]
    rows = backbone.features(text, offsets)  # [n, 13]: id_a, pos_a, id_b, pos_b, |diffs|, pooled..., cos
    assert rows.shape == (len(offsets), 6 * 2 + 1)
    out = []
    for r in rows.long().tolist():
        out.append((r[0], r[0] - r[1], r[2], r[2] - r[3]))
    return offsets, out


def long_text(lines: int = 30) -> str:
    return "\n".join(f"line {i} has words {' '.join(['w'] * (i % 5))} end" for i in range(lines))


@pytest.mark.parametrize("window, overlap", [(16, 6), (12, 4), (512, 64), (4, 8)])
def test_encoder_reads_either_side_of_the_cut_in_its_best_window(window, overlap):
    text = long_text()
    backbone = Backbone(Echo(), WordTokenizer(), ENCODER, "echo", window=window, overlap=overlap)
    n = len(text.split())
    plan = WindowPlan.of(n, window, overlap)
    offsets, read = read_positions(backbone, text)
    for offset, (a, wa, b, wb) in zip(offsets, read):
        t = words_before(text, offset)
        assert (a, b) == (t - 1, t)  # the last token before the cut, the first after it
        assert wa == wb and wa in plan.starts
        best_margin = max(plan.margin(i, (a, b)) for i in range(len(plan.starts)))
        assert plan.margin(plan.starts.index(wa), (a, b)) == best_margin >= 0


def test_causal_reads_before_the_cut_and_before_the_next_candidate():
    text = long_text()
    backbone = Backbone(Echo(), WordTokenizer(), CAUSAL, "echo", window=16, overlap=6)
    offsets, read = read_positions(backbone, text)
    n = len(text.split())
    for i, (offset, (a, wa, b, wb)) in enumerate(zip(offsets, read)):
        t = words_before(text, offset)
        u = words_before(text, offsets[i + 1]) if i + 1 < len(offsets) else n
        assert (a, b) == (t - 1, u - 1)  # b has read the whole unit after the cut
        assert wa == wb  # every unit here fits one window, so both come from the same one


def test_causal_unit_longer_than_a_window_is_read_in_two_windows():
    """A unit longer than the window leaves no window holding both positions (this raised an
    IndexError, or read a wrapped row, before the fix)."""
    text = "Short first line.\n" + " ".join(f"x{i}" for i in range(60)) + "\nLast line here."
    backbone = Backbone(Echo(), WordTokenizer(), CAUSAL, "echo", window=16, overlap=4)
    offsets, read = read_positions(backbone, text)
    (a0, wa0, b0, wb0), (a1, wa1, b1, wb1) = read
    assert (a0, b0) == (2, 62) and wa0 != wb0
    assert 0 <= a0 - wa0 < 16 and 0 <= b0 - wb0 < 16
    assert (a1, b1) == (62, 65)


def test_encoder_with_no_overlap_reads_a_pair_across_windows():
    text = "\n".join(["one two three", "four five six", "seven eight"])
    backbone = Backbone(Echo(), WordTokenizer(), ENCODER, "echo", window=3, overlap=0)
    _, read = read_positions(backbone, text)
    assert [(a, b) for a, _, b, _ in read] == [(2, 3), (5, 6)]


def test_features_of_nothing():
    backbone = Backbone(Echo(), WordTokenizer(), ENCODER, "echo")
    assert backbone.feature_size == 6 * 2 + 1
    assert backbone.features("a\nb", []).shape == (0, 13)
    assert torch.equal(backbone.features("word", [1]), torch.zeros(1, 13))  # one token: nothing to read


# --- the pooled columns (ma, mb, |ma - mb|, cos): with Echo a token reads as (id, position in its
# window), so a mean over tokens i..j of a window starting at s is ((i + j) / 2, (i + j) / 2 - s) --

POOL_TEXT = "a b c d e\nf g h\ni j k l m n o p"  # 16 tokens; line candidates before tokens 5 and 8


def pooled_row(a: tuple[float, float], b: tuple[float, float], ma: tuple[float, float],
               mb: tuple[float, float]) -> list[float]:
    cos = (ma[0] * mb[0] + ma[1] * mb[1]) / (math.hypot(*ma) * math.hypot(*mb))
    return [*a, *b, abs(a[0] - b[0]), abs(a[1] - b[1]), *ma, *mb, abs(ma[0] - mb[0]), abs(ma[1] - mb[1]), cos]


def test_encoder_pools_the_context_before_a_and_from_b_within_their_window():
    backbone = Backbone(Echo(), WordTokenizer(), ENCODER, "echo", window=8, overlap=4)  # [0, 8) [4, 12) [8, 16)
    backbone.context = 4
    offsets = [c.offset for c in find_candidates(POOL_TEXT)]
    assert [words_before(POOL_TEXT, o) for o in offsets] == [5, 8]
    expected = torch.tensor([
        # (4, 5) in window 0: ma over tokens 1..4, mb over 5..7 (the window ends at 8)
        pooled_row((4, 4), (5, 5), (2.5, 2.5), (6, 6)),
        # (7, 8) in window 1 (start 4): ma over tokens 4..7, mb over 8..11
        pooled_row((7, 3), (8, 4), (5.5, 1.5), (9.5, 5.5)),
    ])
    torch.testing.assert_close(backbone.features(POOL_TEXT, offsets), expected)


def test_causal_pools_the_context_ending_at_a_and_ending_at_b():
    backbone = Backbone(Echo(), WordTokenizer(), CAUSAL, "echo", window=8, overlap=4)
    backbone.context = 4
    offsets = [c.offset for c in find_candidates(POOL_TEXT)]
    expected = torch.tensor([
        # (4, 7): windows 0 and 1 both hold it at margin 0, the earlier wins; ma over 1..4, mb over 4..7
        pooled_row((4, 4), (7, 7), (2.5, 2.5), (5.5, 5.5)),
        # (7, 15): no window holds both; a in window 1 (start 4): ma over 4..7; b in window 2
        # (start 8): mb over 12..15, the tokens ending at b, never after it
        pooled_row((7, 3), (15, 7), (5.5, 1.5), (13.5, 5.5)),
    ])
    torch.testing.assert_close(backbone.features(POOL_TEXT, offsets), expected)


def test_pooling_stops_at_the_start_of_the_text():
    backbone = Backbone(Echo(), WordTokenizer(), ENCODER, "echo")  # context 32, one window of 256
    assert backbone.context == 32
    offsets = [c.offset for c in find_candidates(POOL_TEXT)]
    # ma over tokens 0..4 and 0..7 (fewer than 32 before the cut), mb over 5..15 and 8..15 (the end)
    expected = torch.tensor([pooled_row((4, 4), (5, 5), (2, 2), (10, 10)),
                             pooled_row((7, 7), (8, 8), (3.5, 3.5), (11.5, 11.5))])
    torch.testing.assert_close(backbone.features(POOL_TEXT, offsets), expected)


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="kind"):
        Backbone(Echo(), WordTokenizer(), "seq2seq", "echo")


# --- the real default encoder (all-MiniLM-L6-v2) ----------------------------------------------

@pytest.fixture(scope="module")
def minilm() -> Backbone:
    return Backbone.load(window=32, overlap=8)


def test_default_backbone(minilm):
    assert (minilm.kind, minilm.name, minilm.hidden_size, minilm.feature_size) == (ENCODER, "all-minilm-l6-v2", 384,
                                                                                    6 * 384 + 1)


def test_features_over_many_windows(minilm):
    text = "\n".join(LINES * 4)  # ~130 tokens, five windows of 32
    offsets = [c.offset for c in find_candidates(text)]
    features = minilm.features(text, offsets)
    assert features.shape == (len(offsets), 6 * 384 + 1) and features.dtype == torch.float32
    assert torch.isfinite(features).all()
    a, b, diff, ma, mb, mdiff, cos = features.split([384] * 6 + [1], dim=1)
    assert torch.allclose(diff, (a - b).abs())
    assert torch.allclose(mdiff, (ma - mb).abs())
    torch.testing.assert_close(cos[:, 0], torch.nn.functional.cosine_similarity(ma, mb, dim=1))
    assert not torch.allclose(ma, a) and not torch.allclose(mb, b)  # means of several tokens, not one
    assert torch.equal(features, minilm.features(text, offsets))  # deterministic


def test_encoder_feature_sees_text_after_the_cut(minilm):
    whole = Backbone(minilm.model, minilm.tokenizer, ENCODER, "minilm", window=512)  # one window
    changed = SHORT.replace(LINES[-1], "Boosters tumble into the ocean after separation.")
    offsets = [c.offset for c in find_candidates(SHORT)]
    assert offsets == [c.offset for c in find_candidates(changed)]
    before, after = whole.features(SHORT, offsets), whole.features(changed, offsets)
    # the first cut lies two lines before the change; a bidirectional encoder still sees it
    assert (before[0] - after[0]).abs().max() > 1e-3


def test_embed_rows_are_unit_vectors(minilm):
    vectors = minilm.embed(LINES + ["x " * 100])  # the last is truncated to the window
    assert vectors.shape == (5, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]  # cats are nearer cats than rockets
    assert minilm.embed([]).shape == (0, 384)


# --- a tiny random causal LM: the decision for candidate i is read at candidate i+1 -------------

@pytest.fixture(scope="module")
def tiny_causal(minilm) -> Backbone:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(minilm.tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512)
    return Backbone(LlamaModel(config), minilm.tokenizer, CAUSAL, "tiny-llama", window=512)


def test_causal_feature_reads_the_unit_up_to_the_next_candidate(tiny_causal):
    offsets = [c.offset for c in find_candidates(SHORT)]  # before lines 2, 3, 4
    base = tiny_causal.features(SHORT, offsets)
    assert base.shape == (3, 6 * 32 + 1)

    # the unit between candidates 0 and 1 (line 2) changes: candidate 0's feature must change
    inside = SHORT.replace(LINES[1], "Kittens sleep beside the old dog.")
    inside_offsets = [c.offset for c in find_candidates(inside)]
    assert inside_offsets[0] == offsets[0]
    assert (tiny_causal.features(inside, inside_offsets)[0] - base[0]).abs().max() > 1e-3

    # only text after candidate 1 changes: candidate 0 must not see it (causality)
    later = SHORT.replace(LINES[2], "Satellites drift silently.").replace(LINES[3], "Then nothing.")
    later_offsets = [c.offset for c in find_candidates(later)]
    assert later_offsets[:2] == offsets[:2]
    torch.testing.assert_close(tiny_causal.features(later, later_offsets)[0], base[0], atol=1e-5, rtol=1e-5)


def test_causal_kind_from_the_config(tmp_path, minilm):
    config = LlamaConfig(vocab_size=len(minilm.tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)
    LlamaModel(config).save_pretrained(tmp_path)
    minilm.tokenizer.save_pretrained(tmp_path)
    loaded = Backbone.load(str(tmp_path), window=64, overlap=8)
    assert (loaded.kind, loaded.feature_size, loaded.window) == (CAUSAL, 6 * 16 + 1, 64)


def test_load_of_a_missing_model(tmp_path):
    with pytest.raises(ModelLoadError, match="segmenter backbone"):
        Backbone.load(str(tmp_path / "missing"))
