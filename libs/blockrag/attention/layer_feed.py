"""LayerFeed: blocks in pinned host memory fed to the forward layer by layer.

Staged host reads copy every block's KV to the device, then place it, then run the question's
forward: at 32K context on an 8B model that is the 77.6 ms bare copy plus ~23 ms for the rest
(1.29-1.31x the copy, H200 and H100, bench/gpu/RESULTS.md). But layer l's KV only has to be on
the device when the forward reaches layer l, and the copy engines run beside the SMs. So the feed
- copies layer l of every host block ([H, L, D], contiguous in a BlockKV: one DMA per block and
  tensor) into one of `slots` device staging buffers, on a side stream, `slots` layers ahead of
  the forward;
- in a forward pre-hook of decoder layer l: makes the compute stream wait for layer l's copies,
  places layer l from its slot into the cache (rotation to each block's offset and the value
  copy: the placement kernel, one launch a layer) and hands the slot to the copy of layer
  l + slots.
The forward's own host work (eager: ~25 ms of launches for a 64-token question on an 8B model)
is done while the copies run, so a prompt costs about the bare copy plus one layer's placement
and compute, and the staging takes `slots` layers of the host blocks, not all of them.

On a CPU (tests) the same schedule runs synchronously: copy, place, compute, layer by layer.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from itertools import accumulate

import torch
from torch import nn

from blockrag.attention.block_kv import BlockKV
from blockrag.attention.placement import place_blocks_torch, triton_available
from blockrag.attention.rotary import RotaryReencoder

SLOTS = 4  # staging layers: 4 x 134 MB at 32K on an 8B model


def fed_by_layer(kv: BlockKV, key_buffer: torch.Tensor) -> bool:
    """Whether the feed takes this block for a cache on key_buffer's device: a CUDA cache, the
    block in pinned host memory, contiguous, of the cache's dtype (other blocks are placed whole
    before the forward)."""
    return (key_buffer.device.type == "cuda" and kv.keys.device.type == "cpu" and kv.dtype == key_buffer.dtype
            and kv.keys.is_pinned() and kv.values.is_pinned()
            and kv.keys.is_contiguous() and kv.values.is_contiguous())


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's decoder layers, in order (transformers: model.get_decoder().layers)."""
    return model.get_decoder().layers


def feed_for(kvs: Sequence[BlockKV], offsets: Sequence[int], reencoder: RotaryReencoder, key_buffer: torch.Tensor,
             value_buffer: torch.Tensor, model: nn.Module, host_reads: str
             ) -> tuple[list[BlockKV], list[int], LayerFeed | None]:
    """The blocks to place before the forward (and their offsets), and the feed of the rest: with
    host_reads "layered", every block that fed_by_layer takes; otherwise none (feed None)."""
    fed = [host_reads == "layered" and fed_by_layer(kv, key_buffer) for kv in kvs]
    if not any(fed):
        return list(kvs), list(offsets), None
    feed = LayerFeed([kv for kv, f in zip(kvs, fed) if f], [o for o, f in zip(offsets, fed) if f], reencoder,
                     key_buffer, value_buffer, decoder_layers(model))
    return [kv for kv, f in zip(kvs, fed) if not f], [o for o, f in zip(offsets, fed) if not f], feed


class LayerFeed:
    """Context manager around one forward: while it runs, decoder layer l starts only after
    layer l of `kvs` is in key_buffer/value_buffer [layers, 1, H, capacity, D] at `offsets`.

    kvs: blocks on the host ([layers, H, L, D], fed_by_layer), held by the caller until the
    forward's work has run. The hooks go when the context exits, error or not.
    """

    def __init__(self, kvs: Sequence[BlockKV], offsets: Sequence[int], reencoder: RotaryReencoder,
                 key_buffer: torch.Tensor, value_buffer: torch.Tensor, layers: nn.ModuleList, slots: int = SLOTS):
        if not kvs:
            raise ValueError("a layer feed needs at least one block")
        if len(layers) != key_buffer.shape[0]:
            raise ValueError(f"the model has {len(layers)} decoder layers, the cache {key_buffer.shape[0]}")
        self.kvs, self.offsets, self.reencoder = list(kvs), list(offsets), reencoder
        self.key_buffer, self.value_buffer, self.layers = key_buffer, value_buffer, layers
        self.num_layers = len(layers)
        self.slots = max(1, min(slots, self.num_layers))
        self.device = key_buffer.device
        self.cuda = self.device.type == "cuda"
        heads, dim = key_buffer.shape[2], key_buffer.shape[4]
        sizes = [kv.num_tokens * heads * dim for kv in self.kvs]
        ends = list(accumulate(sizes))
        self.spans = [(end - size, end) for end, size in zip(ends, sizes)]
        # [slots, keys/values, every host block's one layer end to end]
        self.staging = torch.empty(self.slots, 2, ends[-1], dtype=key_buffer.dtype, device=self.device)
        self.views = [[BlockKV(kv.token_ids, self.staging[s, 0, a:b].view(1, heads, kv.num_tokens, dim),
                               self.staging[s, 1, a:b].view(1, heads, kv.num_tokens, dim))
                       for kv, (a, b) in zip(self.kvs, self.spans)] for s in range(self.slots)]
        self.plans = None
        if self.cuda and triton_available():
            from blockrag.attention import placement_kernel

            # a slot's views keep their addresses, so its table is built once, not once a layer
            self.plans = [placement_kernel.plan(views, self.offsets, reencoder, key_buffer[:1])
                          for views in self.views]
        self.side = torch.cuda.Stream(self.device) if self.cuda else None
        self.landed: dict[int, torch.cuda.Event] = {}
        self.placed = 0  # layers placed so far
        self.handles = []

    def __enter__(self) -> LayerFeed:
        if self.cuda:
            self.side.wait_stream(torch.cuda.current_stream(self.device))  # the staging was allocated there
        for layer in range(self.slots):
            self._copy(layer)
        self.handles = [module.register_forward_pre_hook(functools.partial(self._arrive, layer))
                        for layer, module in enumerate(self.layers)]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
        if self.cuda:
            # copies still queued (a forward that failed midway) finish before the staging's
            # memory can go to anything else on the compute stream
            torch.cuda.current_stream(self.device).wait_stream(self.side)

    def _copy(self, layer: int) -> None:
        """Queue the copy of `layer` of every host block into its slot."""
        slot = self.staging[layer % self.slots]
        with torch.cuda.stream(self.side) if self.cuda else contextlib.nullcontext():
            for kv, (a, b) in zip(self.kvs, self.spans):
                slot[0, a:b].copy_(kv.keys[layer].reshape(-1), non_blocking=True)
                slot[1, a:b].copy_(kv.values[layer].reshape(-1), non_blocking=True)
            if self.cuda:
                self.landed[layer] = torch.cuda.Event()
                self.landed[layer].record(self.side)

    def _arrive(self, layer: int, module: nn.Module, args) -> None:
        """Forward pre-hook of decoder layer `layer`: its KV placed first."""
        slot = layer % self.slots
        keys, values = self.key_buffer[layer : layer + 1], self.value_buffer[layer : layer + 1]
        if self.cuda:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(self.landed.pop(layer))
        if self.plans is not None:
            from blockrag.attention import placement_kernel

            placement_kernel.run(self.plans[slot], keys, values)
        else:
            place_blocks_torch(self.views[slot], self.offsets, self.reencoder, keys, values)
        self.placed = layer + 1
        following = layer + self.slots
        if following < self.num_layers:
            if self.cuda:
                done = torch.cuda.Event()
                done.record(current)
                self.side.wait_event(done)  # the slot is free once this layer's placement has run
            self._copy(following)

