"""Precompute: block texts -> KV on the model's device, batched, written to the object store and
committed to the cache index. Blocks already stored for the model version are not recomputed."""

from __future__ import annotations

import asyncio
import time

from ray import serve

from blockrag.errors import InvalidRequestError, LimitExceededError, ServiceUnavailableError
from blockrag.kvcache import CacheKey, KVCodec
from blockrag.kvcache.object_store import open_object_store
from blockrag.model_runtime import ModelRuntime
from blockrag.telemetry import observe_precompute_batch
from blockrag.v1 import cache_index_pb2 as index_pb
from blockrag.v1 import precompute_pb2 as pb
from blockrag_services.config import PlatformConfig
from blockrag_services.errors import unary
from blockrag_services.handles import CACHE_INDEX, Handles

SERVICE = "precompute"


@serve.deployment
class Precompute:
    def __init__(self, args: dict | None = None):
        self.config = PlatformConfig.from_args(args)
        self.runtime = ModelRuntime.load(self.config.model, self.config.resources.threads())
        self.store = open_object_store(self.config.object_store)
        self.handles = Handles()
        self.device_lock = asyncio.Lock()  # one batch on the device at a time

    @unary(SERVICE, pb.PrecomputeResponse)
    async def Precompute(self, request: pb.PrecomputeRequest) -> pb.PrecomputeResponse:
        version = self.runtime.version
        if request.model_version and request.model_version != version:
            raise ServiceUnavailableError(
                f"model version {request.model_version[:16]}... is not loaded by precompute, which serves "
                f"{version[:16]}...; deploy that version or leave model_version empty")
        tenant = request.tenant or "default"
        texts = list(dict.fromkeys(t.strip() for t in request.texts))  # distinct, in order
        if not texts or not all(texts):
            raise InvalidRequestError("texts must be non-empty strings (at least one)")
        ids = [self.runtime.block_ids(t) for t in texts]
        too_long = [i for i, t in enumerate(ids) if len(t) > self.config.limits.max_block_tokens]
        if too_long:
            raise LimitExceededError(
                f"{len(too_long)} block(s) are over the limit of {self.config.limits.max_block_tokens} tokens "
                f"(the first has {len(ids[too_long[0]])}); segment the text into smaller blocks")
        index = self.handles[CACHE_INDEX]
        registered = await index.RegisterBlocks.remote(index_pb.RegisterBlocksRequest(
            tenant=tenant, blocks=[index_pb.BlockText(text=t, token_count=len(i)) for t, i in zip(texts, ids)]))
        block_ids = list(registered.block_ids)
        found = await index.Lookup.remote(index_pb.LookupRequest(block_ids=block_ids, model_version=version,
                                                                 tenant=tenant))
        missing = [i for i, r in enumerate(found.results) if not r.hit]
        async with self.device_lock:
            written = await asyncio.to_thread(self._encode_and_store, tenant, [ids[i] for i in missing])
        entries = [index_pb.KVEntry(block_id=block_ids[i], model_version=version, location=loc, nbytes=n)
                   for i, (loc, n) in zip(missing, written)]
        if entries:
            await index.CommitEntries.remote(index_pb.CommitEntriesRequest(tenant=tenant, entries=entries))
        stored = {i: (r.location, r.nbytes) for i, r in enumerate(found.results) if r.hit}
        stored.update(zip(missing, written))
        written_at = set(missing)
        by_text = {t: pb.BlockEntry(block_id=block_ids[i], token_count=len(ids[i]), location=stored[i][0],
                                    nbytes=stored[i][1], tier="store", computed=i in written_at)
                   for i, t in enumerate(texts)}
        return pb.PrecomputeResponse(blocks=[by_text[t.strip()] for t in request.texts], model_version=version)

    def _encode_and_store(self, tenant: str, blocks: list[list[int]]) -> list[tuple[str, int]]:
        """Encode in groups of about precompute_batch_tokens; write each frame; (location, nbytes)."""
        out: list[tuple[str, int]] = []
        engine, version = self.runtime.engine, self.runtime.version
        started = time.perf_counter()
        for group, kvs in engine.encode_groups(blocks, self.config.precompute_batch_tokens):
            observe_precompute_batch(sum(map(len, group)), time.perf_counter() - started)
            for kv in kvs:
                frame = KVCodec.encode(kv, version)
                out.append((self.store.put(CacheKey.of(tenant, version, kv.token_ids).hex, frame), len(frame)))
            started = time.perf_counter()
        return out

    async def model_info(self) -> dict:
        return self.runtime.describe()

    async def ready(self) -> str:
        return "ok"
