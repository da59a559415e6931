"""CUDA graphs of a GenerationBatch's decode step: B sequences, one token each, one replay.

Eagerly a decode step of an 8B model is ~1000 kernel launches of Python (~30 ms on an H100
whatever B is), so a batch of 16 would decode barely faster than its one-sequence graphed
answers together. Here one graph per batch size bucket (1, 2, 4, ..., slots) is captured when
the batch is made, while its pool is empty; a step of B running sequences replays the smallest
bucket >= B. The graph reads every slot whole (N = slot_tokens keys, the mask hiding positions
past each row's length), so its shapes never change:
- inputs, static device tensors set before each replay: each row's token [b, 1] and its length
  [b] (where its new KV goes; keys 0..length are visible);
- rows B..b-1 of a bucket are free slots (running rows are always 0..B-1: kv_slots.py): they
  take token 0 at position 0 of their slot, which placement overwrites before that slot's next
  sequence reads it.
Capture writes KV at position 0 of rows 0..b-1 too, hence capturing before any sequence runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from blockrag.attention.batch_cache import BatchCache
from blockrag.attention.graphs import capture
from blockrag.attention.mask import to_additive


@dataclass
class _Step:
    graph: torch.cuda.CUDAGraph
    ids: torch.Tensor  # [b, 1] int64
    lengths: torch.Tensor  # [b] int64: each row's filled positions, where its token's KV goes
    logits: torch.Tensor  # [b, 1, vocab], written by every replay
    # the other tensors made outside the capture that its kernels read (the key positions [N],
    # the row index [b, 1]): the graph holds their addresses, not references, so they live here
    # (freed, their memory went to other tensors and the replays wrote KV at garbage rows: the
    # first GPU run, 2026-12-06, hit "index out of bounds")
    constants: tuple[torch.Tensor, ...]


def bucket_sizes(slots: int) -> list[int]:
    """1, 2, 4, ... below slots, and slots."""
    sizes, b = [], 1
    while b < slots:
        sizes.append(b)
        b *= 2
    return sizes + [slots]


class BatchDecodeGraphs:
    """One decode-step graph per bucket of running sequences, over a batch's pool and cache."""

    def __init__(self, model, cache: BatchCache, fused: bool = False):
        self.model, self.cache, self.fused = model, cache, fused
        pool = cache.pool
        self.device = pool.keys.device
        self.pool_handle = torch.cuda.graph_pool_handle()
        self.steps: dict[int, _Step] = {}
        with torch.inference_mode():
            for b in reversed(bucket_sizes(pool.slots)):  # largest first: the others reuse its memory
                self.steps[b] = self._capture(b)

    def decode(self, tokens: Sequence[int], lengths: Sequence[int]) -> torch.Tensor:
        """One step of rows 0..B-1: tokens[i] at position lengths[i] of row i -> logits [B, vocab]
        (float32)."""
        n = len(tokens)
        b = min(size for size in self.steps if size >= n)
        step = self.steps[b]
        host = torch.zeros(2, b, dtype=torch.int64)
        host[0, :n], host[1, :n] = torch.tensor(tokens), torch.tensor(lengths)
        with torch.inference_mode():
            step.ids[:, 0].copy_(host[0])
            step.lengths.copy_(host[1])
            step.graph.replay()
            return step.logits[:n, -1].float()

    def _capture(self, b: int) -> _Step:
        device, pool = self.device, self.cache.pool
        ids = torch.zeros(b, 1, dtype=torch.int64, device=device)
        lengths = torch.zeros(b, dtype=torch.int64, device=device)
        keys = torch.arange(pool.slot_tokens, device=device)  # [N]
        row_index = torch.arange(b, device=device)[:, None]  # [b, 1]

        def forward() -> torch.Tensor:
            positions = lengths[:, None]  # [b, 1]
            self.cache.point(b, row_index, positions, pool.slot_tokens)
            mask = to_additive((keys[None, :] <= positions)[:, None, None, :], pool.keys.dtype)  # [b, 1, 1, N]
            return self.model(input_ids=ids, position_ids=positions, attention_mask=mask, past_key_values=self.cache,
                              use_cache=True, logits_to_keep=1).logits

        graph, logits = capture(forward, device, self.pool_handle, self.fused)
        return _Step(graph, ids, lengths, logits, (keys, row_index))
