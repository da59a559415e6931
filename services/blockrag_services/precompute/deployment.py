"""Precompute: block texts -> KV on the model's device, batched, written to the object store and
committed to the cache index (blockrag.resolve.BlockWriter, over the index database directly: no
call to another deployment). Blocks already stored for the model version are not recomputed,
unless the caller asks for their KV back (return_kv: generation's miss path), which encodes every
text and answers with the frames.

A request names the model version (its fingerprint) to encode for, or none for the tenant's
active one; versions from the registry are loaded in the background (ServedModels), and a request
for one still loading is refused as UNAVAILABLE, to be retried. Each is gated under the deployment's
KV compression: one past the gate is not served, and is reported to the registry, which marks it
failed and rolls its scope back to the version before it (gated_versions).
"""

from __future__ import annotations

import asyncio
import logging

from ray import serve

from blockrag.engine_lock import to_thread_to_the_end
from blockrag.errors import CacheIndexError, ServiceUnavailableError
from blockrag.host_allocator import unpool_large_allocations
from blockrag.kvcache.compression_gate import CompressionDriftError, gated_loader
from blockrag.kvcache.index import CacheIndex, open_index_engine
from blockrag.kvcache.object_store import open_object_store
from blockrag.model_runtime import ModelRuntime
from blockrag.registry import ModelRegistry, ModelVersion
from blockrag.resolve import BlockWriter, ResolveLimits, TenantQuotas
from blockrag.served_models import ServedModels, VersionLoader, version_loader
from blockrag.v1 import precompute_pb2 as pb
from blockrag_services.access import INTERNAL, authorizer
from blockrag_services.config import PlatformConfig
from blockrag_services.replica_logs import replica_logs
from blockrag_services.errors import unary
from blockrag_services.handles import Handles
from blockrag_services.routing import OneApplication

SERVICE = "precompute"
log = logging.getLogger("blockrag.services.precompute")


@serve.deployment
class Precompute(OneApplication):
    application = SERVICE

    def __init__(self, args: dict | None = None, *, handles: Handles | None = None):
        unpool_large_allocations()  # freed KV goes back to the system (blockrag.host_allocator)
        self.config = PlatformConfig.from_args(args)
        replica_logs()
        self.store = open_object_store(self.config.object_store)
        self.database = open_index_engine(self.config.database)
        self.registry = ModelRegistry(self.database)
        # model versions (fingerprints) the compression gate refused on load here, with its error
        self.refused: dict[str, CompressionDriftError] = {}
        self.models = ServedModels(self.config.model, self.config.resources_of("precompute").threads(), self.registry,
                                   self.store, refresh_s=self.config.model_refresh_s,
                                   max_loaded=self.config.max_loaded_models, follow_promotions=True,
                                   load_version=gated_versions(self.config, self.store, self.registry, self.refused))
        self.handles = handles or Handles()  # the other applications: none is called on the request path
        self.authorizer = authorizer(self.config, self.database)
        # limits and the tenant's quotas are checked by the writer's plan, before it writes anything
        self.writer = BlockWriter(CacheIndex(self.database), self.store, ResolveLimits.of(self.config.limits),
                                  self.config.precompute_batch_tokens, TenantQuotas.of(self.config.quotas),
                                  compression=self.config.kv_compression)
        self.device_lock = asyncio.Lock()  # one batch on the device at a time
        from blockrag.telemetry.metrics import precompute_queue  # after PROMETHEUS_MULTIPROC_DIR is set

        self.queue = precompute_queue()  # requests waiting for the device lock, and holding it
        gate_compression(self.config, self.models.configured)

    @unary(SERVICE, pb.PrecomputeResponse, INTERNAL)
    async def Precompute(self, request: pb.PrecomputeRequest) -> pb.PrecomputeResponse:
        tenant = request.tenant or "default"
        runtime = await self._runtime(request.model_version, tenant)
        with self.models.lease(runtime):
            planning = asyncio.ensure_future(asyncio.to_thread(
                self.writer.plan, runtime, tenant, list(request.texts), recompute=request.return_kv))
            try:
                plan = await asyncio.shield(planning)
                with self.queue["waiting"].track_inprogress():
                    await self.device_lock.acquire()
            except asyncio.CancelledError:
                # the caller went away before its turn on the device: nothing will be encoded, so
                # the plan (done now or later in its thread) gives back its blocks, claims and
                # quota bytes now rather than when they expire
                planning.add_done_callback(lambda done: self._abandon(tenant, done))
                raise
            try:
                with self.queue["encoding"].track_inprogress():
                    # held until the encode ends, even for a caller gone meanwhile (engine_lock.py)
                    written = await to_thread_to_the_end(self.writer.encode, runtime, tenant, plan)
            finally:
                self.device_lock.release()
        by_text = {t: pb.BlockEntry(block_id=w.block_id, token_count=w.token_count, location=w.location,
                                    nbytes=w.nbytes, tier="store", computed=w.computed,
                                    kv=w.frame if request.return_kv else b"")
                   for t, w in zip(plan.texts, written)}
        return pb.PrecomputeResponse(blocks=[by_text[t.strip()] for t in request.texts], model_version=runtime.version)

    def _abandon(self, tenant: str, planning: asyncio.Future) -> None:
        if not planning.cancelled() and planning.exception() is None:  # a refused plan holds nothing
            asyncio.get_running_loop().run_in_executor(None, self.writer.abandon, tenant, planning.result())

    async def _runtime(self, model_version: str, tenant: str) -> ModelRuntime:
        """The named version (NotFoundError if unknown to the tenant, ServiceUnavailableError while
        it loads), or the tenant's active one."""
        if model_version:
            return await asyncio.to_thread(self.models.for_version, model_version, tenant)
        return await asyncio.to_thread(self.models.for_tenant, tenant)

    async def prepare(self, model_version: str, tenant: str) -> bool:
        """Whether this replica serves the version now; starts loading it if not (generation asks
        before switching a tenant to it). NotFoundError for a version unknown to the tenant;
        CompressionDriftError for one the compression gate refused here (no wait changes that: the
        switch fails now, with the gate's reason, instead of after the warm-up's timeout)."""
        if model_version in self.refused:
            raise self.refused[model_version]
        try:
            await self._runtime(model_version, tenant)
        except ServiceUnavailableError:
            return False
        return True

    async def model_info(self) -> dict:
        return self.models.configured.describe()

    async def ready(self) -> str:
        return "ok"


def gate_compression(config: PlatformConfig, runtime: ModelRuntime) -> None:
    """The compression gate before this replica writes a compressed frame (compression_gate.
    gate_runtime): CompressionDriftError (the replica, hence the platform, does not start) when
    answers over the configured model's KV under ``config.kv_compression`` drift past
    ``kv_compression_max_kl`` on held-out QA questions."""
    from blockrag.kvcache.compression_gate import gate_runtime

    report = gate_runtime(runtime, config.kv_compression, config.kv_compression_gate_questions,
                          config.kv_compression_max_kl)
    if report is not None:
        log.info("kv_compression %s passed its gate: mean answer-token KL %.5f over %d questions",
                 config.kv_compression, report.kl, report.questions)


def gated_versions(config: PlatformConfig, store, registry: ModelRegistry,
                   refused: dict[str, CompressionDriftError]) -> VersionLoader:
    """How this replica loads a model version (a promoted one, one a request names): with
    gate_compression's gate after each load, since a version's adapter changes the KV the
    setting compresses. A version past it is not served here, lands in ``refused`` by its
    fingerprint, and is reported to the registry (``ModelRegistry.refuse``: marked failed, its
    scope rolled back to the version before it, so that no replica or operator goes on calling it
    active). It is never loaded again here: the same weights fail the same gate, and ServedModels
    retries a failed load every RETRY_FAILED_S while the registry still names the version; such a
    retry raises the gate's error at once, and reports it again until the registry has recorded it
    (unreachable the first time)."""
    gated = gated_loader(version_loader(config.model, store), config.kv_compression,
                         config.kv_compression_gate_questions, config.kv_compression_max_kl)
    errors: dict[str, CompressionDriftError] = {}  # by version id: fingerprints may be unknown
    reported: set[str] = set()  # version ids whose refusal the registry recorded
    # ServedModels runs every load in its one loader thread: these are not shared between threads

    def load(version: ModelVersion) -> ModelRuntime:
        error = errors.get(version.version_id)
        if error is None:
            try:
                return gated(version)
            except CompressionDriftError as e:
                error = errors[version.version_id] = e
                if version.fingerprint:
                    refused[version.fingerprint] = e
        if version.version_id not in reported:
            try:
                registry.refuse(version.version_id, str(error))
            except CacheIndexError as e:
                log.warning("could not report the refusal of %s to the model registry (%s); reported again at "
                            "its next load", version.version_id, e)
            else:
                reported.add(version.version_id)
                log.warning("%s (the model registry has it failed now, and no longer active)", error)
        raise CompressionDriftError(str(error))

    return load
