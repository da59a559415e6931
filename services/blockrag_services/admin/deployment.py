"""Admin: the platform's health, model versions, the cache (statistics, orphan sweep, eviction),
and block distillation (runs through the DistillationRunner actor, versions in the model
registry), for blockrag-admin. A thin translator: the logic is in blockrag.distill.runs,
blockrag.registry and blockrag.kvcache (sweeper, eviction). Each replica also runs the periodic
cache maintenance (blockrag.kvcache.maintenance: eviction by the configured bounds, then the
orphan sweep) while the platform runs."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict

from ray import serve

from blockrag.distill.runs import JobStores, cancel_run
from blockrag.kvcache.eviction import evict
from blockrag.kvcache.maintenance import MaintenanceLoop
from blockrag.kvcache.sweeper import DEFAULT_GRACE_S, sweep_orphans
from blockrag.v1 import admin_pb2 as pb
from blockrag.v1 import cache_index_pb2 as index_pb
from blockrag_services.admin.messages import (
    eviction_message,
    eviction_policy,
    key_message,
    role_of,
    run_message,
    run_request,
    version_message,
)
from blockrag_services.access import ADMIN, authorizer
from blockrag_services.config import PlatformConfig
from blockrag_services.errors import streaming, unary
from blockrag_services.handles import APPLICATIONS, CACHE_INDEX, GENERATION, PRECOMPUTE, Handles
from blockrag_services.replica_logs import replica_logs
from blockrag_services.routing import OneApplication

SERVICE = "admin"


@serve.deployment
class Admin(OneApplication):
    application = SERVICE

    def __init__(self, args: dict | None = None, health_timeout_s: float = 10.0, *, handles=None, runner=None,
                 watch_interval_s: float = 0.5):
        """handles: the other applications (default: Serve's); runner: the DistillationRunner
        actor (default: the cluster's, created on first use)."""
        replica_logs()  # each maintenance pass's line in this replica's log
        self.config = PlatformConfig.from_args(args)
        self.handles = handles or Handles()
        self.health_timeout_s = health_timeout_s
        self.watch_interval_s = watch_interval_s
        self.stores = JobStores.open(self.config.database, self.config.object_store)
        self.authorizer = authorizer(self.config, self.stores.index.engine)
        self._runner = runner
        if self.config.distill.schedule or any(not r.finished for r in self.stores.runs.list()):
            self.runner()  # the schedule runs, and unfinished runs resume, while the platform runs
        maintenance = self.config.cache_maintenance
        self.maintenance = MaintenanceLoop(self.stores.index, self.stores.store, maintenance).start() \
            if maintenance.enabled else None

    def __del__(self) -> None:
        """Serve calls this when the replica stops: the maintenance loop ends after its pass."""
        if getattr(self, "maintenance", None) is not None:
            self.maintenance.stop(timeout=0)

    def runner(self):
        if self._runner is None:
            from blockrag_services.distillation.runner import runner

            self._runner = runner(self.config)
            self._runner.configure.remote(self.config.to_args())  # an existing runner takes this config
        return self._runner

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

    @unary(SERVICE, pb.HealthResponse, ADMIN)
    async def Health(self, request: pb.HealthRequest) -> pb.HealthResponse:
        return pb.HealthResponse(services=await asyncio.gather(*(self._probe(a) for a in APPLICATIONS)))

    @unary(SERVICE, pb.ListModelVersionsResponse, ADMIN)
    async def ListModelVersions(self, request: pb.ListModelVersionsRequest) -> pb.ListModelVersionsResponse:
        serving = await self.handles[GENERATION].model_info.remote()
        precompute = await self.handles[PRECOMPUTE].model_info.remote()
        versions = [pb.ModelVersion(
            version=info["version"], source=info["source"], dtype=info["dtype"], device=info["device"],
            serving=info is serving, gate_key_error=info["key_error"], gate_logit_error=info["logit_error"])
            for info in ([serving] if precompute["version"] == serving["version"] else [serving, precompute])]
        registered = await asyncio.to_thread(self.stores.registry.list)
        return pb.ListModelVersionsResponse(versions=versions, registered=[version_message(v) for v in registered])

    @unary(SERVICE, pb.CacheStatsResponse, ADMIN)
    async def CacheStats(self, request: pb.CacheStatsRequest) -> pb.CacheStatsResponse:
        index = await self.handles[CACHE_INDEX].Stats.remote(index_pb.StatsRequest(tenant=request.tenant))
        replica = await self.handles[GENERATION].replica_cache_stats.remote()
        usage = await asyncio.to_thread(self.stores.index.usage)
        tenants = [pb.TenantBytes(tenant=u.tenant, entries=u.entries, bytes=u.bytes) for u in usage
                   if not request.tenant or u.tenant == request.tenant]
        totals = {k: v for k, v in replica.items() if k != "tiers"}
        tiers = [pb.MemoryTierStats(**t) for t in replica.get("tiers", [])]
        return pb.CacheStatsResponse(index=index, replicas=[pb.ReplicaCacheStats(**totals, tiers=tiers)],
                                     tenants=tenants)

    @unary(SERVICE, pb.SweepCacheResponse, ADMIN)
    async def SweepCache(self, request: pb.SweepCacheRequest) -> pb.SweepCacheResponse:
        report = await asyncio.to_thread(sweep_orphans, self.stores.index, self.stores.store,
                                         grace_s=request.grace_s or DEFAULT_GRACE_S, dry_run=request.dry_run)
        return pb.SweepCacheResponse(**asdict(report))

    @unary(SERVICE, pb.EvictCacheResponse, ADMIN)
    async def EvictCache(self, request: pb.EvictCacheRequest) -> pb.EvictCacheResponse:
        policy = eviction_policy(request)
        tenant = request.tenant if request.HasField("tenant") else None
        report = await asyncio.to_thread(evict, self.stores.index, self.stores.store, policy, tenant=tenant,
                                         reader_grace_s=self.config.cache_maintenance.reader_grace_s)
        return eviction_message(report)

    # -- distillation runs ---------------------------------------------------------------------

    @unary(SERVICE, pb.StartDistillationResponse, ADMIN)
    async def StartDistillation(self, request: pb.StartDistillationRequest) -> pb.StartDistillationResponse:
        run = await self.runner().start.remote(run_request(request))
        return pb.StartDistillationResponse(run=run_message(run))

    @unary(SERVICE, pb.GetDistillationResponse, ADMIN)
    async def GetDistillation(self, request: pb.GetDistillationRequest) -> pb.GetDistillationResponse:
        run = await asyncio.to_thread(self.stores.runs.get, request.run_id)
        reply = pb.GetDistillationResponse(run=run_message(run))
        if run.version_id:
            reply.version.CopyFrom(version_message(await asyncio.to_thread(self.stores.registry.get, run.version_id)))
        return reply

    @unary(SERVICE, pb.ListDistillationsResponse, ADMIN)
    async def ListDistillations(self, request: pb.ListDistillationsRequest) -> pb.ListDistillationsResponse:
        tenant = request.tenant if request.HasField("tenant") else None
        runs = await asyncio.to_thread(self.stores.runs.list, tenant, request.limit or 50)
        return pb.ListDistillationsResponse(runs=[run_message(r) for r in runs])

    @unary(SERVICE, pb.CancelDistillationResponse, ADMIN)
    async def CancelDistillation(self, request: pb.CancelDistillationRequest) -> pb.CancelDistillationResponse:
        run = await asyncio.to_thread(cancel_run, self.stores.runs, request.run_id)
        return pb.CancelDistillationResponse(run=run_message(run))

    @streaming(SERVICE, ADMIN)
    async def WatchDistillation(self, request: pb.WatchDistillationRequest):
        """Every change of the run's row (polled), then the ended run."""
        last = None
        while True:
            run = await asyncio.to_thread(self.stores.runs.get, request.run_id)
            if (run.status, run.step, run.updated_at) != last:
                last = (run.status, run.step, run.updated_at)
                yield pb.WatchDistillationResponse(run=run_message(run))
            if run.finished:
                return
            await asyncio.sleep(self.watch_interval_s)

    # -- versions ------------------------------------------------------------------------------

    @unary(SERVICE, pb.PromoteModelVersionResponse, ADMIN)
    async def PromoteModelVersion(self, request: pb.PromoteModelVersionRequest) -> pb.PromoteModelVersionResponse:
        registry = self.stores.registry
        tenant = request.tenant if request.HasField("tenant") else None
        if tenant is None:
            tenant = (await asyncio.to_thread(registry.get, request.version)).tenant
        version = await asyncio.to_thread(registry.promote, request.version, tenant)
        return pb.PromoteModelVersionResponse(version=version_message(version))

    @unary(SERVICE, pb.RollbackModelVersionResponse, ADMIN)
    async def RollbackModelVersion(self, request: pb.RollbackModelVersionRequest) -> pb.RollbackModelVersionResponse:
        version = await asyncio.to_thread(self.stores.registry.rollback, request.tenant)
        return pb.RollbackModelVersionResponse(version=version_message(version) if version else None)

    # -- API keys --------------------------------------------------------------------------------

    @unary(SERVICE, pb.CreateApiKeyResponse, ADMIN)
    async def CreateApiKey(self, request: pb.CreateApiKeyRequest) -> pb.CreateApiKeyResponse:
        record, key = await asyncio.to_thread(self.authorizer.keys.create, request.tenant, role_of(request.role),
                                              request.label)
        return pb.CreateApiKeyResponse(key=key_message(record), api_key=key.text)

    @unary(SERVICE, pb.ListApiKeysResponse, ADMIN)
    async def ListApiKeys(self, request: pb.ListApiKeysRequest) -> pb.ListApiKeysResponse:
        tenant = request.tenant if request.HasField("tenant") else None
        keys = await asyncio.to_thread(self.authorizer.keys.list, tenant)
        return pb.ListApiKeysResponse(keys=[key_message(k) for k in keys])

    @unary(SERVICE, pb.RevokeApiKeyResponse, ADMIN)
    async def RevokeApiKey(self, request: pb.RevokeApiKeyRequest) -> pb.RevokeApiKeyResponse:
        record = await asyncio.to_thread(self.authorizer.keys.revoke, request.key_id)
        return pb.RevokeApiKeyResponse(key=key_message(record))

    async def ready(self) -> str:
        return "ok"
