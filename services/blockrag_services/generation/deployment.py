"""Generation: ingest documents (segment -> precompute -> record) and answer questions over cached
blocks, streaming. Every answer's usage says where each block's KV came from and which model
version answered.

Blocks are resolved by blockrag.resolve.BlockResolver: this replica's memory, then the entries the
cache index lists (read from the index database and the object store directly, no call to another
deployment), then ONE call to Precompute for whatever is still missing, whose answer carries the
KV (generation/blocks.py). A question over a collection adds one Search call to the cache index.

Each tenant is served by its active model version (ServedModels, following the registry); a
request captures its runtime once, so an answer in flight ends on the version it started with.
With the question log on, each completed answer's question and block ids are logged for
distillation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from ray import serve

from blockrag import names
from blockrag.errors import InvalidRequestError, LimitExceededError, NotFoundError
from blockrag.host_allocator import unpool_large_allocations
from blockrag.kvcache.index import CacheIndex, open_index_engine
from blockrag.kvcache.tiers import replica_tiers
from blockrag.kvcache.object_store import open_object_store
from blockrag.model_runtime import ModelRuntime
from blockrag.registry import ModelRegistry, QuestionLog
from blockrag.resolve import BlockRef, BlockResolver, IngestLimits, ResolveLimits, StoreTier, TenantQuotas
from blockrag.resolve.ingest_calls import PER_DOCUMENT, write_in_calls
from blockrag.scheduler import AnswerScheduler
from blockrag.served_models import ServedModels
from blockrag.telemetry import TokenStreamTimer, learn_tenant
from blockrag.text_stream import TextStream
from blockrag.v1 import cache_index_pb2 as index_pb
from blockrag.v1 import generation_pb2 as pb
from blockrag.v1 import precompute_pb2 as precompute_pb
from blockrag.v1 import segmentation_pb2 as segment_pb
from blockrag_services.access import READ, WRITE, authorizer
from blockrag_services.config import PlatformConfig
from blockrag_services.replica_logs import replica_logs
from blockrag_services.errors import streaming, unary, unwrap
from blockrag_services.generation.blocks import PrecomputeEncoder
from blockrag_services.generation.warming import warm_blocks
from blockrag_services.handles import CACHE_INDEX, PRECOMPUTE, SEGMENTATION, Handles
from blockrag_services.routing import OneApplication

SERVICE = "generation"
log = logging.getLogger("blockrag.services.generation")

WARM_TIMEOUT_S = 600.0  # a switch waits this long for its warm-up, then goes ahead without it
PRUNE_EVERY_S = 3600.0  # the question log is pruned at most this often (and at the first record)


@serve.deployment
class Generation(OneApplication):
    application = SERVICE

    def __init__(self, args: dict | None = None, *, handles: Handles | None = None):
        unpool_large_allocations()  # freed KV goes back to the system (blockrag.host_allocator)
        self.config = PlatformConfig.from_args(args)
        replica_logs()
        self.limits = self.config.limits
        self.ingest_limits = IngestLimits.of(self.limits)
        self.handles = handles or Handles()
        store = open_object_store(self.config.object_store)
        self.database = open_index_engine(self.config.database)
        self.authorizer = authorizer(self.config, self.database)
        self.loop: asyncio.AbstractEventLoop | None = None  # the replica's, for the warm hook's calls
        self.models = ServedModels(self.config.model, self.config.resources_of("generation").threads(), ModelRegistry(self.database),
                                   store, warm=self._warm, refresh_s=self.config.model_refresh_s,
                                   max_loaded=self.config.max_loaded_models)
        self.lru = replica_tiers(self.config.model.resolved_device(), self.config.replica_cache_bytes,
                                 self.config.replica_pinned_cache_bytes, self.config.kv_compression)
        # the engine's users take turns: each step of the answers decoded together (one
        # AnswerScheduler per model version), block encoding, warm-up
        self.engine_lock = asyncio.Lock()
        self.schedulers: dict[str, AnswerScheduler] = {}
        self.index = CacheIndex(self.database)
        self.quotas = TenantQuotas.of(self.config.quotas)
        self.blocks = BlockResolver(PrecomputeEncoder(self.handles),
                                    store=StoreTier(self.index, store, compression=self.config.kv_compression),
                                    memory=self.lru, limits=ResolveLimits.of(self.limits),
                                    engine_lock=self.engine_lock, service=SERVICE,
                                    exact_first_passage=self.config.exact_first_passage)
        self.questions = None
        if self.config.question_log:
            self.questions = QuestionLog(self.database, self.config.question_log_retention_days,
                                         self.config.question_log_max_per_tenant)
        self.pruned_at = float("-inf")
        self.pending: set[asyncio.Task] = set()  # question-log writes under way

    # ---- Ingest ----------------------------------------------------------------------------

    @unary(SERVICE, pb.IngestResponse, WRITE)
    async def Ingest(self, request: pb.IngestRequest) -> pb.IngestResponse:
        self._check_ingest(request)
        tenant = request.tenant or "default"
        # a tenant at its stored-bytes quota: refused before its documents are segmented (Precompute
        # checks both quotas on the blocks themselves)
        if self.quotas.active:
            await asyncio.to_thread(self.quotas.check_room, tenant, lambda: self.index.stats(tenant).bytes)
        runtime = await self._runtime(tenant)
        segmented = await asyncio.gather(*(
            self.handles[SEGMENTATION].Segment.remote(
                segment_pb.SegmentRequest(text=d.text, options=request.segment_options))
            for d in request.documents))

        # in calls of whole documents: when the object store fails or a quota is reached, the
        # documents before are kept and the rest reported (blockrag.resolve.ingest_calls)
        async def write(call: list[int]) -> int:
            texts = list(dict.fromkeys(s.text for i in call for s in segmented[i].blocks))
            try:
                reply = await self.handles[PRECOMPUTE].Precompute.remote(precompute_pb.PrecomputeRequest(
                    texts=texts, model_version=runtime.version, tenant=tenant))
            except Exception as e:  # noqa: BLE001 - Ray wraps the cause, which says whether it is per document
                if isinstance(cause := unwrap(e), PER_DOCUMENT):
                    raise cause from None
                raise
            return sum(b.computed for b in reply.blocks)

        outcome = await write_in_calls([d.id for d in request.documents],
                                       [sum(s.token_count for s in d.blocks) for d in segmented],
                                       self.config.precompute_batch_tokens, write)
        failed = [pb.FailedDocument(document_id=i, reason=r) for i, r in outcome.failed]
        documents = []
        if outcome.written:  # one call for every written document, one transaction in the index
            registered = await self.handles[CACHE_INDEX].RegisterBlocks.remote(index_pb.RegisterBlocksRequest(
                tenant=tenant, collection=request.collection, documents=[index_pb.DocumentBlocks(
                    document_id=request.documents[i].id,
                    blocks=[index_pb.BlockText(text=s.text, token_count=s.token_count) for s in segmented[i].blocks])
                    for i in outcome.written]))
            for i, ids in zip(outcome.written, registered.documents, strict=True):
                documents.append(pb.IngestedDocument(document_id=request.documents[i].id, block_ids=ids.block_ids,
                                                     block_tokens=[s.token_count for s in segmented[i].blocks]))
        if documents:
            learn_tenant(tenant)  # its first ask is labelled by name (TenantLabels.learn)
        if failed:
            log.warning("ingest into collection %r of tenant %r: %d of %d document(s) not written (first: %r): %s",
                        request.collection, tenant, len(failed), len(request.documents), failed[0].document_id,
                        failed[0].reason)
        return pb.IngestResponse(documents=documents, model_version=runtime.version, computed_blocks=outcome.computed,
                                 failed_documents=failed)

    def _check_ingest(self, request: pb.IngestRequest) -> None:
        if not request.collection.strip():
            raise InvalidRequestError("collection is required: name the collection the documents go into")
        if not request.documents:
            raise InvalidRequestError("documents is empty: pass at least one document")
        # before any document is segmented: one too large would fail at Segment after the others ran
        self.ingest_limits.check([(d.id, d.text) for d in request.documents])
        ids = [d.id for d in request.documents]
        if not all(i.strip() for i in ids) or len(set(ids)) != len(ids):
            raise InvalidRequestError("every document needs a non-empty id, unique within the request")
        empty = [d.id for d in request.documents if not d.text.strip()]
        if empty:
            raise InvalidRequestError(f"document(s) {', '.join(empty[:5])} have no text")
        # what the index would refuse at the n-th document, after the first n-1 were recorded
        names.name(request.collection, "collection")
        if request.tenant:
            names.name(request.tenant, "tenant")
        for i, document in enumerate(request.documents):
            names.name(document.id, f"the id of document {i}")
            names.text(document.text, f"the text of document {i} ({document.id!r:.40})")

    # ---- Generate --------------------------------------------------------------------------

    @streaming(SERVICE, READ)
    async def Generate(self, request: pb.GenerateRequest):
        tenant = request.tenant or "default"
        arrived = time.perf_counter()
        timer = TokenStreamTimer(tenant)
        runtime = await self._runtime(tenant)  # captured once: the whole answer uses this version
        with self.models.lease(runtime):
            async for response in self._generate(request, tenant, runtime, arrived, timer):
                yield response

    async def _generate(self, request: pb.GenerateRequest, tenant: str, runtime: ModelRuntime, arrived: float,
                        timer: TokenStreamTimer):
        final = self._check_generate(request, runtime)
        answers = self._scheduler(runtime)
        answers.check_room()  # RESOURCE_EXHAUSTED before any block is searched or resolved
        refs = await self._context(tenant, request)
        # limits, metrics and the replica cache's figures: in the resolver
        resolved = await self.blocks.resolve(runtime, tenant, refs, question_tokens=len(final))
        context, computed = resolved.context_tokens, resolved.computed_tokens
        usage = pb.Usage(prompt_tokens=context + len(final), computed_tokens=computed + len(final),
                         cached_tokens=context - computed, model_version=runtime.version,
                         blocks_by_tier=dict(resolved.tiers()), block_ids=[b.block_id for b in resolved.blocks])
        max_new = request.max_new_tokens or self.limits.default_max_new_tokens
        stream = TextStream(runtime.tokenizer)
        # decoded with the replica's other answers; a client that goes away leaves at the next step
        async for token in answers.stream(runtime.engine.request(resolved.kvs, final, max_new, request.temperature,
                                                                 seed=request.seed or None)):
            timer.token()
            if not usage.ttft_ms:
                usage.ttft_ms = (time.perf_counter() - arrived) * 1000
            piece = stream.push(token)
            if piece:
                yield pb.GenerateResponse(text=piece)
        usage.completion_tokens = len(stream.tokens)
        usage.e2e_ms = timer.finish() * 1000
        if self.questions is not None:  # the answer is complete: log what was asked
            self._log_question(tenant, request.question, list(usage.block_ids), runtime.version)
        yield pb.GenerateResponse(done=True, usage=usage)

    def _scheduler(self, runtime: ModelRuntime) -> AnswerScheduler:
        """The answers of `runtime`'s engine; a version's scheduler (and its KV slots) goes when
        the version is no longer loaded and nothing runs on it."""
        answers = self.schedulers.get(runtime.version)
        if answers is None or answers.engine is not runtime.engine:
            answers = self.schedulers[runtime.version] = AnswerScheduler(runtime.engine, self.engine_lock,
                                                                         self.config.scheduler, service=SERVICE)
            loaded = {entry["model_version"] for entry in self.models.describe()["loaded"]}
            for version, other in list(self.schedulers.items()):
                if version not in loaded and other.idle():
                    del self.schedulers[version]
        return answers

    def _check_generate(self, request: pb.GenerateRequest, runtime: ModelRuntime) -> list[int]:
        """The final block's ids, after checking the request against the limits."""
        if not request.question.strip():
            raise InvalidRequestError("question is empty")
        if not 0 <= request.max_new_tokens <= self.limits.max_new_tokens:
            raise LimitExceededError(f"max_new_tokens must be between 1 and {self.limits.max_new_tokens} "
                                     f"(0 for the default, {self.limits.default_max_new_tokens})")
        if not 0.0 <= request.temperature <= 2.0:
            raise InvalidRequestError(f"temperature must be in [0, 2], got {request.temperature}")
        if not request.context and not request.collection:
            raise InvalidRequestError("pass context blocks or a collection to search for them")
        if request.context and request.collection:
            raise InvalidRequestError("pass context blocks or a collection, not both")
        if any(not (c.block_id or c.text.strip()) for c in request.context):
            raise InvalidRequestError("every context block needs a block_id or a non-empty text")
        final = runtime.template.final_ids(request.question)
        self.blocks.limits.check_question(len(final))  # before a collection is searched
        return final

    async def _context(self, tenant: str, request: pb.GenerateRequest) -> list[BlockRef]:
        if request.context:
            return [BlockRef.of(tenant, c.block_id, c.text) for c in request.context]
        k = request.top_k or self.limits.default_top_k
        self.blocks.limits.check_blocks(k, "blocks asked for (top_k)")
        index = self.handles[CACHE_INDEX]
        found = await index.Search.remote(index_pb.SearchRequest(
            tenant=tenant, collection=request.collection, query=request.question, k=k))
        # best hit last, next to the question: the default model (distilled or not) answers from a
        # block near the question more reliably than from one five blocks back (make demo's three
        # sample documents: right with the Veldmark block last, wrong with it first)
        blocks = list(found.hits)[::-1]
        if not blocks:  # no block shares a word with the question: the collection's first k, as read
            blocks = (await index.ListCollection.remote(index_pb.ListCollectionRequest(
                tenant=tenant, collection=request.collection, limit=k))).blocks
        if not blocks:
            raise NotFoundError(f"collection {request.collection!r} has no documents for tenant {tenant!r}; "
                                f"ingest some first")
        # with their texts: a block whose KV is missing is computed without asking the index again
        return list({b.block_id: BlockRef(b.block_id, b.text) for b in blocks}.values())

    # ---- model versions ----------------------------------------------------------------------

    async def _runtime(self, tenant: str) -> ModelRuntime:
        self.loop = asyncio.get_running_loop()
        return await asyncio.to_thread(self.models.for_tenant, tenant)  # may read the registry

    def _warm(self, tenant: str, old: str, new: str) -> None:
        """ServedModels' warm hook (its loader thread): re-encode the tenant's hot blocks for the
        new version through Precompute, on the replica's event loop (where the handles live)."""
        loop = self.loop
        if loop is None or loop.is_closed():
            log.warning("no request has run on this replica yet: switching tenant %r without warming", tenant)
            return
        future = asyncio.run_coroutine_threadsafe(
            warm_blocks(self.database, self.handles, tenant, old, new, self.config.warm_blocks, WARM_TIMEOUT_S), loop)
        try:
            future.result(WARM_TIMEOUT_S + 10)
        finally:
            future.cancel()

    # ---- question log ------------------------------------------------------------------------

    def _log_question(self, tenant: str, question: str, block_ids: list[str], model_version: str) -> None:
        """Write the row off the request path; a failed write is logged, never the answer's error."""
        task = asyncio.create_task(asyncio.to_thread(self._record, tenant, question, block_ids, model_version))
        self.pending.add(task)
        task.add_done_callback(self._logged)

    def _record(self, tenant: str, question: str, block_ids: list[str], model_version: str) -> None:
        self.questions.record(tenant, question, block_ids, model_version)
        if time.monotonic() - self.pruned_at >= PRUNE_EVERY_S:
            self.pruned_at = time.monotonic()
            self.questions.prune()

    def _logged(self, task: asyncio.Task) -> None:
        self.pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            log.warning("question log: the question was not recorded (%s: %s)", type(error).__name__, error)

    # ---- for the admin service ---------------------------------------------------------------

    async def model_info(self) -> dict:
        return self.models.configured.describe()

    async def served_models(self) -> dict:
        """This replica's runtimes, switches under way and load failures (ServedModels.describe)."""
        return self.models.describe()

    async def replica_cache_stats(self) -> dict:
        s = self.lru.stats()
        return {"replica": serve.get_replica_context().replica_id.unique_id, "entries": s.entries, "bytes": s.bytes,
                "capacity_bytes": s.capacity_bytes, "hits": s.hits, "misses": s.misses,
                "tiers": [{"tier": name, **dataclasses.asdict(t)} for name, t in self.lru.tier_stats().items()]}

    async def ready(self) -> str:
        return "ok"
