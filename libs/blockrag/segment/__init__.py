"""Segmentation: documents cut into self-contained blocks."""

from blockrag.segment.paragraph import split_paragraphs
from blockrag.segment.spans import ParagraphSegmenter, SegmentOptions, Span

__all__ = ["ParagraphSegmenter", "SegmentOptions", "Span", "split_paragraphs"]
