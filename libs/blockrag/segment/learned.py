"""LearnedSegmenter: cut where the boundary model says so, at the caller's granularity.

Granularity moves the decision threshold in logit space around the one chosen on validation
data: 0.5 is that threshold, 1.0 cuts wherever the model is at least ~5% sure (fine), 0.0 only
where it is ~95% sure relative to it (coarse).

Sizes are enforced in two steps, so that the number of blocks never falls as granularity rises:

1. The base: the cuts of granularity 0, a block over max_block_tokens re-split at its most likely
   inner candidate, recursively (a hard cut by tokens where no candidate is left), then a block
   under min_block_tokens merged with the neighbour across the weaker boundary, when that fits.
   The base does not depend on the granularity asked for.
2. Refinement: the cuts of the granularity asked for, strongest first (ties by offset), each
   added to the base when it splits a block into two pieces of at least min_block_tokens (and at
   most the maximum), and no block under the minimum beside the split could then merge with the
   piece next to it within the maximum.

Why monotone: the cuts of a granularity are the local maxima over its threshold, and a higher
granularity only lowers the threshold, so the cuts of g, ordered strongest first, are a prefix of
the cuts of any g' > g in that order. Each decision of step 2 depends only on the blocks built so
far, which are the same for g and g' over that common prefix; so g' accepts every cut g accepts
(the blocks of g' are a refinement of those of g) and adds one block per further accepted cut.
The bounds hold at every granularity: the base holds them, a split never makes a block over the
maximum nor under the minimum, and the blocks under the minimum are those of the base, none of
which a neighbour can take in within the maximum (the check in step 2 keeps that true).
Merging after refining instead (smallest block first) is not monotone: with more cuts it can fold
blocks into neighbours that stood alone before (tests/segment/test_granularity.py).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence

import torch

from blockrag.segment.boundary import BoundaryModel
from blockrag.segment.sequence import UnitSequenceModel
from blockrag.segment.candidates import Candidate
from blockrag.segment.spans import SegmentOptions, Span, hard_cut, make_span

SPREAD = 3.0  # logits between granularity 0.5 and either end
MANY_CHARS = 2_000_000  # texts read together by segment_many (~0.5M tokens: ~0.8 GB of MiniLM states)


def threshold_for(base: float, granularity: float) -> float:
    """The cut probability threshold for a granularity in [0, 1] (0.5 gives `base`)."""
    base = min(max(base, 1e-6), 1 - 1e-6)
    logit = math.log(base / (1 - base)) + (0.5 - granularity) * 2 * SPREAD
    return 1 / (1 + math.exp(-logit))


class LearnedSegmenter:
    def __init__(self, model: BoundaryModel | UnitSequenceModel, count_tokens: Callable[[str], int]):
        self.model, self.count_tokens = model, count_tokens

    def to(self, device: torch.device | str) -> LearnedSegmenter:
        """Run the backbone on `device` (the head stays on the CPU: it reads a few features per
        candidate, and the size rules run there)."""
        self.model.backbone.to(device)
        return self

    def cut_offsets(self, text: str, granularity: float = 0.5) -> list[int]:
        """Where the model cuts, before any size rule (what the segmentation metrics score)."""
        candidates, probs = self.model.probabilities(text)
        return decide(candidates, probs, threshold_for(self.model.config.threshold, granularity),
                      self.model.config.suppress)

    def segment(self, text: str, options: SegmentOptions = SegmentOptions(granularity=0.5)) -> list[Span]:
        """Blocks of the text at options.granularity within its size bounds (module docstring)."""
        candidates, probs = self.model.probabilities(text)
        return self.blocks(text, candidates, probs, options)

    def segment_many(self, texts: Sequence[str], options: Sequence[SegmentOptions]) -> list[list[Span]]:
        """`segment` of each text with its options. The boundary model reads the texts together
        (every encoder pass one padded batch per chunk, across the texts: a request of many short
        documents fills the batches a GPU needs), in groups of at most MANY_CHARS characters so
        that the token states held at once stay bounded."""
        if len(texts) != len(options):
            raise ValueError(f"{len(texts)} texts but {len(options)} options")
        out: list[list[Span]] = []
        for group in _groups(texts, MANY_CHARS):
            read = self.model.probabilities_many([texts[k] for k in group])
            out.extend(self.blocks(texts[k], found, probs, options[k]) for k, (found, probs) in zip(group, read))
        return out

    def blocks(self, text: str, candidates: list[Candidate], probs: torch.Tensor,
               options: SegmentOptions) -> list[Span]:
        """The blocks given the boundary model's reading of the text (candidates, [n] probs)."""
        strength = {c.offset: float(p) for c, p in zip(candidates, probs)}
        base = self._base(text, candidates, probs, options, strength)
        cuts = decide(candidates, probs, threshold_for(self.model.config.threshold, options.granularity),
                      self.model.config.suppress)
        return self._refined(text, base, sorted(cuts, key=lambda o: (-strength[o], o)), options)

    def _base(self, text: str, candidates: list[Candidate], probs: torch.Tensor, options: SegmentOptions,
              strength: dict[int, float]) -> list[Span]:
        """Step 1: the blocks of granularity 0 within the size bounds."""
        cuts = decide(candidates, probs, threshold_for(self.model.config.threshold, 0.0), self.model.config.suppress)
        bounds = [0, *cuts, len(text)]
        spans: list[Span] = []
        for start, end in zip(bounds, bounds[1:]):
            spans.extend(self._bounded(text, start, end, options.max_block_tokens, candidates, strength))
        return self._merged(text, spans, options, strength)

    def _refined(self, text: str, spans: list[Span], cuts: list[int], options: SegmentOptions) -> list[Span]:
        """Step 2: the cuts, in the order given, each added where both pieces keep the bounds."""
        spans = list(spans)
        starts = [s.start for s in spans]
        for cut in cuts:
            i = bisect.bisect_right(starts, cut) - 1
            if i < 0 or not spans[i].start < cut < spans[i].end:
                continue  # already a boundary, or in the blank between two blocks
            pieces = self._split(text, spans, i, cut, options)
            if pieces is not None:
                spans[i:i + 1] = pieces
                starts[i:i + 1] = [p.start for p in pieces]
        return spans

    def _split(self, text: str, spans: list[Span], i: int, cut: int, options: SegmentOptions) -> list[Span] | None:
        """The two pieces of spans[i] cut at `cut`, or None when the cut would break a bound."""
        left = make_span(text, spans[i].start, cut, self.count_tokens)
        right = make_span(text, cut, spans[i].end, self.count_tokens)
        if left is None or right is None:
            return None
        if not all(options.min_block_tokens <= p.token_count <= options.max_block_tokens for p in (left, right)):
            return None
        # a short neighbour that could not merge with the whole block must not fit with the piece
        for neighbour, piece in ((i - 1, left), (i + 1, right)):
            if 0 <= neighbour < len(spans) and spans[neighbour].token_count < options.min_block_tokens:
                a, b = sorted((spans[neighbour], piece), key=lambda s: s.start)
                merged = make_span(text, a.start, b.end, self.count_tokens)
                if merged is not None and merged.token_count <= options.max_block_tokens:
                    return None
        return [left, right]

    def _bounded(self, text: str, start: int, end: int, limit: int, candidates: list[Candidate],
                 strength: dict[int, float]) -> list[Span]:
        span = make_span(text, start, end, self.count_tokens)
        if span is None:
            return []
        if span.token_count <= limit:
            return [span]
        inner = [c.offset for c in candidates if span.start < c.offset < span.end]
        if not inner:
            return hard_cut(text, span.start, span.end, limit, self.count_tokens)
        cut = max(inner, key=lambda o: (strength[o], -abs(o - (span.start + span.end) / 2)))
        return (self._bounded(text, span.start, cut, limit, candidates, strength)
                + self._bounded(text, cut, span.end, limit, candidates, strength))

    def _merged(self, text: str, spans: list[Span], options: SegmentOptions,
                strength: dict[int, float]) -> list[Span]:
        """Merge blocks under the minimum across their weaker boundary while the result fits."""
        spans = list(spans)
        stuck: set[int] = set()
        while True:
            small = [i for i, s in enumerate(spans) if s.token_count < options.min_block_tokens and s.start not in stuck]
            if not small:
                return spans
            i = min(small, key=lambda j: spans[j].token_count)
            options_ = []
            for j in (i - 1, i + 1):
                if 0 <= j < len(spans):
                    left, right = sorted((i, j))
                    merged = make_span(text, spans[left].start, spans[right].end, self.count_tokens)
                    if merged is not None and merged.token_count <= options.max_block_tokens:
                        options_.append((strength.get(spans[right].start, 1.0), left, merged))
            if not options_:
                stuck.add(spans[i].start)
                continue
            _, left, merged = min(options_, key=lambda o: o[0])
            spans[left:left + 2] = [merged]


def local_maxima(probs: torch.Tensor, radius: int) -> torch.Tensor:
    """[n] bool: probs[j] is the highest within `radius` candidates either side (ties kept)."""
    if radius <= 0 or len(probs) == 0:
        return torch.ones(len(probs), dtype=torch.bool)
    padded = torch.nn.functional.pad(probs.view(1, 1, -1).float(), (radius, radius), value=-1.0)
    peak = torch.nn.functional.max_pool1d(padded, 2 * radius + 1, stride=1).view(-1)  # [n]
    return probs.float() >= peak


def decide(candidates: list[Candidate], probs: torch.Tensor, threshold: float, suppress: int = 0) -> list[int]:
    """Offsets of the candidates over the threshold that are local maxima within `suppress`
    candidates: in prose the probability rises over the few sentences around a topic shift, and
    only its peak is the cut. The maxima do not depend on the threshold, so a lower threshold
    (a higher granularity) only adds cuts."""
    keep = local_maxima(probs, suppress).tolist()
    return [c.offset for c, p, k in zip(candidates, probs.tolist(), keep) if k and p > threshold]


def _groups(texts: Sequence[str], max_chars: int) -> list[list[int]]:
    """Consecutive indices of the texts, in groups of at most max_chars characters (a longer text
    alone)."""
    groups: list[list[int]] = []
    size = 0
    for k, text in enumerate(texts):
        if not groups or size + len(text) > max_chars:
            groups.append([])
            size = 0
        groups[-1].append(k)
        size += len(text)
    return groups
