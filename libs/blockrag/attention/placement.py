"""KV placement: rotate every block's keys to its offset and lay keys and values into a cache.

Two implementations of one operation:
- `place_blocks_torch`: per block, all layers at once, in PyTorch (any device; the CPU path).
- `place_blocks_triton`: every block, layer and head in ONE kernel launch on CUDA. A Python
  loop over 64 blocks x 32 layers of small torch ops is launch-bound (~100 us of launches for
  ~2 ms of bytes at 32K context on an 8B model); the kernel reads each source byte once and
  writes each destination byte once. Sources may be device memory or pinned host memory: under
  unified addressing a kernel reads pinned host pages directly over PCIe ("zero-copy"), which
  fuses the host-to-device copy with the rotation.

Layouts: source keys/values [layers, H, L, D] contiguous (BlockKV); destination buffers
[layers, 1, H, capacity, D] contiguous (BlockCache). The rotation is computed in fp32.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from blockrag.attention.block_kv import BlockKV

if TYPE_CHECKING:
    from blockrag.attention.rotary import RotaryReencoder


def place_blocks(kvs: Sequence[BlockKV], offsets: Sequence[int], reencoder: RotaryReencoder,
                 key_buffer: torch.Tensor, value_buffer: torch.Tensor, host_reads: str = "staged") -> None:
    """Rotate each block's keys to its offset and copy its values there, all layers at once;
    key_buffer/value_buffer: [layers, 1, H, capacity, D] contiguous (a BlockCache's, or a KV slot).

    On CUDA one Triton launch places every block. Blocks in pinned host memory are read in
    place by the kernel (host_reads="direct") or first copied to the device
    (host_reads="staged"); other blocks are converted to the buffers' device and dtype first.
    """
    device, dtype = key_buffer.device, key_buffer.dtype
    if device.type == "cuda" and triton_available():
        def ready(kv: BlockKV) -> bool:
            resident = kv.keys.device == device or (host_reads == "direct" and kv.keys.is_pinned())
            return resident and kv.dtype == dtype and kv.keys.is_contiguous() and kv.values.is_contiguous()

        kvs = [kv if ready(kv) else kv.to(device, dtype, non_blocking=True) for kv in kvs]
        place_blocks_triton(kvs, offsets, reencoder, key_buffer, value_buffer)
    else:
        place_blocks_torch(kvs, offsets, reencoder, key_buffer, value_buffer)


def place_blocks_torch(kvs: Sequence[BlockKV], offsets: Sequence[int], reencoder: RotaryReencoder,
                       key_buffer: torch.Tensor, value_buffer: torch.Tensor) -> None:
    """key_buffer/value_buffer: [layers, 1, H, capacity, D]; block i goes to [offsets[i], +L_i)."""
    for kv, offset in zip(kvs, offsets):
        end = offset + kv.num_tokens
        keys = kv.keys.to(key_buffer.device, non_blocking=True)
        values = kv.values.to(value_buffer.device, non_blocking=True)
        reencoder.rotate(keys, offset, out=key_buffer[:, 0, :, offset:end])
        value_buffer[:, 0, :, offset:end].copy_(values)


@functools.cache
def triton_available() -> bool:
    """True where the Triton kernel can run (CUDA device and triton importable)."""
    if not torch.cuda.is_available():
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def place_blocks_triton(kvs: Sequence[BlockKV], offsets: Sequence[int], reencoder: RotaryReencoder,
                        key_buffer: torch.Tensor, value_buffer: torch.Tensor) -> None:
    """The same as place_blocks_torch, in one launch. Sources on the buffers' CUDA device or in
    pinned host memory (read in place); every source must share the buffers' dtype."""
    from blockrag.attention import placement_kernel

    placement_kernel.launch(kvs, offsets, reencoder, key_buffer, value_buffer)
