"""CUDA graphs of the final-block forward: the cached prefill without its launch overhead.

Eagerly, the final block's forward (64 tokens, Llama-3.1-8B, H200) costs 21-34 ms of Python and
~1000 kernel launches for ~4 ms of memory traffic. A captured graph replays the same kernels in
one launch. A graph is tied to the addresses and shapes it was captured with, so:
- one workspace cache per engine (capacity: graph_context_tokens + the largest bucket) that
  every graphed prefill places its blocks into, under a lock;
- one graph per question-length bucket (16, 32, ..., 256 tokens; the question is padded at its
  end, where causal attention keeps the pad tokens out of every real row);
- everything that varies with the prompt lives in device tensors set before each replay: token
  ids, positions, the cache rows to write (index_copy_) and the number of valid keys, which the
  split-over-keys attention kernel reads from memory (final_block_kernel.py).
After the replay of `prefill` the prompt's KV (context + question) is copied into a cache of
its own, so decoding and the next prompt never share the workspace.

With decode_tokens > 0 (engine: graph_decode_tokens, 1024 by default; the GPU tests of
tests/gpu/test_decode_graphs.py passed on an H100 on 2026-12-06), a lone answer
(`engine.generate`) instead holds the workspace for its whole length (`hold`): its prompt stays
where the prefill put it (no copy out: ~2 ms at 32K on an 8B model) and every decode step
replays a one-token graph over it (`decode`).
Eagerly a decode step is ~1000 kernel launches of Python (41.5 ms a token at 32K on an 8B model,
measured for issue 12, where reading the weights and the KV takes under 5); replayed it is one
launch. While a hold lasts, other prompts take the eager path (`prefill` returns None), so no
two sequences ever share the workspace.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch

from blockrag.attention.block_kv import BlockKV
from blockrag.attention.cache import BlockCache, BufferLayer, BufferPool
from blockrag.attention.fusion import graphed
from blockrag.attention.layer_feed import feed_for
from blockrag.attention.rotary import RotaryReencoder

BUCKETS = (16, 32, 64, 128, 256)
DECODE = 1  # the one-token graph of a decode step


class GraphLayer(BufferLayer):
    """A cache layer whose writes go to rows named by a device tensor, and which hands attention
    the whole buffer (the valid length is a device tensor too)."""

    write_index: torch.Tensor  # [bucket] int64 cache rows of the new tokens

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        self.key_buffer.index_copy_(2, self.write_index, key_states)  # key_states: [1, H, bucket, D]
        self.value_buffer.index_copy_(2, self.write_index, value_states)
        return self.key_buffer, self.value_buffer


class GraphWorkspace(BlockCache):
    """The static cache the graphs are captured over."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.layers = [GraphLayer(self.key_buffer[i], self.value_buffer[i]) for i in range(len(self.layers))]

    def point_writes_at(self, index: torch.Tensor) -> None:
        for layer in self.layers:
            layer.write_index = index


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    input_ids: torch.Tensor  # [1, bucket]
    positions: torch.Tensor  # [1, bucket]
    index: torch.Tensor  # [bucket]
    logits: torch.Tensor  # [1, bucket, vocab], written by every replay


class PrefillGraphs:
    """Graphed final-block prefill and decode steps for one engine (CUDA only).

    capacity: context_tokens + the largest bucket + decode_tokens, the positions a held answer
    may fill (context, question and answer)."""

    def __init__(self, model, num_layers: int, num_kv_heads: int, head_dim: int, context_tokens: int,
                 dtype: torch.dtype, device: torch.device, decode_tokens: int = 0, fused: bool = False):
        self.model, self.device, self.decode_tokens, self.fused = model, device, decode_tokens, fused
        self.capacity = context_tokens + BUCKETS[-1] + decode_tokens
        self.workspace = GraphWorkspace(num_layers, num_kv_heads, head_dim, self.capacity, dtype, device)
        self.kv_length = torch.zeros((), dtype=torch.int64, device=device)
        self.dummy_mask = torch.zeros(1, 1, 1, 1, dtype=dtype, device=device)  # a 4D mask skips mask building
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: dict[int, _Graph] = {}
        self.lock = threading.Lock()
        self.held = False  # a lone answer's prompt and answer live in the workspace

    @staticmethod
    def bucket(question_tokens: int) -> int | None:
        return next((b for b in BUCKETS if b >= question_tokens), None)

    def fits(self, context_tokens: int, question_tokens: int, new_tokens: int = 0) -> bool:
        """Whether the graphs take this prompt (and, held, an answer of new_tokens after it)."""
        bucket = self.bucket(question_tokens)
        return bucket is not None and context_tokens + max(bucket, question_tokens + new_tokens) <= self.capacity

    def hold(self, context_tokens: int, question_tokens: int, new_tokens: int) -> bool:
        """Take the workspace for one answer (prefill_held, decode..., release); False when
        decoding is not graphed (decode_tokens 0), another answer holds it or the answer would
        not fit: the caller goes eager."""
        if not self.decode_tokens or not self.fits(context_tokens, question_tokens, new_tokens):
            return False
        with self.lock:
            if self.held:
                return False
            self.held = True
            return True

    def release(self) -> None:
        with self.lock:
            self.held = False

    def prefill(self, kvs: list[BlockKV], offsets: list[int], context: int, final: tuple[int, ...],
                reencoder: RotaryReencoder, host_reads: str, reserve_tokens: int,
                pool: BufferPool) -> tuple[torch.Tensor, BlockCache] | None:
        """logits [len(final), vocab] (float32) and the prompt's own cache (context + final);
        context = the blocks' total length (offsets[-1] + the last block's length). None while an
        answer holds the workspace."""
        with self.lock, torch.inference_mode():
            if self.held:
                return None
            logits = self._prefill(kvs, offsets, context, final, reencoder, host_reads)
            n = context + len(final)
            cache = BlockCache(self.workspace.key_buffer.shape[0], self.workspace.key_buffer.shape[2],
                               self.workspace.key_buffer.shape[4], n + reserve_tokens,
                               self.workspace.key_buffer.dtype, self.device, pool)
            cache.key_buffer[:, :, :, :n].copy_(self.workspace.key_buffer[:, :, :, :n])
            cache.value_buffer[:, :, :, :n].copy_(self.workspace.value_buffer[:, :, :, :n])
            cache.set_length(n)
        return logits, cache

    def prefill_held(self, kvs: list[BlockKV], offsets: list[int], context: int, final: tuple[int, ...],
                     reencoder: RotaryReencoder, host_reads: str) -> torch.Tensor:
        """prefill for the answer that holds the workspace: the prompt's KV stays in it for
        decode(); logits [len(final), vocab] float32."""
        assert self.held, "hold() the workspace first"
        with torch.inference_mode():
            # captured now, before the prompt is placed: a capture writes the KV of its dummy
            # token at position 0, which must not be a held prompt's
            self.graphs.get(DECODE) or self._capture(DECODE)
            return self._prefill(kvs, offsets, context, final, reencoder, host_reads)

    def decode(self, token: int, position: int) -> torch.Tensor:
        """One decode step of the held answer: `token` at `position` (its KV written there),
        attending to positions 0..position; logits [vocab] float32."""
        graph = self.graphs[DECODE]
        with torch.inference_mode():
            # fill_ from Python scalars: kernel arguments, no host-to-device copy, no sync
            graph.input_ids.fill_(token)
            graph.positions.fill_(position)
            graph.index.fill_(position)
            self.kv_length.fill_(position + 1)
            graph.graph.replay()
            return graph.logits[0, 0].float()

    def _prefill(self, kvs: list[BlockKV], offsets: list[int], context: int, final: tuple[int, ...],
                 reencoder: RotaryReencoder, host_reads: str) -> torch.Tensor:
        bucket = self.bucket(len(final))
        graph = self.graphs.get(bucket) or self._capture(bucket)
        workspace = self.workspace
        placed, placed_at, feed = feed_for(kvs, offsets, reencoder, workspace.key_buffer, workspace.value_buffer,
                                           self.model, host_reads)
        workspace.write_blocks(placed, placed_at, reencoder, host_reads)
        ids = torch.zeros(bucket, dtype=torch.int64)
        ids[: len(final)] = torch.tensor(final)
        graph.input_ids[0].copy_(ids)
        graph.positions[0].copy_(torch.arange(context, context + bucket))
        graph.index.copy_(graph.positions[0])
        self.kv_length.fill_(context + bucket)
        if feed is None:
            graph.graph.replay()
            return graph.logits[0, : len(final)].float()
        # blocks fed layer by layer: a replay cannot wait for a layer still in flight, so the
        # bucket's forward runs eagerly over the same workspace and inputs
        workspace.point_writes_at(graph.index)
        with feed:
            logits = self._forward(graph.input_ids, graph.positions)
        return logits[0, : len(final)].float()

    def _forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The bucket's forward over the workspace (what a graph holds): logits [1, bucket, vocab]."""
        return self.model(input_ids=input_ids, position_ids=positions, past_key_values=self.workspace,
                          attention_mask=self.dummy_mask, use_cache=True, logits_to_keep=0,
                          blockrag_final_block=True, blockrag_kv_length=self.kv_length).logits

    def _capture(self, bucket: int) -> _Graph:
        device = self.device
        input_ids = torch.zeros(1, bucket, dtype=torch.int64, device=device)
        positions = torch.arange(bucket, device=device)[None].clone()
        index = torch.arange(bucket, device=device)
        self.workspace.point_writes_at(index)
        self.kv_length.fill_(bucket)

        graph, logits = capture(lambda: self._forward(input_ids, positions), device, self.pool, self.fused)
        entry = _Graph(graph, input_ids, positions, index, logits)
        self.graphs[bucket] = entry
        return entry


def capture(forward: Callable[[], torch.Tensor], device: torch.device, pool, fused: bool
            ) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
    """A CUDA graph of forward() and the output tensor its replays write. Two warm-up runs on a
    side stream first (they compile Triton kernels and settle allocations); fused: the compiled
    module forwards at every size, warm-up and capture alike (fusion.graphed)."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with graphed() if fused else contextlib.nullcontext():
        with torch.cuda.stream(side):
            for _ in range(2):
                forward()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            out = forward()
    return graph, out
