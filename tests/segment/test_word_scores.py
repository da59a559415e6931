"""Word-unit scoring of prose-dev.jsonl (its README): offsets snap to the next word start; Pk and
WindowDiff macro, boundary F1 micro within 10 words."""

from __future__ import annotations

import pytest

from blockrag.segment.train.word_scores import score_words, to_word_boundaries, word_starts

TEXT = " ".join(f"w{i}" for i in range(40))  # 40 words, word i at offset 3 * i (two digits: later)


def offset(word: int) -> int:
    return word_starts(TEXT)[word]


def test_offsets_snap_to_the_next_word_start():
    starts = word_starts("ab  cd\n\nef")
    assert starts == [0, 4, 8]
    assert to_word_boundaries(starts, [1, 4, 6, 8, 0, 99]) == [1, 2]  # 0 and past the end are no cut


def test_perfect_none_and_micro_f1():
    ref = [offset(20)]
    perfect = score_words([(TEXT, ref)], lambda _: ref)
    assert (perfect.pk, perfect.window_diff, perfect.f1) == (0.0, 0.0, 1.0)
    none = score_words([(TEXT, ref)], lambda _: [])
    assert none.pk > 0 and none.f1 == 0.0
    # within 10 words matches, 11 does not; micro: 1 match of 3 predictions, 2 references
    other = TEXT + " end"
    hypotheses = {TEXT: [offset(30), offset(31)], other: [offset(16)]}
    near = score_words([(TEXT, ref), (other, [offset(5)])], lambda text: hypotheses[text])
    assert near.precision == pytest.approx(1 / 3) and near.recall == pytest.approx(1 / 2)
    assert near.f1 == pytest.approx(0.4)
