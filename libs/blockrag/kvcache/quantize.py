"""QuantizedKV: one block's KV in int8 or float8 e4m3 with float32 scales (a KVCompression).

Symmetric absmax scaling, computed in float32:

    scale = amax / QMAX          amax over (tokens, head_dim) per (layer, head), or over head_dim
                                 per (layer, head, token) for the per-token settings
    q     = x / scale            rounded to the nearest int8 (clamped to +-127), or cast to e4m3
                                 (round to nearest even; |x / scale| <= 448, its largest finite)
    x'    = q * scale            in the block's own dtype, on the reader's device

Error bounds (tested): int8 |x - x'| <= scale / 2; e4m3 |x - x'| <= max(|x| / 16, scale / 1024)
(3 mantissa bits; below 2**-6 the subnormal step 2**-9), plus the rounding of x' to its dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from blockrag.attention.block_kv import BlockKV
from blockrag.errors import InvalidBlockError
from blockrag.kvcache.compression import KVCompression

QMAX = {"int8": 127.0, "float8_e4m3fn": 448.0}
STORAGE_DTYPES = {"int8": torch.int8, "float8_e4m3fn": torch.float8_e4m3fn}
# an all-zero head gets this scale instead of 0 (x / 0): its zeros stay zeros
_MIN_SCALE = torch.finfo(torch.float32).tiny


@dataclass(frozen=True, eq=False)
class QuantizedKV:
    """keys, values: [layers, kv_heads, L, head_dim] int8 / float8_e4m3fn; key_scale,
    value_scale: float32 [layers, kv_heads, 1, 1] (per head) or [layers, kv_heads, L, 1]
    (per token); dtype: the block's dtype before compression, the one decompress returns."""

    token_ids: tuple[int, ...]
    keys: torch.Tensor
    values: torch.Tensor
    key_scale: torch.Tensor
    value_scale: torch.Tensor
    dtype: torch.dtype
    compression: KVCompression

    @property
    def nbytes(self) -> int:
        """Bytes held: the quantized tensors and their scales."""
        return sum(t.nbytes for t in (self.keys, self.values, self.key_scale, self.value_scale))

    @property
    def num_tokens(self) -> int:
        return self.keys.shape[2]

    def decompress(self, device: torch.device | str | None = None) -> BlockKV:
        """The block in its own dtype on ``device`` (default: where the quantized tensors are);
        the int8/fp8 tensors travel, the float copy is made there."""
        device = self.keys.device if device is None else device
        return BlockKV(self.token_ids, _dequantize(self.keys, self.key_scale, self.dtype, device),
                       _dequantize(self.values, self.value_scale, self.dtype, device))


def compress(kv: BlockKV, compression: KVCompression) -> QuantizedKV:
    """``kv`` under ``compression`` (not NONE), on the device it is on.

    InvalidBlockError for KV with a non-finite value (no scale represents it) and ValueError for
    NONE (uncompressed KV stays a BlockKV)."""
    storage = compression.storage
    if storage is None:
        raise ValueError("KVCompression.NONE keeps the BlockKV itself; there is nothing to compress")
    keys, key_scale = _quantize(kv.keys, storage, compression.per_token)
    values, value_scale = _quantize(kv.values, storage, compression.per_token)
    return QuantizedKV(kv.token_ids, keys, values, key_scale, value_scale, kv.dtype, compression)


def scale_shape(compression: KVCompression, kv_shape: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """The shape of a scale tensor of KV of ``kv_shape`` [layers, kv_heads, L, head_dim]."""
    layers, heads, tokens, _ = kv_shape
    return (layers, heads, tokens if compression.per_token else 1, 1)


def _quantize(x: torch.Tensor, storage: str, per_token: bool) -> tuple[torch.Tensor, torch.Tensor]:
    # x: [layers, kv_heads, L, head_dim] -> (q of the same shape, scale [layers, kv_heads, L or 1, 1])
    x = x.detach().float()
    dims = (3,) if per_token else (2, 3)
    amax = x.abs().amax(dim=dims, keepdim=True)
    if not bool(torch.isfinite(amax).all()):
        raise InvalidBlockError("cannot compress KV holding inf or NaN: no scale represents it")
    qmax = QMAX[storage]
    scale = (amax / qmax).clamp_min(_MIN_SCALE)
    scaled = x / scale
    if storage == "int8":
        q = scaled.round().clamp_(-qmax, qmax).to(torch.int8)
    else:
        q = scaled.clamp_(-qmax, qmax).to(torch.float8_e4m3fn)
    return q.contiguous(), scale.contiguous()


def _dequantize(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    q, scale = q.to(device), scale.to(device)
    return (q.to(torch.float32) * scale).to(dtype)
