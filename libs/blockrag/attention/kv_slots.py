"""KVSlots: the pool that batched sequences take their KV caches from, allocated once.

Fixed-size slots, not pages: attention reads a batch's keys as one strided view of rows 0..B-1
([B, H, N, D], no copy), where pages would need a gather of every page, every layer, every step
(the whole cache copied per token on the CPU). A slot holds `slot_tokens` positions (context,
question and answer); a request that needs more is refused when it is added, and a finished
sequence gives its slot back whole, so no answer, however long, fragments the pool.

Rows in use are always 0..used-1: a row that is released is filled by the last one (one copy of
that sequence's filled positions), so every step's batch is a prefix of the pool.
"""

from __future__ import annotations

import torch

from blockrag.errors import InvalidRequestError


class KVSlots:
    """keys, values: [slots, layers, kv_heads, slot_tokens, head_dim].

    Zero-filled once: the batched attention reads positions past a short row's length under a
    mask (weight exactly 0), and 0 x NaN would still be NaN, so they must hold finite numbers.
    """

    def __init__(self, slots: int, slot_tokens: int, num_layers: int, num_kv_heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str):
        if slots < 1 or slot_tokens < 2:
            raise InvalidRequestError(f"a KV pool needs >= 1 slot of >= 2 tokens; got {slots} x {slot_tokens}")
        shape = (slots, num_layers, num_kv_heads, slot_tokens, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.used = 0

    @property
    def slots(self) -> int:
        return self.keys.shape[0]

    @property
    def slot_tokens(self) -> int:
        return self.keys.shape[3]

    @property
    def free(self) -> int:
        return self.slots - self.used

    def acquire(self) -> int:
        """The next free row (== the number of rows in use before the call)."""
        if not self.free:
            raise InvalidRequestError(f"all {self.slots} KV slots are in use")
        self.used += 1
        return self.used - 1

    def release(self, row: int, last_row_tokens: int) -> int | None:
        """Give `row` back. The last row in use (whose first `last_row_tokens` positions are
        filled) moves into it; returns the row that moved, None if `row` was the last."""
        last = self.used - 1
        self.used -= 1
        if row == last:
            return None
        self.keys[row, :, :, :last_row_tokens].copy_(self.keys[last, :, :, :last_row_tokens])
        self.values[row, :, :, :last_row_tokens].copy_(self.values[last, :, :, :last_row_tokens])
        return last

    def slot(self, row: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One row as a BlockCache lays out its buffers: [layers, 1, H, slot_tokens, D], contiguous
        (so the CUDA placement kernel can write blocks straight into it)."""
        return self.keys[row].unsqueeze(1), self.values[row].unsqueeze(1)
