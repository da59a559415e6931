"""Pk, WindowDiff and boundary F1 against hand-computed values and NLTK's definitions."""

from __future__ import annotations

import random

import pytest

from blockrag.errors import InvalidRequestError
from blockrag.segment.candidates import find_candidates
from blockrag.segment.train.metrics import (
    Scores,
    boundary_f1,
    default_k,
    evaluate,
    offsets_to_boundaries,
    pk,
    window_diff,
)


def test_pk_and_window_diff_by_hand():
    # N=10 units, gaps 1..9; reference cuts before units 3 and 7, hypothesis before 4 and 7; k=2.
    # Windows i=0..7 cover gaps i+1..i+2. Boundary counts (ref, hyp) per window:
    #   i: 0    1    2    3    4    5    6    7
    #  gaps 1-2  2-3  3-4  4-5  5-6  6-7  7-8  8-9
    #  ref  0    1    1    0    0    1    1    0
    #  hyp  0    0    1    1    0    1    1    0
    # They differ at i=1 and i=3, in count and in presence: Pk = WindowDiff = 2/8.
    assert pk([3, 7], [4, 7], 10, k=2) == 0.25
    assert window_diff([3, 7], [4, 7], 10, k=2) == 0.25


def test_window_diff_counts_boundaries_where_pk_only_sees_presence():
    # N=8, ref {3, 4}, hyp {3}, k=2: windows i=0..5 over gaps (1,2) (2,3) (3,4) (4,5) (5,6) (6,7)
    #  ref  0 1 2 1 0 0
    #  hyp  0 1 1 0 0 0
    # presence differs at i=3 only: Pk = 1/6; the count differs at i=2 and i=3: WindowDiff = 2/6.
    assert pk([3, 4], [3], 8, k=2) == pytest.approx(1 / 6)
    assert window_diff([3, 4], [3], 8, k=2) == pytest.approx(2 / 6)


def test_no_split_against_one_boundary():
    # N=10, ref {5}, hyp {}, k=2: windows i=3 (gaps 4,5) and i=4 (gaps 5,6) hold the boundary: 2/8
    assert pk([5], [], 10, k=2) == 0.25
    assert window_diff([5], [], 10, k=2) == 0.25
    # and the other way round (a false boundary) scores the same
    assert pk([], [5], 10, k=2) == 0.25


def test_default_k_is_half_the_mean_reference_segment():
    assert default_k([3, 7], 10) == 2          # 3 segments, mean 10/3, half 1.67 -> 2
    assert default_k([], 10) == 5              # one segment of 10
    assert default_k([5], 10) == 2             # round(2.5) -> 2 (half to even, as NLTK)
    assert default_k([1, 2, 3, 4, 5], 6) == 1  # at least 1
    assert default_k([3, 3, 7], 10) == 2       # duplicates count once
    assert pk([3, 7], [4, 7], 10) == pk([3, 7], [4, 7], 10, k=2)


def test_perfect_segmentation():
    for ref, n in [([3, 7], 10), ([], 5), ([1, 2, 3, 4], 5), ([9], 10)]:
        assert pk(ref, ref, n) == 0.0
        assert window_diff(ref, ref, n) == 0.0
        assert boundary_f1(ref, ref) == (1.0, 1.0, 1.0)


def test_k_beyond_the_text_is_one_window_and_one_unit_scores_zero():
    assert pk([2], [], 5, k=100) == 1.0       # one window over all gaps: a cut vs none
    assert pk([2], [3], 5, k=100) == 0.0      # both cut somewhere in it
    assert window_diff([2], [3, 4], 5, k=100) == 1.0
    assert pk([], [], 1) == 0.0 and window_diff([], [], 1) == 0.0


def test_bad_input_raises():
    with pytest.raises(InvalidRequestError):
        pk([0], [], 5)
    with pytest.raises(InvalidRequestError):
        window_diff([], [5], 5)
    with pytest.raises(InvalidRequestError):
        pk([], [], 5, k=0)
    with pytest.raises(InvalidRequestError):
        pk([], [], 0)
    with pytest.raises(InvalidRequestError):
        boundary_f1([1], [1], tolerance=-1)


# NLTK's nltk.metrics.segmentation.pk and windowdiff (3.8), transcribed: the segmentations are
# strings with "1" where a boundary is; here the gap strings (length N-1, gap b at index b-1).
def nltk_pk(ref: str, hyp: str, k: int, boundary: str = "1") -> float:
    err = 0
    for i in range(len(ref) - k + 1):
        r = ref[i:i + k].count(boundary) > 0
        h = hyp[i:i + k].count(boundary) > 0
        if r != h:
            err += 1
    return err / (len(ref) - k + 1.0)


def nltk_windowdiff(seg1: str, seg2: str, k: int, boundary: str = "1") -> float:
    wd = 0
    for i in range(len(seg1) - k + 1):
        ndiff = abs(seg1[i:i + k].count(boundary) - seg2[i:i + k].count(boundary))
        wd += min(1, ndiff)
    return wd / (len(seg1) - k + 1.0)


def gap_string(boundaries: list[int], n_units: int) -> str:
    return "".join("1" if b in boundaries else "0" for b in range(1, n_units))


def random_cases(seed: int = 0, count: int = 300):
    rng = random.Random(seed)
    for _ in range(count):
        n = rng.randint(2, 40)
        ref = sorted(rng.sample(range(1, n), rng.randint(0, n - 1)))
        hyp = sorted(rng.sample(range(1, n), rng.randint(0, n - 1)))
        yield ref, hyp, n, rng.randint(1, n - 1)


def test_agrees_with_the_nltk_definitions():
    for ref, hyp, n, k in random_cases():
        r, h = gap_string(ref, n), gap_string(hyp, n)
        assert pk(ref, hyp, n, k) == pytest.approx(nltk_pk(r, h, k))
        assert window_diff(ref, hyp, n, k) == pytest.approx(nltk_windowdiff(r, h, k))


def test_agrees_with_installed_nltk():
    segmentation = pytest.importorskip("nltk.metrics.segmentation")
    for ref, hyp, n, k in random_cases(seed=1, count=100):
        r, h = gap_string(ref, n), gap_string(hyp, n)
        assert pk(ref, hyp, n, k) == pytest.approx(segmentation.pk(r, h, k))
        assert window_diff(ref, hyp, n, k) == pytest.approx(segmentation.windowdiff(r, h, k))


def test_boundary_f1_by_hand():
    assert boundary_f1([3, 7], [4, 9]) == (0.0, 0.0, 0.0)
    assert boundary_f1([3, 7], [4, 9], tolerance=1) == (0.5, 0.5, 0.5)   # 4 matches 3
    # one reference boundary is matched once: 4 takes 5, 6 is a false positive
    p, r, f = boundary_f1([5], [4, 6], tolerance=1)
    assert (p, r) == (0.5, 1.0) and f == pytest.approx(2 / 3)
    # a maximum matching: 4 takes 3 (not 5), so 6 can take 5
    assert boundary_f1([3, 5], [4, 6], tolerance=1) == (1.0, 1.0, 1.0)
    p, r, f = boundary_f1([2, 5, 8], [5, 8], tolerance=0)
    assert (p, r) == (1.0, 2 / 3) and f == pytest.approx(0.8)


def test_boundary_f1_edge_cases():
    assert boundary_f1([], []) == (1.0, 1.0, 1.0)   # nothing to cut, nothing cut
    assert boundary_f1([3], []) == (0.0, 0.0, 0.0)  # missed everything
    assert boundary_f1([], [3]) == (0.0, 0.0, 0.0)  # cut what should stay whole


def test_offsets_to_boundaries():
    text = "Para one.\n\nPara two. Second sentence.\n\nPara three."
    candidates = find_candidates(text)
    starts = [c.offset for c in candidates]
    assert [text[s:s + 6] for s in starts] == ["Para t", "Second", "Para t"]
    # exact candidate offsets: candidate i starts unit i+1
    assert offsets_to_boundaries(text, [starts[0], starts[2]], candidates) == [1, 3]
    # a cut at the end of the first paragraph (before its blank line) is the next paragraph's start
    assert offsets_to_boundaries(text, [text.index("\n\n")], candidates) == [1]
    # inside a unit: the nearest candidate (11 or 21), the earlier one on a tie; duplicates merge
    assert starts == [11, 21, 39]
    assert offsets_to_boundaries(text, [15], candidates) == [1]
    assert offsets_to_boundaries(text, [16], candidates) == [1]  # 5 from either
    assert offsets_to_boundaries(text, [17], candidates) == [2]
    assert offsets_to_boundaries(text, [20, 23, 21], candidates) == [2]
    one_unit = "ab cd"  # no candidates: nothing to map to
    assert offsets_to_boundaries(one_unit, [2], find_candidates(one_unit)) == []
    # the ends of the text (and beyond, and trailing whitespace) are no cut
    assert offsets_to_boundaries(text, [0, len(text), len(text) + 5, -1], candidates) == []
    text2 = "A.\nB.\nC.\n\n  "
    assert offsets_to_boundaries(text2, [len("A.\nB.\nC.")], find_candidates(text2)) == []


def test_evaluate_perfect_and_no_split():
    texts = ["One.\n\nTwo.\n\nThree.", "Alpha beta.\nGamma.\n\nDelta."]
    references = [[text.index(p) for p in paragraphs] for text, paragraphs in
                  zip(texts, [["Two", "Three"], ["Delta"]])]
    instances = list(zip(texts, references))
    oracle = dict(zip(texts, references))
    assert evaluate(instances, lambda text: oracle[text]) == Scores(0.0, 0.0, 1.0, 1.0, 1.0)
    # no split: instance 1 has N=3 units, ref {1, 2}, k=round(3/6)=0 -> 1; windows (gap1) (gap2):
    # both hold a reference cut, none a hypothesis cut: Pk = WD = 1. Instance 2: units
    # "Alpha beta.\n" "Gamma.\n\n" "Delta.", N=3, ref {2}, k=round(3/4)=1; windows gap1 (0 vs 0),
    # gap2 (1 vs 0): 1/2. Macro average: (1 + 0.5) / 2.
    scores = evaluate(instances, lambda text: [])
    assert scores == Scores(0.75, 0.75, 0.0, 0.0, 0.0)


def test_evaluate_macro_averages_f1_and_tolerance():
    text = "A1.\nB2.\nC3.\nD4.\nE5."
    starts = [c.offset for c in find_candidates(text)]  # units A B C D E, boundaries 1..4
    instances = [(text, [starts[1]]), (text, [starts[1]])]  # reference cut before C: boundary 2
    hypotheses = iter([[starts[1]], [starts[2]]])  # exact, then before D: boundary 3
    scores = evaluate(instances, lambda _: next(hypotheses))
    assert (scores.precision, scores.recall, scores.f1) == (0.5, 0.5, 0.5)
    hypotheses = iter([[starts[1]], [starts[2]]])
    assert evaluate(instances, lambda _: next(hypotheses), tolerance=1).f1 == 1.0


def test_evaluate_needs_instances():
    with pytest.raises(InvalidRequestError):
        evaluate([], lambda text: [])
