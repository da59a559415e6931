"""PlatformConfig: everything a service needs, typed, from a Serve application's `args`.

Every application gets the same settings (deploy/serve/*.yaml share them with a YAML anchor), so
that precompute and generation load the same model and all of them open the same stores. The
defaults are the embedded platform: SQLite file and local-directory object store under
$BLOCKRAG_HOME/platform, the bundled model.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blockrag.errors import InvalidRequestError
from blockrag.kvcache.compression import KVCompression
from blockrag.kvcache.maintenance import CacheMaintenance
from blockrag.model_spec import ModelSpec
from blockrag.scheduler import SchedulerSettings


def platform_home() -> Path:
    return Path(os.environ.get("BLOCKRAG_HOME") or Path.home() / ".cache" / "blockrag") / "platform"


@dataclass(frozen=True)
class Limits:
    """Request limits: a request over one gets INVALID_ARGUMENT naming the limit."""

    max_context_blocks: int = 64
    max_context_tokens: int = 8192  # context blocks + question, before generation
    max_question_tokens: int = 512
    max_new_tokens: int = 1024
    default_max_new_tokens: int = 64
    default_top_k: int = 8
    max_block_tokens: int = 1024  # one block, as precompute encodes it
    max_document_bytes: int = 4 << 20
    max_ingest_bytes: int = 16 << 20
    max_ingest_documents: int = 1000


@dataclass(frozen=True)
class Quotas:
    """Per-tenant quotas (blockrag.resolve.TenantQuotas), 0 for none: KV bytes a tenant may
    store, and block tokens Precompute may encode for it in any minute (per Precompute replica).
    ``tenants`` overrides either for named tenants: {"acme": {"max_stored_bytes": 1000000000}}.
    A request over one gets RESOURCE_EXHAUSTED before anything is computed or written."""

    max_stored_bytes: int = 0
    max_precompute_tokens_per_minute: int = 0
    tenants: dict[str, dict[str, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from blockrag.resolve.quotas import TenantQuotas

        TenantQuotas.of(self)  # InvalidRequestError at start, naming the setting


@dataclass(frozen=True)
class Resources:
    """Ray resources of one application's deployment. num_gpus None: 1 where the cluster has
    GPUs and the service runs the model, else 0."""

    num_replicas: int = 1
    num_cpus: float = 0.1
    num_gpus: float | None = None
    max_ongoing_requests: int = 8
    torch_threads: int | None = None  # None: num_cpus, or every core for a fractional share

    def threads(self) -> int:
        """Torch's CPU threads. Ray sets OMP_NUM_THREADS=1 in a worker with a fractional CPU
        share, which would leave the model one core even on an idle machine."""
        if self.torch_threads:
            return self.torch_threads
        return int(self.num_cpus) if self.num_cpus >= 1 else os.cpu_count() or 1


@dataclass(frozen=True)
class Distill:
    """Block distillation runs: the defaults of every run (a StartDistillation request's empty
    fields take them) and the periodic schedule, which starts runs with them while the platform
    runs. Runs train in a Ray Train job (services/blockrag_services/distillation)."""

    schedule: str = ""  # "" off; an interval ("30m", "6h", "1d") or a 5-field cron expression
    tenant: str = ""  # scheduled runs' scope ("": shared)
    collection: str = ""  # scheduled runs' data: a collection of the tenant or a directory; neither: default corpus
    directory: str = ""
    examples: int = 64
    eval_questions: int = 50  # held-out QA questions of the evaluation against the active version
    logged_questions: int = 100  # the tenant's latest logged questions that join the data
    config: dict[str, Any] = field(default_factory=dict)  # DistillConfig overrides, e.g. {"steps": 100}
    auto_promote: bool = False  # scheduled runs: promote when the evaluation improves
    num_cpus: float = 1.0  # the training worker's CPUs (and a GPU where the cluster has one)
    storage_path: str = ""  # Ray Train's run directory; "" = next to a local object store, else the home

    def __post_init__(self) -> None:
        from blockrag_services.distillation.schedule import Schedule

        Schedule.parse(self.schedule)  # InvalidRequestError at start, not at the first run
        if self.config:
            from blockrag.distill.config import DistillConfig

            DistillConfig.from_dict(self.config)


@dataclass(frozen=True)
class PlatformConfig:
    database_url: str = ""  # "" = sqlite file under platform_home()
    object_store_url: str = ""  # "" = directory under platform_home(); or s3://bucket/prefix?endpoint=...
    model: ModelSpec = field(default_factory=ModelSpec)
    limits: Limits = field(default_factory=Limits)
    quotas: Quotas = field(default_factory=Quotas)
    resources: Resources = field(default_factory=Resources)
    replica_cache_bytes: int = 512 << 20  # generation's in-memory LRU of decoded blocks
    # generation's answers decoded together per model version (blockrag.scheduler): slots x
    # slot_tokens positions of KV, allocated at a version's first answer (the default model on a
    # CPU: 46 KB a position, 566 MB for 4 x 3072), and how many answers may wait beyond them
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    # how block KV is held in the object store and the host tier (blockrag.kvcache.compression):
    # none, int8_head, int8_token or fp8_head; a replica serves stored entries of this setting only
    kv_compression: KVCompression = KVCompression.NONE
    # the compression gate at start (blockrag.kvcache.compression_gate): Precompute measures the mean
    # answer-token KL of the setting on the configured model over this many held-out QA questions and
    # refuses to start past kv_compression_max_kl (0 questions: no gate at start, e.g. after
    # `blockrag model check --kv-compression S` on more questions than a start should spend)
    kv_compression_gate_questions: int = 8
    kv_compression_max_kl: float = 0.02
    # on an engine with a shared opening (the shipped adapter's), the prompt's first context block
    # is read as full attention reads it, right after the opening: one block's forward in the
    # generation replica the first time a block leads, then kept in its memory tier
    # (blockrag.resolve.BlockResolver._lead; +10 right answers of 170 held-out questions; a cold
    # lead form costs one block's encode in time to first token, about 0.5 s on 2 CPU cores)
    exact_first_passage: bool = True
    segmenter: str = "learned"  # "learned" (the boundary model) or "paragraph" (blank-line split)
    segmenter_path: str = ""  # a `blockrag segment train` output; "" = the shipped default
    segment_max_block_tokens: int = 256
    segment_min_block_tokens: int = 32  # a lone heading or line makes a poor block: merge it
    segment_granularity: float = 0.5
    precompute_batch_tokens: int = 2048
    # model versions (blockrag.served_models): how often a replica reads the registry for a tenant's
    # active version, how many runtimes it keeps loaded, how many of a tenant's most-hit blocks it
    # re-encodes for a new version before switching to it
    model_refresh_s: float = 2.0
    max_loaded_models: int = 3
    warm_blocks: int = 64
    # the question log (opt-in): each answered question with its block ids, per tenant; distillation
    # trains on it. Rows older than the retention or past the per-tenant cap are pruned.
    question_log: bool = False
    question_log_retention_days: float = 30.0
    question_log_max_per_tenant: int = 10000
    distill: Distill = field(default_factory=Distill)
    # the store's bounds (watermarks per tenant and for the store, a TTL) and the Admin deployment's
    # periodic pass that keeps them and sweeps orphan objects (blockrag.kvcache.maintenance); the
    # reader pause applies to `blockrag-admin cache evict` too
    cache_maintenance: CacheMaintenance = field(default_factory=CacheMaintenance)
    # API keys (blockrag.auth): on, every public call needs `authorization: Bearer <key>` with a
    # role that allows it; off (the embedded default), public calls are open. The internal services
    # (cache index, precompute) need an admin key from outside either way.
    auth: bool = False

    def __post_init__(self) -> None:
        for name in ("auth", "exact_first_passage", "question_log"):
            if not isinstance(getattr(self, name), bool):  # "false" in a YAML string would turn it on
                raise InvalidRequestError(f"{name} must be true or false, got {getattr(self, name)!r}")
        # the YAML's string, checked once here (InvalidRequestError naming the settings)
        object.__setattr__(self, "kv_compression", KVCompression.parse(self.kv_compression))
        questions = self.kv_compression_gate_questions
        if isinstance(questions, bool) or not isinstance(questions, int) or not 0 <= questions <= 1000:
            raise InvalidRequestError(f"kv_compression_gate_questions must be a whole number in 0..1000, got {questions!r}")
        max_kl = self.kv_compression_max_kl
        if isinstance(max_kl, bool) or not isinstance(max_kl, (int, float)) or not 0 < max_kl < float("inf"):
            raise InvalidRequestError(f"kv_compression_max_kl must be a positive number of nats, got {max_kl!r}")

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{platform_home() / 'index.db'}"

    @property
    def object_store(self) -> str:
        return self.object_store_url or str(platform_home() / "kv")

    @classmethod
    def from_args(cls, args: dict[str, Any] | None) -> PlatformConfig:
        """Build from Serve `args` (nested dicts for model, limits, resources); unknown keys are
        an error, so that a typo in a config file does not pass silently."""
        args = dict(args or {})
        nested = {"model": ModelSpec, "limits": Limits, "quotas": Quotas, "resources": Resources, "distill": Distill,
                  "scheduler": SchedulerSettings, "cache_maintenance": CacheMaintenance}
        kwargs: dict[str, Any] = {}
        for key, value in args.items():
            if key in nested:
                if not isinstance(value or {}, dict):
                    raise InvalidRequestError(f"{key} must be a mapping of settings, got {value!r}")
                kwargs[key] = _build(nested[key], value or {}, key)
            else:
                kwargs[key] = value
        return _build(cls, kwargs, "args")

    def to_args(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(kind, values: dict[str, Any], where: str):
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise InvalidRequestError(f"unknown setting(s) {', '.join(unknown)} in {where}; known: {', '.join(sorted(names))}")
    return kind(**values)
