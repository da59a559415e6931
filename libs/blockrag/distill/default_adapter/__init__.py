"""The block-distillation adapter shipped for the embedded default model (TRAINING.md here says
how it was made and what it measures; `blockrag model distill` reproduces it)."""

from __future__ import annotations

from importlib import resources

from blockrag.distill.adapter import Adapter
from blockrag.errors import ModelLoadError

FILE = "adapter.safetensors"


def default_adapter() -> Adapter:
    """The shipped adapter (ModelLoadError if the package lacks it)."""
    path = resources.files(__package__) / FILE
    if not path.is_file():
        raise ModelLoadError(f"the shipped adapter {path} is missing: reinstall blockrag, or serve the base "
                             "model with adapter 'none'")
    return Adapter.from_bytes(path.read_bytes())
