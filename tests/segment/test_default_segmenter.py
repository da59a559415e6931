"""The shipped segmenter: it loads from the package, and its decisions follow the granularity."""

from __future__ import annotations

from pathlib import Path

import pytest

from blockrag.segment import SegmentOptions
from blockrag.segment.candidates import find_candidates
from blockrag.segment.default import default_model_dir, load_default_segmenter
from blockrag.segment.sequence import HeadEnsemble
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
    # format 6 (issue 10): units embedded once, three GRU heads over the units, logits averaged
    assert config.format == 6 and config.members == 3 and isinstance(segmenter.model.head, HeadEnsemble)
    assert (config.hidden, config.layers, config.unit_widths) == (128, 2, [25, 50, 100, 200, 400])
    assert 0.5 < config.threshold < 1.0 and config.suppress == 1
    assert config.training["instances"] == 1094 and config.training["seeds"] == [0, 1, 2]


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


BREAD = ["Bread dough needs flour, water, salt and yeast. Knead it for ten minutes until it is smooth and "
         "springs back when pressed.",
         "Leave the dough to rise in a warm place for an hour, covered with a damp cloth, until it has doubled "
         "in size.",
         "Shape the loaf, let it prove again, then bake it in a hot oven until the crust is brown and the base "
         "sounds hollow when tapped."]
TCP = ["A TCP connection starts with a three-way handshake: the client sends SYN, the server answers SYN-ACK, "
       "and the client acknowledges.",
       "Each segment carries a sequence number, so the receiver can put data back in order and ask again for "
       "what was lost.",
       "Congestion control shrinks the sending window when packets are dropped and grows it again while "
       "acknowledgements arrive."]


def test_cuts_where_the_topic_changes_and_nowhere_else(segmenter):
    """Prose where every paragraph break is the same blank line (prose-dev's form): only the
    content tells the join, and the shipped model finds it at the default granularity."""
    text = "\n\n".join(BREAD + TCP)
    join = text.index(TCP[0])
    assert segmenter.cut_offsets(text, 0.5) == [join]
