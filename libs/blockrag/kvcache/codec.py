"""Byte serialization of one block's KV cache (BlockKV), for disk and remote stores.

Frame layout:

    b"BRKV"          4 bytes   magic
    version          1 byte    FORMAT_VERSION
    sha256           32 bytes  SHA-256 of everything after it (the payload)
    payload          rest      a safetensors blob

The safetensors blob holds the tensors "keys" and "values" ([layers, kv_heads, L, head_dim],
float32 / bfloat16 / float16) and "token_ids" (int64 [L]); its string metadata holds the
KVHeader fields except payload_sha256, which is the frame digest itself (a digest cannot be
stored inside the bytes it covers).

Version 2 binds a frame to what it holds: the tenant and block id it was computed for sit in the
checksummed metadata next to the model fingerprint, and a reader passes what it expects. An
index row pointed at another tenant's or another block's object (a swapped copy, a planted
location) then decodes to KVBindingError instead of someone else's KV. Version 1 frames carry no
binding and are refused like any unknown version: an unbound entry cannot be told apart from a
foreign one, so it is a miss and is recomputed (once) as a bound version 2 entry.

Compressed frames (blockrag.kvcache.compression: int8 or float8 e4m3 with float32 scales) hold
"keys" and "values" in that element type plus "keys_scale" and "values_scale" (float32,
[layers, kv_heads, 1 or L, 1]); their metadata adds "kv_compression" (the setting), and "dtype"
stays the dtype decode returns. An uncompressed frame has no "kv_compression" field, so its bytes
are those of a build without compression. A reader that passes ``compression`` is served only
frames of that setting (KVCompressionMismatchError otherwise: a miss, recomputed under its own).

Bytes come from caches that may be stale, truncated or tampered with, so decode trusts nothing:
it verifies the digest on every call, then checks the tensors against the header.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from dataclasses import dataclass

import safetensors.torch
import torch
from safetensors import SafetensorError

from blockrag.attention.block_kv import BlockKV
from blockrag.errors import InvalidBlockError, KVCodecError, KVFingerprintMismatchError, KVIntegrityError
from blockrag.kvcache.compression import KVCompression
from blockrag.kvcache.key import token_ids_digest

MAGIC = b"BRKV"
FORMAT_VERSION = 2  # 2: frames bound to tenant and block id (1: unbound, refused)
_DIGEST_LEN = 32
_PAYLOAD_START = len(MAGIC) + 1 + _DIGEST_LEN

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
_DTYPE_NAMES = {dtype: name for name, dtype in _DTYPES.items()}
_INT_FIELDS = ("format_version", "num_layers", "num_kv_heads", "head_dim", "num_tokens")
_STR_FIELDS = ("model_fingerprint", "tenant", "block_id", "dtype", "token_ids_sha256")
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
_DECIMAL = re.compile(r"[0-9]{1,19}")


@dataclass(frozen=True)
class KVHeader:
    """What a KV frame says about itself; payload_sha256 is the (hex) frame digest."""

    format_version: int
    model_fingerprint: str
    tenant: str  # whose block this KV was computed for
    block_id: str  # which block (an index block id, or the cache key hex of a named object)
    dtype: str
    num_layers: int
    num_kv_heads: int
    head_dim: int
    num_tokens: int
    token_ids_sha256: str
    payload_sha256: str
    compression: KVCompression = KVCompression.NONE  # how keys and values are held in the frame

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    @property
    def kv_shape(self) -> tuple[int, int, int, int]:
        """Shape of both the keys and the values tensors."""
        return (self.num_layers, self.num_kv_heads, self.num_tokens, self.head_dim)


class KVBindingError(KVCodecError):
    """A sound frame computed for another tenant or block than the reader expects: never served."""


class KVCompressionMismatchError(KVCodecError):
    """A sound frame written under another compression setting than the reader serves: a miss."""


class KVCodec:
    """Stateless encoder/decoder between BlockKV and the framed bytes described above."""

    @staticmethod
    def encode(kv: BlockKV, model_fingerprint: str, *, tenant: str, block_id: str,
               compression: KVCompression = KVCompression.NONE) -> bytes:
        """Serialize ``kv`` for the model ``model_fingerprint``, bound to ``tenant``'s ``block_id``,
        its keys and values held under ``compression`` (NONE: as they are).

        Tensors may live on any device; they are copied to contiguous CPU memory first.
        Raises ValueError for an empty fingerprint, tenant or block id and InvalidBlockError for
        keys and values of different or unsupported dtypes.
        """
        for name, value in (("model_fingerprint", model_fingerprint), ("tenant", tenant), ("block_id", block_id)):
            if not isinstance(value, str) or not value:
                raise ValueError(
                    f"{name} must be a non-empty str: it guards against serving KV computed "
                    f"for another model, tenant or block"
                )
        if kv.keys.dtype != kv.values.dtype:
            raise InvalidBlockError(
                f"keys and values must share a dtype; got {kv.keys.dtype} and {kv.values.dtype}"
            )
        dtype_name = _DTYPE_NAMES.get(kv.keys.dtype)
        if dtype_name is None:
            raise InvalidBlockError(
                f"cannot encode KV of dtype {kv.keys.dtype}; supported: {', '.join(_DTYPES)}"
            )
        compression = KVCompression.parse(compression)
        tensors: dict[str, torch.Tensor]
        if compression is KVCompression.NONE:
            keys, values = _host(kv.keys), _host(kv.values)
            if _overlap(keys, values):
                # safetensors refuses to save tensors that share memory.
                values = values.clone()
            tensors = {"keys": keys, "values": values}
        else:
            from blockrag.kvcache.quantize import compress

            q = compress(kv, compression)
            tensors = {"keys": _host(q.keys), "values": _host(q.values),
                       "keys_scale": _host(q.key_scale), "values_scale": _host(q.value_scale)}
        metadata = {
            "format_version": str(FORMAT_VERSION),
            "model_fingerprint": model_fingerprint,
            "tenant": tenant,
            "block_id": block_id,
            "dtype": dtype_name,
            "num_layers": str(kv.num_layers),
            "num_kv_heads": str(kv.num_kv_heads),
            "head_dim": str(kv.head_dim),
            "num_tokens": str(kv.num_tokens),
            # Also validates the ids (int64 range) before torch.tensor sees them.
            "token_ids_sha256": token_ids_digest(kv.token_ids),
        }
        if compression is not KVCompression.NONE:
            metadata["kv_compression"] = compression.value
        tensors["token_ids"] = torch.tensor(kv.token_ids, dtype=torch.int64)
        payload = _canonical(safetensors.torch.save(tensors, metadata=metadata))
        digest = hashlib.sha256(payload).digest()
        return b"".join((MAGIC, bytes((FORMAT_VERSION,)), digest, payload))

    @staticmethod
    def read_header(data: bytes, *, verify: bool = True) -> KVHeader:
        """The header of a frame, without materializing its tensors.

        With ``verify`` (the default) the frame digest is checked first, so the header can be
        trusted; pass ``verify=False`` only for cheap inspection of trusted bytes.
        Raises KVCodecError (KVIntegrityError on a digest mismatch).
        """
        payload = _open_frame(data, verify=verify)
        digest = bytes(memoryview(data)[len(MAGIC) + 1 : _PAYLOAD_START]).hex()
        return _parse_header(_read_metadata(payload), digest)

    @staticmethod
    def decode(
        data: bytes,
        expected_fingerprint: str | None = None,
        device: torch.device | str = "cpu",
        *,
        tenant: str | None = None,
        block_id: str | None = None,
        compression: KVCompression | None = None,
    ) -> BlockKV:
        """Deserialize a frame into a BlockKV on ``device``.

        Verifies the frame digest (KVIntegrityError), the format and the agreement of the
        tensors with the header (KVCodecError), when ``expected_fingerprint`` is given, that the
        entry was made by that model (KVFingerprintMismatchError), and when ``tenant`` or
        ``block_id`` is given, that it was computed for them (KVBindingError). All are
        KVCodecErrors: a reader of a store passes all three and treats any as a miss.
        A compressed frame is decompressed to its header's dtype on ``device``; when
        ``compression`` is given, a frame written under another setting is refused
        (KVCompressionMismatchError), so a deployment serves the precision it chose.
        """
        header = KVCodec.read_header(data, verify=True)
        for name, expected, actual in (("tenant", tenant, header.tenant), ("block", block_id, header.block_id)):
            if expected is not None and actual != expected:
                # the values stay out of the message: it may reach a log or another tenant's client
                raise KVBindingError(
                    f"KV entry was computed for another {name} than the one it is read for; "
                    f"it must not be used (treat it as a cache miss and recompute)"
                )
        if expected_fingerprint is not None and header.model_fingerprint != expected_fingerprint:
            raise KVFingerprintMismatchError(
                f"KV entry was encoded for model fingerprint {header.model_fingerprint!r} but "
                f"{expected_fingerprint!r} was expected; it belongs to another model or "
                f"revision and must not be used (treat it as a cache miss)"
            )
        if compression is not None and header.compression is not KVCompression.parse(compression):
            raise KVCompressionMismatchError(
                f"KV entry was stored with kv_compression {header.compression} but this deployment serves "
                f"{KVCompression.parse(compression)}; treat it as a cache miss (recomputed and replaced under "
                f"this deployment's setting)"
            )
        # safetensors wants bytes; this copies the payload once.
        payload = bytes(memoryview(data)[_PAYLOAD_START:])
        try:
            tensors = safetensors.torch.load(payload)
        except (SafetensorError, KeyError, ValueError, RuntimeError) as e:
            raise KVCodecError(f"KV payload is not a readable safetensors blob: {e}") from e
        keys, values, ids = _check_tensors(tensors, header)
        token_ids = tuple(ids.tolist())
        if token_ids_digest(token_ids) != header.token_ids_sha256:
            raise KVCodecError("token_ids tensor does not match token_ids_sha256 in the header")
        if header.compression is KVCompression.NONE:
            return BlockKV(token_ids, keys.to(device), values.to(device))
        from blockrag.kvcache.quantize import QuantizedKV

        q = QuantizedKV(token_ids, keys, values, tensors["keys_scale"], tensors["values_scale"],
                        header.torch_dtype, header.compression)
        return q.decompress(device)


def _host(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu").contiguous()


def _overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two contiguous CPU tensors share any bytes."""
    a0, b0 = a.data_ptr(), b.data_ptr()
    return a0 < b0 + b.nbytes and b0 < a0 + a.nbytes and a.nbytes > 0 and b.nbytes > 0


def _canonical(blob: bytes) -> bytes:
    """The blob with its JSON header keys sorted.

    safetensors writes the metadata from a hash map, in a different order on every call; sorting
    makes one block always encode to the same bytes (hence the same digest), which lets stores
    deduplicate and compare entries. Readers accept any order, so this is only canonicalization.
    """
    (size,) = struct.unpack_from("<Q", blob, 0)
    header = json.loads(blob[8 : 8 + size])
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) > size:
        # Cannot happen for the ASCII-safe JSON safetensors writes; keep its bytes if it does.
        return blob
    # safetensors itself pads the header with spaces (to align the data); so do we.
    return blob[:8] + text.ljust(size, b" ") + blob[8 + size :]


def _open_frame(data: bytes, *, verify: bool) -> memoryview:
    """Check magic, version and (if ``verify``) the digest; return the payload view."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"KV data must be bytes, got {type(data).__name__}")
    view = memoryview(data)
    if len(view) < _PAYLOAD_START:
        raise KVCodecError(
            f"KV data is too short: {len(view)} bytes, a frame needs at least "
            f"{_PAYLOAD_START} (magic, version, SHA-256); it is truncated or not a KV entry"
        )
    magic = bytes(view[: len(MAGIC)])
    if magic != MAGIC:
        raise KVCodecError(f"not a BlockRAG KV entry: magic is {magic!r}, expected {MAGIC!r}")
    version = view[len(MAGIC)]
    if version != FORMAT_VERSION:
        raise KVCodecError(
            f"unsupported KV format version {version}; this build reads version "
            f"{FORMAT_VERSION} only (version 1 entries are not bound to their tenant and block, "
            f"so they are recomputed; newer ones need a newer blockrag)"
        )
    payload = view[_PAYLOAD_START:]
    if verify:
        stored = bytes(view[len(MAGIC) + 1 : _PAYLOAD_START])
        actual = hashlib.sha256(payload).digest()
        if actual != stored:
            raise KVIntegrityError(
                f"KV payload SHA-256 mismatch (header {stored.hex()[:16]}..., payload "
                f"{actual.hex()[:16]}..., {len(payload)} payload bytes): the entry is "
                f"truncated or corrupted; drop it and recompute"
            )
    return payload


def _read_metadata(payload: memoryview) -> dict[str, str]:
    """The ``__metadata__`` dict of a safetensors blob (8-byte LE length, then JSON)."""
    if len(payload) < 8:
        raise KVCodecError(
            f"KV payload is too short for a safetensors header: {len(payload)} bytes"
        )
    (size,) = struct.unpack_from("<Q", payload, 0)
    if size > len(payload) - 8:
        raise KVCodecError(
            f"safetensors header claims {size} bytes but only {len(payload) - 8} follow"
        )
    try:
        header = json.loads(bytes(payload[8 : 8 + size]))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise KVCodecError(f"safetensors header is not valid JSON: {e}") from e
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise KVCodecError("safetensors header has no string __metadata__ with the KV header")
    return meta


def _parse_header(meta: dict[str, str], payload_sha256: str) -> KVHeader:
    missing = [f for f in (*_INT_FIELDS, *_STR_FIELDS) if f not in meta]
    if missing:
        raise KVCodecError(f"KV header lacks field(s) {', '.join(missing)}")
    bad = [f for f in _INT_FIELDS if not _DECIMAL.fullmatch(meta[f])]
    if bad:
        raise KVCodecError(
            f"KV header field(s) {', '.join(bad)} must be non-negative decimal integers; "
            f"got {[meta[f] for f in bad]}"
        )
    ints = {f: int(meta[f]) for f in _INT_FIELDS}
    if ints["format_version"] != FORMAT_VERSION:
        raise KVCodecError(
            f"KV header says format version {ints['format_version']} inside a version "
            f"{FORMAT_VERSION} frame"
        )
    if ints["num_tokens"] < 1:
        raise KVCodecError("KV header says num_tokens=0; a block has at least one token")
    if meta["dtype"] not in _DTYPES:
        raise KVCodecError(
            f"KV header has unsupported dtype {meta['dtype']!r}; "
            f"expected one of {', '.join(_DTYPES)}"
        )
    if not _HEX_DIGEST.fullmatch(meta["token_ids_sha256"]):
        raise KVCodecError("KV header token_ids_sha256 is not a hex SHA-256")
    try:
        compression = KVCompression.parse(meta.get("kv_compression", KVCompression.NONE.value))
    except ValueError as e:
        raise KVCodecError(f"KV header: {e} (a newer blockrag may have written it)") from e
    return KVHeader(
        model_fingerprint=meta["model_fingerprint"],
        tenant=meta["tenant"],
        block_id=meta["block_id"],
        dtype=meta["dtype"],
        token_ids_sha256=meta["token_ids_sha256"],
        payload_sha256=payload_sha256,
        compression=compression,
        **ints,
    )


def _check_tensors(
    tensors: dict[str, torch.Tensor], header: KVHeader
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """keys, values, token_ids, after checking that they agree with the header (and, in a
    compressed frame, that keys_scale and values_scale do too)."""
    compressed = header.compression is not KVCompression.NONE
    expected = {"keys", "values", "token_ids"} | ({"keys_scale", "values_scale"} if compressed else set())
    if set(tensors) != expected:
        raise KVCodecError(
            f"KV payload holds tensors {sorted(tensors)}; expected {sorted(expected)}"
        )
    shapes = {"keys": header.kv_shape, "values": header.kv_shape}
    dtypes = {"keys": header.dtype, "values": header.dtype}
    if compressed:
        from blockrag.kvcache.quantize import scale_shape

        dtypes = {"keys": header.compression.storage, "values": header.compression.storage,
                  "keys_scale": "float32", "values_scale": "float32"}
        shapes.update(dict.fromkeys(("keys_scale", "values_scale"), scale_shape(header.compression, header.kv_shape)))
    for name, shape in shapes.items():
        t = tensors[name]
        if t.dtype != getattr(torch, dtypes[name]) or tuple(t.shape) != shape:
            raise KVCodecError(
                f"{name} tensor is {t.dtype} {tuple(t.shape)} but the header says "
                f"{dtypes[name]} {shape}"
            )
    if compressed and not all(bool(((s > 0) & torch.isfinite(s)).all()) for s in
                              (tensors["keys_scale"], tensors["values_scale"])):
        raise KVCodecError("KV scales must be finite and positive")
    ids = tensors["token_ids"]
    if ids.dtype != torch.int64 or tuple(ids.shape) != (header.num_tokens,):
        raise KVCodecError(
            f"token_ids tensor is {ids.dtype} {tuple(ids.shape)} but the header says "
            f"int64 ({header.num_tokens},)"
        )
    return tensors["keys"], tensors["values"], ids
