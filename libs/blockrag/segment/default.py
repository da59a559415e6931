"""The shipped segmenter: the all-MiniLM-L6-v2 backbone (from its package) and the head trained
by `blockrag segment train` on the built-in offline sources (segment/default_model/TRAINING.md
says how it was made and what it scored)."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path

from blockrag.segment.boundary import BoundaryModel
from blockrag.segment.learned import LearnedSegmenter


def default_model_dir() -> Path:
    return Path(str(resources.files("blockrag.segment") / "default_model"))


def load_segmenter(directory: Path, count_tokens: Callable[[str], int]) -> LearnedSegmenter:
    return LearnedSegmenter(BoundaryModel.load(directory), count_tokens)


def load_default_segmenter(count_tokens: Callable[[str], int]) -> LearnedSegmenter:
    return load_segmenter(default_model_dir(), count_tokens)
