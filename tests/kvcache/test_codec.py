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


# --- compression (blockrag.kvcache.compression) --------------------------------------------------

from blockrag.kvcache.codec import KVCompressionMismatchError  # noqa: E402
from blockrag.kvcache.compression import KVCompression  # noqa: E402
from blockrag.kvcache.quantize import compress  # noqa: E402

COMPRESSED = [s for s in KVCompression if s is not KVCompression.NONE]


def arange_kv(dtype: torch.dtype = torch.float32) -> BlockKV:
    """Fixed values that do not depend on a random generator: frames of them can be pinned."""
    x = torch.arange(2 * 3 * 5 * 4, dtype=torch.float32).reshape(2, 3, 5, 4)
    return BlockKV(tuple(range(100, 105)), (x / 7 - 8).to(dtype), (3 - x / 11).to(dtype))


# SHA-256 and length of the frames of arange_kv() written by the codec before compression existed:
# the default (uncompressed) path must keep every stored entry's bytes.
PINNED_FRAMES = {
    torch.float32: (1533, "5911d4120a495a33bf1c2f41ad98dea2f9a76068278df6e8e0439687b2b90f33"),
    torch.bfloat16: (1053, "698f0d57a683be3e35d5e95b4713507d793c16638c7382be23d1002d6238c8ed"),
    torch.float16: (1053, "9e7de87d28f77cf50f166b4ed52d71f60a4c407c18c82e6db72e43b486cc692f"),
}


@pytest.mark.parametrize("dtype", list(PINNED_FRAMES))
def test_uncompressed_frames_are_pinned(dtype: torch.dtype) -> None:
    for data in (KVCodec.encode(arange_kv(dtype), FP, **BOUND),
                 KVCodec.encode(arange_kv(dtype), FP, **BOUND, compression=KVCompression.NONE)):
        assert (len(data), hashlib.sha256(data).hexdigest()) == PINNED_FRAMES[dtype]
        assert b"kv_compression" not in data
        assert KVCodec.read_header(data).compression is KVCompression.NONE


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("setting", COMPRESSED)
def test_compressed_round_trip(setting: KVCompression, dtype: torch.dtype) -> None:
    kv = make_kv(7, dtype)
    data = KVCodec.encode(kv, FP, **BOUND, compression=setting)
    assert data == KVCodec.encode(kv, FP, **BOUND, compression=setting.value)  # deterministic, by name too
    header = KVCodec.read_header(data)
    assert header.compression is setting and header.dtype == str(dtype).removeprefix("torch.")
    out = KVCodec.decode(data, FP, **BOUND, compression=setting)
    expected = compress(kv, setting).decompress()  # the frame holds exactly what the host tier holds
    assert out.token_ids == kv.token_ids and out.dtype == dtype
    assert torch.equal(out.keys, expected.keys) and torch.equal(out.values, expected.values)
    assert not torch.equal(out.keys, kv.keys)  # lossy, and still close:
    assert float((out.keys.float() - kv.keys.float()).abs().max()) < 0.2
    # a reader that does not say its setting decodes what the frame says
    assert torch.equal(KVCodec.decode(data, FP).keys, expected.keys)


@pytest.mark.parametrize(("setting", "payload_bytes"), [
    # tensor bytes of make_kv(7): keys and values [2, 3, 7, 4] float32 = 2 * 672
    (KVCompression.INT8_HEAD, 2 * 168 + 2 * 6 * 4),  # int8 + one float32 scale per (layer, head)
    (KVCompression.FP8_HEAD, 2 * 168 + 2 * 6 * 4),
    (KVCompression.INT8_TOKEN, 2 * 168 + 2 * 42 * 4),  # one per (layer, head, token)
])
def test_compressed_frame_bytes(setting: KVCompression, payload_bytes: int) -> None:
    kv = make_kv(7)
    plain = KVCodec.encode(kv, FP, **BOUND)
    data = KVCodec.encode(kv, FP, **BOUND, compression=setting)
    tensors = safetensors.torch.load(data[PREFIX:])
    assert sum(t.nbytes for name, t in tensors.items() if name != "token_ids") == payload_bytes
    assert len(plain) - len(data) > 2 * 672 - payload_bytes - 200  # the JSON header grows by < 200 bytes


@pytest.mark.parametrize("setting", COMPRESSED)
def test_other_setting_is_a_mismatch(setting: KVCompression) -> None:
    data = KVCodec.encode(make_kv(), FP, **BOUND, compression=setting)
    for reader in KVCompression:
        if reader is setting:
            continue
        with pytest.raises(KVCompressionMismatchError, match="cache miss") as info:
            KVCodec.decode(data, FP, **BOUND, compression=reader)
        assert isinstance(info.value, KVCodecError) and not isinstance(info.value, KVIntegrityError)
    plain = KVCodec.encode(make_kv(), FP, **BOUND)
    with pytest.raises(KVCompressionMismatchError):
        KVCodec.decode(plain, FP, **BOUND, compression=setting)
    assert_same(KVCodec.decode(plain, FP, **BOUND, compression=KVCompression.NONE), make_kv())


def test_compression_cannot_be_rewritten_without_breaking_the_checksum() -> None:
    data = KVCodec.encode(make_kv(), FP, **BOUND, compression=KVCompression.INT8_HEAD)
    forged = data.replace(b'"kv_compression":"int8_head"', b'"kv_compression":"fp8_head"')
    assert forged != data and len(forged) == len(data) - 1
    with pytest.raises(KVIntegrityError):
        KVCodec.decode(forged)


def compressed_parts(setting: KVCompression = KVCompression.INT8_HEAD) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    kv = make_kv()
    q = compress(kv, setting)
    parts = {"keys": q.keys, "values": q.values, "keys_scale": q.key_scale, "values_scale": q.value_scale,
             "token_ids": torch.tensor(kv.token_ids, dtype=torch.int64)}
    return parts, metadata(kv, kv_compression=setting.value)


def test_hand_built_compressed_frame_decodes() -> None:
    """The layout documented in the codec, built here without it: a reader of the format needs no more."""
    parts, meta = compressed_parts()
    out = KVCodec.decode(frame(safetensors.torch.save(parts, metadata=meta)), FP)
    assert torch.equal(out.keys, compress(make_kv(), KVCompression.INT8_HEAD).decompress().keys)


@pytest.mark.parametrize("damage", ["unknown setting", "no scale", "scale shape", "scale dtype", "keys dtype",
                                    "zero scale", "nan scale", "per-token scale in a per-head frame"])
def test_compressed_frame_disagreeing_with_its_header(damage: str) -> None:
    parts, meta = compressed_parts()
    if damage == "unknown setting":
        meta["kv_compression"] = "int4_head"
    elif damage == "no scale":
        del parts["values_scale"]
    elif damage == "scale shape":
        parts["keys_scale"] = parts["keys_scale"].reshape(2, 3, 1)
    elif damage == "scale dtype":
        parts["keys_scale"] = parts["keys_scale"].half()
    elif damage == "keys dtype":
        parts["keys"] = parts["keys"].float()
    elif damage == "zero scale":
        parts["keys_scale"] = torch.zeros_like(parts["keys_scale"])
    elif damage == "nan scale":
        parts["values_scale"] = torch.full_like(parts["values_scale"], float("nan"))
    else:
        parts.update({k: v for k, v in compressed_parts(KVCompression.INT8_TOKEN)[0].items() if k.endswith("scale")})
    with pytest.raises(KVCodecError) as info:
        KVCodec.decode(frame(safetensors.torch.save(parts, metadata=meta)))
    assert not isinstance(info.value, (KVIntegrityError, KVCompressionMismatchError))
