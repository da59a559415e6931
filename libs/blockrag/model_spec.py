"""ModelSpec: which model a replica or a distillation run loads, and how.

Its own module, free of torch and transformers at import, so that the configuration and the
replicas that load no model (admin, cache index) can name a model without paying for the stack
that loads one (blockrag.model_runtime).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from blockrag.errors import ModelLoadError

if TYPE_CHECKING:
    from blockrag.distill.adapter import Adapter


@dataclass(frozen=True)
class ModelSpec:
    """What to load: model (hub id, local directory, .gguf; None = the embedded default),
    dtype name and device ("auto": the first CUDA device when there is one, else the CPU).

    adapter: the block-distillation adapter merged into the served weights: "default" is the
    adapter shipped for the embedded model (none for other models), "none" the base model, else
    the path of an adapter file (`blockrag model distill` writes one).
    """

    model: str | None = None
    dtype: str = "float32"
    device: str = "auto"
    adapter: str = "default"

    def load_adapter(self) -> Adapter | None:
        """The adapter this spec serves, or None for the base model."""
        from blockrag.distill.adapter import Adapter
        from blockrag.distill.default_adapter import default_adapter

        if self.adapter in ("", "none"):
            return None
        if self.adapter == "default":
            return default_adapter() if self.model is None else None
        path = Path(self.adapter)
        if not path.is_file():
            raise ModelLoadError(f"adapter file {path} does not exist; pass a file written by `blockrag model distill` "
                                 "or 'none' for the base model")
        return Adapter.from_bytes(path.read_bytes())

    def resolved_device(self) -> str:
        if self.device == "auto":
            import torch  # only a process that loads a model asks

            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    @property
    def source(self) -> str:
        return self.model or "smollm2-135m-instruct (embedded)"
