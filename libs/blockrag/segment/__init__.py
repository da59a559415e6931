"""Segmentation: cutting documents into self-contained blocks."""

from blockrag.segment.paragraph import split_paragraphs

__all__ = ["split_paragraphs"]
