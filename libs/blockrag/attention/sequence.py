"""GenerationRequest: one answer to generate, with its sampling settings checked once here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from blockrag.attention.block_kv import BlockKV
from blockrag.errors import InvalidRequestError


@dataclass(frozen=True, eq=False)
class GenerationRequest:
    """kvs: the context blocks (cached, local positions); final_ids: the final block (the
    question); stop_ids: the ids that end the answer (not yielded). The settings of
    BlockAttentionEngine.generate, which builds one of these too; token ids and block geometry
    are the engine's to check (they depend on the model)."""

    kvs: tuple[BlockKV, ...]
    final_ids: Sequence[int] | torch.Tensor
    max_new_tokens: int
    temperature: float
    stop_ids: frozenset[int]
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise InvalidRequestError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise InvalidRequestError(f"temperature must be >= 0, got {self.temperature}")

    def generator(self, device: torch.device) -> torch.Generator | None:
        """A fresh generator for this request's draws (None: the global one, or greedy)."""
        return None if self.seed is None else torch.Generator(device).manual_seed(self.seed)

