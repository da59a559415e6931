"""Every metric of the platform, defined once, with the helpers services record them through.

Names start with ``blockrag_``; latency histograms carry the field's name and unit
(``time_to_first_token_seconds``...). Cache use is counted per tenant and per tier, in blocks
and in tokens; the tenant label is bounded (TenantLabels: unknown tenants fold into "other"),
here, once, for every metric that has one. The objects are plain ``prometheus_client`` metrics:
in a process started with ``PROMETHEUS_MULTIPROC_DIR`` set they write to memory-mapped files in that directory, which one
exporter per node aggregates (see ``blockrag.telemetry.exporter``); without it they live in the
process's default registry.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Literal, get_args

from prometheus_client import Counter, Gauge, Histogram, values
from prometheus_client.context_managers import Timer
from prometheus_client.metrics import MetricWrapperBase

from blockrag.telemetry.tenant_labels import TENANT_LABELS

Tier = Literal["memory", "store", "computed"]
TIERS: tuple[str, ...] = get_args(Tier)

# 1 ms .. 60 s, roughly x2.5 per step: covers a decode step on a GPU up to a long CPU prefill.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)

TIME_TO_FIRST_TOKEN = Histogram(
    "blockrag_time_to_first_token_seconds",
    "Time from receiving a generation request to streaming its first token.",
    ["tenant"],
    buckets=LATENCY_BUCKETS,
)
INTER_TOKEN_LATENCY = Histogram(
    "blockrag_inter_token_latency_seconds",
    "Time between two consecutive streamed tokens of one answer.",
    ["tenant"],
    buckets=LATENCY_BUCKETS,
)
E2E_REQUEST_LATENCY = Histogram(
    "blockrag_e2e_request_latency_seconds",
    "Time from receiving a generation request to its last token.",
    ["tenant"],
    buckets=LATENCY_BUCKETS,
)
PROMPT_TOKENS = Counter(
    "blockrag_prompt_tokens_total",
    "Prompt tokens of generation requests (blocks + question).",
    ["tenant"],
)
PROMPT_TOKENS_CACHED = Counter(
    "blockrag_prompt_tokens_cached_total",
    "Prompt tokens whose KV came from a cache tier (memory or store) instead of being computed.",
    ["tenant"],
)
BLOCKS = Counter(
    "blockrag_blocks_total",
    "Blocks used by generation requests, by the tier their KV came from (memory, store, computed).",
    ["tenant", "tier"],
)
BLOCK_TOKENS = Counter(
    "blockrag_block_tokens_total",
    "Tokens of the blocks used by generation requests, by the tier their KV came from.",
    ["tenant", "tier"],
)
REQUESTS = Counter(
    "blockrag_requests_total",
    "gRPC requests handled, by service, method and status code (OK included).",
    ["service", "method", "code"],
)
REQUEST_ERRORS = Counter(
    "blockrag_request_errors_total",
    "gRPC requests that ended with a status code other than OK.",
    ["service", "method", "code"],
)
PRECOMPUTE_TOKENS = Counter(
    "blockrag_precompute_tokens_total",
    "Block tokens whose KV cache the precompute service computed.",
)
PRECOMPUTE_BATCH = Histogram(
    "blockrag_precompute_batch_seconds",
    "Wall time of one precompute batch (forward pass over its blocks).",
    buckets=LATENCY_BUCKETS,
)
PRECOMPUTE_BATCH_TOKENS = Histogram(
    "blockrag_precompute_batch_tokens",
    "Size of one precompute batch, in block tokens (batches are filled up to precompute_batch_tokens).",
    buckets=(16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384),
)
# "mostrecent": across replicas the exporter reports the value written last, not a sum/max of
# stale ones (prometheus_client >= 0.17 supports it in multiprocess mode).
PRECOMPUTE_TOKENS_PER_SECOND = Gauge(
    "blockrag_precompute_tokens_per_second",
    "Throughput of the most recent precompute batch, in tokens per second.",
    multiprocess_mode="mostrecent",
)
SEGMENTATION_LATENCY = Histogram(
    "blockrag_segmentation_latency_seconds",
    "Time to segment one document into blocks.",
    buckets=LATENCY_BUCKETS,
)
SEGMENT_BLOCK_TOKENS = Histogram(
    "blockrag_segment_block_tokens",
    "Size of the blocks the segmentation service makes, in tokens of the served model.",
    buckets=(8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
)
SEGMENTED_TOKENS = Counter(
    "blockrag_segmented_tokens",
    "Tokens of text segmented (with blockrag_segmentation_latency_seconds: throughput).",
)
# "livesum": summed over the replicas still alive; a dead replica's share disappears once
# exporter.mark_process_dead(pid) is called for it.
REPLICA_CACHE_BYTES = Gauge(
    "blockrag_replica_cache_bytes",
    "Bytes of KV held in the replicas' local (memory) cache tiers.",
    ["service"],
    multiprocess_mode="livesum",
)
REPLICA_CACHE_ENTRIES = Gauge(
    "blockrag_replica_cache_entries",
    "Blocks held in the replicas' local (memory) cache tiers.",
    ["service"],
    multiprocess_mode="livesum",
)
REPLICA_CACHE_EVICTIONS = Counter(
    "blockrag_replica_cache_evictions",
    "Blocks the replicas' local (memory) cache tiers dropped to make room for others.",
    ["service"],
)
# Each memory tier's own lookups (kvcache/tiers.py: a lookup walks the tiers fastest first, so a
# block found in the second tier is a miss in the first and a hit in the second). No tenant label:
# the tiers are shared.
REPLICA_CACHE_TIER_LOOKUPS = Counter(
    "blockrag_replica_cache_tier_lookups",
    "Lookups of blocks in each of the replicas' memory tiers (device, pinned, host), by result.",
    ["service", "tier", "result"],
)
# A replica switching a tenant to another model version first re-encodes the tenant's most-hit
# blocks for it; "livemax": replicas warming the same switch report the furthest along.
MODEL_WARM_BLOCKS = Gauge(
    "blockrag_model_warm_blocks",
    "Hot blocks re-encoded for the model version a tenant is switching to (state=done) out of "
    "those chosen (state=total); 0 when no switch is warming.",
    ["tenant", "state"],
    multiprocess_mode="livemax",
)

# The answers of the Generation replicas (blockrag.scheduler): "livesum", summed over the live
# replicas. The only label is the service: a fixed name, never a tenant or a model version.
ANSWERS_RUNNING = Gauge(
    "blockrag_answers_running",
    "Answers being generated now: in a slot of a replica's batch, or alone (too long for a slot).",
    ["service"],
    multiprocess_mode="livesum",
)
ANSWERS_WAITING = Gauge(
    "blockrag_answers_waiting",
    "Answers admitted and waiting for a free slot.",
    ["service"],
    multiprocess_mode="livesum",
)
ANSWERS_REFUSED = Counter(
    "blockrag_answers_refused",
    "Answers refused before any work because every slot ran and the queue was full "
    "(RESOURCE_EXHAUSTED with a retry hint).",
    ["service"],
)

# A stored entry that was not served: its bytes failed the checksum or format (corrupt), or were
# sound but computed for another model, tenant or block (foreign: a swapped or planted object).
KVRejectReason = Literal["corrupt", "foreign"]
KV_REJECT_REASONS: tuple[str, ...] = get_args(KVRejectReason)
KV_ENTRIES_REJECTED = Counter(
    "blockrag_kv_entries_rejected",
    "Stored KV entries read but not served (each was recomputed), by reason: corrupt or foreign.",
    ["reason"],
)

# Object-store operations on the request path that failed because the store was unreachable and
# were worked around: an entry not read (recomputed instead) or not written (answered, not kept).
# An ingest that cannot write fails UNAVAILABLE instead and is counted with the requests' errors.
StoreOperation = Literal["read", "write"]
STORE_OPERATIONS: tuple[str, ...] = get_args(StoreOperation)
OBJECT_STORE_UNAVAILABLE = Counter(
    "blockrag_object_store_unavailable",
    "KV entries the object store could not read or write (unreachable), each worked around: "
    "recomputed, or answered without being kept.",
    ["operation"],
)

# Scheduled cache maintenance passes (blockrag.kvcache.maintenance): eviction by the configured
# watermarks and TTL, then the orphan sweep. A failed pass is retried at the next interval.
MaintenanceOutcome = Literal["ok", "failed"]
MAINTENANCE_OUTCOMES: tuple[str, ...] = get_args(MaintenanceOutcome)
# what a pass removed: KV entries evicted (row and object), or orphan objects no row named
MaintenanceRemoval = Literal["evicted", "orphan"]
MAINTENANCE_REMOVALS: tuple[str, ...] = get_args(MaintenanceRemoval)
CACHE_MAINTENANCE_RUNS = Counter(
    "blockrag_cache_maintenance_runs",
    "Scheduled cache maintenance passes (eviction, then the orphan sweep), by outcome: ok or failed.",
    ["outcome"],
)
CACHE_MAINTENANCE_REMOVED_OBJECTS = Counter(
    "blockrag_cache_maintenance_removed_objects",
    "KV objects removed by scheduled cache maintenance: evicted entries, or orphan objects swept.",
    ["kind"],
)
CACHE_MAINTENANCE_REMOVED_BYTES = Counter(
    "blockrag_cache_maintenance_removed_bytes",
    "Bytes of the KV objects removed by scheduled cache maintenance: evicted entries, or orphans swept.",
    ["kind"],
)

# Block distillation: a run's steps and evaluation (blockrag.distill.job, in the Ray Train worker),
# the statuses runs enter (RunStore) and model version changes (ModelRegistry), wherever they
# happen. A run or version id is never a label: multiprocess mode cannot remove a series, so such
# a label would add series with every run for as long as the files live. One run goes at a time
# per scope, so a gauge per scope holds the scope's latest run. The scope label is the tenant
# (bounded by TENANT_LABELS) or SHARED_SCOPE for the shared scope (""). "mostrecent": the value
# written last wins across processes, and it stays after the worker that wrote it has exited.
DistillRunStatus = Literal["running", "succeeded", "failed", "cancelled"]
DISTILL_RUN_STATUSES: tuple[str, ...] = get_args(DistillRunStatus)
SHARED_SCOPE = "shared"
DISTILL_RUNS = Counter(
    "blockrag_distill_runs",
    "Distillation runs that entered a status: running (training started), succeeded, failed or cancelled.",
    ["status"],
)
DISTILL_STEPS = Counter(
    "blockrag_distill_steps",
    "Optimiser steps of distillation runs, by scope.",
    ["tenant"],
)
DISTILL_TOKENS = Counter(
    "blockrag_distill_tokens",
    "Sequence tokens through the student in distillation steps (with _steps_total: tokens per step).",
    ["tenant"],
)
DISTILL_LOSS = Gauge(
    "blockrag_distill_loss",
    "Training loss of the latest step of the scope's run (per supervised token).",
    ["tenant"],
    multiprocess_mode="mostrecent",
)
DISTILL_KL = Gauge(
    "blockrag_distill_kl",
    "Mean KL(teacher || student) per supervised token of the latest step of the scope's run "
    "(not set by block fine-tuning, which runs no teacher).",
    ["tenant"],
    multiprocess_mode="mostrecent",
)
DISTILL_PROGRESS = Gauge(
    "blockrag_distill_progress",
    "Steps done out of the steps asked, of the scope's latest run (0..1).",
    ["tenant"],
    multiprocess_mode="mostrecent",
)
# Across pods (each its own exporter) every pod that ever trained a scope keeps its last values;
# dashboards pick the pod whose report is newest by this timestamp.
DISTILL_UPDATED = Gauge(
    "blockrag_distill_updated_timestamp_seconds",
    "When this node last reported a step or an evaluation of the scope's run (unix seconds).",
    ["tenant"],
    multiprocess_mode="mostrecent",
)
# the three models a run's evaluation scores on held-out QA questions
EvaluatedModel = Literal["candidate", "active", "base"]
EVALUATED_MODELS: tuple[str, ...] = get_args(EvaluatedModel)
DISTILL_EVAL_KL = Gauge(
    "blockrag_distill_eval_kl",
    "Mean answer-token KL(full || block attention) on held-out QA questions in the scope's latest "
    "evaluation: of the version the run trained (candidate), the version serving the scope (active), "
    "and the base model.",
    ["tenant", "model"],
    multiprocess_mode="mostrecent",
)
DISTILL_EVAL_ACCURACY = Gauge(
    "blockrag_distill_eval_accuracy",
    "Accuracy on held-out QA questions in the scope's latest evaluation (candidate, active, base).",
    ["tenant", "model"],
    multiprocess_mode="mostrecent",
)
MODEL_VERSIONS_REGISTERED = Counter(
    "blockrag_model_versions_registered",
    "Model versions registered (candidates), by scope.",
    ["tenant"],
)
VersionChange = Literal["promote", "rollback"]
VERSION_CHANGES: tuple[str, ...] = get_args(VersionChange)
MODEL_VERSION_CHANGES = Counter(
    "blockrag_model_version_changes",
    "Changes of a scope's active model version: promote or rollback.",
    ["tenant", "action"],
)
MODEL_VERSION_ACTIVE_SINCE = Gauge(
    "blockrag_model_version_active_since_timestamp_seconds",
    "When the scope's active model version became active (unix seconds); 0 after a rollback to the "
    "base model. Which version it is: blockrag-admin model list.",
    ["tenant"],
    multiprocess_mode="mostrecent",
)

# Precompute requests of the replicas, summed over the live ones: planned and waiting for the
# replica's device (one batch on it at a time), or encoding on it.
PrecomputeState = Literal["waiting", "encoding"]
PRECOMPUTE_STATES: tuple[str, ...] = get_args(PrecomputeState)
PRECOMPUTE_REQUESTS = Gauge(
    "blockrag_precompute_requests",
    "Precompute requests waiting for the replica's device (state=waiting) or encoding on it "
    "(state=encoding), summed over the live replicas.",
    ["state"],
    multiprocess_mode="livesum",
)

ALL_METRICS: tuple[MetricWrapperBase, ...] = (
    TIME_TO_FIRST_TOKEN,
    INTER_TOKEN_LATENCY,
    E2E_REQUEST_LATENCY,
    PROMPT_TOKENS,
    PROMPT_TOKENS_CACHED,
    BLOCKS,
    BLOCK_TOKENS,
    REQUESTS,
    REQUEST_ERRORS,
    PRECOMPUTE_TOKENS,
    PRECOMPUTE_BATCH,
    PRECOMPUTE_BATCH_TOKENS,
    PRECOMPUTE_TOKENS_PER_SECOND,
    SEGMENTATION_LATENCY,
    SEGMENT_BLOCK_TOKENS,
    SEGMENTED_TOKENS,
    REPLICA_CACHE_BYTES,
    REPLICA_CACHE_ENTRIES,
    REPLICA_CACHE_EVICTIONS,
    REPLICA_CACHE_TIER_LOOKUPS,
    MODEL_WARM_BLOCKS,
    KV_ENTRIES_REJECTED,
    OBJECT_STORE_UNAVAILABLE,
    ANSWERS_RUNNING,
    ANSWERS_WAITING,
    ANSWERS_REFUSED,
    CACHE_MAINTENANCE_RUNS,
    CACHE_MAINTENANCE_REMOVED_OBJECTS,
    CACHE_MAINTENANCE_REMOVED_BYTES,
    DISTILL_RUNS,
    DISTILL_STEPS,
    DISTILL_TOKENS,
    DISTILL_LOSS,
    DISTILL_KL,
    DISTILL_PROGRESS,
    DISTILL_UPDATED,
    DISTILL_EVAL_KL,
    DISTILL_EVAL_ACCURACY,
    MODEL_VERSIONS_REGISTERED,
    MODEL_VERSION_CHANGES,
    MODEL_VERSION_ACTIVE_SINCE,
    PRECOMPUTE_REQUESTS,
)


def multiprocess_active() -> bool:
    """True when metrics write to PROMETHEUS_MULTIPROC_DIR files.

    prometheus_client picks its value class when it is first imported: a process that imported
    it before the variable was set keeps single-process values that no exporter will see.
    """
    return values.ValueClass is not values.MutexValue


def observe_request(service: str, method: str, code: str = "OK") -> None:
    """Count one finished gRPC request; ``code`` is the StatusCode name ("OK", "NOT_FOUND"...)."""
    REQUESTS.labels(service=service, method=method, code=code).inc()
    if code != "OK":
        REQUEST_ERRORS.labels(service=service, method=method, code=code).inc()


def observe_prompt(tenant: str, prompt_tokens: int, cached_tokens: int) -> None:
    """Count a generation request's prompt tokens and how many of them came from a cache."""
    if not 0 <= cached_tokens <= prompt_tokens:
        raise ValueError(f"cached_tokens={cached_tokens} must lie in [0, prompt_tokens={prompt_tokens}]")
    PROMPT_TOKENS.labels(tenant=TENANT_LABELS.label(tenant)).inc(prompt_tokens)
    PROMPT_TOKENS_CACHED.labels(tenant=TENANT_LABELS.label(tenant)).inc(cached_tokens)


def observe_blocks(tenant: str, tier: Tier, blocks: int, tokens: int) -> None:
    """Count ``blocks`` blocks (``tokens`` tokens in all) served from ``tier`` for ``tenant``."""
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}; expected one of {TIERS}")
    BLOCKS.labels(tenant=TENANT_LABELS.label(tenant), tier=tier).inc(blocks)
    BLOCK_TOKENS.labels(tenant=TENANT_LABELS.label(tenant), tier=tier).inc(tokens)


def observe_rejected_entry(reason: KVRejectReason) -> None:
    """Count one stored KV entry that was read but not served (no tenant label: the reason is
    what an operator acts on, and the log line names the block)."""
    if reason not in KV_REJECT_REASONS:
        raise ValueError(f"unknown reason {reason!r}; expected one of {KV_REJECT_REASONS}")
    KV_ENTRIES_REJECTED.labels(reason=reason).inc()


def observe_store_unavailable(operation: StoreOperation, entries: int = 1) -> None:
    """Count ``entries`` KV entries the object store could not read or write (unreachable)."""
    if operation not in STORE_OPERATIONS:
        raise ValueError(f"unknown operation {operation!r}; expected one of {STORE_OPERATIONS}")
    OBJECT_STORE_UNAVAILABLE.labels(operation=operation).inc(entries)


def observe_cache_maintenance(outcome: MaintenanceOutcome | None, *, evicted: tuple[int, int] = (0, 0),
                              swept: tuple[int, int] = (0, 0)) -> None:
    """Count one maintenance pass by ``outcome`` and what it removed, (objects, bytes) evicted and
    swept; ``None`` counts nothing but makes every series exist at 0 (a loop that starts)."""
    if outcome is not None and outcome not in MAINTENANCE_OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}; expected one of {MAINTENANCE_OUTCOMES}")
    for each in MAINTENANCE_OUTCOMES:
        CACHE_MAINTENANCE_RUNS.labels(outcome=each).inc(1 if each == outcome else 0)
    for kind, (objects, nbytes) in zip(MAINTENANCE_REMOVALS, (evicted, swept)):
        CACHE_MAINTENANCE_REMOVED_OBJECTS.labels(kind=kind).inc(objects)
        CACHE_MAINTENANCE_REMOVED_BYTES.labels(kind=kind).inc(nbytes)


def observe_precompute_batch(tokens: int, seconds: float) -> None:
    """Record one precompute batch: its tokens, its wall time and the resulting throughput."""
    PRECOMPUTE_TOKENS.inc(tokens)
    PRECOMPUTE_BATCH.observe(seconds)
    PRECOMPUTE_BATCH_TOKENS.observe(tokens)
    if seconds > 0:
        PRECOMPUTE_TOKENS_PER_SECOND.set(tokens / seconds)


def scope_label(scope: str) -> str:
    """The tenant label of a distillation scope: SHARED_SCOPE for "", else the bounded tenant."""
    return SHARED_SCOPE if scope == "" else TENANT_LABELS.label(scope)


def observe_distill_run(status: DistillRunStatus | None) -> None:
    """Count one run entering ``status``; ``None`` counts nothing but makes every status's series
    exist at 0 (a store that may move runs, when it is made)."""
    if status is not None and status not in DISTILL_RUN_STATUSES:
        raise ValueError(f"unknown status {status!r}; expected one of {DISTILL_RUN_STATUSES}")
    for each in DISTILL_RUN_STATUSES:
        DISTILL_RUNS.labels(status=each).inc(1 if each == status else 0)


def observe_distill_step(scope: str, *, step: int, total_steps: int, loss: float, kl: float | None,
                         tokens: int) -> None:
    """One optimiser step of the scope's run; a non-finite loss or KL leaves its gauge as it was."""
    if not 0 < step <= total_steps:
        raise ValueError(f"step={step} must lie in [1, total_steps={total_steps}]")
    label = scope_label(scope)
    DISTILL_STEPS.labels(tenant=label).inc()
    DISTILL_TOKENS.labels(tenant=label).inc(tokens)
    DISTILL_PROGRESS.labels(tenant=label).set(step / total_steps)
    if math.isfinite(loss):
        DISTILL_LOSS.labels(tenant=label).set(loss)
    if kl is not None and math.isfinite(kl):
        DISTILL_KL.labels(tenant=label).set(kl)
    DISTILL_UPDATED.labels(tenant=label).set(time.time())


def set_distill_evaluation(scope: str, evaluation: Mapping[str, float]) -> None:
    """The scores of a run's evaluation (blockrag.distill.job: kl, accuracy, active_kl,
    active_accuracy, base_kl, base_accuracy)."""
    label = scope_label(scope)
    for model, prefix in zip(EVALUATED_MODELS, ("", "active_", "base_")):
        DISTILL_EVAL_KL.labels(tenant=label, model=model).set(evaluation[f"{prefix}kl"])
        DISTILL_EVAL_ACCURACY.labels(tenant=label, model=model).set(evaluation[f"{prefix}accuracy"])
    DISTILL_UPDATED.labels(tenant=label).set(time.time())


def observe_version_registered(scope: str) -> None:
    """Count one model version registered in ``scope``."""
    MODEL_VERSIONS_REGISTERED.labels(tenant=scope_label(scope)).inc()


def observe_version_change(scope: str, action: VersionChange, active_since: float | None) -> None:
    """Count a change of the scope's active version; ``active_since``: when the version now
    active became so (None: the base model serves the scope)."""
    if action not in VERSION_CHANGES:
        raise ValueError(f"unknown action {action!r}; expected one of {VERSION_CHANGES}")
    label = scope_label(scope)
    MODEL_VERSION_CHANGES.labels(tenant=label, action=action).inc()
    MODEL_VERSION_ACTIVE_SINCE.labels(tenant=label).set(0.0 if active_since is None else active_since)


def precompute_queue() -> dict[str, Gauge]:
    """The replica's precompute request gauges by state, their series made to exist at 0.

    ``with queue["waiting"].track_inprogress(): async with device_lock: ...``: each counts the
    requests inside its block."""
    queue = {state: PRECOMPUTE_REQUESTS.labels(state=state) for state in PRECOMPUTE_STATES}
    for gauge in queue.values():
        gauge.inc(0)  # the series exist before the first request: the panel has data at 0
    return queue


# The cumulative count each labelled counter was reported at last in this process: cache tiers
# count their evictions, hits and misses since they were made, and the counters grow by the
# difference (set_replica_cache, set_replica_tier_lookups).
_counts_seen: dict[tuple[Counter, tuple[str, ...]], int] = {}


def _grow_to(counter: Counter, labels: tuple[str, ...], count: int) -> None:
    """Increment ``counter.labels(*labels)`` by what ``count`` (cumulative) added since the last
    report; a count lower than the last one comes from a new tier: all of it is new."""
    seen = _counts_seen.get((counter, labels), 0)
    counter.labels(*labels).inc(count - seen if count >= seen else count)
    _counts_seen[(counter, labels)] = count


def set_replica_cache(service: str, nbytes: int, entries: int, evictions: int | None = None) -> None:
    """Report this replica's local cache size (summed over live replicas by the exporter) and,
    when given, the evictions its cache has counted so far (``MemoryTier.stats().evictions``)."""
    REPLICA_CACHE_BYTES.labels(service=service).set(nbytes)
    REPLICA_CACHE_ENTRIES.labels(service=service).set(entries)
    if evictions is not None:
        _grow_to(REPLICA_CACHE_EVICTIONS, (service,), evictions)


def set_replica_tier_lookups(service: str, tiers: Mapping[str, tuple[int, int]]) -> None:
    """Report each memory tier's hits and misses counted so far, by tier name
    (``MemoryTiers.tier_stats()``), as set_replica_cache reports evictions."""
    for tier, (hits, misses) in tiers.items():
        _grow_to(REPLICA_CACHE_TIER_LOOKUPS, (service, tier, "hit"), hits)
        _grow_to(REPLICA_CACHE_TIER_LOOKUPS, (service, tier, "miss"), misses)


def set_model_warm(tenant: str, done: int, total: int) -> None:
    """Progress of re-encoding a tenant's hot blocks before a model switch (0, 0 when over)."""
    label = TENANT_LABELS.label(tenant)
    MODEL_WARM_BLOCKS.labels(tenant=label, state="done").set(done)
    MODEL_WARM_BLOCKS.labels(tenant=label, state="total").set(total)


class AnswerGauges:
    """One AnswerScheduler's share of its service's answer metrics.

    A replica can hold several schedulers (one per loaded model version), so each adds the
    change since its own last report: the process's gauges are the sum of its schedulers'.
    Creating it makes the service's series exist at 0, so dashboards have data before the first
    answer or refusal."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.running = self.waiting = 0  # what this scheduler reported last
        ANSWERS_RUNNING.labels(service=service).inc(0)
        ANSWERS_WAITING.labels(service=service).inc(0)
        ANSWERS_REFUSED.labels(service=service).inc(0)

    def report(self, running: int, waiting: int) -> None:
        """The scheduler now holds `running` answers in slots or alone and `waiting` in its queue."""
        if running != self.running:
            ANSWERS_RUNNING.labels(service=self.service).inc(running - self.running)
            self.running = running
        if waiting != self.waiting:
            ANSWERS_WAITING.labels(service=self.service).inc(waiting - self.waiting)
            self.waiting = waiting

    def refused(self) -> None:
        """Count one answer refused busy."""
        ANSWERS_REFUSED.labels(service=self.service).inc()


def observe_segments(token_counts: Sequence[int]) -> None:
    """The sizes of one document's blocks."""
    for n in token_counts:
        SEGMENT_BLOCK_TOKENS.observe(n)
    SEGMENTED_TOKENS.inc(sum(token_counts))


def time_segmentation() -> Timer:
    """A timer (context manager or decorator) into blockrag_segmentation_latency_seconds.

    ``with time_segmentation(): blocks = segmenter.split(text)``, or as a decorator.
    """
    return SEGMENTATION_LATENCY.time()


class TokenStreamTimer:
    """Records TTFT, inter-token latencies and end-to-end latency of one streamed answer.

    Create it when the request arrives, call ``token()`` as each token is streamed and
    ``finish()`` once at the end (also on errors: the e2e histogram then includes them).
    """

    def __init__(self, tenant: str, clock: Callable[[], float] = time.perf_counter) -> None:
        self.tenant = TENANT_LABELS.label(tenant)  # the label value, bounded
        self._clock = clock
        self._start = clock()
        self._last: float | None = None
        self._finished = False

    def token(self) -> None:
        """Mark one streamed token."""
        now = self._clock()
        if self._last is None:
            TIME_TO_FIRST_TOKEN.labels(tenant=self.tenant).observe(now - self._start)
        else:
            INTER_TOKEN_LATENCY.labels(tenant=self.tenant).observe(now - self._last)
        self._last = now

    def finish(self) -> float:
        """Record the end-to-end latency once; returns it in seconds."""
        elapsed = self._clock() - self._start
        if not self._finished:
            E2E_REQUEST_LATENCY.labels(tenant=self.tenant).observe(elapsed)
            self._finished = True
        return elapsed


def metric_names(metrics: Iterable[MetricWrapperBase] = ALL_METRICS) -> list[str]:
    """Exposed family names (counters with their ``_total``)."""
    names = []
    for metric in metrics:
        family = metric.describe()[0]
        names.append(family.name + "_total" if family.type == "counter" else family.name)
    return names
