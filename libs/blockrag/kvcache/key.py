"""Stable cache keys for block KV entries.

A key must be identical in every process, on every host and across restarts, because it names
entries in shared stores. So it is a SHA-256 over an explicit byte encoding, never Python's
``hash()`` (salted per process by PYTHONHASHSEED).

Key encoding (all integers little-endian):

    u64 len(namespace_utf8)   || namespace_utf8
    u64 len(fingerprint_utf8) || fingerprint_utf8
    int64 token_id * N

The two length prefixes make the encoding unambiguous: ("ab", "c") and ("a", "bc") encode
differently. The token ids come last, so they need no length prefix of their own.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from blockrag.errors import InvalidBlockError

_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


def _token_ids_bytes(token_ids: Sequence[int]) -> bytes:
    """The ids as little-endian int64, the encoding shared by keys and the KV codec."""
    try:
        # "<" fixes byte order and size, so the bytes do not depend on the host.
        return struct.pack(f"<{len(token_ids)}q", *token_ids)
    except struct.error as e:
        raise InvalidBlockError(
            f"token ids must be integers in the int64 range; could not encode them: {e}"
        ) from e


def _length_prefixed(text: str, what: str) -> bytes:
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str, got {type(text).__name__}")
    raw = text.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def token_ids_digest(token_ids: Sequence[int]) -> str:
    """Hex SHA-256 of the token ids encoded as little-endian int64.

    An empty sequence is accepted (it hashes the empty string); callers that need a
    non-empty block check that themselves. Raises InvalidBlockError for non-integer ids or
    ids outside the int64 range.
    """
    return hashlib.sha256(_token_ids_bytes(token_ids)).hexdigest()


@dataclass(frozen=True)
class CacheKey:
    """The key of one block's KV entry: a hex SHA-256 (see the module docstring).

    Build keys with ``CacheKey.of``; the constructor only accepts an existing hex digest
    (for instance one read back from a store).
    """

    hex: str

    def __post_init__(self) -> None:
        if not isinstance(self.hex, str) or not _HEX_DIGEST.fullmatch(self.hex):
            raise ValueError(
                f"a cache key is 64 lowercase hex characters (a SHA-256); got {self.hex!r}"
            )

    @classmethod
    def of(cls, namespace: str, model_fingerprint: str, token_ids: Sequence[int]) -> CacheKey:
        """Key of the block ``token_ids`` under ``namespace`` for the model ``model_fingerprint``.

        An empty namespace is allowed (callers usually pass "default"). An empty token list is
        rejected with InvalidBlockError: there is no KV to cache for it.
        """
        if len(token_ids) == 0:
            raise InvalidBlockError("cannot key an empty block: token_ids must not be empty")
        h = hashlib.sha256()
        h.update(_length_prefixed(namespace, "namespace"))
        h.update(_length_prefixed(model_fingerprint, "model_fingerprint"))
        h.update(_token_ids_bytes(token_ids))
        return cls(h.hexdigest())

    def __str__(self) -> str:
        return self.hex


def cache_key(namespace: str, model_fingerprint: str, token_ids: Sequence[int]) -> str:
    """Hex form of ``CacheKey.of(namespace, model_fingerprint, token_ids)``."""
    return CacheKey.of(namespace, model_fingerprint, token_ids).hex
