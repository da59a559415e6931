"""The block-attention mask: each context block attends causally inside itself; the final
block attends causally to every earlier token."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def block_mask(block_lengths: Sequence[int], final_length: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Bool [N, N] with N = sum(block_lengths) + final_length; True where query q may attend key k."""
    lengths = list(block_lengths) + ([final_length] if final_length else [])
    # block id per position; the final block gets id -1 and sees everything before it
    ids = torch.repeat_interleave(torch.arange(len(lengths), device=device), torch.tensor(lengths, device=device))
    if final_length:
        ids[-final_length:] = -1
    n = ids.numel()
    causal = torch.ones(n, n, dtype=torch.bool, device=device).tril()
    same_block = ids[:, None] == ids[None, :]
    is_final_query = (ids == -1)[:, None]
    return causal & (same_block | is_final_query)


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bool [N, N] -> float [1, 1, N, N]: 0 where allowed, the dtype's minimum elsewhere. Both the
    eager and the SDPA attention of transformers take this form as a ready 4D mask."""
    return to_additive(allowed, dtype)[None, None]


def to_additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bool of any shape -> float of the same shape: 0 where allowed, the dtype's minimum elsewhere
    (finite: a row with no allowed key gives a uniform average, not NaN; none of ours has one).
    SDPA adds a float mask as it is, where a bool mask is first converted to this form inside
    the call, again in every layer."""
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)
