from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PrecomputeRequest(_message.Message):
    __slots__ = ("texts", "model_version", "tenant", "return_kv")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    RETURN_KV_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    model_version: str
    tenant: str
    return_kv: bool
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., model_version: _Optional[str] = ..., tenant: _Optional[str] = ..., return_kv: _Optional[bool] = ...) -> None: ...

class BlockEntry(_message.Message):
    __slots__ = ("block_id", "token_count", "nbytes", "tier", "computed", "location", "kv")
    BLOCK_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    NBYTES_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    COMPUTED_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    KV_FIELD_NUMBER: _ClassVar[int]
    block_id: str
    token_count: int
    nbytes: int
    tier: str
    computed: bool
    location: str
    kv: bytes
    def __init__(self, block_id: _Optional[str] = ..., token_count: _Optional[int] = ..., nbytes: _Optional[int] = ..., tier: _Optional[str] = ..., computed: _Optional[bool] = ..., location: _Optional[str] = ..., kv: _Optional[bytes] = ...) -> None: ...

class PrecomputeResponse(_message.Message):
    __slots__ = ("blocks", "model_version")
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    blocks: _containers.RepeatedCompositeFieldContainer[BlockEntry]
    model_version: str
    def __init__(self, blocks: _Optional[_Iterable[_Union[BlockEntry, _Mapping]]] = ..., model_version: _Optional[str] = ...) -> None: ...
