"""ObjectStore: named byte objects (KV frames) in a local directory or an S3 bucket.

A store hands back a *location* string for every object it writes; the cache index keeps that
string, and any process configured with the same store can read the object back from it. The
location names its backend ("file:///abs/path", "s3://bucket/prefix/name"), so a store refuses
a location written by another store instead of silently reading the wrong thing.

Object names are single path segments (letters, digits and ``._@=+-``, not starting with a dot;
at most 255 characters). Callers that key objects by longer or free-form strings hash them first.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

from blockrag.errors import InvalidRequestError, ObjectStoreError, StorageConfigError

# No leading dot: temp files of in-flight local writes are ".tmp-*" and must never be a name.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@=+-]{0,254}")


class UnreadableObjectError(ObjectStoreError):
    """Something is stored under the object's name but its bytes cannot be read (a directory in
    its place): a fault of that one object, like corrupt bytes, while the store itself works.
    Readers recompute it and count it; a write of the block puts a new object, and deleting the
    old location clears what squats the name."""


class TruncatedObjectError(UnreadableObjectError):
    """The object's body came shorter than the length the store announced for it (a proxy or a
    connection that cut it): the bytes read are not the object, so readers treat it as a corrupt
    entry (recomputed, counted, its entry replaced), not as the store being unreachable."""


@dataclass(frozen=True)
class ObjectInfo:
    """A stored object as a listing shows it."""

    name: str
    location: str
    nbytes: int
    modified_at: float  # unix seconds, by the store's clock (file mtime, S3 LastModified)


@runtime_checkable
class ObjectStore(Protocol):
    """Bytes by name. Every backend implements every method with these semantics."""

    def put(self, name: str, data: bytes) -> str:
        """Write (or atomically overwrite) the object ``name``; return its location."""
        ...

    def get(self, location: str) -> bytes | None:
        """The object's bytes, or None when nothing is stored there."""
        ...

    def delete(self, location: str) -> None:
        """Remove the object; a missing object is not an error."""
        ...

    def exists(self, location: str) -> bool:
        """Whether an object is stored at ``location``."""
        ...

    def location_for(self, name: str) -> str:
        """The location ``put(name, ...)`` returns, computed without I/O."""
        ...

    def list_objects(self) -> Iterator[ObjectInfo]:
        """Every object stored, in no set order (never an in-flight write's temporary file)."""
        ...

    def remove_partial_writes(self, before: float) -> int:
        """Delete what writes that died mid-put left, if older than ``before`` (unix seconds, the
        store's clock); how many. Readers never see these (they have no object name)."""
        ...


def is_object_name(name: object) -> bool:
    """Whether ``name`` is a valid object name (see the module docstring)."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid object name, else raise InvalidRequestError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidRequestError(
            f"invalid object name {name!r}: use 1-255 characters from letters, digits and "
            f"'._@=+-', not starting with '.' (hash longer or free-form keys first)"
        )
    return name


class LocalObjectStore:
    """Objects as files under ``root``, fanned out by the first two characters of the name.

    Writes are atomic (temp file in the target directory, then os.replace), so concurrent
    readers in any process see either the old object or the new one, never half of one.
    """

    def __init__(self, root: str | Path):
        # Resolved once so locations do not depend on the working directory of the writer.
        self.root = Path(root).expanduser().resolve()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ObjectStoreError(f"cannot create object store directory {self.root}: {e}") from e

    def __repr__(self) -> str:
        return f"LocalObjectStore({str(self.root)!r})"

    def path_for(self, name: str) -> Path:
        """Where the object ``name`` lives; two-level fan-out keeps directories small."""
        return self.root / name[:2] / check_name(name)

    def location_for(self, name: str) -> str:
        """The location ``put(name, ...)`` returns, without touching the disk."""
        return self.path_for(name).as_uri()

    def put(self, name: str, data: bytes) -> str:
        path = self.path_for(name)
        try:
            path.parent.mkdir(exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as e:
            raise ObjectStoreError(f"cannot write object {name!r} to {path}: {e}") from e
        return path.as_uri()

    def get(self, location: str) -> bytes | None:
        path = self._path_of(location)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except IsADirectoryError as e:
            raise UnreadableObjectError(f"cannot read object {path}: a directory is in its place") from e
        except OSError as e:
            raise ObjectStoreError(f"cannot read object {path}: {e}") from e

    def delete(self, location: str) -> None:
        path = self._path_of(location)
        try:
            try:
                path.unlink(missing_ok=True)
            except IsADirectoryError:
                path.rmdir()  # an empty directory squatting the name (UnreadableObjectError); never a tree
        except OSError as e:
            raise ObjectStoreError(f"cannot delete object {path}: {e}") from e

    def exists(self, location: str) -> bool:
        return self._path_of(location).is_file()

    def list_objects(self) -> Iterator[ObjectInfo]:
        try:
            for fan in sorted(self.root.iterdir()):
                if not fan.is_dir():
                    continue
                for path in sorted(fan.iterdir()):
                    # temp files of writes in flight (".tmp-*") are not valid names
                    if not is_object_name(path.name) or path != self.path_for(path.name):
                        continue
                    try:
                        st = path.stat()
                    except FileNotFoundError:
                        continue  # deleted since the directory was read
                    yield ObjectInfo(path.name, path.as_uri(), st.st_size, st.st_mtime)
        except OSError as e:
            raise ObjectStoreError(f"cannot list objects under {self.root}: {e}") from e

    def remove_partial_writes(self, before: float) -> int:
        """The temp files (".tmp-*") of puts that died before their rename."""
        removed = 0
        try:
            for path in self.root.glob("*/.tmp-*"):
                try:
                    if path.stat().st_mtime < before:
                        path.unlink()
                        removed += 1
                except FileNotFoundError:
                    continue  # renamed or removed meanwhile
        except OSError as e:
            raise ObjectStoreError(f"cannot remove partial writes under {self.root}: {e}") from e
        return removed

    def _path_of(self, location: str) -> Path:
        """The file behind a location this store wrote; StorageConfigError for any other."""
        parts = urlsplit(location) if isinstance(location, str) else None
        if parts is None or parts.scheme != "file" or parts.netloc not in ("", "localhost"):
            raise StorageConfigError(
                f"location {location!r} is not a file:// location; this store is "
                f"{self.root.as_uri()} (was the object written by another store?)"
            )
        path = Path(unquote(parts.path))
        if not _NAME.fullmatch(path.name) or path != self.path_for(path.name):
            raise StorageConfigError(
                f"location {location!r} is outside this store ({self.root.as_uri()}); "
                f"the index was probably written with another object store root"
            )
        return path


def open_object_store(url: str | Path) -> ObjectStore:
    """The store a URL names.

    - a plain path or ``file:///abs/dir``: a LocalObjectStore rooted there;
    - ``s3://bucket[/prefix]?endpoint=host:port[&secure=true][&region=...]``: an
      S3ObjectStore, credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
      (see S3Config.from_url for every query key).

    Raises StorageConfigError for an unknown scheme or a malformed URL, ObjectStoreError when
    the store cannot be reached.
    """
    text = os.fspath(url)
    if not isinstance(text, str) or not text:
        raise StorageConfigError("object store URL is empty; give a directory or an s3:// URL")
    scheme = urlsplit(text).scheme
    if scheme == "":
        return LocalObjectStore(text)
    if scheme == "file":
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise StorageConfigError(
                f"object store URL {text!r}: a file URL needs an absolute path, as in "
                f"file:///var/cache/blockrag"
            )
        return LocalObjectStore(unquote(parts.path))
    if scheme == "s3":
        # Imported here so local-only users never need the S3 client.
        from blockrag.kvcache.s3_store import S3Config, S3ObjectStore

        return S3ObjectStore(S3Config.from_url(text, os.environ))
    raise StorageConfigError(
        f"object store URL {text!r} has unsupported scheme {scheme!r}; use a directory path, "
        f"file:///abs/dir or s3://bucket/prefix?endpoint=host:port"
    )
