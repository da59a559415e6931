"""Where the CUDA fast paths apply, decided without importing Triton on machines that lack it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from blockrag.attention.placement import triton_available
from blockrag.attention.sdpa import NAME as BLOCK_SDPA

if TYPE_CHECKING:
    from blockrag.attention.engine import BlockAttentionEngine

SUPPORTED_HEAD_DIMS = (16, 32, 64, 128)


def graphs_supported(engine: BlockAttentionEngine) -> bool:
    """CUDA graphs need the split-over-keys kernel on every layer: CUDA, Triton, block_sdpa and a
    head dim the kernel takes."""
    return (engine.device.type == "cuda" and triton_available()
            and engine.model.config._attn_implementation == BLOCK_SDPA and engine.head_dim in SUPPORTED_HEAD_DIMS)
