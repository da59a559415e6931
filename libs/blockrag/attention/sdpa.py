"""`block_sdpa`: transformers' SDPA attention, with grouped-query heads kept grouped on the CPU.

transformers only passes enable_gqa to SDPA when there is no mask (CUDA kernels would fall back
to the math path with one). The final block of a block-attention prompt always has a mask, so
stock `sdpa` copies every layer's cached keys and values num_heads / num_kv_heads times
(2K context on the default model: ~45 ms of a ~180 ms prefill on 2 cores). The CPU kernel takes
a mask and GQA together, so there we skip the copy; elsewhere we defer to the stock function.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "block_sdpa"


def block_sdpa_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                       is_causal: bool | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """query [B, Hq, M, D], key/value [B, Hkv, N, D], attention_mask [B, 1, M, N] additive or bool."""
    grouped = query.shape[1] != key.shape[1]
    plain = kwargs.get("position_bias") is None and kwargs.get("softcap") is None and kwargs.get("cache") is None
    if not (grouped and attention_mask is not None and query.device.type == "cpu" and plain):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask[:, :, :, : key.shape[-2]], dropout_p=dropout,
        scale=scaling, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None  # [B, M, Hq, D]


AttentionInterface.register(NAME, block_sdpa_forward)
AttentionMaskInterface.register(NAME, sdpa_mask)
