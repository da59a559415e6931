"""The shipped segmenter: it loads from the package, and its decisions follow the granularity."""

from __future__ import annotations

from pathlib import Path

import pytest

from blockrag.segment import SegmentOptions
from blockrag.segment.candidates import find_candidates
from blockrag.segment.default import default_model_dir, load_default_segmenter
from blockrag.samples import sample_documents

CODE = Path(__file__).resolve().parents[2] / "libs" / "blockrag" / "kvcache" / "index_search.py"


@pytest.fixture(scope="module")
def segmenter():
    return load_default_segmenter(lambda text: len(text.split()))


@pytest.fixture(scope="module")
def text() -> str:
    return "\n\n".join(d.strip() for d in [*sample_documents().values(), CODE.read_text()])


def test_ships_with_the_package(segmenter):
    assert (default_model_dir() / "TRAINING.md").is_file()
    config = segmenter.model.config
    assert config.backbone == "all-minilm-l6-v2" and config.backbone_kind == "encoder"
    assert 0.5 < config.threshold < 1.0 and config.training["net"]["instances"] == 304
    assert config.format == 5 and config.similarity_widths == [64, 128, 256, 512]  # issue 10: content shift
    # format 5: the net of format 3 plus an MLP fusion over the unit similarity (units embedded
    # alone) and the window similarity (3 units either side embedded together)
    assert config.unit_widths == [25, 50, 100, 200, 400] and config.window_units == [3]
    assert config.fusion_hidden == 16 and config.suppress == 1
    assert segmenter.model.head.unit == 18 and segmenter.model.head.fusion_hidden == 16


def test_finer_granularity_keeps_every_coarser_cut(segmenter, text):
    offsets = {c.offset for c in find_candidates(text)}
    coarse, default, fine = (set(segmenter.cut_offsets(text, g)) for g in (0.0, 0.5, 1.0))
    assert coarse <= default <= fine <= offsets
    assert len(fine) > len(coarse)


@pytest.mark.parametrize("max_tokens", [24, 64, 256])
def test_no_block_exceeds_the_maximum(segmenter, text, max_tokens):
    spans = segmenter.segment(text, SegmentOptions(max_block_tokens=max_tokens, min_block_tokens=8, granularity=0.5))
    assert all(s.token_count <= max_tokens for s in spans)
    assert all(text[s.start:s.end] == s.text and s.text == s.text.strip() for s in spans)
    assert "".join(text.split()) == "".join("".join(s.text.split()) for s in spans)
