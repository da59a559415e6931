"""Evaluation by family and the granularity sweep, with a stand-in head whose logit is the
candidate kind's (the scoring is under test, not a model)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from tiny_models import tiny_backbone

from blockrag.segment.backbone import ENCODER
from blockrag.segment.boundary import BoundaryConfig, BoundaryModel
from blockrag.segment.candidates import KINDS, find_candidates
from blockrag.segment.train.data import Instance
from blockrag.segment.train.evaluation import family, family_tables, granularity_sweep
from blockrag.segment.learned import LearnedSegmenter

LOGITS = {"paragraph": 5.0, "heading": 4.0, "code": 4.0, "turn": 2.0, "line": 1.0, "sentence": -2.0}
TEXT = ("First line of the intro. Second sentence here.\nAnother line.\n\n"
        "A new paragraph starts. It goes on.\nAnd ends.")


class KindHead(nn.Module):
    def __init__(self, feature_size: int):
        super().__init__()
        self.feature_size = feature_size
        self.register_buffer("logits", torch.tensor([LOGITS[k] for k in KINDS]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.feature_size:self.feature_size + len(KINDS)] @ self.logits


@pytest.fixture(scope="module")
def segmenter() -> LearnedSegmenter:
    backbone = tiny_backbone()
    config = BoundaryConfig(backbone="tiny-bert", backbone_kind=ENCODER, feature_size=backbone.feature_size)
    return LearnedSegmenter(BoundaryModel(backbone, KindHead(backbone.feature_size), config),
                            lambda text: len(text.split()))


def offsets(*kinds: str) -> list[int]:
    return [c.offset for c in find_candidates(TEXT) if c.kind in kinds]


def test_families():
    make = lambda category, kind: Instance(TEXT, [], category, kind, "x")  # noqa: E731
    assert [family(make("prose", "concat")), family(make("prose", "structure")), family(make("code", "concat")),
            family(make("dialogue", "structure")), family(make("docs", "structure"))] == [
        "prose/concat", "prose/heading-free", "code", "dialogue", "docs"]


def test_granularity_sweep_counts_blocks_and_scores_cuts(segmenter):
    paragraphs = offsets("paragraph")
    instance = Instance(TEXT, paragraphs, "prose", "structure", "x")
    words = len(TEXT.split())
    sweep = granularity_sweep([instance], segmenter)
    assert [p.granularity for p in sweep] == [0.0, 0.25, 0.5, 0.75, 1.0]
    # thresholds (logits) 3, 1.5, 0, -1.5, -3: paragraphs; paragraphs; + lines; + lines; + sentences
    cuts = [len(paragraphs)] * 2 + [len(offsets("paragraph", "line"))] * 2 + [len(find_candidates(TEXT))]
    assert [p.blocks_per_1k_tokens for p in sweep] == pytest.approx([1000 * (c + 1) / words for c in cuts])
    assert sweep[0].pk == 0.0 and sweep[-1].pk > 0.0  # the coarse end is the reference here
    counts = [p.blocks_per_1k_tokens for p in sweep]
    assert counts == sorted(counts)


def test_family_tables_score_each_family_apart(segmenter):
    prose = Instance(TEXT, offsets("paragraph"), "prose", "concat", "x")
    docs = Instance(TEXT, offsets("paragraph", "line"), "docs", "structure", "y")
    tables = family_tables([docs, prose, docs], segmenter)
    assert list(tables) == ["docs", "prose/concat"]
    learned = {name: rows[0].scores for name, rows in tables.items()}
    # at granularity 0.5 the stand-in cuts paragraphs and lines: exactly the docs reference
    assert learned["docs"].pk == 0.0 and learned["docs"].f1 == 1.0
    assert learned["prose/concat"].precision < 1.0
    assert [r.name for r in tables["docs"]][1:3] == ["no split", "paragraph split"]
