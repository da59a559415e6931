"""ParagraphSegmenter: offsets, headings, the token bound, merging and granularity."""

from __future__ import annotations

import random

import pytest

from blockrag.errors import InvalidRequestError
from blockrag.segment import ParagraphSegmenter, SegmentOptions, Span


def words(text: str) -> int:
    return len(text.split())


SEG = ParagraphSegmenter(words)


def texts(spans: list[Span]) -> list[str]:
    return [s.text for s in spans]


def check_invariants(text: str, spans: list[Span], options: SegmentOptions, count=words) -> None:
    """Offsets index the source, blocks are stripped, ordered, disjoint, within the bound, counted
    by the caller's counter, and together cover every non-blank character of the text."""
    previous_end = 0
    for span in spans:
        assert text[span.start:span.end] == span.text
        assert span.text == span.text.strip() and span.text
        assert span.start >= previous_end
        previous_end = span.end
        assert span.token_count == count(span.text)
        assert span.token_count <= options.max_block_tokens
    covered = "".join(span.text for span in spans)
    assert "".join(covered.split()) == "".join(text.split())


@pytest.mark.parametrize("text", ["", " ", "\n\n \t\n", "\r\n\r\n"])
def test_blank_text_has_no_blocks(text):
    assert SEG.segment(text) == []


def test_paragraphs_become_blocks_with_offsets():
    text = "  First para here.\n\n \t\nSecond one\nstill second.\n"
    assert SEG.segment(text) == [
        Span(2, 18, "First para here.", 3),
        Span(23, 47, "Second one\nstill second.", 4),
    ]


def test_crlf_blank_lines_separate_paragraphs():
    text = "One two.\r\n\r\nThree four.\r\n"
    assert SEG.segment(text) == [Span(0, 8, "One two.", 2), Span(12, 23, "Three four.", 2)]


def test_heading_stays_with_its_paragraph():
    text = "# Title\n\nBody text.\n\n## Sub\n\n### Subsub\n\nMore.\n\n## Dangling\n\n"
    assert texts(SEG.segment(text)) == [
        "# Title\n\nBody text.",
        "## Sub\n\n### Subsub\n\nMore.",
        "## Dangling",
    ]


def test_heading_stays_with_the_first_part_of_a_long_paragraph():
    body = "\n".join(f"line {i} a b c" for i in range(6))  # 5 words a line
    text = f"# Heading here\n\n{body}"
    spans = SEG.segment(text, SegmentOptions(max_block_tokens=8))
    assert texts(spans) == ["# Heading here\n\nline 0 a b c"] + [f"line {i} a b c" for i in range(1, 6)]
    check_invariants(text, spans, SegmentOptions(max_block_tokens=8))


def test_long_paragraph_without_separators_is_hard_cut():
    text = " ".join(f"w{i}" for i in range(20))
    options = SegmentOptions(max_block_tokens=8)
    spans = SEG.segment(text, options)
    assert spans == [
        Span(0, 23, "w0 w1 w2 w3 w4 w5 w6 w7", 8),
        Span(24, 53, "w8 w9 w10 w11 w12 w13 w14 w15", 8),
        Span(54, 69, "w16 w17 w18 w19", 4),
    ]
    check_invariants(text, spans, options)


def test_a_single_long_word_is_cut_by_characters():
    chars = ParagraphSegmenter(len)
    text = "x" * 20
    spans = chars.segment(text, SegmentOptions(max_block_tokens=8))
    assert [(s.start, s.end) for s in spans] == [(0, 8), (8, 16), (16, 20)]


def test_long_lines_are_packed_up_to_the_bound():
    text = "a b c\nd e f\ng h i\nj k l\nm n o\np q"
    options = SegmentOptions(max_block_tokens=8)
    spans = SEG.segment(text, options)
    assert texts(spans) == ["a b c\nd e f", "g h i\nj k l", "m n o\np q"]
    check_invariants(text, spans, options)


def test_a_long_line_is_cut_at_sentence_ends():
    text = "One two three. Four five six! Seven eight nine? Ten."
    options = SegmentOptions(max_block_tokens=8)
    spans = SEG.segment(text, options)
    assert texts(spans) == ["One two three. Four five six!", "Seven eight nine? Ten."]
    check_invariants(text, spans, options)


def test_a_long_sentence_in_a_long_line_is_hard_cut():
    long_sentence = " ".join(f"s{i}" for i in range(12)) + "."
    text = f"Short line.\nA b. {long_sentence} C d.\nEnd."
    options = SegmentOptions(max_block_tokens=8)
    spans = SEG.segment(text, options)
    # the second line is cut at its sentences, its long sentence hard-cut; pieces then pack
    assert texts(spans) == ["Short line.", "A b.", "s0 s1 s2 s3 s4 s5 s6 s7", "s8 s9 s10 s11. C d.\nEnd."]
    check_invariants(text, spans, options)


def test_no_block_ever_exceeds_the_bound():
    rng = random.Random(7)
    vocabulary = ["word", "longer", "a", "b.", "end!", "why?", "x\n", "# h", "\n\n", "  "]
    for _ in range(150):
        text = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(0, 120)))
        max_tokens = rng.randint(8, 24)
        options = SegmentOptions(max_block_tokens=max_tokens, min_block_tokens=rng.randint(0, max_tokens),
                                 granularity=rng.choice([0.0, 0.3, 1.0]))
        check_invariants(text, SEG.segment(text, options), options)


def test_short_blocks_merge_with_the_next():
    text = "a b\n\nc d e f g\n\nh i j k l"
    options = SegmentOptions(max_block_tokens=16, min_block_tokens=3)
    assert texts(SEG.segment(text, options)) == ["a b\n\nc d e f g", "h i j k l"]


def test_a_short_last_block_merges_with_the_previous():
    text = "a b c d e f g h i j\n\nk l m n o p q r s t\n\nu v"
    options = SegmentOptions(max_block_tokens=16, min_block_tokens=4)
    assert SEG.segment(text, options) == [
        Span(0, 19, "a b c d e f g h i j", 10),
        Span(21, 45, "k l m n o p q r s t\n\nu v", 12),
    ]


def test_short_blocks_do_not_merge_past_the_bound():
    text = "a b c d e f g h i j\n\nk\n\nl m n o p q r s t u"
    options = SegmentOptions(max_block_tokens=10, min_block_tokens=4)
    assert texts(SEG.segment(text, options)) == ["a b c d e f g h i j", "k", "l m n o p q r s t u"]


def test_without_a_minimum_short_blocks_stay_apart():
    text = "a\n\nb\n\nc"
    assert texts(SEG.segment(text, SegmentOptions(max_block_tokens=8))) == ["a", "b", "c"]


FIVE_PARAGRAPHS = "\n\n".join(f"p{i} x y" for i in range(5))  # 3 words each


def test_granularity_zero_merges_up_to_the_maximum():
    spans = SEG.segment(FIVE_PARAGRAPHS, SegmentOptions(max_block_tokens=8, granularity=0.0))
    assert texts(spans) == ["p0 x y\n\np1 x y", "p2 x y\n\np3 x y", "p4 x y"]
    spans = SEG.segment(FIVE_PARAGRAPHS, SegmentOptions(max_block_tokens=9, granularity=0.0))
    assert texts(spans) == ["p0 x y\n\np1 x y\n\np2 x y", "p3 x y\n\np4 x y"]


def test_granularity_one_keeps_paragraphs_apart():
    spans = SEG.segment(FIVE_PARAGRAPHS, SegmentOptions(max_block_tokens=64, granularity=1.0))
    assert texts(spans) == [f"p{i} x y" for i in range(5)]


def test_intermediate_granularity_merges_up_to_the_target():
    options = SegmentOptions(max_block_tokens=16, granularity=0.5)
    assert options.target_tokens == 8
    assert texts(SEG.segment(FIVE_PARAGRAPHS, options)) == ["p0 x y\n\np1 x y", "p2 x y\n\np3 x y", "p4 x y"]


@pytest.mark.parametrize(("options", "target"), [
    (SegmentOptions(), 0),
    (SegmentOptions(max_block_tokens=100, min_block_tokens=20, granularity=0.0), 100),
    (SegmentOptions(max_block_tokens=100, min_block_tokens=20, granularity=1.0), 20),
    (SegmentOptions(max_block_tokens=100, min_block_tokens=20, granularity=0.25), 80),
])
def test_target_tokens(options, target):
    assert options.target_tokens == target


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"max_block_tokens": 7}, "max_block_tokens"),
    ({"max_block_tokens": 0}, "max_block_tokens"),
    ({"min_block_tokens": -1}, "min_block_tokens"),
    ({"max_block_tokens": 16, "min_block_tokens": 17}, "min_block_tokens"),
    ({"granularity": -0.1}, "granularity"),
    ({"granularity": 1.01}, "granularity"),
])
def test_bad_options_are_invalid_requests(kwargs, named):
    with pytest.raises(InvalidRequestError, match=named):
        SegmentOptions(**kwargs)


def test_boundary_options_are_valid():
    SegmentOptions(max_block_tokens=8, min_block_tokens=8, granularity=0.0)
    SegmentOptions(max_block_tokens=8, min_block_tokens=0, granularity=1.0)


@pytest.mark.parametrize("max_tokens", [8, 24, 256])
def test_samples_with_the_served_tokenizer(default_model, max_tokens):
    from blockrag.prompt import PromptTemplate
    from blockrag.samples import sample_documents

    template = PromptTemplate(default_model[1])

    def count(text: str) -> int:
        return len(template.block_ids(text))

    segmenter = ParagraphSegmenter(count)
    options = SegmentOptions(max_block_tokens=max_tokens)
    documents = sample_documents()
    assert documents
    for text in documents.values():
        spans = segmenter.segment(text, options)
        check_invariants(text, spans, options, count)
        assert spans[0].text.startswith("# ")  # the title travels with the first block
        if max_tokens == 256:  # each paragraph fits: one block per paragraph, title included
            paragraphs = [p for p in text.split("\n\n") if p.strip()]
            assert len(spans) == len(paragraphs) - 1
