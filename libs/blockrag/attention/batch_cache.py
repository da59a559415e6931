"""BatchCache: a transformers Cache over consecutive rows of a KVSlots pool, for one forward of
several sequences, each at its own length.

The model sees keys [B, H, N, D]: a view of the rows, N = the longest row after the step. Row i's
new tokens are written at its own length L_i; the mask lets its query j see keys 0..L_i + j, so
a row never reads another row's length of positions (those stay finite, zero or stale, under
weight 0). Questions of different lengths are right-padded to the longest: a pad token's query
and key sit after the row's real ones, where causal attention keeps them out of every real row.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers.cache_utils import Cache, DynamicLayer

from blockrag.attention.kv_slots import KVSlots
from blockrag.attention.mask import to_additive


class SlotLayer(DynamicLayer):
    """One layer of the batch: writes each row's new keys at its own positions."""

    def __init__(self, pool: KVSlots, layer: int):
        super().__init__()
        self.pool, self.layer = pool, layer
        self.dtype, self.device = pool.keys.dtype, pool.keys.device
        self.is_initialized = True
        self.rows = slice(0, 0)
        self.row_index = self.positions = torch.zeros(0, dtype=torch.long)
        self.kv_length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        pass  # the pool exists from the start

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        # key_states: [B, H, M, D]; rows/positions: [B, M] -> the indexed view is [B, M, H, D]
        keys = self.pool.keys[self.rows, self.layer]  # [B, H, slot_tokens, D], a view
        values = self.pool.values[self.rows, self.layer]
        keys[self.row_index, :, self.positions] = key_states.transpose(1, 2)
        values[self.row_index, :, self.positions] = value_states.transpose(1, 2)
        self.keys, self.values = keys[:, :, : self.kv_length], values[:, :, : self.kv_length]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.kv_length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.kv_length, 0


class BatchCache(Cache):
    """Rows [first, first + B) of `pool`, for a forward of M new tokens per row."""

    def __init__(self, pool: KVSlots):
        self.pool = pool
        super().__init__(layers=[SlotLayer(pool, i) for i in range(pool.keys.shape[1])])

    def prepare(self, first: int, lengths: Sequence[int], new_tokens: int) -> torch.Tensor:
        """Point every layer's writes at row i's positions lengths[i]..+new_tokens; returns the
        attention mask: additive [B, 1, new_tokens, N] in the pool's dtype, 0 where a query may
        read a key, the dtype's minimum elsewhere.

        Pad positions past the slot's end are written to its last position instead (a row's
        real tokens never reach it while it still has answer tokens to come: the batch
        admits only requests that fit their slot)."""
        device, last = self.pool.keys.device, self.pool.slot_tokens - 1
        rows = len(lengths)
        starts = torch.tensor(lengths, device=device)[:, None]  # [B, 1]
        steps = torch.arange(new_tokens, device=device)[None, :]  # [1, M]
        positions = (starts + steps).clamp_max(last)  # [B, M]
        row_index = torch.arange(rows, device=device)[:, None].expand(rows, new_tokens)
        kv_length = min(max(lengths) + new_tokens, last + 1)
        self.point(rows, row_index, positions, kv_length, first)
        keys = torch.arange(kv_length, device=device)[None, None, :]  # [1, 1, N]
        # additive, made once here: SDPA would convert a bool mask again in every layer
        return to_additive((keys <= (starts + steps)[:, :, None])[:, None], self.pool.keys.dtype)  # [B, 1, M, N]

    def point(self, rows: int, row_index: torch.Tensor, positions: torch.Tensor, kv_length: int, first: int = 0) -> None:
        """Every layer writes row first + i's new tokens at positions[i] ([B, M] device tensors;
        row_index [B, M] = i) and reads keys 0..kv_length-1 of rows first..first+rows-1."""
        for layer in self.layers:
            layer.rows, layer.row_index, layer.positions, layer.kv_length = (
                slice(first, first + rows), row_index, positions, kv_length)
