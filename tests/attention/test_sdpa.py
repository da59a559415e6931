"""block_sdpa's grouped-query paths against SDPA over repeated K/V heads."""

import torch

from blockrag.attention.sdpa import stacked_gqa_sdpa


def _repeat(x, groups):
    return x.repeat_interleave(groups, dim=1)  # KV head j serves query heads j*G .. j*G+G-1


def test_stacked_gqa_equals_repeated_heads():
    g = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(shape, generator=g) for shape in ((2, 6, 5, 8), (2, 2, 9, 8), (2, 2, 9, 8)))
    mask = torch.zeros(1, 1, 5, 9)
    mask[..., 4:] = torch.triu(torch.full((5, 5), float("-inf")), 1)  # final block of 5 after 4 cached
    expected = torch.nn.functional.scaled_dot_product_attention(query, _repeat(key, 3), _repeat(value, 3),
                                                                attn_mask=mask)
    assert (stacked_gqa_sdpa(query, key, value, mask) - expected).abs().max().item() <= 1e-5
