"""LocalDirectoryStore: cache entries as files in a directory, one per cache key."""

from __future__ import annotations

from pathlib import Path

from blockrag.kvcache.key import CacheKey
from blockrag.kvcache.object_store import LocalObjectStore


class LocalDirectoryStore:
    """get/put/contains/delete by cache key; None on a miss.

    A LocalObjectStore named by the key's hex, so the files (root/ab/abcd...) are the objects
    a service's LocalObjectStore over the same root sees. Writes are atomic (temp file +
    rename), so a reader never sees half an entry; the codec's checksum catches the rest.
    """

    def __init__(self, root: str | Path):
        self._objects = LocalObjectStore(root)
        self.root = self._objects.root

    def contains(self, key: CacheKey) -> bool:
        return self._objects.exists(self._objects.location_for(key.hex))

    def get(self, key: CacheKey) -> bytes | None:
        return self._objects.get(self._objects.location_for(key.hex))

    def put(self, key: CacheKey, data: bytes) -> None:
        self._objects.put(key.hex, data)

    def delete(self, key: CacheKey) -> None:
        self._objects.delete(self._objects.location_for(key.hex))
