from blockrag.v1 import cache_index_pb2 as _cache_index_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

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
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[ModelVersion]
    def __init__(self, versions: _Optional[_Iterable[_Union[ModelVersion, _Mapping]]] = ...) -> None: ...

class CacheStatsRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class ReplicaCacheStats(_message.Message):
    __slots__ = ("replica", "entries", "bytes", "capacity_bytes", "hits", "misses")
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    replica: str
    entries: int
    bytes: int
    capacity_bytes: int
    hits: int
    misses: int
    def __init__(self, replica: _Optional[str] = ..., entries: _Optional[int] = ..., bytes: _Optional[int] = ..., capacity_bytes: _Optional[int] = ..., hits: _Optional[int] = ..., misses: _Optional[int] = ...) -> None: ...

class CacheStatsResponse(_message.Message):
    __slots__ = ("index", "replicas")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    index: _cache_index_pb2.StatsResponse
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaCacheStats]
    def __init__(self, index: _Optional[_Union[_cache_index_pb2.StatsResponse, _Mapping]] = ..., replicas: _Optional[_Iterable[_Union[ReplicaCacheStats, _Mapping]]] = ...) -> None: ...

class StartDistillationRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StartDistillationResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetDistillationRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetDistillationResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PromoteModelVersionRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: str
    def __init__(self, version: _Optional[str] = ...) -> None: ...

class PromoteModelVersionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RollbackModelVersionRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RollbackModelVersionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
