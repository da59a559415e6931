"""Scoring in word units, as /work/shared/segmentation/README.md defines it for prose-dev.jsonl.

Units are whitespace-separated words; a character offset snaps to the next word start (the
boundary before the first word starting at or after it). Pk and WindowDiff use k = half the
mean reference segment length of the instance (metrics.default_k) and are macro-averaged over
instances; boundary precision/recall/F1 are MICRO-averaged (matches summed over instances), a
predicted boundary matching a reference one within `tolerance` words (10).
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from blockrag.segment.train.metrics import Scores, boundary_f1, pk, window_diff

_WORD = re.compile(r"\S+")


def word_starts(text: str) -> list[int]:
    """Character offset of each whitespace-separated word."""
    return [m.start() for m in _WORD.finditer(text)]


def to_word_boundaries(starts: Sequence[int], offsets: Iterable[int]) -> list[int]:
    """Boundary indices in 1..len(starts)-1 of character offsets (each snapped to the next word
    start); offsets at or before the first word or past the last are dropped."""
    out = {bisect.bisect_left(starts, o) for o in offsets}
    return sorted(b for b in out if 0 < b < len(starts))


def read_reference(path: Path) -> list[tuple[str, list[int]]]:
    """(text, boundary offsets) of each line of a prose-dev style JSONL file."""
    rows = []
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                fields = json.loads(line)
                rows.append((fields["text"], list(fields["boundaries"])))
    return rows


def score_words(instances: Sequence[tuple[str, Sequence[int]]], segment: Callable[[str], Sequence[int]],
                tolerance: int = 10) -> Scores:
    """Pk, WindowDiff (macro) and boundary precision/recall/F1 (micro, within `tolerance` words)."""
    pks, wds = [], []
    matched = n_hyp = n_ref = 0
    for text, reference_offsets in instances:
        starts = word_starts(text)
        n = max(1, len(starts))
        reference = to_word_boundaries(starts, reference_offsets)
        hypothesis = to_word_boundaries(starts, segment(text))
        pks.append(pk(reference, hypothesis, n))
        wds.append(window_diff(reference, hypothesis, n))
        precision, _, _ = boundary_f1(reference, hypothesis, tolerance)
        matched += round(precision * len(hypothesis))
        n_hyp += len(hypothesis)
        n_ref += len(reference)
    precision = matched / n_hyp if n_hyp else 0.0
    recall = matched / n_ref if n_ref else 0.0
    f1 = 2 * precision * recall / (precision + recall) if matched else 0.0
    return Scores(float(np.mean(pks)), float(np.mean(wds)), precision, recall, f1)
