"""BlockKV: the KV cache of one block, encoded alone at local positions 0..L-1."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from blockrag.errors import InvalidBlockError


@dataclass(frozen=True, eq=False)
class BlockKV:
    """Keys and values of every layer for one block.

    keys, values: [layers, kv_heads, L, head_dim]. Keys carry RoPE at the block's *local*
    positions 0..L-1; the engine rotates them to the block's global offset when it assembles
    a prompt (a rotation by the offset composes with the local one). Values carry no position.
    """

    token_ids: tuple[int, ...]
    keys: torch.Tensor
    values: torch.Tensor

    def __post_init__(self) -> None:
        if self.keys.shape != self.values.shape or self.keys.dim() != 4:
            raise InvalidBlockError(
                f"keys and values must share a shape [layers, kv_heads, L, head_dim]; got "
                f"{tuple(self.keys.shape)} and {tuple(self.values.shape)}"
            )
        if self.keys.shape[2] != len(self.token_ids) or not self.token_ids:
            raise InvalidBlockError(
                f"a block needs at least one token and one KV row per token; got "
                f"{len(self.token_ids)} token ids for {self.keys.shape[2]} KV rows"
            )

    @property
    def num_tokens(self) -> int:
        return self.keys.shape[2]

    @property
    def num_layers(self) -> int:
        return self.keys.shape[0]

    @property
    def num_kv_heads(self) -> int:
        return self.keys.shape[1]

    @property
    def head_dim(self) -> int:
        return self.keys.shape[3]

    @property
    def dtype(self) -> torch.dtype:
        return self.keys.dtype

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None, non_blocking: bool = False) -> BlockKV:
        """The same block on another device and/or dtype (pinned host -> GPU copies may be asynchronous)."""
        return BlockKV(
            self.token_ids,
            self.keys.to(device, dtype, non_blocking=non_blocking),
            self.values.to(device, dtype, non_blocking=non_blocking),
        )

    def pin_memory(self) -> BlockKV:
        """A copy in pinned (page-locked) host memory: GPUs copy it asynchronously or read it in place."""
        return BlockKV(self.token_ids, self.keys.pin_memory(), self.values.pin_memory())
