from blockrag.v1 import cache_index_pb2 as _cache_index_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_READER: _ClassVar[Role]
    ROLE_WRITER: _ClassVar[Role]
    ROLE_ADMIN: _ClassVar[Role]
ROLE_UNSPECIFIED: Role
ROLE_READER: Role
ROLE_WRITER: Role
ROLE_ADMIN: Role

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServiceHealth(_message.Message):
    __slots__ = ("service", "healthy", "detail", "latency_ms")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    service: str
    healthy: bool
    detail: str
    latency_ms: float
    def __init__(self, service: _Optional[str] = ..., healthy: _Optional[bool] = ..., detail: _Optional[str] = ..., latency_ms: _Optional[float] = ...) -> None: ...

class HealthResponse(_message.Message):
    __slots__ = ("services",)
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedCompositeFieldContainer[ServiceHealth]
    def __init__(self, services: _Optional[_Iterable[_Union[ServiceHealth, _Mapping]]] = ...) -> None: ...

class ListModelVersionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelVersion(_message.Message):
    __slots__ = ("version", "source", "dtype", "device", "serving", "gate_key_error", "gate_logit_error")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    GATE_KEY_ERROR_FIELD_NUMBER: _ClassVar[int]
    GATE_LOGIT_ERROR_FIELD_NUMBER: _ClassVar[int]
    version: str
    source: str
    dtype: str
    device: str
    serving: bool
    gate_key_error: float
    gate_logit_error: float
    def __init__(self, version: _Optional[str] = ..., source: _Optional[str] = ..., dtype: _Optional[str] = ..., device: _Optional[str] = ..., serving: _Optional[bool] = ..., gate_key_error: _Optional[float] = ..., gate_logit_error: _Optional[float] = ...) -> None: ...

class ListModelVersionsResponse(_message.Message):
    __slots__ = ("versions", "registered")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[ModelVersion]
    registered: _containers.RepeatedCompositeFieldContainer[RegisteredVersion]
    def __init__(self, versions: _Optional[_Iterable[_Union[ModelVersion, _Mapping]]] = ..., registered: _Optional[_Iterable[_Union[RegisteredVersion, _Mapping]]] = ...) -> None: ...

class RegisteredVersion(_message.Message):
    __slots__ = ("version_id", "tenant", "status", "parent_version", "base_model", "fingerprint", "adapter_key", "evaluation", "training_json", "created_at", "promoted_at", "refusal")
    class EvaluationEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PARENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_KEY_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    TRAINING_JSON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    PROMOTED_AT_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    version_id: str
    tenant: str
    status: str
    parent_version: str
    base_model: str
    fingerprint: str
    adapter_key: str
    evaluation: _containers.ScalarMap[str, float]
    training_json: str
    created_at: float
    promoted_at: float
    refusal: str
    def __init__(self, version_id: _Optional[str] = ..., tenant: _Optional[str] = ..., status: _Optional[str] = ..., parent_version: _Optional[str] = ..., base_model: _Optional[str] = ..., fingerprint: _Optional[str] = ..., adapter_key: _Optional[str] = ..., evaluation: _Optional[_Mapping[str, float]] = ..., training_json: _Optional[str] = ..., created_at: _Optional[float] = ..., promoted_at: _Optional[float] = ..., refusal: _Optional[str] = ...) -> None: ...

class CacheStatsRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class ReplicaCacheStats(_message.Message):
    __slots__ = ("replica", "entries", "bytes", "capacity_bytes", "hits", "misses", "tiers")
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    replica: str
    entries: int
    bytes: int
    capacity_bytes: int
    hits: int
    misses: int
    tiers: _containers.RepeatedCompositeFieldContainer[MemoryTierStats]
    def __init__(self, replica: _Optional[str] = ..., entries: _Optional[int] = ..., bytes: _Optional[int] = ..., capacity_bytes: _Optional[int] = ..., hits: _Optional[int] = ..., misses: _Optional[int] = ..., tiers: _Optional[_Iterable[_Union[MemoryTierStats, _Mapping]]] = ...) -> None: ...

class MemoryTierStats(_message.Message):
    __slots__ = ("tier", "entries", "bytes", "capacity_bytes", "hits", "misses", "evictions")
    TIER_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    tier: str
    entries: int
    bytes: int
    capacity_bytes: int
    hits: int
    misses: int
    evictions: int
    def __init__(self, tier: _Optional[str] = ..., entries: _Optional[int] = ..., bytes: _Optional[int] = ..., capacity_bytes: _Optional[int] = ..., hits: _Optional[int] = ..., misses: _Optional[int] = ..., evictions: _Optional[int] = ...) -> None: ...

class CacheStatsResponse(_message.Message):
    __slots__ = ("index", "replicas", "tenants")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    index: _cache_index_pb2.StatsResponse
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaCacheStats]
    tenants: _containers.RepeatedCompositeFieldContainer[TenantBytes]
    def __init__(self, index: _Optional[_Union[_cache_index_pb2.StatsResponse, _Mapping]] = ..., replicas: _Optional[_Iterable[_Union[ReplicaCacheStats, _Mapping]]] = ..., tenants: _Optional[_Iterable[_Union[TenantBytes, _Mapping]]] = ...) -> None: ...

class SweepCacheRequest(_message.Message):
    __slots__ = ("grace_s", "dry_run")
    GRACE_S_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    grace_s: float
    dry_run: bool
    def __init__(self, grace_s: _Optional[float] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class SweepCacheResponse(_message.Message):
    __slots__ = ("scanned", "deleted", "deleted_bytes", "young", "expired_writes", "partial_writes")
    SCANNED_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    DELETED_BYTES_FIELD_NUMBER: _ClassVar[int]
    YOUNG_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_WRITES_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_WRITES_FIELD_NUMBER: _ClassVar[int]
    scanned: int
    deleted: int
    deleted_bytes: int
    young: int
    expired_writes: int
    partial_writes: int
    def __init__(self, scanned: _Optional[int] = ..., deleted: _Optional[int] = ..., deleted_bytes: _Optional[int] = ..., young: _Optional[int] = ..., expired_writes: _Optional[int] = ..., partial_writes: _Optional[int] = ...) -> None: ...

class Watermarks(_message.Message):
    __slots__ = ("high_bytes", "low_bytes")
    HIGH_BYTES_FIELD_NUMBER: _ClassVar[int]
    LOW_BYTES_FIELD_NUMBER: _ClassVar[int]
    high_bytes: int
    low_bytes: int
    def __init__(self, high_bytes: _Optional[int] = ..., low_bytes: _Optional[int] = ...) -> None: ...

class EvictCacheRequest(_message.Message):
    __slots__ = ("tenant_bounds", "store_bounds", "ttl_s", "tenant")
    TENANT_BOUNDS_FIELD_NUMBER: _ClassVar[int]
    STORE_BOUNDS_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant_bounds: Watermarks
    store_bounds: Watermarks
    ttl_s: float
    tenant: str
    def __init__(self, tenant_bounds: _Optional[_Union[Watermarks, _Mapping]] = ..., store_bounds: _Optional[_Union[Watermarks, _Mapping]] = ..., ttl_s: _Optional[float] = ..., tenant: _Optional[str] = ...) -> None: ...

class TenantBytes(_message.Message):
    __slots__ = ("tenant", "entries", "bytes")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    entries: int
    bytes: int
    def __init__(self, tenant: _Optional[str] = ..., entries: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...

class EvictCacheResponse(_message.Message):
    __slots__ = ("entries", "bytes", "tenants", "by_reason")
    class ByReasonEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    BY_REASON_FIELD_NUMBER: _ClassVar[int]
    entries: int
    bytes: int
    tenants: _containers.RepeatedCompositeFieldContainer[TenantBytes]
    by_reason: _containers.ScalarMap[str, int]
    def __init__(self, entries: _Optional[int] = ..., bytes: _Optional[int] = ..., tenants: _Optional[_Iterable[_Union[TenantBytes, _Mapping]]] = ..., by_reason: _Optional[_Mapping[str, int]] = ...) -> None: ...

class StartDistillationRequest(_message.Message):
    __slots__ = ("tenant", "collection", "directory", "steps", "examples", "eval_questions", "config_json", "auto_promote")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    EVAL_QUESTIONS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    AUTO_PROMOTE_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    collection: str
    directory: str
    steps: int
    examples: int
    eval_questions: int
    config_json: str
    auto_promote: bool
    def __init__(self, tenant: _Optional[str] = ..., collection: _Optional[str] = ..., directory: _Optional[str] = ..., steps: _Optional[int] = ..., examples: _Optional[int] = ..., eval_questions: _Optional[int] = ..., config_json: _Optional[str] = ..., auto_promote: _Optional[bool] = ...) -> None: ...

class StartDistillationResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: DistillationRun
    def __init__(self, run: _Optional[_Union[DistillationRun, _Mapping]] = ...) -> None: ...

class DistillationRun(_message.Message):
    __slots__ = ("run_id", "tenant", "status", "step", "total_steps", "phase", "loss", "kl", "tokens_per_s", "metrics_json", "config_json", "version_id", "error", "cancel_requested", "created_at", "updated_at")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    KL_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    METRICS_JSON_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    tenant: str
    status: str
    step: int
    total_steps: int
    phase: str
    loss: float
    kl: float
    tokens_per_s: float
    metrics_json: str
    config_json: str
    version_id: str
    error: str
    cancel_requested: bool
    created_at: float
    updated_at: float
    def __init__(self, run_id: _Optional[str] = ..., tenant: _Optional[str] = ..., status: _Optional[str] = ..., step: _Optional[int] = ..., total_steps: _Optional[int] = ..., phase: _Optional[str] = ..., loss: _Optional[float] = ..., kl: _Optional[float] = ..., tokens_per_s: _Optional[float] = ..., metrics_json: _Optional[str] = ..., config_json: _Optional[str] = ..., version_id: _Optional[str] = ..., error: _Optional[str] = ..., cancel_requested: _Optional[bool] = ..., created_at: _Optional[float] = ..., updated_at: _Optional[float] = ...) -> None: ...

class GetDistillationRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class GetDistillationResponse(_message.Message):
    __slots__ = ("run", "version")
    RUN_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    run: DistillationRun
    version: RegisteredVersion
    def __init__(self, run: _Optional[_Union[DistillationRun, _Mapping]] = ..., version: _Optional[_Union[RegisteredVersion, _Mapping]] = ...) -> None: ...

class ListDistillationsRequest(_message.Message):
    __slots__ = ("tenant", "limit")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    limit: int
    def __init__(self, tenant: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListDistillationsResponse(_message.Message):
    __slots__ = ("runs",)
    RUNS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[DistillationRun]
    def __init__(self, runs: _Optional[_Iterable[_Union[DistillationRun, _Mapping]]] = ...) -> None: ...

class CancelDistillationRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class CancelDistillationResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: DistillationRun
    def __init__(self, run: _Optional[_Union[DistillationRun, _Mapping]] = ...) -> None: ...

class WatchDistillationRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class WatchDistillationResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: DistillationRun
    def __init__(self, run: _Optional[_Union[DistillationRun, _Mapping]] = ...) -> None: ...

class PromoteModelVersionRequest(_message.Message):
    __slots__ = ("version", "tenant")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    version: str
    tenant: str
    def __init__(self, version: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class PromoteModelVersionResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: RegisteredVersion
    def __init__(self, version: _Optional[_Union[RegisteredVersion, _Mapping]] = ...) -> None: ...

class RollbackModelVersionRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class RollbackModelVersionResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: RegisteredVersion
    def __init__(self, version: _Optional[_Union[RegisteredVersion, _Mapping]] = ...) -> None: ...

class ApiKey(_message.Message):
    __slots__ = ("key_id", "tenant", "role", "label", "created_at", "revoked_at")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    tenant: str
    role: Role
    label: str
    created_at: float
    revoked_at: float
    def __init__(self, key_id: _Optional[str] = ..., tenant: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., label: _Optional[str] = ..., created_at: _Optional[float] = ..., revoked_at: _Optional[float] = ...) -> None: ...

class CreateApiKeyRequest(_message.Message):
    __slots__ = ("tenant", "role", "label")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    role: Role
    label: str
    def __init__(self, tenant: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., label: _Optional[str] = ...) -> None: ...

class CreateApiKeyResponse(_message.Message):
    __slots__ = ("key", "api_key")
    KEY_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    key: ApiKey
    api_key: str
    def __init__(self, key: _Optional[_Union[ApiKey, _Mapping]] = ..., api_key: _Optional[str] = ...) -> None: ...

class ListApiKeysRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class ListApiKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[ApiKey]
    def __init__(self, keys: _Optional[_Iterable[_Union[ApiKey, _Mapping]]] = ...) -> None: ...

class RevokeApiKeyRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class RevokeApiKeyResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: ApiKey
    def __init__(self, key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...
