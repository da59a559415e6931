"""StoreTier: KV entries the cache index lists and the object store holds, read concurrently.

The index says which blocks exist and where each one's KV lives for a model version; the objects
are fetched on a thread pool (one get per entry, ``threads`` at a time: an S3 get is latency, not
bandwidth) and decoded there, checksum, model fingerprint, tenant and block id verified (the frame
carries them: KVCodec). A missing, corrupt or foreign object is a miss, never served; corrupt and
foreign ones are also counted and logged, since they mean a fault or tampering, not an eviction
(an object whose bytes cannot be read, a directory in its place or a body shorter than the length
the store announced, counts as corrupt). A store that cannot answer now (the S3 server down) is a
miss too: the request is answered by recomputing, not refused (the index still lists the entry,
and the next read after the outage finds it), logged once per fetch, not counted: no entry is at
fault.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import sqlalchemy as sa
import torch

from blockrag.attention import BlockKV
from blockrag.auth import KeyStore
from blockrag.errors import KVCodecError, KVFingerprintMismatchError, ObjectStoreError, ServiceUnavailableError
from blockrag.kvcache import CacheKey, KVBindingError, KVCodec
from blockrag.kvcache.codec import KVCompressionMismatchError
from blockrag.kvcache.compression import KVCompression
from blockrag.kvcache.index import DEFAULT_TENANT, CacheIndex, LookupRow, transaction
from blockrag.kvcache.index_schema import documents
from blockrag.kvcache.object_store import ObjectStore, UnreadableObjectError
from blockrag.resolve.access_log import AccessLog
from blockrag.telemetry import observe_rejected_entry, observe_store_unavailable

log = logging.getLogger("blockrag.resolve")


@dataclass(frozen=True)
class Fetched:
    """The KV read at each hit row's location; ``corrupt`` ids had bytes that did not decode or
    were computed for another model, tenant or block."""

    kvs: dict[str, BlockKV]
    corrupt: list[str]


class StoreTier:
    def __init__(self, index: CacheIndex, store: ObjectStore, *, threads: int = 8, access: AccessLog | None = None,
                 compression: KVCompression = KVCompression.NONE):
        """``access``: where hits are counted (None: a log of this tier's own, flushed every second);
        ``compression``: the deployment's KV compression: what it writes, and the only setting it
        serves (an entry stored under another is a miss, recomputed under this one)."""
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.index, self.store = index, store
        self.compression = KVCompression.parse(compression)
        self.access = access or AccessLog(index)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="blockrag-store-get")

    def lookup(self, tenant: str, block_ids: Sequence[str], version: str) -> list[LookupRow]:
        return self.index.lookup(tenant, block_ids, version)

    def texts(self, tenant: str, block_ids: Sequence[str]) -> dict[str, str]:
        """The registered text of each known id."""
        return {b.block_id: b.text for b in self.index.get_blocks(tenant, block_ids) if b is not None}

    def fetch(self, tenant: str, rows: Sequence[LookupRow], version: str, device: torch.device | str) -> Fetched:
        """The KV of every hit row of ``tenant``'s lookup, fetched and decoded concurrently
        (``threads`` at a time); each frame must be bound to ``tenant``, its row's block and ``version``."""
        hits = [r for r in rows if r.hit]
        results = list(self._pool.map(lambda r: self._read(r.location, version, device, tenant, r.block_id), hits))
        kvs = {r.block_id: kv for r, kv in zip(hits, results) if isinstance(kv, BlockKV)}
        unreachable = [(r, e) for r, e in zip(hits, results) if isinstance(e, ObjectStoreError)]
        if unreachable:  # one line for the request, not one per block: an outage fails every read alike
            observe_store_unavailable("read", len(unreachable))
            (first, error), more = unreachable[0], len(unreachable) - 1
            log.warning("object store unreachable for %d KV entr%s of tenant %r (block %s%s), recomputing: %s",
                        len(unreachable), "y" if len(unreachable) == 1 else "ies", tenant, first.block_id,
                        f" and {more} more" if more else "", error)
        return Fetched(kvs, [r.block_id for r, kv in zip(hits, results) if kv is _CORRUPT])

    def get_named(self, key: CacheKey, version: str, device: torch.device | str) -> BlockKV | None:
        """A block kept by its cache key alone, without an index row (the prompt's opening)."""
        # bound to its cache key (tenant, version and token ids in one digest) in place of a block id
        kv = self._read(self.store.location_for(key.hex), version, device, DEFAULT_TENANT, key.hex)
        if isinstance(kv, ObjectStoreError):
            observe_store_unavailable("read")
            log.warning("object store unreachable for the prompt's opening block, recomputing: %s", kv)
        return kv if isinstance(kv, BlockKV) else None

    def known_tenants(self) -> set[str] | None:
        """Tenants holding an active API key or having ingested documents (the metrics' known
        tenants, telemetry.TenantLabels); None when the index cannot answer now."""
        try:
            with transaction(self.index.engine, "list known tenants") as conn:
                ingested = set(conn.execute(sa.select(documents.c.tenant).distinct()).scalars())
            return ingested | {k.tenant for k in KeyStore(self.index.engine).list() if k.active}
        except ServiceUnavailableError:
            return None

    def put_named(self, key: CacheKey, kv: BlockKV, version: str) -> None:
        """Keep a block by its cache key; a store that cannot take it now is logged, not raised:
        the caller holds the KV already, and the next process that misses it stores it."""
        frame = KVCodec.encode(kv, version, tenant=DEFAULT_TENANT, block_id=key.hex, compression=self.compression)
        try:
            self.store.put(key.hex, frame)
        except ObjectStoreError as e:
            observe_store_unavailable("write")
            log.warning("object store unreachable: the prompt's opening block was not stored: %s", e)

    def close(self) -> None:
        self._pool.shutdown()
        self.access.close()

    def _read(self, location: str, version: str, device: torch.device | str, tenant: str,
              block_id: str) -> BlockKV | ObjectStoreError | object | None:
        try:
            data = self.store.get(location)
            if data is None:
                return None  # evicted or not written yet: a miss
            return KVCodec.decode(data, version, device, tenant=tenant, block_id=block_id,
                                  compression=self.compression)
        except (KVCodecError, UnreadableObjectError) as e:
            # recomputed by the caller, whose write replaces it; a fingerprint mismatch is foreign
            # too: the row says this version, the bytes another (a swapped object, not an old row);
            # so is an entry of another compression setting (another deployment's, or before a change).
            # An object that cannot be read (a directory in its place, a body cut short) is this
            # entry's fault: corrupt
            foreign = (KVBindingError, KVFingerprintMismatchError, KVCompressionMismatchError)
            reason = "foreign" if isinstance(e, foreign) else "corrupt"
            observe_rejected_entry(reason)
            log.warning("KV entry of block %s (tenant %r, model version %.16s) at %s not served, recomputing: %s",
                        block_id, tenant, version, location, e)
            return _CORRUPT
        except ObjectStoreError as e:
            return e  # the store's fault (unreachable): a miss, logged by the caller once, not per entry


_CORRUPT = object()
