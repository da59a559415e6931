"""LayerFeed: blocks in pinned host memory fed to the forward layer by layer.

Staged host reads copy every block's KV to the device, then place it, then run the question's
forward: at 32K context on an 8B model that is the 77.6 ms bare copy plus ~23 ms for the rest
(1.29-1.31x the copy, H200 and H100, bench/gpu/RESULTS.md). But layer l's KV only has to be on
the device when the forward reaches layer l, and the copy engines run beside the SMs. So the feed
- copies layers in groups (`group` consecutive layers of a block, [group, H, L, D], are contiguous
  in a BlockKV: one DMA per block, tensor and group) into one of `slots` device staging buffers,
  on a side stream, `slots` groups ahead of the forward;
- in a forward pre-hook of a group's first decoder layer: makes the compute stream wait for the
  group's copies, places its layers from the slot into the cache (rotation to each block's
  offset and the value copy: the placement kernel, one launch a group) and hands the slot to the
  copy of the group `slots` further on.
The forward's own host work (eager: a cached 64-token question on an 8B model took 28-30 ms
without graphs, bench/gpu/RESULTS.md)
is done while the copies run, so a prompt costs about the bare copy plus one group's placement
and compute, when the copy takes longer than that host work (long contexts); the staging takes
`slots` groups of the host blocks, not all of them.

On a CPU (tests) the same schedule runs synchronously: copy, place, compute, layer by layer.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Sequence
from itertools import accumulate

import torch
from torch import nn

from blockrag.attention.block_kv import BlockKV
from blockrag.attention.placement import place_blocks_torch, triton_available
from blockrag.attention.rotary import RotaryReencoder

SLOTS = 3  # staging groups in flight
COPY_BYTES = 4 << 20  # a block's copy: large enough that the host's cost per copy stays small
AUTO_BYTES = 1_500_000_000  # host_reads "auto": fed from here on (feeds)


def fed_by_layer(kv: BlockKV, key_buffer: torch.Tensor) -> bool:
    """Whether the feed takes this block for a cache on key_buffer's device: a CUDA cache, the
    block in pinned host memory, contiguous, of the cache's dtype (other blocks are placed whole
    before the forward)."""
    return (key_buffer.device.type == "cuda" and kv.keys.device.type == "cpu" and kv.dtype == key_buffer.dtype
            and kv.keys.is_pinned() and kv.values.is_pinned()
            and kv.keys.is_contiguous() and kv.values.is_contiguous())


def decoder_layers(model: nn.Module) -> nn.ModuleList | None:
    """The model's decoder layers, in order (transformers: model.get_decoder().layers); None for
    a model that keeps them elsewhere (its host blocks are then staged, not fed)."""
    layers = getattr(model.get_decoder(), "layers", None)
    return layers if isinstance(layers, nn.ModuleList) else None


def feeds(host_reads: str, host_bytes: int) -> bool:
    """Whether blocks of host_bytes in pinned host memory go through a LayerFeed: always with
    "layered"; with "auto" from AUTO_BYTES on, where the copy outlasts the eager forward's host
    work (8B shape, H100, 2026-12-06, TTFT against the bare copy, staged -> layered: 0.54 GB
    2.03x -> 2.35x, 2.15 GB 1.37x -> 1.20x, 4.3 GB 1.27x -> 1.18x)."""
    return host_bytes > 0 and (host_reads == "layered" or (host_reads == "auto" and host_bytes >= AUTO_BYTES))


def feed_for(kvs: Sequence[BlockKV], offsets: Sequence[int], reencoder: RotaryReencoder, key_buffer: torch.Tensor,
             value_buffer: torch.Tensor, model: nn.Module, host_reads: str
             ) -> tuple[list[BlockKV], list[int], LayerFeed | None]:
    """The blocks to place before the forward (and their offsets), and the feed of the rest:
    the blocks that fed_by_layer takes, when `feeds` says so; otherwise none (feed None)."""
    fed = [host_reads in ("layered", "auto") and fed_by_layer(kv, key_buffer) for kv in kvs]
    layers = decoder_layers(model) if any(fed) else None
    if (layers is None or len(layers) != key_buffer.shape[0]
            or not feeds(host_reads, sum(kv.nbytes for kv, f in zip(kvs, fed) if f))):
        return list(kvs), list(offsets), None
    feed = LayerFeed([kv for kv, f in zip(kvs, fed) if f], [o for o, f in zip(offsets, fed) if f], reencoder,
                     key_buffer, value_buffer, layers)
    return [kv for kv, f in zip(kvs, fed) if not f], [o for o, f in zip(offsets, fed) if not f], feed


class LayerFeed:
    """Context manager around one forward: while it runs, decoder layer l starts only after
    layer l of `kvs` is in key_buffer/value_buffer [layers, 1, H, capacity, D] at `offsets`.

    Layers travel in groups of `group` consecutive layers (a block's [group, H, L, D] is one
    contiguous DMA): one copy per block, tensor and group, so that the host's cost of issuing
    copies stays small (a copy per block and layer, 4096 at 32K on an 8B model, left the first
    version no faster than staged: 102 against 101 ms, H100).
    Default group: the layers that make a block's copy about COPY_BYTES, at most half the model.
    kvs: blocks on the host ([layers, H, L, D], fed_by_layer), held by the caller until the
    forward's work has run. The hooks go when the context exits, error or not.
    """

    def __init__(self, kvs: Sequence[BlockKV], offsets: Sequence[int], reencoder: RotaryReencoder,
                 key_buffer: torch.Tensor, value_buffer: torch.Tensor, layers: nn.ModuleList, slots: int = SLOTS,
                 group: int | None = None):
        if not kvs:
            raise ValueError("a layer feed needs at least one block")
        if len(layers) != key_buffer.shape[0]:
            raise ValueError(f"the model has {len(layers)} decoder layers, the cache {key_buffer.shape[0]}")
        self.kvs, self.offsets, self.reencoder = list(kvs), list(offsets), reencoder
        self.key_buffer, self.value_buffer, self.layers = key_buffer, value_buffer, layers
        num_layers = len(layers)
        heads, dim = key_buffer.shape[2], key_buffer.shape[4]
        if group is None:
            layer_bytes = sum(kv.keys[0].nbytes for kv in self.kvs) / len(self.kvs)
            group = min(max(1, num_layers // 2), math.ceil(COPY_BYTES / layer_bytes))
        self.group = max(1, min(group, num_layers))
        self.groups = [(first, min(first + self.group, num_layers)) for first in range(0, num_layers, self.group)]
        self.slots = max(1, min(slots, len(self.groups)))
        self.device = key_buffer.device
        self.cuda = self.device.type == "cuda"
        self.shape = (heads, dim)
        sizes = [self.group * kv.num_tokens * heads * dim for kv in self.kvs]
        ends = list(accumulate(sizes))
        self.spans = [(end - size, end) for end, size in zip(ends, sizes)]
        # [slots, keys/values, every host block's [group, H, L, D] end to end]
        self.staging = torch.empty(self.slots, 2, ends[-1], dtype=key_buffer.dtype, device=self.device)
        self.kernel = self.plans = None
        if self.cuda and triton_available():
            from blockrag.attention import placement_kernel

            # a slot's blocks keep their addresses, so its table is built once, not once a group;
            # a shorter last group reads the first layers of each block's region
            self.kernel = placement_kernel
            self.plans = [placement_kernel.plan(self._views(slot, self.group), self.offsets, reencoder,
                                                key_buffer[:1]) for slot in range(self.slots)]
        self.side = torch.cuda.Stream(self.device) if self.cuda else None
        self.landed: dict[int, torch.cuda.Event] = {}
        self.placed = 0  # layers placed so far
        self.handles = []

    def _views(self, slot: int, layers: int) -> list[BlockKV]:
        """The blocks in `slot`, `layers` layers each: keys and values [layers, H, L, D]."""
        heads, dim = self.shape
        return [BlockKV(kv.token_ids, self.staging[slot, 0, a:b][: layers * heads * kv.num_tokens * dim]
                        .view(layers, heads, kv.num_tokens, dim),
                        self.staging[slot, 1, a:b][: layers * heads * kv.num_tokens * dim]
                        .view(layers, heads, kv.num_tokens, dim))
                for kv, (a, b) in zip(self.kvs, self.spans)]

    def __enter__(self) -> LayerFeed:
        if self.cuda:
            self.side.wait_stream(torch.cuda.current_stream(self.device))  # the staging was allocated there
        for index in range(self.slots):
            self._copy(index)
        firsts = {first: index for index, (first, _) in enumerate(self.groups)}
        self.handles = [module.register_forward_pre_hook(functools.partial(self._arrive, firsts[layer]))
                        for layer, module in enumerate(self.layers) if layer in firsts]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
        if self.cuda:
            # copies still queued (a forward that failed midway) finish before the staging's
            # memory can go to anything else on the compute stream
            torch.cuda.current_stream(self.device).wait_stream(self.side)

    def _copy(self, index: int) -> None:
        """Queue the copy of group `index` of every host block into its slot."""
        first, last = self.groups[index]
        slot = self.staging[index % self.slots]
        with torch.cuda.stream(self.side) if self.cuda else contextlib.nullcontext():
            for kv, (a, _) in zip(self.kvs, self.spans):
                n = kv.keys[first:last].numel()
                slot[0, a : a + n].copy_(kv.keys[first:last].reshape(-1), non_blocking=True)
                slot[1, a : a + n].copy_(kv.values[first:last].reshape(-1), non_blocking=True)
            if self.cuda:
                self.landed[index] = torch.cuda.Event()
                self.landed[index].record(self.side)

    def _arrive(self, index: int, module: nn.Module, args) -> None:
        """Forward pre-hook of the first decoder layer of group `index`: the group placed first."""
        first, last = self.groups[index]
        slot = index % self.slots
        keys, values = self.key_buffer[first:last], self.value_buffer[first:last]
        if self.cuda:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(self.landed.pop(index))
        if self.kernel is not None:
            self.kernel.run(self.plans[slot], keys, values)
        else:
            place_blocks_torch(self._views(slot, last - first), self.offsets, self.reencoder, keys, values)
        self.placed = last
        following = index + self.slots
        if following < len(self.groups):
            if self.cuda:
                done = torch.cuda.Event()
                done.record(current)
                self.side.wait_event(done)  # the slot is free once this group's placement has run
            self._copy(following)
