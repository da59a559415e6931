"""LocalDirectoryStore: cache entries as files in a directory, one per cache key."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from blockrag.kvcache.key import CacheKey


class LocalDirectoryStore:
    """get/put/contains/delete by cache key; None on a miss. Writes are atomic (temp file +
    rename), so a reader never sees half an entry; the codec's checksum catches the rest."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: CacheKey) -> Path:
        # two-level fan-out keeps directories small at millions of blocks
        return self.root / key.hex[:2] / key.hex

    def contains(self, key: CacheKey) -> bool:
        return self._path(key).is_file()

    def get(self, key: CacheKey) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, key: CacheKey, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def delete(self, key: CacheKey) -> None:
        self._path(key).unlink(missing_ok=True)
