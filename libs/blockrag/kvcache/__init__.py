"""KV cache persistence: stable cache keys and the byte codec of one block's KV.

The re-exports load on first use (PEP 562): the codec needs torch, and the replicas that only
catalogue blocks (cache index, admin) import blockrag.kvcache.index without ever touching a tensor.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from blockrag.errors import KVFingerprintMismatchError
    from blockrag.kvcache.codec import KVBindingError, KVCodec, KVHeader
    from blockrag.kvcache.key import CacheKey, cache_key, token_ids_digest

_EXPORTS = {
    "CacheKey": "blockrag.kvcache.key",
    "KVBindingError": "blockrag.kvcache.codec",
    "KVCodec": "blockrag.kvcache.codec",
    "KVFingerprintMismatchError": "blockrag.errors",
    "KVHeader": "blockrag.kvcache.codec",
    "cache_key": "blockrag.kvcache.key",
    "token_ids_digest": "blockrag.kvcache.key",
}

__all__ = [
    "CacheKey",
    "KVBindingError",
    "KVCodec",
    "KVFingerprintMismatchError",
    "KVHeader",
    "cache_key",
    "token_ids_digest",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
