"""Precompute: block texts -> KV on the model's device, batched, written to the object store and
committed to the cache index. Blocks already stored for the model version are not recomputed.

A request names the model version (its fingerprint) to encode for, or none for the tenant's
active one; versions from the registry are loaded in the background (ServedModels), and a request
for one still loading is refused as UNAVAILABLE, to be retried.
"""

from __future__ import annotations

import asyncio
import time

from ray import serve

from blockrag.errors import InvalidRequestError, LimitExceededError, ServiceUnavailableError
from blockrag.kvcache import CacheKey, KVCodec
from blockrag.kvcache.index import open_index_engine
from blockrag.kvcache.object_store import open_object_store
from blockrag.model_runtime import ModelRuntime
from blockrag.registry import ModelRegistry
from blockrag.served_models import ServedModels
from blockrag.telemetry import observe_precompute_batch
from blockrag.v1 import cache_index_pb2 as index_pb
from blockrag.v1 import precompute_pb2 as pb
from blockrag_services.access import INTERNAL, authorizer
from blockrag_services.config import PlatformConfig
from blockrag_services.replica_logs import replica_logs
from blockrag_services.errors import unary
from blockrag_services.handles import CACHE_INDEX, Handles

SERVICE = "precompute"


@serve.deployment
class Precompute:
    def __init__(self, args: dict | None = None, *, handles: Handles | None = None):
        self.config = PlatformConfig.from_args(args)
        replica_logs()
        self.store = open_object_store(self.config.object_store)
        self.database = open_index_engine(self.config.database)
        self.models = ServedModels(self.config.model, self.config.resources.threads(), ModelRegistry(self.database),
                                   self.store, refresh_s=self.config.model_refresh_s,
                                   max_loaded=self.config.max_loaded_models, follow_promotions=True)
        self.handles = handles or Handles()
        self.authorizer = authorizer(self.config, self.database)
        self.device_lock = asyncio.Lock()  # one batch on the device at a time

    @unary(SERVICE, pb.PrecomputeResponse, INTERNAL)
    async def Precompute(self, request: pb.PrecomputeRequest) -> pb.PrecomputeResponse:
        tenant = request.tenant or "default"
        texts = list(dict.fromkeys(t.strip() for t in request.texts))  # distinct, in order
        if not texts or not all(texts):
            raise InvalidRequestError("texts must be non-empty strings (at least one)")
        runtime = await self._runtime(request.model_version, tenant)
        with self.models.lease(runtime):
            return await self._precompute(request, tenant, texts, runtime)

    async def _precompute(self, request: pb.PrecomputeRequest, tenant: str, texts: list[str],
                          runtime: ModelRuntime) -> pb.PrecomputeResponse:
        version = runtime.version
        ids = [runtime.block_ids(t) for t in texts]
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
            written = await asyncio.to_thread(self._encode_and_store, runtime, tenant, [ids[i] for i in missing])
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

    def _encode_and_store(self, runtime: ModelRuntime, tenant: str, blocks: list[list[int]]) -> list[tuple[str, int]]:
        """Encode in groups of about precompute_batch_tokens; write each frame; (location, nbytes)."""
        out: list[tuple[str, int]] = []
        engine, version = runtime.engine, runtime.version
        started = time.perf_counter()
        for group, kvs in engine.encode_groups(blocks, self.config.precompute_batch_tokens):
            observe_precompute_batch(sum(map(len, group)), time.perf_counter() - started)
            for kv in kvs:
                frame = KVCodec.encode(kv, version)
                out.append((self.store.put(CacheKey.of(tenant, version, kv.token_ids).hex, frame), len(frame)))
            started = time.perf_counter()
        return out

    async def _runtime(self, model_version: str, tenant: str) -> ModelRuntime:
        """The named version (NotFoundError if unknown to the tenant, ServiceUnavailableError while
        it loads), or the tenant's active one."""
        if model_version:
            return await asyncio.to_thread(self.models.for_version, model_version, tenant)
        return await asyncio.to_thread(self.models.for_tenant, tenant)

    async def prepare(self, model_version: str, tenant: str) -> bool:
        """Whether this replica serves the version now; starts loading it if not (generation asks
        before switching a tenant to it). NotFoundError for a version unknown to the tenant."""
        try:
            await self._runtime(model_version, tenant)
        except ServiceUnavailableError:
            return False
        return True

    async def model_info(self) -> dict:
        return self.models.configured.describe()

    async def ready(self) -> str:
        return "ok"
