"""StoreTier: KV entries the cache index lists and the object store holds, read concurrently.

The index says which blocks exist and where each one's KV lives for a model version; the objects
are fetched on a thread pool (one get per entry, ``threads`` at a time: an S3 get is latency, not
bandwidth) and decoded there, checksum and model fingerprint verified. A missing, corrupt or
foreign object is a miss, never served.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from blockrag.attention import BlockKV
from blockrag.errors import KVCodecError
from blockrag.kvcache import CacheKey, KVCodec
from blockrag.kvcache.index import CacheIndex, LookupRow
from blockrag.kvcache.object_store import ObjectStore
from blockrag.resolve.access_log import AccessLog


@dataclass(frozen=True)
class Fetched:
    """The KV read at each hit row's location; ``corrupt`` ids had bytes that did not decode."""

    kvs: dict[str, BlockKV]
    corrupt: list[str]


class StoreTier:
    def __init__(self, index: CacheIndex, store: ObjectStore, *, threads: int = 8, access: AccessLog | None = None):
        """``access``: where hits are counted (None: a log of this tier's own, flushed every second)."""
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.index, self.store = index, store
        self.access = access or AccessLog(index)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="blockrag-store-get")

    def lookup(self, tenant: str, block_ids: Sequence[str], version: str) -> list[LookupRow]:
        return self.index.lookup(tenant, block_ids, version)

    def texts(self, tenant: str, block_ids: Sequence[str]) -> dict[str, str]:
        """The registered text of each known id."""
        return {b.block_id: b.text for b in self.index.get_blocks(tenant, block_ids) if b is not None}

    def fetch(self, rows: Sequence[LookupRow], version: str, device: torch.device | str) -> Fetched:
        """The KV of every hit row, fetched and decoded concurrently (``threads`` at a time)."""
        hits = [r for r in rows if r.hit]
        results = list(self._pool.map(lambda r: self._read(r.location, version, device), hits))
        kvs = {r.block_id: kv for r, kv in zip(hits, results) if isinstance(kv, BlockKV)}
        return Fetched(kvs, [r.block_id for r, kv in zip(hits, results) if kv is _CORRUPT])

    def get_named(self, key: CacheKey, version: str, device: torch.device | str) -> BlockKV | None:
        """A block kept by its cache key alone, without an index row (the prompt's opening)."""
        kv = self._read(self.store.location_for(key.hex), version, device)
        return kv if isinstance(kv, BlockKV) else None

    def put_named(self, key: CacheKey, kv: BlockKV, version: str) -> None:
        self.store.put(key.hex, KVCodec.encode(kv, version))

    def close(self) -> None:
        self._pool.shutdown()
        self.access.close()

    def _read(self, location: str, version: str, device: torch.device | str) -> BlockKV | object | None:
        data = self.store.get(location)
        if data is None:
            return None  # evicted or not written yet: a miss
        try:
            return KVCodec.decode(data, version, device)
        except KVCodecError:
            return _CORRUPT  # recomputed by the caller, whose write replaces it


_CORRUPT = object()
