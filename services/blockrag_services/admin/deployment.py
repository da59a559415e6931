"""Admin: the platform's health, model versions and cache statistics, for blockrag-admin.
The block-distillation RPCs answer UNIMPLEMENTED until the distillation job lands."""

from __future__ import annotations

import asyncio
import time

from ray import serve

from blockrag.v1 import admin_pb2 as pb
from blockrag.v1 import cache_index_pb2 as index_pb
from blockrag_services.errors import unary
from blockrag_services.handles import APPLICATIONS, CACHE_INDEX, GENERATION, PRECOMPUTE, Handles

SERVICE = "admin"
_DISTILLATION = "block distillation is not available yet: it arrives with the distillation job"


@serve.deployment
class Admin:
    def __init__(self, args: dict | None = None, health_timeout_s: float = 10.0):
        self.handles = Handles()
        self.health_timeout_s = health_timeout_s

    async def _probe(self, app: str) -> pb.ServiceHealth:
        started = time.perf_counter()
        try:
            if app == SERVICE:
                await self.ready()
            else:
                await asyncio.wait_for(self.handles[app].ready.remote(), self.health_timeout_s)
        except Exception as e:  # noqa: BLE001 - any failure is the answer
            detail = "no answer within %.0f s" % self.health_timeout_s if isinstance(e, TimeoutError) else \
                f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            return pb.ServiceHealth(service=app, healthy=False, detail=detail,
                                    latency_ms=(time.perf_counter() - started) * 1000)
        return pb.ServiceHealth(service=app, healthy=True, latency_ms=(time.perf_counter() - started) * 1000)

    @unary(SERVICE, pb.HealthResponse)
    async def Health(self, request: pb.HealthRequest) -> pb.HealthResponse:
        return pb.HealthResponse(services=await asyncio.gather(*(self._probe(a) for a in APPLICATIONS)))

    @unary(SERVICE, pb.ListModelVersionsResponse)
    async def ListModelVersions(self, request: pb.ListModelVersionsRequest) -> pb.ListModelVersionsResponse:
        serving = await self.handles[GENERATION].model_info.remote()
        precompute = await self.handles[PRECOMPUTE].model_info.remote()
        versions = [pb.ModelVersion(
            version=info["version"], source=info["source"], dtype=info["dtype"], device=info["device"],
            serving=info is serving, gate_key_error=info["key_error"], gate_logit_error=info["logit_error"])
            for info in ([serving] if precompute["version"] == serving["version"] else [serving, precompute])]
        return pb.ListModelVersionsResponse(versions=versions)

    @unary(SERVICE, pb.CacheStatsResponse)
    async def CacheStats(self, request: pb.CacheStatsRequest) -> pb.CacheStatsResponse:
        index = await self.handles[CACHE_INDEX].Stats.remote(index_pb.StatsRequest(tenant=request.tenant))
        replica = await self.handles[GENERATION].replica_cache_stats.remote()
        return pb.CacheStatsResponse(index=index, replicas=[pb.ReplicaCacheStats(**replica)])

    @unary(SERVICE, pb.StartDistillationResponse)
    async def StartDistillation(self, request):
        raise NotImplementedError(_DISTILLATION)

    @unary(SERVICE, pb.GetDistillationResponse)
    async def GetDistillation(self, request):
        raise NotImplementedError(_DISTILLATION)

    @unary(SERVICE, pb.PromoteModelVersionResponse)
    async def PromoteModelVersion(self, request):
        raise NotImplementedError(_DISTILLATION)

    @unary(SERVICE, pb.RollbackModelVersionResponse)
    async def RollbackModelVersion(self, request):
        raise NotImplementedError(_DISTILLATION)

    async def ready(self) -> str:
        return "ok"
