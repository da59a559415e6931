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


def test_stacked_gqa_one_query_per_row_with_its_own_length():
    # a GenerationBatch decode step on CUDA: one query per row, each row masked to its own length
    g = torch.Generator().manual_seed(1)
    query, key, value = (torch.randn(shape, generator=g) for shape in ((3, 6, 1, 8), (3, 2, 9, 8), (3, 2, 9, 8)))
    mask = (torch.arange(9)[None, :] < torch.tensor([9, 4, 1])[:, None])[:, None, None, :]  # [3, 1, 1, 9]
    expected = torch.nn.functional.scaled_dot_product_attention(query, _repeat(key, 3), _repeat(value, 3),
                                                                attn_mask=mask)
    assert (stacked_gqa_sdpa(query, key, value, mask) - expected).abs().max().item() <= 1e-5
    alone = torch.nn.functional.scaled_dot_product_attention(query[2:], key[2:, :, :1].repeat_interleave(3, 1),
                                                             value[2:, :, :1].repeat_interleave(3, 1))
    assert (expected[2:] - alone).abs().max().item() <= 1e-6  # the mask really cut row 2 to one key
