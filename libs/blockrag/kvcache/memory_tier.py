"""ByteLRU: the in-memory tier of the KV cache, a least-recently-used map bounded in bytes.

Entries are bounded by the bytes the caller says they take (a KV frame's length, a tensor's
nbytes), not by their count: blocks differ in length by orders of magnitude. CompressedKVLRU
holds block KV under a deployment's KVCompression and counts the compressed bytes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from blockrag.kvcache.compression import KVCompression

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True)
class TierStats:
    """A snapshot of a tier: its content and counters since it was created."""

    entries: int
    bytes: int
    capacity_bytes: int
    hits: int
    misses: int
    evictions: int  # entries dropped to make room (not replacements, not pops)


class ByteLRU(Generic[K, V]):
    """A thread-safe LRU of at most ``capacity_bytes`` bytes (0 keeps nothing)."""

    def __init__(self, capacity_bytes: int):
        if not isinstance(capacity_bytes, int) or capacity_bytes < 0:
            raise ValueError(f"capacity_bytes must be an int >= 0, got {capacity_bytes!r}")
        self._capacity = capacity_bytes
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()  # oldest first
        self._bytes = 0
        self._hits = self._misses = self._evictions = 0
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        """The value (now the most recently used), or None on a miss."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self._misses += 1
                return None
            self._items.move_to_end(key)
            self._hits += 1
            return item[0]

    def put(self, key: K, value: V, nbytes: int) -> list[tuple[K, V, int]]:
        """Insert or replace ``key``, evicting least recently used entries to make room; returns
        the evicted (key, value, nbytes), oldest first (a slower tier may keep them: tiers.py).

        A value larger than the whole capacity is not kept (and drops any older value of the
        key, which would otherwise be served stale).
        """
        if not isinstance(nbytes, int) or nbytes < 0:
            raise ValueError(f"nbytes must be an int >= 0, got {nbytes!r}")
        evicted: list[tuple[K, V, int]] = []
        with self._lock:
            self._remove(key)
            if nbytes > self._capacity:
                return evicted
            while self._bytes + nbytes > self._capacity:
                old, (held, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped
                self._evictions += 1
                evicted.append((old, held, dropped))
            self._items[key] = (value, nbytes)
            self._bytes += nbytes
        return evicted

    @property
    def capacity_bytes(self) -> int:
        return self._capacity

    def pop(self, key: K) -> V | None:
        """Remove ``key``; its value, or None if absent."""
        with self._lock:
            item = self._items.get(key)
            self._remove(key)
            return None if item is None else item[0]

    def __contains__(self, key: object) -> bool:
        # A membership test is not a use: it neither refreshes the entry nor counts a hit.
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def stats(self) -> TierStats:
        with self._lock:
            return TierStats(
                entries=len(self._items), bytes=self._bytes, capacity_bytes=self._capacity,
                hits=self._hits, misses=self._misses, evictions=self._evictions,
            )

    def _remove(self, key: K) -> None:
        """Drop ``key`` if present; the caller holds the lock."""
        item = self._items.pop(key, None)
        if item is not None:
            self._bytes -= item[1]


class CompressedKVLRU(ByteLRU):
    """The host tier of a deployment with KV compression: a ByteLRU of block KV held compressed
    (blockrag.kvcache.quantize) and handed out decompressed, on the device it was put from.

    It counts the bytes it holds (the int8/fp8 tensors and their scales), not the ``nbytes`` a
    caller computed for the uncompressed block, so the same capacity keeps 2-4x the blocks."""

    def __init__(self, capacity_bytes: int, compression: KVCompression):
        compression = KVCompression.parse(compression)
        if compression is KVCompression.NONE:
            raise ValueError("KVCompression.NONE: use a plain ByteLRU (host_tier does)")
        super().__init__(capacity_bytes)
        self.compression = compression

    def get(self, key):
        held = super().get(key)
        return None if held is None else held.decompress()

    def put(self, key, value, nbytes: int | None = None) -> list:
        """Compress ``value`` (a BlockKV) and keep it; ``nbytes`` is ignored (see the class).
        Evicted blocks come back decompressed."""
        from blockrag.kvcache.quantize import compress

        held = compress(value, self.compression)
        return [(k, v.decompress(), n) for k, v, n in super().put(key, held, held.nbytes)]

    def pop(self, key):
        held = super().pop(key)
        return None if held is None else held.decompress()


def host_tier(capacity_bytes: int, compression: KVCompression = KVCompression.NONE) -> ByteLRU:
    """The host (in-process) tier of block KV of a deployment: a plain ByteLRU of BlockKV without
    compression, else a CompressedKVLRU."""
    compression = KVCompression.parse(compression)
    if compression is KVCompression.NONE:
        return ByteLRU(capacity_bytes)
    return CompressedKVLRU(capacity_bytes, compression)
