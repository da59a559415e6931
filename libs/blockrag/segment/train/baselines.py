"""Baseline segmenters to compare the trained boundary model against.

Each is a `Segment`: text -> sorted cut offsets, every one a candidate offset
(`candidates.find_candidates`), so `metrics.evaluate` scores them on the same units as the
reference. All are deterministic.

- `no_split`: never cuts (the floor for boundary F1, a reference point for Pk).
- `paragraph_split`: blank lines and headings, a lone heading kept with the text under it (the
  rule of `ParagraphSegmenter`).
- `FixedSize`: a cut near every multiple of a token budget, blind to content.
- `TextTiling`: Hearst's lexical cohesion (term-frequency vectors either side of a gap).
- `EmbeddingSimilarity`: the same idea with sentence embeddings (injected, e.g. MiniLM).
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from blockrag.errors import InvalidRequestError
from blockrag.segment.candidates import find_candidates, units
from blockrag.segment.similarity import depth_scores

Segment = Callable[[str], list[int]]

_LONE_HEADING = re.compile(
    r"[ ]{0,3}#{1,6}(?:[ \t][^\n]*)?\s*"                              # # Title
    r"|[^\n]*\S[^\n]*\n[ \t]*(?:={3,}|-{3,}|~{3,}|\^{3,})[ \t]*\s*"    # Title / =====
    r"|<h[1-6][\s>].*?</h[1-6]>\s*",                                   # <h2>Title</h2>
    re.I | re.S,
)


def no_split(text: str) -> list[int]:
    """No cut: the whole text is one block."""
    return []


def paragraph_split(text: str) -> list[int]:
    """Cuts at paragraph and heading candidates, except right after a unit that is a lone
    heading (a heading followed by a blank line stays with the paragraph under it)."""
    cuts: list[int] = []
    previous = 0
    for c in find_candidates(text):
        if c.kind not in ("paragraph", "heading"):
            continue
        if not _LONE_HEADING.fullmatch(text, previous, c.offset):
            cuts.append(c.offset)
        previous = c.offset
    return cuts


def _word_count(text: str) -> int:
    return len(text.split())


@dataclass(frozen=True)
class FixedSize:
    """Cuts at the candidate whose token position (tokens before it) is nearest each multiple of
    `tokens_per_chunk` (the earlier candidate on a tie); multiples at or past the end of the text
    give no cut. Positions are sums of per-unit counts, so a caller's tokenizer runs once per
    unit, not once per prefix; with the default whitespace word count they are exact."""

    tokens_per_chunk: int
    count_tokens: Callable[[str], int] = _word_count

    def __post_init__(self) -> None:
        if self.tokens_per_chunk < 1:
            raise InvalidRequestError(f"tokens_per_chunk must be at least 1, got {self.tokens_per_chunk}")

    def __call__(self, text: str) -> list[int]:
        candidates = find_candidates(text)
        if not candidates:
            return []
        sizes = [self.count_tokens(text[s:e]) for s, e in units(text, candidates)]
        position = np.cumsum(sizes)  # position[i]: tokens before candidate i (units 0..i)
        total = int(position[-1])
        position = position[:-1]
        cuts: list[int] = []
        for target in range(self.tokens_per_chunk, total, self.tokens_per_chunk):
            i = int(np.searchsorted(position, target))  # position[i-1] < target <= position[i]
            if i == len(position) or (i > 0 and target - position[i - 1] <= position[i] - target):
                i -= 1
            offset = candidates[i].offset
            if not cuts or offset > cuts[-1]:
                cuts.append(offset)
        return cuts


_WORDS = re.compile(r"[^\W_]+")
STOPWORDS = frozenset("""
    a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further
    had has have having he her here hers herself him himself his how i if in into is it its itself
    just me more most my myself no nor not now of off on once only or other our ours ourselves out
    over own same she should so some such than that the their theirs them themselves then there
    these they this those through to too under until up very was we were what when where which
    while who whom why will with would you your yours yourself yourselves also may might must
    shall s t d ll m re ve
""".split())


@dataclass(frozen=True)
class TextTiling:
    """Hearst's TextTiling (1997) over candidate gaps.

    For each gap: cosine similarity of the term-frequency vectors (lowercased words, stopwords
    dropped) of the `block_units` units before and after it (0 where either side has no term);
    similarities smoothed by a moving average over 2*smoothing+1 gaps; depth = (left peak -
    value) + (right peak - value), the peaks found by climbing while the similarity does not
    decrease. Gaps with depth > mean - std/2 (Hearst's conservative cutoff "HC", NLTK's
    default; population std over all gaps) and depth > 0 are cut, deepest first, keeping
    `min_units` units or more between any two cuts and between a cut and either end of the text.
    Units are candidate units (often sentences), not Hearst's fixed 20-word pseudo-sentences."""

    block_units: int = 6
    smoothing: int = 1
    min_units: int = 3
    stopwords: frozenset[str] = field(default=STOPWORDS)

    def __post_init__(self) -> None:
        if self.block_units < 1 or self.smoothing < 0 or self.min_units < 1:
            raise InvalidRequestError(
                f"TextTiling needs block_units >= 1, smoothing >= 0, min_units >= 1; got {self.block_units}, "
                f"{self.smoothing}, {self.min_units}")

    def __call__(self, text: str) -> list[int]:
        candidates = find_candidates(text)
        if not candidates:
            return []
        bags = [Counter(w for w in _WORDS.findall(text[s:e].lower()) if w not in self.stopwords)
                for s, e in units(text, candidates)]
        similarity = np.array(_gap_similarities(bags, self.block_units))
        similarity = _smooth(similarity, self.smoothing)
        chosen = _pick(depth_scores(similarity), len(bags), self.min_units)
        return [candidates[g - 1].offset for g in chosen]


@dataclass(frozen=True)
class EmbeddingSimilarity:
    """Cuts where the embeddings of the text either side of a gap are least alike.

    For each gap: embed the text of the `window_units` units before and after it (one call per
    `batch_size` texts; each distinct window text embedded once), cosine similarity of the two rows
    (rows re-normalised, so an encoder that does not normalise works too). A gap is cut when its
    similarity is a local minimum (strictly below the gap to its left, at most the gap to its
    right: the leftmost gap of a flat valley) and below mean - std/2 (population std over all
    gaps), most dissimilar first, keeping `min_units` units or more between any two cuts and
    between a cut and either end of the text."""

    embed: Callable[[list[str]], np.ndarray]
    window_units: int = 3
    min_units: int = 2
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.window_units < 1 or self.min_units < 1 or self.batch_size < 1:
            raise InvalidRequestError(
                f"EmbeddingSimilarity needs window_units, min_units and batch_size >= 1; got {self.window_units}, "
                f"{self.min_units}, {self.batch_size}")

    def __call__(self, text: str) -> list[int]:
        candidates = find_candidates(text)
        if not candidates:
            return []
        spans = units(text, candidates)
        n, w = len(spans), self.window_units
        # the window left of gap g is units g-w..g-1, right of it units g..g+w-1
        windows = [(_join(text, spans, max(0, g - w), g), _join(text, spans, g, min(n, g + w)))
                   for g in range(1, n)]
        row: dict[str, int] = {}  # each distinct window text embedded once, in first-seen order
        for pair in windows:
            for window in pair:
                row.setdefault(window, len(row))
        texts = list(row)
        vectors = np.concatenate([np.asarray(self.embed(texts[i:i + self.batch_size]), dtype=np.float64)
                                  for i in range(0, len(texts), self.batch_size)])  # [windows, D]
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        left = vectors[[row[l] for l, _ in windows]]  # [gaps, D]
        right = vectors[[row[r] for _, r in windows]]
        similarity = np.sum(left * right, axis=1)  # [gaps]
        cutoff = similarity.mean() - similarity.std() / 2
        padded = np.concatenate([[np.inf], similarity, [np.inf]])
        minimum = (similarity < padded[:-2]) & (similarity <= padded[2:]) & (similarity < cutoff)
        # score = dissimilarity, so _pick takes the lowest similarity first
        score = np.where(minimum, cutoff - similarity, 0.0)
        chosen = _pick(score, n, self.min_units, threshold=0.0)
        return [candidates[g - 1].offset for g in chosen]


def _join(text: str, spans: list[tuple[int, int]], first: int, stop: int) -> str:
    """The text of units first..stop-1, stripped."""
    return text[spans[first][0]:spans[stop - 1][1]].strip()


def _pick(score: np.ndarray, n_units: int, min_units: int, threshold: float | None = None) -> list[int]:
    """Boundaries (gap index + 1) with score above the threshold (default: mean - std/2) and
    above 0, highest first (the earlier gap on a tie), each at least min_units units from the
    others and from both ends; returned sorted."""
    if len(score) == 0:
        return []
    if threshold is None:
        threshold = float(score.mean() - score.std() / 2)
    order = sorted(range(len(score)), key=lambda i: (-score[i], i))
    chosen = [0, n_units]  # the ends, kept sorted: a new cut is checked against its neighbours
    for i in order:
        if score[i] <= max(threshold, 0.0):
            break
        b = i + 1
        j = bisect.bisect_left(chosen, b)
        if b - chosen[j - 1] >= min_units and chosen[j] - b >= min_units:
            chosen.insert(j, b)
    return chosen[1:-1]


def _gap_similarities(bags: Sequence[Counter], block: int) -> list[float]:
    """Cosine of the summed bags bags[g-block:g] and bags[g:g+block] for each gap g in 1..n-1,
    both windows slid one unit at a time (a Counter's -= drops the terms that reach 0)."""
    n = len(bags)
    left: Counter = Counter()
    right: Counter = Counter()
    for bag in bags[1:1 + block]:
        right += bag
    out = []
    for g in range(1, n):
        left += bags[g - 1]
        if g - 1 - block >= 0:
            left -= bags[g - 1 - block]
        if g > 1:
            right -= bags[g - 1]
            if g - 1 + block < n:
                right += bags[g - 1 + block]
        out.append(_cosine(left, right))
    return out


def _cosine(a: Counter, b: Counter) -> float:
    if not a or not b:
        return 0.0
    if len(a) > len(b):
        a, b = b, a
    dot = sum(v * b[t] for t, v in a.items())
    return dot / (sum(v * v for v in a.values()) ** 0.5 * sum(v * v for v in b.values()) ** 0.5)


def _smooth(values: np.ndarray, half_width: int) -> np.ndarray:
    """Moving average over 2*half_width+1 values, the window shrunk at the ends."""
    if half_width == 0 or len(values) == 0:
        return values
    cum = np.concatenate([[0.0], np.cumsum(values)])
    i = np.arange(len(values))
    lo, hi = np.maximum(0, i - half_width), np.minimum(len(values), i + half_width + 1)
    return (cum[hi] - cum[lo]) / (hi - lo)
