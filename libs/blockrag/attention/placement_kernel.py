"""The Triton kernel behind place_blocks_triton (imported only where Triton and CUDA exist)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from blockrag.attention.block_kv import BlockKV
from blockrag.attention.rotary import RotaryReencoder
from blockrag.errors import InvalidBlockError

_TL_DTYPES = {torch.bfloat16: tl.bfloat16, torch.float16: tl.float16, torch.float32: tl.float32}
_BLOCK_T = 32  # tokens per program: 32 x 128 dims x 2 bytes = 8 KB of keys and 8 KB of values


@triton.jit
def _place_kernel(key_ptrs, value_ptrs, lengths, offsets, cos, sin, dst_keys, dst_values, capacity,
                  DTYPE: tl.constexpr, HALF: tl.constexpr, BLOCK_T: tl.constexpr):
    # grid: (block, layer * H + head, token tile)
    block = tl.program_id(0)
    lh = tl.program_id(1).to(tl.int64)
    tile = tl.program_id(2)
    length = tl.load(lengths + block)
    tokens = tile * BLOCK_T + tl.arange(0, BLOCK_T)
    live = (tokens < length)[:, None]
    offset = tl.load(offsets + block)
    dims = tl.arange(0, HALF)[None, :]
    src_k = tl.load(key_ptrs + block).to(tl.pointer_type(DTYPE))
    src_v = tl.load(value_ptrs + block).to(tl.pointer_type(DTYPE))
    src = (lh * length + tokens[:, None]) * (2 * HALF) + dims  # [BLOCK_T, HALF] in [layers*H, L, D]
    dst = (lh * capacity + offset + tokens[:, None]) * (2 * HALF) + dims  # in [layers*H, cap, D]
    k1 = tl.load(src_k + src, mask=live, other=0.0).to(tl.float32)
    k2 = tl.load(src_k + src + HALF, mask=live, other=0.0).to(tl.float32)
    c = tl.load(cos + block * HALF + dims)  # [1, HALF] fp32: cos/sin of this block's offset
    s = tl.load(sin + block * HALF + dims)
    tl.store(dst_keys + dst, (k1 * c - k2 * s).to(DTYPE), mask=live)
    tl.store(dst_keys + dst + HALF, (k2 * c + k1 * s).to(DTYPE), mask=live)
    v1 = tl.load(src_v + src, mask=live)
    v2 = tl.load(src_v + src + HALF, mask=live)
    tl.store(dst_values + dst, v1, mask=live)
    tl.store(dst_values + dst + HALF, v2, mask=live)


@dataclass(frozen=True)
class Plan:
    """What one launch needs besides the buffers: built once, launched any number of times over
    sources that keep their addresses (the layer feed's staging slots, layer_feed.py)."""

    table: torch.Tensor  # [4, n] int64 on the device: key pointers, value pointers, lengths, offsets
    cos: torch.Tensor  # [n, D/2] fp32: each block's offset
    sin: torch.Tensor
    blocks: int
    longest: int
    half_dim: int


def plan(kvs: Sequence[BlockKV], offsets: Sequence[int], reencoder: RotaryReencoder,
         key_buffer: torch.Tensor) -> Plan:
    """Check the sources against key_buffer and build their table (one H2D copy)."""
    device, dtype = key_buffer.device, key_buffer.dtype
    for kv in kvs:
        if kv.dtype != dtype or not (kv.keys.is_contiguous() and kv.values.is_contiguous()):
            raise InvalidBlockError(f"blocks must be contiguous {dtype} to be placed by the kernel; got {kv.dtype}")
        if kv.keys.device != device and not kv.keys.is_pinned():
            raise InvalidBlockError("host blocks must be in pinned memory to be read by the kernel")
    # one small per-call table, one H2D copy: rows of key pointers, value pointers, lengths and
    # offsets ([4, n], each row contiguous for the kernel); the offsets' cos/sin are formed on the
    # device from it, in float64 (no pinned staging: a fresh pinned allocation costs milliseconds)
    table = torch.tensor([[kv.keys.data_ptr() for kv in kvs], [kv.values.data_ptr() for kv in kvs],
                          [kv.num_tokens for kv in kvs], list(offsets)], dtype=torch.int64, device=device)
    cos, sin = reencoder.cos_sin_on(table[3], device)
    return Plan(table, cos, sin, len(kvs), max(kv.num_tokens for kv in kvs), reencoder.half_dim)


def run(plan: Plan, key_buffer: torch.Tensor, value_buffer: torch.Tensor) -> None:
    """Place the plan's sources into key_buffer/value_buffer [layers, 1, H, capacity, D]; each
    source holds the same number of layers ([layers, H, L, D])."""
    layers_x_heads = key_buffer.shape[0] * key_buffer.shape[2]
    grid = (plan.blocks, layers_x_heads, triton.cdiv(plan.longest, _BLOCK_T))
    # Sources must stay alive until the stream has run the kernel: prefill holds the blocks
    # through the forward that follows on the same stream. The tables are stream-ordered by
    # PyTorch's caching allocators.
    _place_kernel[grid](plan.table[0], plan.table[1], plan.table[2], plan.table[3], plan.cos, plan.sin,
                        key_buffer, value_buffer, key_buffer.shape[3], DTYPE=_TL_DTYPES[key_buffer.dtype],
                        HALF=plan.half_dim, BLOCK_T=_BLOCK_T, num_warps=4)


def launch(kvs: Sequence[BlockKV], offsets: Sequence[int], reencoder: RotaryReencoder,
           key_buffer: torch.Tensor, value_buffer: torch.Tensor) -> None:
    """One launch placing every block; see placement.py for the layouts."""
    if kvs:
        run(plan(kvs, offsets, reencoder, key_buffer), key_buffer, value_buffer)
