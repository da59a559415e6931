"""KVCodec: exact round trips, header fields, and rejection of damaged or foreign bytes."""

from __future__ import annotations

import hashlib

import pytest
import safetensors.torch
import torch

from blockrag.attention.block_kv import BlockKV
from blockrag.errors import InvalidBlockError, KVCodecError, KVIntegrityError
from blockrag.kvcache import KVBindingError, KVCodec, KVFingerprintMismatchError, token_ids_digest

FP = "test-model@rev1"
BOUND = {"tenant": "acme", "block_id": "blk_0123"}  # what every frame here is computed for
PREFIX = 4 + 1 + 32  # magic, version, digest


def make_kv(num_tokens: int = 5, dtype: torch.dtype = torch.float32, seed: int = 0) -> BlockKV:
    g = torch.Generator().manual_seed(seed)
    shape = (2, 3, num_tokens, 4)
    keys = torch.randn(shape, generator=g).to(dtype)
    values = torch.randn(shape, generator=g).to(dtype)
    return BlockKV(tuple(range(100, 100 + num_tokens)), keys, values)


def frame(payload: bytes, version: int = 2) -> bytes:
    """A frame with a valid digest around any payload, to reach the checks after the digest."""
    return b"BRKV" + bytes((version,)) + hashlib.sha256(payload).digest() + payload


def metadata(kv: BlockKV, **overrides: str) -> dict[str, str]:
    meta = {
        "format_version": "2",
        "model_fingerprint": FP,
        **BOUND,
        "dtype": str(kv.dtype).removeprefix("torch."),
        "num_layers": str(kv.num_layers),
        "num_kv_heads": str(kv.num_kv_heads),
        "head_dim": str(kv.head_dim),
        "num_tokens": str(kv.num_tokens),
        "token_ids_sha256": token_ids_digest(kv.token_ids),
    }
    meta.update(overrides)
    return meta


def tensors(kv: BlockKV) -> dict[str, torch.Tensor]:
    return {
        "keys": kv.keys,
        "values": kv.values,
        "token_ids": torch.tensor(kv.token_ids, dtype=torch.int64),
    }


def assert_same(a: BlockKV, b: BlockKV) -> None:
    assert a.token_ids == b.token_ids
    assert a.keys.dtype == b.keys.dtype and a.values.dtype == b.values.dtype
    assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("num_tokens", [1, 7])
def test_round_trip(dtype: torch.dtype, num_tokens: int) -> None:
    kv = make_kv(num_tokens, dtype)
    data = KVCodec.encode(kv, FP, **BOUND)
    assert data[:5] == b"BRKV\x02"
    out = KVCodec.decode(data, expected_fingerprint=FP)
    assert_same(out, kv)
    assert out.keys.device.type == "cpu"


def test_encoding_is_deterministic() -> None:
    kv = make_kv()
    assert KVCodec.encode(kv, FP, **BOUND) == KVCodec.encode(kv, FP, **BOUND)


def test_non_contiguous_and_shared_inputs() -> None:
    kv = make_kv(4)
    transposed = kv.keys.transpose(2, 3).contiguous().transpose(2, 3)
    assert not transposed.is_contiguous()
    strided = BlockKV(kv.token_ids, transposed, kv.values)
    assert_same(KVCodec.decode(KVCodec.encode(strided, FP, **BOUND)), kv)
    # The same tensor as keys and values, and views of one packed tensor.
    same = BlockKV(kv.token_ids, kv.keys, kv.keys)
    assert_same(KVCodec.decode(KVCodec.encode(same, FP, **BOUND)), same)
    packed = torch.stack([kv.keys, kv.values])
    views = BlockKV(kv.token_ids, packed[0], packed[1])
    assert_same(KVCodec.decode(KVCodec.encode(views, FP, **BOUND)), kv)


def test_decoded_tensors_own_their_memory() -> None:
    data = KVCodec.encode(make_kv(), FP, **BOUND)
    first = KVCodec.decode(data)
    first.keys.add_(1.0)
    assert_same(KVCodec.decode(data), make_kv())


def test_accepts_bytearray_and_memoryview() -> None:
    kv = make_kv()
    data = KVCodec.encode(kv, FP, **BOUND)
    assert_same(KVCodec.decode(bytearray(data)), kv)
    assert_same(KVCodec.decode(memoryview(data)), kv)


def test_header_fields() -> None:
    kv = make_kv(6, torch.bfloat16)
    data = KVCodec.encode(kv, FP, **BOUND)
    h = KVCodec.read_header(data)
    assert h.format_version == 2
    assert h.model_fingerprint == FP
    assert h.dtype == "bfloat16" and h.torch_dtype == torch.bfloat16
    assert (h.num_layers, h.num_kv_heads, h.head_dim, h.num_tokens) == (2, 3, 4, 6)
    assert h.kv_shape == tuple(kv.keys.shape)
    assert h.token_ids_sha256 == token_ids_digest(kv.token_ids)
    assert h.payload_sha256 == hashlib.sha256(data[PREFIX:]).hexdigest() == data[5:PREFIX].hex()


def test_any_flipped_byte_after_version_fails_integrity() -> None:
    data = KVCodec.encode(make_kv(1), FP, **BOUND)
    for i in range(5, len(data)):  # digest and payload
        bad = bytearray(data)
        bad[i] ^= 0xFF
        with pytest.raises(KVIntegrityError):
            KVCodec.decode(bytes(bad))
        with pytest.raises(KVIntegrityError):
            KVCodec.read_header(bytes(bad))


def test_read_header_without_verify_skips_digest() -> None:
    data = bytearray(KVCodec.encode(make_kv(), FP, **BOUND))
    data[-1] ^= 0xFF  # inside tensor data, not the JSON header
    assert KVCodec.read_header(bytes(data), verify=False).model_fingerprint == FP


@pytest.mark.parametrize("cut", ["0", "3", "10", "36", "37", "half", "len-1"])
def test_truncated(cut: str) -> None:
    data = KVCodec.encode(make_kv(), FP, **BOUND)
    n = {"half": len(data) // 2, "len-1": len(data) - 1}.get(cut) or int(cut)
    with pytest.raises(KVCodecError):
        KVCodec.decode(data[:n])
    if n >= PREFIX:  # the frame prefix survived, so the digest is what catches it
        with pytest.raises(KVIntegrityError):
            KVCodec.decode(data[:n])
    else:
        with pytest.raises(KVCodecError, match="too short"):
            KVCodec.decode(data[:n])


def test_wrong_magic() -> None:
    data = KVCodec.encode(make_kv(), FP, **BOUND)
    with pytest.raises(KVCodecError, match="magic") as info:
        KVCodec.decode(b"XRKV" + data[4:])
    assert not isinstance(info.value, KVIntegrityError)


def test_wrong_version() -> None:
    data = KVCodec.encode(make_kv(), FP, **BOUND)
    with pytest.raises(KVCodecError, match="version 2") as info:
        KVCodec.decode(data[:4] + b"\x03" + data[5:])
    assert not isinstance(info.value, KVIntegrityError)


def test_fingerprint_mismatch() -> None:
    data = KVCodec.encode(make_kv(), FP, **BOUND)
    with pytest.raises(KVFingerprintMismatchError) as info:
        KVCodec.decode(data, expected_fingerprint="other-model@rev9")
    assert isinstance(info.value, KVCodecError)
    assert FP in str(info.value) and "other-model@rev9" in str(info.value)
    assert_same(KVCodec.decode(data, expected_fingerprint=None), make_kv())


def test_garbage_payload_with_valid_digest() -> None:
    with pytest.raises(KVCodecError) as info:
        KVCodec.decode(frame(b"\x00" * 64))
    assert not isinstance(info.value, KVIntegrityError)


def test_unreadable_safetensors_is_wrapped() -> None:
    kv = make_kv()
    blob = bytearray(safetensors.torch.save(tensors(kv), metadata=metadata(kv)))
    # Keep the JSON header (and so the metadata) but cut the tensor data short.
    with pytest.raises(KVCodecError, match="safetensors") as info:
        KVCodec.decode(frame(bytes(blob[:-8])))
    assert info.value.__cause__ is not None


@pytest.mark.parametrize(
    "overrides",
    [
        {"num_tokens": "4"},
        {"num_layers": "3"},
        {"head_dim": "8"},
        {"dtype": "float16"},
        {"dtype": "int8"},
        {"format_version": "1"},
        {"num_tokens": "-5"},
        {"token_ids_sha256": "0" * 64},
        {"token_ids_sha256": "zz"},
    ],
)
def test_header_disagreeing_with_tensors(overrides: dict[str, str]) -> None:
    kv = make_kv()
    blob = safetensors.torch.save(tensors(kv), metadata=metadata(kv, **overrides))
    with pytest.raises(KVCodecError) as info:
        KVCodec.decode(frame(blob))
    assert not isinstance(info.value, KVIntegrityError)


def test_missing_header_field_and_extra_tensor() -> None:
    kv = make_kv()
    meta = metadata(kv)
    del meta["head_dim"]
    with pytest.raises(KVCodecError, match="head_dim"):
        KVCodec.decode(frame(safetensors.torch.save(tensors(kv), metadata=meta)))
    extra = {**tensors(kv), "bias": torch.zeros(1)}
    with pytest.raises(KVCodecError, match="tensors"):
        KVCodec.decode(frame(safetensors.torch.save(extra, metadata=metadata(kv))))


def test_encode_rejects_bad_input() -> None:
    kv = make_kv()
    with pytest.raises(ValueError, match="fingerprint"):
        KVCodec.encode(kv, "", **BOUND)
    with pytest.raises(InvalidBlockError, match="dtype"):
        KVCodec.encode(BlockKV(kv.token_ids, kv.keys, kv.values.half()), FP, **BOUND)
    with pytest.raises(InvalidBlockError, match="float64"):
        KVCodec.encode(BlockKV(kv.token_ids, kv.keys.double(), kv.values.double()), FP, **BOUND)


def test_binding_round_trip_and_header() -> None:
    data = KVCodec.encode(make_kv(), FP, **BOUND)
    h = KVCodec.read_header(data)
    assert (h.format_version, h.tenant, h.block_id) == (2, "acme", "blk_0123")
    assert_same(KVCodec.decode(data, FP, tenant="acme", block_id="blk_0123"), make_kv())


@pytest.mark.parametrize("expected", [{"tenant": "globex"}, {"block_id": "blk_9999"},
                                      {"tenant": "globex", "block_id": "blk_0123"}])
def test_foreign_tenant_or_block_is_refused(expected: dict[str, str]) -> None:
    data = KVCodec.encode(make_kv(), FP, **BOUND)
    with pytest.raises(KVBindingError) as info:
        KVCodec.decode(data, FP, **expected)
    assert isinstance(info.value, KVCodecError)
    # the refusal names neither side's tenant nor block: it may reach another tenant
    assert "acme" not in str(info.value) and "globex" not in str(info.value) and "blk_" not in str(info.value)


def test_binding_cannot_be_rewritten_without_breaking_the_checksum() -> None:
    data = KVCodec.encode(make_kv(), FP, **BOUND)
    forged = data.replace(b'"tenant":"acme"', b'"tenant":"acmf"')
    assert forged != data
    with pytest.raises(KVIntegrityError):
        KVCodec.decode(forged, FP, tenant="acmf", block_id="blk_0123")


def test_version_1_frame_is_refused_as_unbound() -> None:
    """A frame written before entries were bound: sound, but nothing says whose it is."""
    kv = make_kv()
    meta = metadata(kv, format_version="1")
    del meta["tenant"], meta["block_id"]
    old = frame(safetensors.torch.save(tensors(kv), metadata=meta), version=1)
    with pytest.raises(KVCodecError, match="not bound") as info:
        KVCodec.decode(old, FP, **BOUND)
    assert not isinstance(info.value, KVIntegrityError)


@pytest.mark.parametrize("field", ["tenant", "block_id"])
def test_encode_requires_a_binding(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        KVCodec.encode(make_kv(), FP, **{**BOUND, field: ""})
