"""Attention of the final block over a long cache, split over the keys (Triton, CUDA only).

The final block has few queries (M <= ~128) and a long context (N up to 32K+). Kernels that
parallelise over heads and query tiles only (SDPA's flash and memory-efficient kernels) launch
B x H x M/64 programs, ~32 on an 8B model, each streaming all N keys: a 132-SM H200 sits mostly
idle (~0.6 ms a layer at 32K, ~19 ms a prefill). Here each program takes one KV head, a tile of
64 stacked query rows (the G query heads sharing that KV head, times M positions) and one chunk
of keys; a second launch merges the chunks by their log-sum-exp (flash-decoding). K and V are
read once per KV head, never repeated per query head.

Mask: the final block's query m (0-based) sees keys 0 .. N - M + m (lower-right causal): every
cached token and the final block's own earlier tokens.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from blockrag.attention.final_block_kernel_support import SUPPORTED_HEAD_DIMS

__all__ = ["SUPPORTED_HEAD_DIMS", "final_block_attention"]

_BLOCK_R, _BLOCK_N = 64, 64


@triton.jit
def _partial_kernel(Q, K, V, O_part, L_part, stride_qh, stride_qm, stride_kh, stride_kn, stride_vh, stride_vn,
                    n_keys, len_ptr, m_len, groups, chunk, n_splits, scale_log2,
                    D: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
                    LEN_FROM_PTR: tl.constexpr):
    if LEN_FROM_PTR:  # CUDA graphs: the context length lives in device memory, set before each replay
        n_keys = tl.load(len_ptr)
    kv_head = tl.program_id(0)
    rows = tl.program_id(1) * BLOCK_R + tl.arange(0, BLOCK_R)  # stacked rows r = g * M + m
    split = tl.program_id(2)
    n_rows = groups * m_len
    row_ok = rows < n_rows
    m = rows % m_len
    q_head = kv_head * groups + rows // m_len
    d = tl.arange(0, D)
    q = tl.load(Q + q_head[:, None] * stride_qh + m[:, None] * stride_qm + d[None, :], mask=row_ok[:, None], other=0.0)
    last_key = n_keys - m_len + m  # [BLOCK_R]: the last key each row may see
    start = split * chunk
    end = tl.minimum(start + chunk, n_keys)
    m_i = tl.full([BLOCK_R], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_R], tl.float32)
    acc = tl.zeros([BLOCK_R, D], tl.float32)
    for n0 in range(start, end, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        col_ok = cols < end
        k = tl.load(K + kv_head * stride_kh + cols[None, :] * stride_kn + d[:, None], mask=col_ok[None, :], other=0.0)
        s = tl.dot(q, k, input_precision=PRECISION) * scale_log2  # [BLOCK_R, BLOCK_N], log2 units
        s = tl.where(col_ok[None, :] & (cols[None, :] <= last_key[:, None]), s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows that saw no key yet
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(V + kv_head * stride_vh + cols[:, None] * stride_vn + d[None, :], mask=col_ok[:, None], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new
    has = l_i > 0
    out = acc / tl.where(has, l_i, 1.0)[:, None]
    lse = tl.where(has, m_i + tl.log2(tl.where(has, l_i, 1.0)), float("-inf"))
    part = (kv_head * n_rows + rows) * n_splits + split  # O_part [Hkv, n_rows, S, D], L_part [Hkv, n_rows, S]
    tl.store(O_part + part[:, None] * D + d[None, :], out, mask=row_ok[:, None])
    tl.store(L_part + part, lse, mask=row_ok)


@triton.jit
def _merge_kernel(O_part, L_part, Out, stride_om, stride_oh, m_len, groups, n_splits,
                  D: tl.constexpr, S_PAD: tl.constexpr):
    kv_head = tl.program_id(0)
    row = tl.program_id(1)
    n_rows = groups * m_len
    s = tl.arange(0, S_PAD)
    s_ok = s < n_splits
    base = (kv_head * n_rows + row) * n_splits
    lse = tl.load(L_part + base + s, mask=s_ok, other=float("-inf"))
    top = tl.max(lse, 0)
    w = tl.where(s_ok & (lse > float("-inf")), tl.exp2(lse - top), 0.0)
    d = tl.arange(0, D)
    parts = tl.load(O_part + (base + s)[:, None] * D + d[None, :], mask=s_ok[:, None], other=0.0)
    out = tl.sum(parts * w[:, None], 0) / tl.sum(w, 0)
    q_head = kv_head * groups + row // m_len
    tl.store(Out + (row % m_len) * stride_om + q_head * stride_oh + d, out.to(Out.dtype.element_ty))


def tiles(n_rows: int) -> tuple[int, int, int, int]:
    """(rows a program, keys a step, warps, stages) for n_rows stacked query rows: a prefill's
    many rows in 128-row tiles (half the re-reads of each KV chunk; 170 against 209 us a layer
    for a 64-token question at 32K on the 8B shape, H100, bench/gpu/attention_kernel.py), a
    decode step's few in 64."""
    return (128, 64, 8, 3) if n_rows >= 128 else (_BLOCK_R, _BLOCK_N, 4, 2)


def final_block_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          scaling: float | None, kv_length: torch.Tensor | None = None,
                          config: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """query [1, Hq, M, D], key/value [1, Hkv, N, D] (any strides over N, D contiguous)
    -> [1, M, Hq, D], the layout transformers' attention functions return.

    kv_length: a 0-d int64 device tensor holding how many of the N keys are valid (N is then the
    capacity): the launch no longer depends on the length, so a CUDA graph can replay it.
    config: (rows a program, keys a step, warps, stages); default `tiles(rows)`."""
    _, heads, m_len, dim = query.shape
    kv_heads, n_keys = key.shape[1], key.shape[2]
    groups = heads // kv_heads
    n_rows = groups * m_len
    block_r, block_n, warps, stages = config or tiles(n_rows)
    row_tiles = triton.cdiv(n_rows, block_r)
    # enough programs to cover the SMs twice, chunks a whole number of key tiles
    sms = torch.cuda.get_device_properties(query.device).multi_processor_count
    want = max(1, min(triton.cdiv(2 * sms, kv_heads * row_tiles), triton.cdiv(n_keys, block_n)))
    chunk = triton.cdiv(triton.cdiv(n_keys, want), block_n) * block_n
    n_splits = triton.cdiv(n_keys, chunk)
    o_part = torch.empty(kv_heads, n_rows, n_splits, dim, device=query.device, dtype=torch.float32)
    l_part = torch.empty(kv_heads, n_rows, n_splits, device=query.device, dtype=torch.float32)
    scale = (scaling if scaling is not None else 1.0 / math.sqrt(dim)) * math.log2(math.e)
    q, k, v = query[0], key[0], value[0]
    _partial_kernel[(kv_heads, row_tiles, n_splits)](
        q, k, v, o_part, l_part, q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        n_keys, l_part if kv_length is None else kv_length, m_len, groups, chunk, n_splits, scale,
        D=dim, BLOCK_R=block_r, BLOCK_N=block_n,
        # fp32 inputs get true fp32 products (the exactness tests hold them to 1e-4); tf32 would not
        PRECISION="ieee" if query.dtype == torch.float32 else "tf32", LEN_FROM_PTR=kv_length is not None,
        num_warps=warps, num_stages=stages)
    out = torch.empty(1, m_len, heads, dim, device=query.device, dtype=query.dtype)
    _merge_kernel[(kv_heads, n_rows)](o_part, l_part, out, out.stride(1), out.stride(2), m_len, groups, n_splits,
                                      D=dim, S_PAD=max(2, triton.next_power_of_2(n_splits)), num_warps=1)
    return out
