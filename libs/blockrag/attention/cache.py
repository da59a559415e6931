"""BlockCache: a transformers Cache over preallocated buffers that context blocks are rotated
straight into, and that decoding appends to without a torch.cat per step."""

from __future__ import annotations

import threading
import weakref

import torch
from transformers.cache_utils import Cache, DynamicLayer

from blockrag.attention.block_kv import BlockKV
from blockrag.attention.placement import place_blocks
from blockrag.attention.rotary import RotaryReencoder


class BufferLayer(DynamicLayer):
    """One layer's cache: keys/values buffers [1, H, capacity, D], the first `length` rows valid."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        super().__init__()
        self.key_buffer, self.value_buffer = keys, values
        self.dtype, self.device = keys.dtype, keys.device
        self.length = 0
        self.is_initialized = True
        self._expose()

    def _expose(self) -> None:
        self.keys = self.key_buffer[:, :, : self.length]
        self.values = self.value_buffer[:, :, : self.length]

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        pass  # buffers exist from the start

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        end = self.length + key_states.shape[-2]
        if end > self.key_buffer.shape[-2]:
            self._grow(max(end, 2 * self.key_buffer.shape[-2]))
        self.key_buffer[:, :, self.length : end].copy_(key_states)
        self.value_buffer[:, :, self.length : end].copy_(value_states)
        self.length = end
        self._expose()
        return self.keys, self.values

    def _grow(self, capacity: int) -> None:
        shape = (*self.key_buffer.shape[:2], capacity, self.key_buffer.shape[-1])
        for name in ("key_buffer", "value_buffer"):
            bigger = torch.empty(shape, dtype=self.dtype, device=self.device)
            bigger[:, :, : self.length].copy_(getattr(self, name)[:, :, : self.length])
            setattr(self, name, bigger)

    def get_seq_length(self) -> int:
        return self.length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def crop(self, max_length: int) -> None:
        self.length = min(self.length, max_length if max_length >= 0 else self.length + max_length)
        self._expose()

    def reset(self) -> None:
        self.length = 0
        self._expose()


class BufferPool:
    """Reuses the big KV buffers of finished prompts.

    A fresh 100 MB host buffer costs ~15 ms of page faults on first touch (2K tokens of the
    default model on 2 cores, ~10% of a cached prefill); a buffer whose cache was dropped is
    handed to the next prompt instead. Buffers return when their BlockCache is garbage
    collected, so tensors taken out of a cache are valid only while that cache lives.
    """

    def __init__(self, max_bytes: int = 1 << 30):
        self.max_bytes = max_bytes
        self._free: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._lock = threading.Lock()

    def take(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Two buffers of at least `shape` (dim 3 is the capacity); the smallest free pair that fits."""
        with self._lock:
            fits = [i for i, (k, _) in enumerate(self._free)
                    if k.dtype == dtype and k.device == device and k.shape[:3] == shape[:3]
                    and k.shape[4] == shape[4] and k.shape[3] >= shape[3]]
            if fits:
                best = min(fits, key=lambda i: self._free[i][0].shape[3])
                return self._free.pop(best)
        return torch.empty(shape, dtype=dtype, device=device), torch.empty(shape, dtype=dtype, device=device)

    def give(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Return a pair; the oldest pairs go when the pool would exceed max_bytes."""
        with self._lock:
            self._free.append((keys, values))
            while sum(k.nbytes + v.nbytes for k, v in self._free) > self.max_bytes:
                self._free.pop(0)


class BlockCache(Cache):
    """The KV of a prompt under assembly. keys/values: [layers, 1, kv_heads, capacity, D]."""

    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, capacity: int,
                 dtype: torch.dtype, device: torch.device | str, pool: BufferPool | None = None):
        shape = (num_layers, 1, num_kv_heads, capacity, head_dim)
        if pool is None:
            self.key_buffer = torch.empty(shape, dtype=dtype, device=device)
            self.value_buffer = torch.empty(shape, dtype=dtype, device=device)
        else:
            self.key_buffer, self.value_buffer = pool.take(shape, dtype, torch.device(device))
            weakref.finalize(self, pool.give, self.key_buffer, self.value_buffer)
        super().__init__(layers=[BufferLayer(self.key_buffer[i], self.value_buffer[i]) for i in range(num_layers)])

    def write_blocks(self, kvs: list[BlockKV], offsets: list[int], reencoder: RotaryReencoder,
                     host_reads: str = "staged") -> None:
        """Rotate each block's keys to its offset and copy its values there (placement.place_blocks)."""
        place_blocks(kvs, offsets, reencoder, self.key_buffer, self.value_buffer, host_reads)

    def set_length(self, length: int) -> None:
        """Mark the first `length` positions of every layer as filled (after write_blocks)."""
        for layer in self.layers:
            layer.length = length
            layer._expose()
