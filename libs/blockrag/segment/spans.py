"""ParagraphSegmenter: blocks with character offsets, bounded in tokens, at a chosen granularity.

The baseline segmenter of the Segmentation service until the trained boundary model lands:
paragraphs (a lone Markdown heading stays with the paragraph under it), long paragraphs cut at
line breaks, then sentence ends, then wherever the token budget ends; short neighbours merged.
Token counts are the caller's (the served model's tokenizer, counted as the prompt holds the
block), so `max_block_tokens` bounds exactly what precompute will encode.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from blockrag.errors import InvalidRequestError

_BLANK_LINES = re.compile(r"\n[^\S\n]*\n")  # blank: only spaces, tabs, \r (CRLF text)
_CUTS = (re.compile(r"\n"), re.compile(r"(?<=[.!?])\s+"))  # coarse to fine


@dataclass(frozen=True)
class SegmentOptions:
    """max_block_tokens: hard upper bound; min_block_tokens: shorter blocks merge with the next;
    granularity: 1.0 keeps paragraphs apart, lower values merge neighbours up to a target size
    between the minimum (1.0) and the maximum (0.0)."""

    max_block_tokens: int = 256
    min_block_tokens: int = 0
    granularity: float = 1.0

    def __post_init__(self) -> None:
        if self.max_block_tokens < 8:
            raise InvalidRequestError(f"max_block_tokens must be at least 8, got {self.max_block_tokens}")
        if not 0 <= self.min_block_tokens <= self.max_block_tokens:
            raise InvalidRequestError(
                f"min_block_tokens must be between 0 and max_block_tokens ({self.max_block_tokens}), "
                f"got {self.min_block_tokens}")
        if not 0.0 <= self.granularity <= 1.0:
            raise InvalidRequestError(f"granularity must be in [0, 1], got {self.granularity}")

    @property
    def target_tokens(self) -> int:
        span = self.max_block_tokens - self.min_block_tokens
        return self.min_block_tokens + round((1.0 - self.granularity) * span)


@dataclass(frozen=True)
class Span:
    """text[start:end] of the source, stripped; token_count as the prompt holds it."""

    start: int
    end: int
    text: str
    token_count: int


class ParagraphSegmenter:
    def __init__(self, count_tokens: Callable[[str], int]):
        self.count_tokens = count_tokens

    def segment(self, text: str, options: SegmentOptions = SegmentOptions()) -> list[Span]:
        spans: list[Span] = []
        for start, end in _paragraphs(text):
            spans.extend(self._bounded(text, start, end, options.max_block_tokens))
        return self._merged(text, spans, options)

    def segment_many(self, texts: Sequence[str], options: Sequence[SegmentOptions]) -> list[list[Span]]:
        """`segment` of each text with its options (the same verb as LearnedSegmenter's)."""
        if len(texts) != len(options):
            raise ValueError(f"{len(texts)} texts but {len(options)} options")
        return [self.segment(text, o) for text, o in zip(texts, options)]

    def _span(self, text: str, start: int, end: int) -> Span:
        return Span(start, end, text[start:end], self.count_tokens(text[start:end]))

    def _bounded(self, text: str, start: int, end: int, limit: int, level: int = 0) -> list[Span]:
        """The range as one span when it fits, else cut at the coarsest separator that helps."""
        span = self._span(text, start, end)
        if span.token_count <= limit:
            return [span]
        if level == len(_CUTS):
            return self._hard_cut(text, start, end, limit)
        pieces = _split(text, start, end, _CUTS[level])
        if len(pieces) == 1:
            return self._bounded(text, start, end, limit, level + 1)
        out: list[Span] = []
        for s, e in pieces:
            # pack consecutive pieces while they fit, recurse into a piece that alone does not
            if out and out[-1].end <= s and self.count_tokens(text[out[-1].start:e]) <= limit:
                out[-1] = self._span(text, out[-1].start, e)
            else:
                out.extend(self._bounded(text, s, e, limit, level + 1))
        return out

    def _hard_cut(self, text: str, start: int, end: int, limit: int) -> list[Span]:
        return hard_cut(text, start, end, limit, self.count_tokens)

    def _merged(self, text: str, spans: list[Span], options: SegmentOptions) -> list[Span]:
        target = options.target_tokens
        out: list[Span] = []
        for span in spans:
            if out:
                prev = out[-1]
                wants = prev.token_count < options.min_block_tokens or prev.token_count + span.token_count <= target
                if wants:
                    merged = self._span(text, prev.start, span.end)
                    if merged.token_count <= options.max_block_tokens:
                        out[-1] = merged
                        continue
            out.append(span)
        # a short block that could not merge with the next (the last one, or one before a long
        # block) merges with the previous one where that fits
        i = 1
        while i < len(out):
            if out[i].token_count < options.min_block_tokens:
                merged = self._span(text, out[i - 1].start, out[i].end)
                if merged.token_count <= options.max_block_tokens:
                    out[i - 1:i + 1] = [merged]
                    continue
            i += 1
        return out


def make_span(text: str, start: int, end: int, count_tokens: Callable[[str], int]) -> Span | None:
    """The stripped span of text[start:end], None when it is blank."""
    start, end = _strip(text, start, end)
    return Span(start, end, text[start:end], count_tokens(text[start:end])) if start < end else None


def hard_cut(text: str, start: int, end: int, limit: int, count_tokens: Callable[[str], int]) -> list[Span]:
    """No separator left: the longest prefix within the limit (binary search), repeatedly."""
    out = []
    while start < end:
        lo, hi = start + 1, end
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if count_tokens(text[start:mid]) <= limit:
                lo = mid
            else:
                hi = mid - 1
        span = make_span(text, start, lo, count_tokens)  # a cut may end on a space
        if span is not None:
            out.append(span)
        start = _skip_space(text, lo, end)
    return out


def _paragraphs(text: str) -> list[tuple[int, int]]:
    """Stripped paragraph ranges; a lone heading line joins the paragraph under it."""
    ranges: list[tuple[int, int]] = []
    heading_start: int | None = None
    for s, e in _split(text, 0, len(text), _BLANK_LINES):
        chunk = text[s:e]
        if chunk.startswith("#") and "\n" not in chunk:
            heading_start = s if heading_start is None else heading_start
            continue
        ranges.append((s if heading_start is None else heading_start, e))
        heading_start = None
    if heading_start is not None:
        ranges.append((heading_start, len(text.rstrip())))
    return ranges


def _split(text: str, start: int, end: int, separator: re.Pattern) -> list[tuple[int, int]]:
    """Non-blank, stripped ranges of text[start:end] between matches of `separator`."""
    out, pos = [], start
    for m in separator.finditer(text, start, end):
        out.append((pos, m.start()))
        pos = m.end()
    out.append((pos, end))
    return [r for r in (_strip(text, s, e) for s, e in out) if r[0] < r[1]]


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _skip_space(text: str, pos: int, end: int) -> int:
    while pos < end and text[pos].isspace():
        pos += 1
    return pos
