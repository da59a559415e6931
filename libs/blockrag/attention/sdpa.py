"""`block_sdpa`: transformers' SDPA attention, with grouped-query heads kept grouped.

transformers only passes enable_gqa to SDPA when there is no mask (CUDA kernels would fall back
to the math path with one). The final block of a block-attention prompt always has a mask, so
stock `sdpa` copies every layer's cached keys and values num_heads / num_kv_heads times:
2K context on the default model, ~45 ms of a ~180 ms prefill on 2 cores; 32K context on an
8B model, ~17 GB of copies per prefill on a GPU. Instead:
- CPU: the kernel takes a mask and GQA together (enable_gqa=True), for any query length (a
  GenerationBatch's decode step masks each row's one query to its own length).
- CUDA: the query heads that share a KV head are stacked along the sequence ([B, Hkv, G*M, D]),
  the mask repeated to match, so each KV head is read once by the memory-efficient kernel.
- CUDA, the engine's final block over its cache (the engine passes blockrag_final_block=True,
  so the mask is known to be lower-right causal): a split-over-keys Triton kernel
  (final_block_kernel.py); SDPA's kernels leave most of the GPU idle at long context.
Everything else (no mask, as in a lone sequence's decoding; softcap, biases) goes to the stock function.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from blockrag.attention.mask import to_additive
from blockrag.attention.placement import triton_available

NAME = "block_sdpa"


def block_sdpa_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                       is_causal: bool | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """query [B, Hq, M, D], key/value [B, Hkv, N, D], attention_mask [B, 1, M, N] additive (as
    block_sdpa_mask and BatchCache.prepare give it) or bool."""
    final_block = kwargs.pop("blockrag_final_block", False)
    kv_length = kwargs.pop("blockrag_kv_length", None)  # set by CUDA-graph prefill (graphs.py)
    grouped = query.shape[1] != key.shape[1]
    plain = kwargs.get("position_bias") is None and kwargs.get("softcap") is None and kwargs.get("cache") is None
    if final_block and plain and query.is_cuda and query.shape[0] == 1 and triton_available():
        from blockrag.attention.final_block_kernel_support import SUPPORTED_HEAD_DIMS

        if query.shape[-1] in SUPPORTED_HEAD_DIMS:
            from blockrag.attention.final_block_kernel import final_block_attention

            return final_block_attention(query, key, value, scaling, kv_length), None
    # one-token queries come with a mask only from a GenerationBatch's decode step (rows of
    # different lengths); they take the grouped paths too, not repeat_kv's copies of every cache
    if not (grouped and attention_mask is not None and plain):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    mask = attention_mask[:, :, :, : key.shape[-2]]
    if query.device.type == "cpu":
        out = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling, enable_gqa=True)
    else:
        out = stacked_gqa_sdpa(query, key, value, mask, dropout, scaling)
    return out.transpose(1, 2).contiguous(), None  # [B, M, Hq, D]


def stacked_gqa_sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor,
                     dropout: float = 0.0, scaling: float | None = None) -> torch.Tensor:
    """Masked grouped-query attention without repeating K/V: query [B, Hq, M, D], key/value
    [B, Hkv, N, D], mask [B or 1, 1, M, N] -> [B, Hq, M, D]."""
    b, heads, m, d = query.shape
    kv_heads, n = key.shape[1], key.shape[2]
    groups = heads // kv_heads
    # query head h reads KV head h // groups (repeat_kv's order), so a reshape stacks each
    # KV head's query heads along the sequence: [B, Hkv, G*M, D]
    stacked = query.reshape(b, kv_heads, groups * m, d)
    mask = mask.expand(b, 1, m, n).unsqueeze(2).expand(b, 1, groups, m, n).reshape(b, 1, groups * m, n)
    out = torch.nn.functional.scaled_dot_product_attention(stacked, key, value, attn_mask=mask,
                                                           dropout_p=dropout, scale=scaling)
    return out.reshape(b, heads, m, d)


def block_sdpa_mask(*args, dtype: torch.dtype = torch.float32, **kwargs) -> torch.Tensor | None:
    """transformers' SDPA mask ([B, 1, M, N] bool, or None where plain causal attention needs
    none), made additive in the model's dtype once per forward. Given a bool mask, SDPA converts
    it inside every call: 30 conversions of the [1, 1, 24, 2072] final-block mask per cached
    prefill on the default model (bench/serving_cpu.py)."""
    mask = sdpa_mask(*args, **kwargs)
    return to_additive(mask, dtype) if mask is not None and mask.dtype == torch.bool else mask


AttentionInterface.register(NAME, block_sdpa_forward)
AttentionMaskInterface.register(NAME, block_sdpa_mask)
