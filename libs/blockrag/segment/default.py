"""The shipped segmenter: the all-MiniLM-L6-v2 backbone (from its package) and the head trained
on the built-in offline sources (segment/default_model/TRAINING.md says how it was made and what it
scored). A model directory holds either head: a unit sequence head (format 6, sequence.py) or a
candidate head (formats 2-5, boundary.py); its config.json's format says which."""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from blockrag.errors import ModelLoadError
from blockrag.segment.boundary import BoundaryModel
from blockrag.segment.learned import LearnedSegmenter
from blockrag.segment.sequence import FORMAT as SEQUENCE_FORMAT
from blockrag.segment.sequence import UnitSequenceModel


def default_model_dir() -> Path:
    return Path(str(resources.files("blockrag.segment") / "default_model"))


def load_model(directory: Path) -> BoundaryModel | UnitSequenceModel:
    """The boundary model in `directory`, of whichever format its config.json names."""
    try:
        found = json.loads((Path(directory) / "config.json").read_text()).get("format")
    except (OSError, ValueError, AttributeError) as e:
        raise ModelLoadError(f"no usable segmenter in {directory}: {e}") from e
    if found == SEQUENCE_FORMAT:
        return UnitSequenceModel.load(Path(directory))
    return BoundaryModel.load(Path(directory))


def load_segmenter(directory: Path, count_tokens: Callable[[str], int]) -> LearnedSegmenter:
    return LearnedSegmenter(load_model(directory), count_tokens)


def load_default_segmenter(count_tokens: Callable[[str], int]) -> LearnedSegmenter:
    return load_segmenter(default_model_dir(), count_tokens)
