"""The granularity property of LearnedSegmenter: as granularity rises, the cuts only grow (a
superset) and the number of blocks never falls. Random heads on random texts, parametrized by
seed (no hypothesis in the venv).

It holds for the cuts, and for the blocks under a maximum alone or with a small minimum; it does
NOT hold when min_block_tokens is near half the maximum: merging the smallest block first across
its weaker boundary can, with more cuts, fold blocks into neighbours that stood alone before (the
xfail below pins one case; 15 of 200 seeds fail so)."""

from __future__ import annotations

import random

import pytest
import torch
from tiny_models import tiny_backbone

from blockrag.segment.backbone import ENCODER, Backbone
from blockrag.segment.boundary import BoundaryConfig, BoundaryHead, BoundaryModel
from blockrag.segment.learned import LearnedSegmenter
from blockrag.segment.similarity import PER_WIDTH
from blockrag.segment.spans import SegmentOptions

GRID = [i / 10 for i in range(11)]
WORDS = "alpha beta gamma delta cache block kernel page tensor query token model".split()


def words(text: str) -> int:
    return len(text.split())


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    return tiny_backbone()


def random_text(rng: random.Random) -> str:
    paragraphs = []
    for _ in range(rng.randint(1, 8)):
        sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 14))).capitalize() + "."
                     for _ in range(rng.randint(1, 5))]
        lines = [" ".join(sentences[i:i + 2]) for i in range(0, len(sentences), 2)]
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def random_segmenter(backbone: Backbone, seed: int, widths: list[int], suppress: int = 0) -> LearnedSegmenter:
    torch.manual_seed(seed)
    head = BoundaryHead(backbone.feature_size, 8, similarity=PER_WIDTH * len(widths))
    with torch.no_grad():  # logits spread over about -4..4, so that the grid moves many cuts
        first, last = head.net[1], head.net[4]
        first.weight.normal_(0, first.in_features ** -0.5)
        last.weight.normal_(0, 0.8)
        last.bias.zero_()
    config = BoundaryConfig(backbone="tiny-bert", backbone_kind=ENCODER, feature_size=backbone.feature_size,
                            hidden=8, threshold=0.5, similarity_widths=widths, suppress=suppress)
    return LearnedSegmenter(BoundaryModel(backbone, head, config), words)


OPTIONS = [SegmentOptions(max_block_tokens=1000), SegmentOptions(max_block_tokens=16),
           SegmentOptions(max_block_tokens=40, min_block_tokens=8)]


def block_counts(segmenter: LearnedSegmenter, text: str, options: SegmentOptions) -> list[int]:
    return [len(segmenter.segment(text, SegmentOptions(options.max_block_tokens, options.min_block_tokens, g)))
            for g in GRID]


@pytest.mark.parametrize("seed", range(12))
def test_blocks_never_fall_as_granularity_rises(backbone, seed):
    rng = random.Random(seed)
    segmenter = random_segmenter(backbone, seed, [8, 32] if seed % 2 else [], suppress=seed % 3)
    text = random_text(rng)
    cuts = [set(segmenter.cut_offsets(text, g)) for g in GRID]
    assert all(a <= b for a, b in zip(cuts, cuts[1:]))
    for options in OPTIONS:
        counts = block_counts(segmenter, text, options)
        assert counts == sorted(counts), (options, counts)


@pytest.mark.xfail(strict=True, reason="merging up to a minimum near half the maximum is not monotone in granularity")
def test_a_large_minimum_can_lose_blocks_as_granularity_rises(backbone):
    segmenter = random_segmenter(backbone, 55, [8, 32])
    counts = block_counts(segmenter, random_text(random.Random(55)), SegmentOptions(24, 12))
    assert counts == sorted(counts), counts  # today: [3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2]
