"""LearnedSegmenter: granularity moves the threshold; blocks never exceed the maximum (re-split at
the likeliest inner candidate, a hard cut where none is left); short blocks merge across their
weaker boundary. The heads here are set by hand (the decoding rules are under test, not a model)."""

from __future__ import annotations

import math
import random

import pytest
import torch
from torch import nn
from tiny_models import tiny_backbone

from blockrag.segment.backbone import ENCODER, Backbone
from blockrag.segment.boundary import GAP_FEATURES, BoundaryConfig, BoundaryHead, BoundaryModel
from blockrag.segment.candidates import KINDS, Candidate, find_candidates
from blockrag.segment.learned import LearnedSegmenter, decide, local_maxima, threshold_for
from blockrag.segment.spans import SegmentOptions, Span, make_span

# cut logits by candidate kind; thresholds at granularity 0 / 0.5 / 1 are logits 3 / 0 / -3
KIND_LOGITS = {"paragraph": 5.0, "heading": 4.0, "code": 4.0, "turn": 2.0, "line": 1.0, "sentence": -2.0}


def words(text: str) -> int:
    return len(text.split())


class KindHead(nn.Module):
    """A stand-in head: the logit of a row is its candidate kind's. An input row is the backbone's
    feature_size features, then the kind one-hot (len(KINDS) columns), then GAP_FEATURES layout
    features."""

    def __init__(self, logits: dict[str, float], feature_size: int):
        super().__init__()
        self.feature_size = feature_size
        self.register_buffer("logits", torch.tensor([logits[k] for k in KINDS]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1] == self.feature_size + len(KINDS) + GAP_FEATURES
        one_hot = x[:, self.feature_size:self.feature_size + len(KINDS)]
        assert torch.equal(one_hot.sum(1), torch.ones(len(x)))  # exactly one kind per row
        return one_hot @ self.logits


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    """A tiny random BERT under the default encoder's tokenizer: features are real tensors, cheap."""
    return tiny_backbone()


def segmenter(backbone: Backbone, head: nn.Module, threshold: float = 0.5) -> LearnedSegmenter:
    config = BoundaryConfig(backbone="tiny-bert", backbone_kind=ENCODER, feature_size=backbone.feature_size,
                            threshold=threshold)
    return LearnedSegmenter(BoundaryModel(backbone, head, config), words)


@pytest.fixture(scope="module")
def by_kind(backbone) -> LearnedSegmenter:
    return segmenter(backbone, KindHead(KIND_LOGITS, backbone.feature_size))


# --- threshold_for ----------------------------------------------------------------------------

def test_threshold_at_the_middle_is_the_base():
    for base in (0.05, 0.3, 0.5, 0.9):
        assert threshold_for(base, 0.5) == pytest.approx(base)


def test_threshold_moves_three_logits_either_way():
    sigmoid = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    assert threshold_for(0.5, 1.0) == pytest.approx(sigmoid(-3))  # ~0.047: fine, cut readily
    assert threshold_for(0.5, 0.0) == pytest.approx(sigmoid(3))   # ~0.953: coarse


@pytest.mark.parametrize("base", [0.0, 0.05, 0.3, 0.5, 0.9, 1.0])
def test_threshold_falls_as_granularity_rises(base):
    grid = [i / 20 for i in range(21)]
    values = [threshold_for(base, g) for g in grid]
    assert all(0 < v < 1 for v in values)  # a base of 0 or 1 is clamped, never a certain cut
    assert all(a > b for a, b in zip(values, values[1:]))


# --- cut_offsets ------------------------------------------------------------------------------

TEXT = ("# Title\nFirst line of the intro. Second sentence here.\nAnother line.\n\n"
        "A new paragraph starts. It goes on.\nAnd ends.")


def offsets_of(text: str, *kinds: str) -> list[int]:
    return [c.offset for c in find_candidates(text) if c.kind in kinds]


def test_cut_offsets_by_granularity(by_kind):
    assert by_kind.cut_offsets(TEXT, 0.0) == offsets_of(TEXT, "paragraph", "heading")  # logits > 3
    assert by_kind.cut_offsets(TEXT, 0.5) == offsets_of(TEXT, "paragraph", "heading", "line")  # > 0
    assert by_kind.cut_offsets(TEXT, 1.0) == offsets_of(TEXT, *KINDS)  # > -3: every candidate
    assert offsets_of(TEXT, "paragraph") and offsets_of(TEXT, "line") and offsets_of(TEXT, "sentence")


def test_the_trained_threshold_is_the_middle(backbone):
    # sentences have probability sigmoid(-2) ~ 0.12: a base threshold of 0.1 cuts them at 0.5
    low = segmenter(backbone, KindHead(KIND_LOGITS, backbone.feature_size), threshold=0.1)
    assert low.cut_offsets(TEXT, 0.5) == offsets_of(TEXT, *KINDS)


def test_no_candidates(by_kind):
    assert by_kind.cut_offsets("one line, no cut") == []
    assert by_kind.segment("   \n\n  ") == []
    [span] = by_kind.segment("  one line, no cut \n")
    assert (span.start, span.end, span.text, span.token_count) == (2, 18, "one line, no cut", 4)


# --- segment: exact cases ---------------------------------------------------------------------

def texts(spans: list[Span]) -> list[str]:
    return [s.text for s in spans]


def test_segment_cuts_where_cut_offsets_does(by_kind):
    spans = by_kind.segment(TEXT, SegmentOptions(max_block_tokens=1000, granularity=0.5))
    assert [s.start for s in spans[1:]] == by_kind.cut_offsets(TEXT, 0.5)
    assert texts(spans) == ["# Title", "First line of the intro. Second sentence here.", "Another line.",
                            "A new paragraph starts. It goes on.", "And ends."]


def test_an_oversized_block_is_split_at_its_likeliest_inner_candidate(by_kind):
    # 16 words, one block at granularity 0 (no paragraph cut); the line (logit 1) is split before
    # the sentence (logit -2), though it is off centre; the 10-word half is then split at its sentence
    text = "w1 w2. W3 w4 w5 w6 w7 w8 w9 w10.\nW11 w12 w13 w14 w15 w16"
    spans = by_kind.segment(text, SegmentOptions(max_block_tokens=8, granularity=0.0))
    assert texts(spans) == ["w1 w2.", "W3 w4 w5 w6 w7 w8 w9 w10.", "W11 w12 w13 w14 w15 w16"]


def test_a_long_line_without_candidates_is_cut_by_tokens(by_kind):
    line = " ".join(f"w{i}" for i in range(40))
    text = f"Intro here.\n{line}"
    spans = by_kind.segment(text, SegmentOptions(max_block_tokens=8, granularity=0.5))
    assert texts(spans) == ["Intro here."] + [" ".join(f"w{i}" for i in range(j, j + 8)) for j in range(0, 40, 8)]


def test_a_short_block_merges_across_its_weaker_boundary(by_kind):
    left = "Intro paragraph has seven words in it."
    right = "The following paragraph has eight words in it."
    options = SegmentOptions(max_block_tokens=64, min_block_tokens=3, granularity=0.5)
    # paragraph (strong) before "Tiny.", line (weak) after it: it joins the block after
    after = by_kind.segment(f"{left}\n\nTiny.\n{right}", options)
    assert texts(after) == [left, f"Tiny.\n{right}"]
    # line before, paragraph after: it joins the block before
    before = by_kind.segment(f"{left}\nTiny.\n\n{right}", options)
    assert texts(before) == [f"{left}\nTiny.", right]


def test_a_short_block_stays_when_no_merge_fits(by_kind):
    left = "one two three four five six seven eight."
    right = "Nine ten eleven twelve thirteen fourteen fifteen sixteen."
    options = SegmentOptions(max_block_tokens=8, min_block_tokens=3, granularity=0.5)
    spans = by_kind.segment(f"{left}\n\nTiny.\n{right}", options)  # 8 + 1 words: no merge fits
    assert texts(spans) == [left, "Tiny.", right]


def test_short_blocks_merge_in_a_chain(by_kind):
    text = "\n".join(["a b", "c d", "e f", "g h"])  # four 2-word lines, all cut at 0.5
    spans = by_kind.segment(text, SegmentOptions(max_block_tokens=8, min_block_tokens=4, granularity=0.5))
    # equal boundaries: which neighbour takes a short block is a tie; none is left short or too long
    assert all(4 <= s.token_count <= 8 for s in spans)
    assert " ".join(texts(spans)).split() == text.split()


# --- segment: invariants over random texts and a random head ----------------------------------

VOCAB = "cat dog rocket fuel orbit kitten purr engine launch whisker tail pad booster sun".split()


def random_text(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(1, 6)):
        lines = []
        for _ in range(rng.randint(1, 4)):
            roll = rng.random()
            if roll < 0.1:
                lines.append("# " + " ".join(rng.choices(VOCAB, k=rng.randint(1, 4))).title())
            elif roll < 0.2:
                lines.append(" ".join(rng.choices(VOCAB, k=rng.randint(20, 45))))  # no candidate inside
            else:
                sentences = [" ".join(rng.choices(VOCAB, k=rng.randint(2, 9))).capitalize() + "."
                             for _ in range(rng.randint(1, 4))]
                lines.append(rng.choice(["", "  "]) + " ".join(sentences) + rng.choice(["", " "]))
        parts.append("\n".join(lines))
    return rng.choice(["", "\n"]) + "\n\n".join(parts) + rng.choice(["", "\n  \n"])


def check_spans(text: str, spans: list[Span], options: SegmentOptions) -> None:
    assert spans, "a text with words gives at least one block"
    for s in spans:
        assert s.text == text[s.start:s.end] == s.text.strip() != ""
        assert s.token_count == words(s.text) <= options.max_block_tokens
    for a, b in zip(spans, spans[1:]):
        assert a.end <= b.start  # ordered, not overlapping
    # nothing lost: the blocks hold every non-space character of the text, in order
    assert "".join("".join(s.text.split()) for s in spans) == "".join(text.split())
    # a block under the minimum is one that no neighbour can take in without passing the maximum
    for i, s in enumerate(spans):
        if s.token_count < options.min_block_tokens:
            for j in (i - 1, i + 1):
                if 0 <= j < len(spans):
                    left, right = sorted((spans[i], spans[j]), key=lambda x: x.start)
                    merged = make_span(text, left.start, right.end, words)
                    assert merged.token_count > options.max_block_tokens


@pytest.fixture(scope="module")
def random_head(backbone) -> LearnedSegmenter:
    torch.manual_seed(1)
    head = BoundaryHead(backbone.feature_size, hidden=8)
    nn.init.normal_(head.net[-1].weight, std=2.0)  # spread the probabilities over (0, 1)
    return segmenter(backbone, head)


@pytest.mark.parametrize("seed", range(24))
def test_segment_invariants(random_head, seed):
    rng = random.Random(seed)
    text = random_text(rng)
    candidates = {c.offset for c in find_candidates(text)}
    previous: set[int] = set()
    for granularity in (0.0, 0.5, 1.0):
        cuts = random_head.cut_offsets(text, granularity)
        assert cuts == sorted(cuts) and set(cuts) <= candidates
        assert previous <= set(cuts)  # a finer granularity keeps every coarser cut
        previous = set(cuts)
    maximum = rng.randint(8, 40)
    options = SegmentOptions(max_block_tokens=maximum, min_block_tokens=rng.randint(0, maximum // 2),
                             granularity=rng.random())
    check_spans(text, random_head.segment(text, options), options)


# --- suppression of non-maximal cuts (format 4) -----------------------------------------------

def test_local_maxima_within_a_radius():
    probs = torch.tensor([0.1, 0.9, 0.5, 0.95, 0.2, 0.2])
    assert local_maxima(probs, 1).tolist() == [False, True, False, True, False, True]  # a tie is kept
    assert local_maxima(probs, 2).tolist() == [False, False, False, True, False, False]
    assert local_maxima(probs, 0).all() and local_maxima(torch.zeros(0), 3).shape == (0,)


def test_decide_keeps_the_peaks_over_the_threshold():
    candidates = [Candidate(10 * (i + 1), "sentence") for i in range(6)]
    probs = torch.tensor([0.1, 0.9, 0.5, 0.95, 0.2, 0.2])
    assert decide(candidates, probs, 0.3) == [20, 30, 40]
    assert decide(candidates, probs, 0.3, suppress=1) == [20, 40]
    assert decide(candidates, probs, 0.15, suppress=1) == [20, 40, 60]


def test_the_segmenter_applies_its_suppression(backbone):
    config = BoundaryConfig(backbone="tiny-bert", backbone_kind=ENCODER, feature_size=backbone.feature_size,
                            suppress=1)
    suppressing = LearnedSegmenter(BoundaryModel(backbone, KindHead(KIND_LOGITS, backbone.feature_size), config), words)
    found = find_candidates(TEXT)
    logits = torch.tensor([KIND_LOGITS[c.kind] for c in found])
    expected = [c.offset for c, keep in zip(found, local_maxima(logits, 1).tolist()) if keep]
    assert suppressing.cut_offsets(TEXT, 1.0) == expected
    assert len(expected) < len(found)  # the rule removes something here
