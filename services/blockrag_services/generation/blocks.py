"""BlockSource: the KV of context blocks, from the nearest tier that has it.

memory (this replica's LRU of decoded blocks, bounded in bytes) -> store (the cache index says
where the entry lives; read from the object store, checksum and model fingerprint verified) ->
computed (Precompute encodes the block and writes it back; read from the store). A corrupt or
foreign entry is evicted and recomputed, never served.

Every call names the runtime (the model version) its request captured: entries of all versions
share the LRU, keyed by version, so a switch of version never serves one version's KV to another.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from blockrag.attention import BlockKV
from blockrag.errors import KVCodecError, LimitExceededError, NotFoundError
from blockrag.kvcache import KVCodec
from blockrag.kvcache.index import block_id_for
from blockrag.kvcache.memory_tier import ByteLRU
from blockrag.kvcache.object_store import ObjectStore
from blockrag.model_runtime import ModelRuntime
from blockrag.v1 import cache_index_pb2 as index_pb
from blockrag.v1 import precompute_pb2 as precompute_pb
from blockrag_services.handles import CACHE_INDEX, PRECOMPUTE, Handles


@dataclass(frozen=True)
class BlockRef:
    """A context block as the request names it: an id, or a literal text (id derived)."""

    block_id: str
    text: str | None = None


@dataclass
class Resolved:
    block_id: str
    kv: BlockKV
    tier: str  # "memory" | "store" | "computed"

    @property
    def tokens(self) -> int:
        return self.kv.num_tokens


class BlockSource:
    def __init__(self, handles: Handles, store: ObjectStore, lru: ByteLRU, max_context_tokens: int):
        self.handles, self.store, self.lru = handles, store, lru
        self.max_context_tokens = max_context_tokens

    @staticmethod
    def ref(tenant: str, block_id: str = "", text: str = "") -> BlockRef:
        return BlockRef(block_id_for(tenant, text.strip()), text.strip()) if text else BlockRef(block_id)

    async def resolve(self, runtime: ModelRuntime, tenant: str, refs: list[BlockRef]) -> list[Resolved]:
        """The KV of every block under ``runtime``'s model version, in the order of ``refs``."""
        version = runtime.version
        out: dict[str, Resolved] = {}
        for ref in refs:
            kv = self.lru.get((tenant, ref.block_id, version))
            if kv is not None:
                out[ref.block_id] = Resolved(ref.block_id, kv, "memory")
        rest = list({r.block_id: r for r in refs if r.block_id not in out}.values())
        if rest:
            await self._from_index(runtime, tenant, rest, out)
        return [out[r.block_id] for r in refs]

    async def _from_index(self, runtime: ModelRuntime, tenant: str, refs: list[BlockRef],
                          out: dict[str, Resolved]) -> None:
        version, index = runtime.version, self.handles[CACHE_INDEX]
        found = await index.Lookup.remote(index_pb.LookupRequest(
            block_ids=[r.block_id for r in refs], model_version=version, tenant=tenant))
        texts = {r.block_id: r.text for r in refs if r.text}
        unknown = [r.block_id for r, f in zip(refs, found.results) if not f.known and r.block_id not in texts]
        if unknown:
            raise NotFoundError(
                f"unknown block id(s) {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''} for tenant "
                f"{tenant!r}: ingest the documents first (Ingest returns block ids) or pass the block text")
        tokens = sum(f.token_count for f in found.results if f.known)
        if tokens > self.max_context_tokens:
            raise LimitExceededError(
                f"the context blocks hold {tokens} tokens, over the limit of {self.max_context_tokens}; "
                f"pass fewer or smaller blocks")
        missing: list[str] = []
        for ref, result in zip(refs, found.results):
            kv = await self._read(runtime, result.location) if result.hit else None
            if kv is None:
                missing.append(ref.block_id)
            else:
                self._keep(runtime, tenant, ref.block_id, kv, out, "store")
        if missing:
            await self._compute(runtime, tenant, missing, texts, out)

    async def _read(self, runtime: ModelRuntime, location: str) -> BlockKV | None:
        data = await asyncio.to_thread(self.store.get, location)
        if data is None:
            return None
        try:
            return await asyncio.to_thread(KVCodec.decode, data, runtime.version, runtime.engine.device)
        except KVCodecError:
            return None  # corrupt or foreign: recomputed below, which overwrites it

    async def _compute(self, runtime: ModelRuntime, tenant: str, block_ids: list[str], texts: dict[str, str],
                       out: dict[str, Resolved]) -> None:
        index, version = self.handles[CACHE_INDEX], runtime.version
        need = [b for b in block_ids if b not in texts]
        if need:
            stored = await index.GetBlocks.remote(index_pb.GetBlocksRequest(tenant=tenant, block_ids=need))
            texts.update({s.block_id: s.text for s in stored.blocks if s.block_id})
        # drop stale rows first: precompute skips blocks the index says are stored
        await index.Evict.remote(index_pb.EvictRequest(tenant=tenant, block_ids=block_ids, model_version=version))
        computed = await self.handles[PRECOMPUTE].Precompute.remote(precompute_pb.PrecomputeRequest(
            texts=[texts[b] for b in block_ids], model_version=version, tenant=tenant))
        locations = {entry.block_id: entry.location for entry in computed.blocks}
        for block_id in block_ids:
            kv = await self._read(runtime, locations[block_id])
            if kv is None:
                raise KVCodecError(f"block {block_id} was precomputed but its entry cannot be read back "
                                   f"from {locations[block_id]}")
            self._keep(runtime, tenant, block_id, kv, out, "computed")

    def _keep(self, runtime: ModelRuntime, tenant: str, block_id: str, kv: BlockKV, out: dict[str, Resolved],
              tier: str) -> None:
        self.lru.put((tenant, block_id, runtime.version), kv, kv.keys.nbytes + kv.values.nbytes)
        out[block_id] = Resolved(block_id, kv, tier)
