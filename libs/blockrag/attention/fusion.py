"""Fusing the elementwise passes of a transformers decoder on large inputs: RMSNorm and the MLP.

Eager RMSNorm upcasts to fp32, squares, averages, rescales and casts back: five passes over the
hidden states; SiLU(gate) * up is three more over the MLP's widest tensor. Precomputing 16 blocks
of 512 tokens on an 8B model that is ~4 GB of traffic a layer: 231 ms eager, 204 ms fused, 66% ->
75% of the matmul rate (H200, bench/gpu/NOTES.md). Compiled modules cost more per call than the
eager ones save on small inputs (the 64-token forward of a cached prefill went from 34 to 49 ms),
so each module keeps its eager forward below `min_tokens` tokens and takes the fused one above.
Inside a CUDA graph (graphs.py) a module's host cost is paid once, at capture, so there every
size takes the fused forward (`graphed()`): a decode step of one token is ~30 small kernels a
layer, each ~1.5-3 us on the device even when replayed (H100 profile, bench/gpu/NOTES.md).

A decode step's matmuls are matrix-vector products that read each weight once; cuBLAS reads a
4096x4096 weight at ~1.5 TB/s and a 4096x14336 one at ~2.9 (H100). `fuse_projections` makes the
projections that read the same input one matmul over their concatenated weights (q, k, v; gate,
up): fewer, larger reads and fewer launches. The original modules keep their parameters, as
views into the concatenated weight, so names, fingerprints and adapters see the same model.
"""

from __future__ import annotations

import contextlib
import threading
import types

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

_GRAPHING = threading.local()  # .on: fused forwards at every size (a CUDA graph capture)


@contextlib.contextmanager
def graphed():
    """Within: size-gated modules take their fused forward at every size (warm-up and capture of
    a CUDA graph, whose replays skip the host cost that makes them slower on small inputs)."""
    previous = getattr(_GRAPHING, "on", False)
    _GRAPHING.on = True
    try:
        yield
    finally:
        _GRAPHING.on = previous

_FUSED_SUFFIXES = ("RMSNorm", "MLP")


def fuse_elementwise(model: PreTrainedModel, min_tokens: int = 1024) -> int:
    """Give every RMSNorm and MLP submodule a compiled forward for inputs of >= min_tokens tokens,
    in place; returns how many modules were changed. Idempotent."""
    count = 0
    for module in model.modules():
        if type(module).__name__.endswith(_FUSED_SUFFIXES) and not getattr(module, "_blockrag_fused", False):
            module.forward = _size_gated(module.forward, min_tokens)
            module._blockrag_fused = True
            count += 1
    # one compiled graph per module class, reused by every layer; shapes vary, so allow entries
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    return count


def _size_gated(eager, min_tokens: int):
    compiled = torch.compile(eager, dynamic=True)

    def forward(hidden_states: torch.Tensor, *args, **kwargs):
        # hidden_states: [..., hidden]; tokens = every leading position
        if getattr(_GRAPHING, "on", False) or hidden_states.numel() // hidden_states.shape[-1] >= min_tokens:
            return compiled(hidden_states, *args, **kwargs)
        return eager(hidden_states, *args, **kwargs)

    return forward


class SlicedLinear(nn.Linear):
    """One of several projections of the same input computed as one matmul (`fuse_projections`).
    Its weight [out, in] (and bias) are views into the group's concatenated weight; the first
    member called with an input computes the whole group's output [..., sum(out)], the others
    called with that same tensor take their slice of it, and any other input gets its own matmul."""

    def __init__(self, original: nn.Linear, group: _ProjectionGroup, index: int):
        nn.Module.__init__(self)
        self.in_features, self.out_features = original.in_features, original.out_features
        self.group, self.index = group, index
        self.weight = nn.Parameter(group.weight[group.starts[index]:group.starts[index + 1]], requires_grad=False)
        self.bias = None if group.bias is None else nn.Parameter(
            group.bias[group.starts[index]:group.starts[index + 1]], requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        part = self.group.take(x, self.index)
        return F.linear(x, self.weight, self.bias) if part is None else part


class _ProjectionGroup:
    """The concatenated weight [sum(out), in] of projections that read one input, and, per
    thread (engines run forwards on several threads), the output of its last matmul until every
    member has taken its slice."""

    def __init__(self, linears: list[nn.Linear]):
        self.weight = torch.cat([m.weight.detach() for m in linears])
        self.bias = None if linears[0].bias is None else torch.cat([m.bias.detach() for m in linears])
        self.sizes = [m.out_features for m in linears]
        self.starts = [0]
        for size in self.sizes:
            self.starts.append(self.starts[-1] + size)
        self.local = threading.local()  # .input, .parts: the last fused output, split per member

    def take(self, x: torch.Tensor, index: int) -> torch.Tensor | None:
        """Member `index`'s output for x, or None when it is not the group's first call for x
        and x's group output is gone (the member then does a matmul of its own)."""
        local = self.local
        if getattr(local, "input", None) is not x or local.parts[index] is None:
            if index != 0:
                return None
            local.input, local.parts = x, list(F.linear(x, self.weight, self.bias).split(self.sizes, dim=-1))
        part, local.parts[index] = local.parts[index], None
        if all(p is None for p in local.parts):
            local.input = None  # every member served: hold no activations between forwards
        return part


_ATTENTION = ("q_proj", "k_proj", "v_proj")
_MLP = ("gate_proj", "up_proj")


@torch.no_grad()
def fuse_projections(model: PreTrainedModel) -> int:
    """Make each attention's q/k/v projections and each gated MLP's gate/up projections one
    matmul, in place, once the model is on its device; returns how many groups were fused. Only
    plain nn.Linear members of one input size, dtype and bias presence are fused (an unmerged
    adapter's layers are left alone). Idempotent. Building a group takes its weights' memory once
    more; the originals are then freed (the members' parameters are views into the new one)."""
    count = 0
    for module in model.modules():
        for names in (_ATTENTION, _MLP):
            linears = [getattr(module, n, None) for n in names]
            if not all(type(m) is nn.Linear for m in linears):
                continue
            first = linears[0]
            if any(m.in_features != first.in_features or m.weight.dtype != first.weight.dtype
                   or m.weight.device != first.weight.device or (m.bias is None) != (first.bias is None)
                   for m in linears):
                continue
            if names == _MLP and not (hasattr(module, "act_fn") and hasattr(module, "down_proj")
                                      and first.out_features == linears[1].out_features):
                continue
            group = _ProjectionGroup(linears)
            for i, (name, m) in enumerate(zip(names, linears)):
                setattr(module, name, SlicedLinear(m, group, i))
            if names == _MLP:
                # buffers, not parameters: the names and fingerprint stay the model's; a method,
                # so torch.compile sees a module and compiles once for every layer
                module.register_buffer("gate_up_weight", group.weight, persistent=False)
                module.register_buffer("gate_up_bias", group.bias, persistent=False)
                module.forward = types.MethodType(_gated_mlp_forward, module)
            count += 1
    return count


def _gated_mlp_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """transformers' gated MLP, down(act(gate(x)) * up(x)), with gate and up as one matmul."""
    gate, up = F.linear(x, self.gate_up_weight, self.gate_up_bias).chunk(2, dim=-1)  # [..., intermediate] each
    return self.down_proj(self.act_fn(gate) * up)
