"""Baseline segmenters: cuts are candidate offsets; paragraph rules, fixed-size spacing, TextTiling
and embedding similarity on texts with a known topic shift."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from blockrag.errors import InvalidRequestError
from blockrag.segment.train.baselines import (
    EmbeddingSimilarity,
    FixedSize,
    TextTiling,
    no_split,
    paragraph_split,
)
from blockrag.segment.candidates import find_candidates
from blockrag.segment.similarity import depth_scores

CATS = ["Cats purr softly when kittens nap beside warm fur.", "A kitten chases the cat's tail and purrs.",
        "Feline whiskers twitch as cats groom fur.", "The kitten naps while cats purr nearby.",
        "Cats lick fur and kittens purr in baskets.", "Whiskers and fur make cats and kittens soft."]
ROCKETS = ["Rockets launch from orbital pads with fuel.", "Engines burn fuel to lift the rocket into orbit.",
           "Orbital boosters separate after the engines burn.", "Fuel tanks feed rocket engines during launch.",
           "The launch pad shakes as rocket boosters ignite.", "Orbit requires engines, fuel and boosters."]
TWO_TOPICS = " ".join(CATS * 2) + " " + " ".join(ROCKETS * 2)  # 24 sentences, disjoint vocabularies
SHIFT = TWO_TOPICS.index("Rockets")


def hashed_bag_of_words(texts: list[str], dim: int = 64) -> np.ndarray:
    """A deterministic stand-in for a sentence encoder: L2-normalised hashed word counts."""
    out = np.zeros((len(texts), dim))
    for i, text in enumerate(texts):
        for word in text.lower().split():
            out[i, zlib.crc32(word.strip(".,'s").encode()) % dim] += 1
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def check_cuts(text: str, cuts: list[int]) -> None:
    assert cuts == sorted(set(cuts))
    assert set(cuts) <= {c.offset for c in find_candidates(text)}


def test_no_split():
    assert no_split(TWO_TOPICS) == []


def test_paragraph_split_keeps_headings_with_their_paragraph():
    text = "# Title\n\nIntro para\nstill intro.\n\n## Section\nBody. More body.\n\n## Sub\n\nLast.\r\n\r\nEnd."
    cuts = paragraph_split(text)
    check_cuts(text, cuts)
    assert [text[c:c + 9] for c in cuts] == ["## Sectio", "## Sub\n\nL", "End."]


def test_paragraph_split_on_setext_and_html_headings():
    text = "Intro.\n\nTitle\n=====\n\nBody.\n<h2>Next</h2>\nMore."
    assert [text[c:c + 5] for c in paragraph_split(text)] == ["Title", "<h2>N"]


def test_fixed_size_cuts_at_the_candidate_nearest_each_multiple():
    # 30 lines of 3 words: token positions of the candidates are 3, 6, 9, ...
    lines = [f"w{i} x y" for i in range(30)]
    text = "\n".join(lines)
    cuts = FixedSize(10)(text)
    check_cuts(text, cuts)
    line_of = {text.index(line): i for i, line in enumerate(lines)}
    # multiples 10, 20, ..., 80 (90 is the end): nearest positions 9, 21, 30, 39, 51, 60, 69, 81
    assert [3 * line_of[c] for c in cuts] == [9, 21, 30, 39, 51, 60, 69, 81]


def test_fixed_size_takes_the_earlier_candidate_on_a_tie_and_never_cuts_twice():
    text = "\n".join(f"a{i} b c d" for i in range(5))  # positions 4, 8, 12, 16; 20 tokens in all
    cuts = FixedSize(10)(text)
    assert [text[c:c + 2] for c in cuts] == ["a2"]  # 10 is 2 from 8 and from 12: after 8 tokens
    big = "\n".join(["one two three four five six seven eight nine ten eleven twelve", "short", "end"])
    # multiples 1..12 all fall on the long first line: one cut after it; 13 before "end"
    assert [big[c:c + 5] for c in FixedSize(1)(big)] == ["short", "end"]


def test_fixed_size_with_a_caller_token_counter():
    text = "\n".join(["abcd"] * 10)  # 5 characters a line ("abcd\n") except the last
    cuts = FixedSize(10, count_tokens=len)(text)
    assert [c // 5 for c in cuts] == [2, 4, 6, 8]
    with pytest.raises(InvalidRequestError):
        FixedSize(0)


def test_depth_scores_by_hand():
    # left peaks 0.9 0.9 0.8 0.8 0.7, right peaks 0.9 0.8 0.8 0.7 0.7
    got = depth_scores(np.array([0.9, 0.5, 0.8, 0.2, 0.7]))
    assert got == pytest.approx([0.0, 0.7, 0.0, 1.1, 0.0])
    # climbing continues over a rise: from 0.3 right to 0.6
    assert depth_scores(np.array([0.9, 0.3, 0.5, 0.6, 0.4]))[1] == pytest.approx(0.9)


def test_text_tiling_finds_the_topic_shift():
    cuts = TextTiling()(TWO_TOPICS)
    check_cuts(TWO_TOPICS, cuts)
    assert SHIFT in cuts
    # the shift is the deepest valley: with room for one cut only, it is the one taken
    assert TextTiling(min_units=10)(TWO_TOPICS) == [SHIFT]
    assert TextTiling()(TWO_TOPICS) == cuts  # deterministic


def test_text_tiling_does_not_cut_a_uniform_text():
    text = " ".join(["The kitten purrs on the warm rug."] * 20)
    assert TextTiling()(text) == []
    assert TextTiling()("One sentence only.") == []


def test_text_tiling_keeps_cuts_apart():
    cuts = TextTiling(block_units=2, smoothing=0, min_units=4)(TWO_TOPICS)
    starts = [c.offset for c in find_candidates(TWO_TOPICS)]
    boundaries = [starts.index(c) + 1 for c in cuts]
    assert all(b - a >= 4 for a, b in zip([0, *boundaries], [*boundaries, len(starts) + 1]))


def test_embedding_similarity_finds_the_topic_shift():
    calls: list[list[str]] = []

    def embed(texts: list[str]) -> np.ndarray:
        calls.append(texts)
        return hashed_bag_of_words(texts)

    cuts = EmbeddingSimilarity(embed)(TWO_TOPICS)
    check_cuts(TWO_TOPICS, cuts)
    assert cuts == [SHIFT]
    embedded = [t for batch in calls for t in batch]
    assert len(embedded) == len(set(embedded))  # each window once
    assert all(len(batch) <= 64 for batch in calls)
    assert EmbeddingSimilarity(hashed_bag_of_words, batch_size=1)(TWO_TOPICS) == cuts


def test_embedding_similarity_renormalises_and_handles_short_texts():
    def unnormalised(texts: list[str]) -> np.ndarray:
        return 7.0 * hashed_bag_of_words(texts)

    assert EmbeddingSimilarity(unnormalised)(TWO_TOPICS) == [SHIFT]
    assert EmbeddingSimilarity(hashed_bag_of_words)("No candidate here") == []
    assert EmbeddingSimilarity(hashed_bag_of_words)("One. Two.") == []
    with pytest.raises(InvalidRequestError):
        EmbeddingSimilarity(hashed_bag_of_words, window_units=0)


@pytest.mark.parametrize("segment", [no_split, paragraph_split, FixedSize(7), TextTiling(),
                                     EmbeddingSimilarity(hashed_bag_of_words)])
def test_every_baseline_returns_candidate_offsets(segment):
    text = ("# Notes\n\n" + "\n".join(CATS) + "\n\n```\ncode()\n```\n" + " ".join(ROCKETS)
            + "\nUser: hi\nBot: hello")
    cuts = segment(text)
    check_cuts(text, cuts)
    assert segment(text) == cuts
    assert segment("") == []
