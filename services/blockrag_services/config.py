"""PlatformConfig: everything a service needs, typed, from a Serve application's `args`.

Every application gets the same settings (deploy/serve/*.yaml share them with a YAML anchor;
`blockrag up` gives each the same args), so that precompute and generation load the same model and
all of them open the same stores. Resources too: `services` holds each service's, by application
name, and each application's builder (app.py) takes its own entry (deploy/serve/*.yaml and the Helm
chart set them there). An application's own `resources`, which replace its entry, are still read:
Serve configs written before `services` existed set them, and tests build one deployment with them.
The defaults are the embedded platform: SQLite file and local-directory object store
under $BLOCKRAG_HOME/platform, the bundled model.

Each setting's type and range is in its annotation, checked once when a config is built
(blockrag_services.setting): a bad value fails at deploy time with an InvalidRequestError naming
the setting, e.g. `limits.max_context_tokens: must be >= 1, got 0`; an unknown key is named too.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from blockrag.errors import InvalidRequestError
from blockrag.kvcache.compression import KVCompression
from blockrag.kvcache.maintenance import CacheMaintenance
from blockrag.model_spec import ModelSpec
from blockrag.scheduler import SchedulerSettings
from blockrag_services.resources import Resources, ServiceResources
from blockrag_services.setting import Int, Number, SettingError, Switch, Text, check

__all__ = ["Distill", "Limits", "PlatformConfig", "Quotas", "Resources", "ServiceResources", "platform_home"]

Positive = Annotated[Int, Field(ge=1)]
Count = Annotated[Int, Field(ge=0)]


def platform_home() -> Path:
    return Path(os.environ.get("BLOCKRAG_HOME") or Path.home() / ".cache" / "blockrag") / "platform"


@dataclass(frozen=True)
class Limits:
    """Request limits: a request over one gets INVALID_ARGUMENT naming the limit."""

    max_context_blocks: Positive = 64
    max_context_tokens: Positive = 8192  # context blocks + question, before generation
    max_question_tokens: Positive = 512
    max_new_tokens: Positive = 1024
    default_max_new_tokens: Positive = 64
    default_top_k: Positive = 8
    max_block_tokens: Positive = 1024  # one block, as precompute encodes it
    max_document_bytes: Positive = 4 << 20
    max_ingest_bytes: Positive = 16 << 20
    max_ingest_documents: Positive = 1000

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class Quotas:
    """Per-tenant quotas (blockrag.resolve.TenantQuotas), 0 for none: KV bytes a tenant may
    store, and block tokens Precompute may encode for it in any minute (counted once for all
    Precompute replicas, in the cache index).
    ``tenants`` overrides either for named tenants: {"acme": {"max_stored_bytes": 1000000000}}.
    A request over one gets RESOURCE_EXHAUSTED before anything is computed or written."""

    max_stored_bytes: Count = 0
    max_precompute_tokens_per_minute: Count = 0
    tenants: dict[str, dict[str, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from blockrag.resolve.quotas import TenantQuotas

        check(self)

        TenantQuotas.of(self)  # InvalidRequestError at start, naming the setting


@dataclass(frozen=True)
class Distill:
    """Block distillation runs: the defaults of every run (a StartDistillation request's empty
    fields take them) and the periodic schedule, which starts runs with them while the platform
    runs. Runs train in a Ray Train job (services/blockrag_services/distillation)."""

    schedule: Text = ""  # "" off; an interval ("30m", "6h", "1d") or a 5-field cron expression
    tenant: Text = ""  # scheduled runs' scope ("": shared)
    collection: Text = ""  # scheduled runs' data: a collection of the tenant or a directory; neither: default corpus
    directory: Text = ""
    examples: Positive = 64
    eval_questions: Count = 50  # held-out QA questions of the evaluation against the active version
    logged_questions: Count = 100  # the tenant's latest logged questions that join the data
    config: dict[str, Any] = field(default_factory=dict)  # DistillConfig overrides, e.g. {"steps": 100}
    auto_promote: Switch = False  # scheduled runs: promote when the evaluation improves
    num_cpus: Annotated[Number, Field(gt=0)] = 1.0  # the training worker's CPUs (and a GPU where the cluster has one)
    storage_path: Text = ""  # Ray Train's run directory; "" = next to a local object store, else the home

    def __post_init__(self) -> None:
        from blockrag_services.distillation.schedule import Schedule

        check(self)

        Schedule.parse(self.schedule)  # InvalidRequestError at start, not at the first run
        if self.config:
            from blockrag.distill.config import DistillConfig

            DistillConfig.from_dict(self.config)


@dataclass(frozen=True)
class PlatformConfig:
    database_url: Text = ""  # "" = sqlite file under platform_home()
    object_store_url: Text = ""  # "" = directory under platform_home(); or s3://bucket/prefix?endpoint=...
    model: ModelSpec = field(default_factory=ModelSpec)
    limits: Limits = field(default_factory=Limits)
    quotas: Quotas = field(default_factory=Quotas)
    # each service's resources, by application name (resources.py), shared by every application
    services: ServiceResources = field(default_factory=ServiceResources)
    # this application's own, replacing its entry of `services`; None: that entry (resources_of)
    resources: Resources | None = None
    replica_cache_bytes: Count = 512 << 20  # generation's in-memory LRU of decoded blocks (GPU memory on a GPU)
    # on a GPU replica, a second tier of pinned host memory that blocks evicted from GPU memory move
    # to (the engine reads them in place; a hit promotes them back): blockrag.kvcache.tiers
    replica_pinned_cache_bytes: Count = 0
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
    kv_compression_gate_questions: Annotated[Int, Field(ge=0, le=1000)] = 8
    kv_compression_max_kl: Annotated[Number, Field(gt=0)] = 0.02
    # on an engine with a shared opening (the shipped adapter's), the prompt's first context block
    # is read as full attention reads it, right after the opening: one block's forward in the
    # generation replica the first time a block leads, then kept in its memory tier
    # (blockrag.resolve.BlockResolver._lead; +10 right answers of 170 held-out questions; a cold
    # lead form costs one block's encode in time to first token, about 0.5 s on 2 CPU cores)
    exact_first_passage: Switch = True
    segmenter: Literal["learned", "paragraph"] = "learned"  # "learned" (the boundary model) or "paragraph" (blank-line split)
    segmenter_path: Text = ""  # a `blockrag segment train` output; "" = the shipped default
    segment_max_block_tokens: Positive = 256
    segment_min_block_tokens: Count = 32  # a lone heading or line makes a poor block: merge it
    segment_granularity: Annotated[Number, Field(ge=0, le=1)] = 0.5  # 0: fewest cuts, 1: most
    precompute_batch_tokens: Positive = 2048
    # model versions (blockrag.served_models): how often a replica reads the registry for a tenant's
    # active version, how many runtimes it keeps loaded, how many of a tenant's most-hit blocks it
    # re-encodes for a new version before switching to it
    model_refresh_s: Annotated[Number, Field(ge=0)] = 2.0
    max_loaded_models: Positive = 3
    warm_blocks: Count = 64
    # the question log (opt-in): each answered question with its block ids, per tenant; distillation
    # trains on it. Rows older than the retention or past the per-tenant cap are pruned.
    question_log: Switch = False
    question_log_retention_days: Annotated[Number, Field(gt=0)] = 30.0
    question_log_max_per_tenant: Positive = 10000
    distill: Distill = field(default_factory=Distill)
    # the store's bounds (watermarks per tenant and for the store, a TTL) and the Admin deployment's
    # periodic pass that keeps them and sweeps orphan objects (blockrag.kvcache.maintenance); the
    # reader pause applies to `blockrag-admin cache evict` too
    cache_maintenance: CacheMaintenance = field(default_factory=CacheMaintenance)
    # API keys (blockrag.auth): on, every public call needs `authorization: Bearer <key>` with a
    # role that allows it; off (the embedded default), public calls are open. The internal services
    # (cache index, precompute) need an admin key from outside either way.
    auth: Switch = False

    def __post_init__(self) -> None:
        check(self)
        if self.segment_min_block_tokens > self.segment_max_block_tokens:
            raise SettingError("segment_min_block_tokens", f"must be <= segment_max_block_tokens "
                               f"({self.segment_max_block_tokens}), got {self.segment_min_block_tokens}")
        # the YAML's string, parsed once here (InvalidRequestError naming the setting)
        object.__setattr__(self, "kv_compression", KVCompression.parse(self.kv_compression))

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{platform_home() / 'index.db'}"

    @property
    def object_store(self) -> str:
        return self.object_store_url or str(platform_home() / "kv")

    def resources_of(self, service: str) -> Resources:
        """The resources of ``service`` (an application name, KeyError if unknown): this
        application's own where set, else its entry of ``services``."""
        entry = self.services.of(service)  # KeyError for a name no builder has, even when overridden
        return self.resources if self.resources is not None else entry

    @classmethod
    def from_args(cls, args: dict[str, Any] | None) -> PlatformConfig:
        """Build from Serve `args` (nested dicts for model, limits, resources...); an unknown key
        or a bad value is an InvalidRequestError naming it, so that a typo in a config file does
        not pass silently."""
        args = dict(args or {})
        kwargs: dict[str, Any] = {}
        for key, value in args.items():
            if key == "resources" and value is None:  # the application's entry of `services`
                kwargs[key] = None
            elif key == "services":
                kwargs[key] = _services(value)
            elif key in NESTED:
                if not isinstance(value or {}, dict):
                    raise InvalidRequestError(f"{key} must be a mapping of settings, got {value!r}")
                kwargs[key] = _build(NESTED[key], value or {}, key)
            else:
                kwargs[key] = value
        return _build(cls, kwargs, "args")

    def to_args(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


NESTED: dict[str, type] = {"model": ModelSpec, "limits": Limits, "quotas": Quotas, "resources": Resources,
                           "distill": Distill, "scheduler": SchedulerSettings, "cache_maintenance": CacheMaintenance}


def _services(value: Any) -> ServiceResources:
    """``services`` from args: application names to resources (each its defaults when left out or
    null); an unknown name or setting is an InvalidRequestError naming it."""
    if not isinstance(value or {}, dict):
        raise InvalidRequestError(f"services must be a mapping of application names to resources, got {value!r}")
    entries = {}
    for name, resources in (value or {}).items():
        if not isinstance(resources or {}, dict):
            raise InvalidRequestError(f"services.{name} must be a mapping of settings, got {resources!r}")
        entries[name] = _build(Resources, resources or {}, f"services.{name}")
    return _build(ServiceResources, entries, "services")


def _build(kind, values: dict[str, Any], where: str):
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise InvalidRequestError(f"unknown setting(s) {', '.join(unknown)} in {where}; known: {', '.join(sorted(names))}")
    try:
        return kind(**values)
    except SettingError as e:
        raise (e if kind is PlatformConfig else e.under(where)) from None
