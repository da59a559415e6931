"""Segmentation metrics: Pk, WindowDiff and boundary precision/recall/F1 over candidate units.

A text is a sequence of N units (`candidates.units`: the spans between consecutive candidate
cuts). A segmentation is a set of boundary indices b in 1..N-1, "a cut before unit b"; it has
N-1 gaps where a boundary may sit. Character cut offsets map to boundaries with
`offsets_to_boundaries`.

Pk (Beeferman, Berger and Lafferty 1999). Slide a probe of width k over the units: for each
i in 0..N-1-k, units i and i+k are in different segments iff some boundary b has i < b <= i+k.
Pk is the fraction of the N-k probes on which reference and hypothesis disagree ("same segment"
versus "different segments"). 0 is perfect; lower is better.

WindowDiff (Pevzner and Hearst 2002). Over the same N-k windows (gaps i+1..i+k), the fraction
where the NUMBER of boundaries differs between reference and hypothesis. Unlike Pk it counts a
near-miss and an extra boundary inside a window that already has one. 0 is perfect.

Both equal NLTK's `pk` / `windowdiff` run on the gap strings (length N-1, "1" at gap b-1 for
boundary b) with the same k. The default k is half the mean reference segment length in units,
round(N / (2 * (len(reference) + 1))) with Python's round (half to even, as NLTK rounds), at
least 1. NLTK's own default divides by the boundary count, len(string) / (2 * count), not by the
segment count; it has no value for a reference without boundaries, where ours is round(N / 2).
A k of N or more is clamped to N-1 (one window covering every gap); a text of one unit has no
window and scores 0.

Boundary F1. Precision, recall and F1 of hypothesis boundaries against reference boundaries,
where a hypothesis boundary h matches a reference boundary r when |h - r| <= tolerance (in
units) and each boundary is matched at most once (a maximum matching: greedy over the sorted
lists, which is optimal for equal-width windows on a line). Edge cases: no boundary on either
side gives (1.0, 1.0, 1.0), the one correct answer for a text that should not be cut; exactly
one side empty gives (0.0, 0.0, 0.0), so cutting nothing never earns a precision of 1.

`evaluate` scores a segmenter on (text, reference cut offsets) instances and MACRO-averages:
each instance counts once whatever its length, and F1 is the mean of per-instance F1 values (not
the F1 of the mean precision and recall).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from blockrag.errors import InvalidRequestError
from blockrag.segment.candidates import Candidate, find_candidates


def default_k(reference: Sequence[int], n_units: int) -> int:
    """Half the mean reference segment length in units, rounded, at least 1."""
    segments = len(set(reference)) + 1
    return max(1, round(n_units / (2 * segments)))


def pk(reference: Sequence[int], hypothesis: Sequence[int], n_units: int, k: int | None = None) -> float:
    """Beeferman's Pk: the fraction of unit pairs k apart put on different sides of a boundary
    by one segmentation and in the same segment by the other."""
    ref, hyp, k = _windows(reference, hypothesis, n_units, k)
    if ref is None:
        return 0.0
    return float(np.mean((ref > 0) != (hyp > 0)))


def window_diff(reference: Sequence[int], hypothesis: Sequence[int], n_units: int,
                k: int | None = None) -> float:
    """Pevzner and Hearst's WindowDiff: the fraction of k-gap windows whose boundary counts differ."""
    ref, hyp, k = _windows(reference, hypothesis, n_units, k)
    if ref is None:
        return 0.0
    return float(np.mean(ref != hyp))


def boundary_f1(reference: Sequence[int], hypothesis: Sequence[int],
                tolerance: int = 0) -> tuple[float, float, float]:
    """(precision, recall, F1) with each boundary matched at most once within +-tolerance units."""
    if tolerance < 0:
        raise InvalidRequestError(f"tolerance must be at least 0, got {tolerance}")
    ref, hyp = sorted(set(reference)), sorted(set(hypothesis))
    if not ref and not hyp:
        return 1.0, 1.0, 1.0
    if not ref or not hyp:
        return 0.0, 0.0, 0.0
    matched, r = 0, 0
    for h in hyp:
        # the first reference boundary not yet used that h can still reach
        while r < len(ref) and ref[r] < h - tolerance:
            r += 1
        if r < len(ref) and ref[r] <= h + tolerance:
            matched += 1
            r += 1
    precision, recall = matched / len(hyp), matched / len(ref)
    f1 = 0.0 if matched == 0 else 2 * precision * recall / (precision + recall)
    return precision, recall, f1


def offsets_to_boundaries(text: str, cut_offsets: Sequence[int], candidates: Sequence[Candidate]) -> list[int]:
    """Unit boundary indices (sorted, unique) of character cut offsets. An offset is first moved
    past any whitespace it points at (a cut at the end of a paragraph means the start of the
    next), then snapped to the nearest candidate offset (the earlier one on a tie); an offset at
    or beyond either end of the text is no cut and is dropped."""
    starts = [c.offset for c in candidates]
    if not starts:
        return []
    out: set[int] = set()
    for offset in cut_offsets:
        while 0 < offset < len(text) and text[offset].isspace():
            offset += 1
        if not 0 < offset < len(text):
            continue
        i = bisect.bisect_left(starts, offset)  # starts[i-1] < offset <= starts[i]
        if i == len(starts) or (i > 0 and offset - starts[i - 1] <= starts[i] - offset):
            i -= 1
        out.add(i + 1)  # candidate i starts unit i+1
    return sorted(out)


@dataclass(frozen=True)
class Scores:
    """Macro averages over instances: Pk and WindowDiff (lower is better), boundary precision,
    recall and F1 (higher is better)."""

    pk: float
    window_diff: float
    precision: float
    recall: float
    f1: float


def evaluate(instances: Iterable[tuple[str, Sequence[int]]], segment: Callable[[str], Sequence[int]],
             tolerance: int = 0) -> Scores:
    """Score `segment` (text -> cut offsets) on (text, reference cut offsets) instances, both
    mapped onto the text's candidate units; k is each instance's default (`default_k`)."""
    rows = []
    for text, reference_offsets in instances:
        candidates = find_candidates(text)
        n_units = len(candidates) + 1
        reference = offsets_to_boundaries(text, reference_offsets, candidates)
        hypothesis = offsets_to_boundaries(text, segment(text), candidates)
        rows.append((pk(reference, hypothesis, n_units), window_diff(reference, hypothesis, n_units),
                     *boundary_f1(reference, hypothesis, tolerance)))
    if not rows:
        raise InvalidRequestError("evaluate needs at least one instance")
    return Scores(*(float(v) for v in np.mean(np.array(rows), axis=0)))


def _windows(reference: Sequence[int], hypothesis: Sequence[int], n_units: int,
             k: int | None) -> tuple[np.ndarray | None, np.ndarray | None, int]:
    """Boundary counts per window (gaps i+1..i+k for i in 0..N-1-k) of both segmentations."""
    if n_units < 1:
        raise InvalidRequestError(f"n_units must be at least 1, got {n_units}")
    if k is None:
        k = default_k(reference, n_units)
    if k < 1:
        raise InvalidRequestError(f"k must be at least 1, got {k}")
    if n_units == 1:
        _check(reference, n_units, "reference")
        _check(hypothesis, n_units, "hypothesis")
        return None, None, k
    k = min(k, n_units - 1)
    counts = []
    for name, boundaries in (("reference", reference), ("hypothesis", hypothesis)):
        _check(boundaries, n_units, name)
        marks = np.zeros(n_units, dtype=np.int64)  # marks[b] = 1: a cut before unit b
        marks[sorted(set(boundaries))] = 1
        cum = np.concatenate([[0], np.cumsum(marks)])  # cum[j] = boundaries in 0..j-1
        # windows i = 0..N-1-k cover gaps i+1..i+k: cum[i+k+1] - cum[i+1]
        counts.append(cum[k + 1:n_units + 1] - cum[1:n_units - k + 1])
    return counts[0], counts[1], k


def _check(boundaries: Sequence[int], n_units: int, name: str) -> None:
    bad = [b for b in boundaries if not 1 <= b < n_units]
    if bad:
        raise InvalidRequestError(
            f"{name} boundaries must lie in 1..{n_units - 1} (n_units={n_units}), got {bad[:5]}")
