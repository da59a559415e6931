"""KV cache persistence: stable cache keys and the byte codec of one block's KV."""

from blockrag.errors import KVFingerprintMismatchError
from blockrag.kvcache.codec import KVCodec, KVHeader
from blockrag.kvcache.key import CacheKey, cache_key, token_ids_digest

__all__ = [
    "CacheKey",
    "KVCodec",
    "KVFingerprintMismatchError",
    "KVHeader",
    "cache_key",
    "token_ids_digest",
]
