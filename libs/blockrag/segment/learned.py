"""LearnedSegmenter: cut where the boundary model says so, at the caller's granularity.

Granularity moves the decision threshold in logit space around the one chosen on validation
data: 0.5 is that threshold, 1.0 cuts wherever the model is at least ~5% sure (fine), 0.0 only
where it is ~95% sure relative to it (coarse). Then sizes are enforced: a block over
max_block_tokens is re-split at its most likely inner candidate, recursively (a hard cut by
tokens where no candidate is left), so no block is ever over the maximum; a block under
min_block_tokens is merged with the neighbour across the weaker boundary, when that fits.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from blockrag.segment.boundary import BoundaryModel
from blockrag.segment.candidates import Candidate
from blockrag.segment.spans import SegmentOptions, Span, hard_cut, make_span

SPREAD = 3.0  # logits between granularity 0.5 and either end


def threshold_for(base: float, granularity: float) -> float:
    """The cut probability threshold for a granularity in [0, 1] (0.5 gives `base`)."""
    base = min(max(base, 1e-6), 1 - 1e-6)
    logit = math.log(base / (1 - base)) + (0.5 - granularity) * 2 * SPREAD
    return 1 / (1 + math.exp(-logit))


class LearnedSegmenter:
    def __init__(self, model: BoundaryModel, count_tokens: Callable[[str], int]):
        self.model, self.count_tokens = model, count_tokens

    def cut_offsets(self, text: str, granularity: float = 0.5) -> list[int]:
        """Where the model cuts, before any size rule (what the segmentation metrics score)."""
        candidates, probs = self.model.probabilities(text)
        return decide(candidates, probs, threshold_for(self.model.config.threshold, granularity),
                      self.model.config.suppress)

    def segment(self, text: str, options: SegmentOptions = SegmentOptions(granularity=0.5)) -> list[Span]:
        candidates, probs = self.model.probabilities(text)
        strength = {c.offset: float(p) for c, p in zip(candidates, probs)}
        cuts = decide(candidates, probs, threshold_for(self.model.config.threshold, options.granularity),
                      self.model.config.suppress)
        bounds = [0, *cuts, len(text)]
        spans: list[Span] = []
        for start, end in zip(bounds, bounds[1:]):
            spans.extend(self._bounded(text, start, end, options.max_block_tokens, candidates, strength))
        return self._merged(text, spans, options, strength)

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
