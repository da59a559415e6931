"""QuantizedKV and KVCompression: exact values on fixed tensors, error bounds, bytes held."""

from __future__ import annotations

import pytest
import torch

from blockrag.attention.block_kv import BlockKV
from blockrag.errors import InvalidBlockError, InvalidRequestError
from blockrag.kvcache.compression import KVCompression
from blockrag.kvcache.quantize import compress

COMPRESSED = [s for s in KVCompression if s is not KVCompression.NONE]


def one_head(keys: list[list[float]], values: list[list[float]] | None = None) -> BlockKV:
    """A block of one layer and one head: [1, 1, L, head_dim]."""
    k = torch.tensor(keys, dtype=torch.float32)[None, None]
    v = k.clone() if values is None else torch.tensor(values, dtype=torch.float32)[None, None]
    return BlockKV(tuple(range(1, len(keys) + 1)), k, v)


def random_kv(shape=(3, 2, 9, 16), dtype=torch.float32, seed=0) -> BlockKV:
    g = torch.Generator().manual_seed(seed)
    keys = (torch.randn(shape, generator=g) * torch.linspace(0.1, 8.0, shape[-1])).to(dtype)  # uneven channels
    values = torch.randn(shape, generator=g).to(dtype)
    return BlockKV(tuple(range(shape[2])), keys, values)


def test_parse_names_and_refuses_others() -> None:
    assert KVCompression.parse("int8_token") is KVCompression.INT8_TOKEN
    assert KVCompression.parse(KVCompression.FP8_HEAD) is KVCompression.FP8_HEAD
    for bad in ("int4", "INT8_HEAD", "", None, 8):
        with pytest.raises(InvalidRequestError, match="none, int8_head, int8_token, fp8_head"):
            KVCompression.parse(bad)


def test_int8_head_exact_values() -> None:
    # amax 1.27: scale 0.01, every value here is a whole number of steps (no rounding ties)
    kv = one_head([[0.0, 0.26, -0.5, 1.27], [0.03, -0.07, 0.11, -1.0]])
    q = compress(kv, KVCompression.INT8_HEAD)
    assert q.keys.dtype == torch.int8 and q.key_scale.shape == (1, 1, 1, 1)
    assert q.keys[0, 0].tolist() == [[0, 26, -50, 127], [3, -7, 11, -100]]
    assert q.key_scale.item() == pytest.approx(0.01, rel=1e-6)
    out = q.decompress()
    assert out.dtype == torch.float32 and out.token_ids == kv.token_ids
    assert torch.allclose(out.keys, kv.keys, atol=1e-6)


def test_int8_token_scales_each_token_alone() -> None:
    # token 2's values are 100x smaller than token 1's: one scale per head rounds them to a step of
    # 0.01 (error up to 0.005), a scale per token keeps them to 1/127 of their own size
    kv = one_head([[0.0, 0.26, -0.5, 1.27], [0.0013, -0.0029, 0.0041, 0.0127]])
    per_head = compress(kv, KVCompression.INT8_HEAD)
    per_token = compress(kv, KVCompression.INT8_TOKEN)
    assert per_token.key_scale.shape == (1, 1, 2, 1)
    assert per_token.key_scale[0, 0, :, 0].tolist() == pytest.approx([0.01, 0.0001], rel=1e-5)
    assert per_token.keys[0, 0, 1].tolist() == [13, -29, 41, 127]
    assert per_head.keys[0, 0, 1].tolist() == [0, 0, 0, 1]
    head_error = (per_head.decompress().keys - kv.keys)[0, 0, 1].abs().max().item()
    token_error = (per_token.decompress().keys - kv.keys)[0, 0, 1].abs().max().item()
    assert head_error == pytest.approx(0.0041, abs=1e-6) and token_error < 1e-7


def test_fp8_head_exact_values() -> None:
    # amax 448 (e4m3's largest finite): scale 1, so the stored values are e4m3 roundings of these
    kv = one_head([[448.0, 300.0, 17.5, -0.3], [0.0, 1.0, -2.75, 0.001]])
    q = compress(kv, KVCompression.FP8_HEAD)
    assert q.keys.dtype == torch.float8_e4m3fn and q.key_scale.item() == 1.0
    # 300 -> 288 (step 32 in [256, 448]); 17.5 -> 18 (step 2); -0.3 -> -0.3125 (step 1/32);
    # 0.001 -> 2**-9 = 0.001953125 (the subnormal step: 0.001 is past its half, 2**-10)
    assert q.decompress().keys[0, 0].tolist() == [[448.0, 288.0, 18.0, -0.3125], [0.0, 1.0, -2.75, 0.001953125]]


@pytest.mark.parametrize("setting", COMPRESSED)
def test_error_bounds_on_random_kv(setting: KVCompression) -> None:
    kv = random_kv()
    q = compress(kv, setting)
    out = q.decompress()
    for x, y, scale in ((kv.keys, out.keys, q.key_scale), (kv.values, out.values, q.value_scale)):
        error = (x - y).abs()
        if setting.storage == "int8":
            bound = scale / 2 * (1 + 1e-5)
        else:
            bound = torch.maximum(x.abs() / 16, scale / 1024) * (1 + 1e-5)
        assert bool((error <= bound).all()), float((error - bound).max())
        assert float(error.max()) > 0  # it is lossy: a bound that any identity would pass is no test


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_decompress_returns_the_blocks_dtype(dtype: torch.dtype) -> None:
    kv = random_kv(dtype=dtype)
    out = compress(kv, KVCompression.INT8_TOKEN).decompress()
    assert out.dtype == dtype and out.keys.shape == kv.keys.shape
    # within int8's step plus the dtype's own rounding (bf16: 8 bits of mantissa)
    assert float((out.keys.float() - kv.keys.float()).abs().max()) < 0.15


@pytest.mark.parametrize(("setting", "per_token_bytes"), [
    (KVCompression.INT8_HEAD, 2 * 30 * 3 * 64),  # the default model: 30 layers, 3 kv heads, head_dim 64
    (KVCompression.FP8_HEAD, 2 * 30 * 3 * 64),
    (KVCompression.INT8_TOKEN, 2 * 30 * 3 * (64 + 4)),  # a float32 scale per token and head
])
def test_bytes_held(setting: KVCompression, per_token_bytes: int) -> None:
    tokens = 20
    kv = random_kv(shape=(30, 3, tokens, 64))
    q = compress(kv, setting)
    per_head_scales = 0 if setting.per_token else 2 * 30 * 3 * 4
    assert q.nbytes == tokens * per_token_bytes + per_head_scales
    assert kv.nbytes == tokens * 46_080  # float32: 2 * 30 * 3 * 64 * 4
    assert q.nbytes * 3 < kv.nbytes


def test_all_zero_head_stays_zero_and_non_finite_is_refused() -> None:
    kv = one_head([[0.0, 0.0], [0.0, 0.0]])
    for setting in COMPRESSED:
        assert torch.equal(compress(kv, setting).decompress().keys, kv.keys)
    with pytest.raises(InvalidBlockError, match="inf or NaN"):
        compress(one_head([[1.0, float("inf")]]), KVCompression.INT8_HEAD)
    with pytest.raises(ValueError, match="NONE"):
        compress(kv, KVCompression.NONE)
