from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LookupRequest(_message.Message):
    __slots__ = ("block_ids", "model_version", "tenant")
    BLOCK_IDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    block_ids: _containers.RepeatedScalarFieldContainer[str]
    model_version: str
    tenant: str
    def __init__(self, block_ids: _Optional[_Iterable[str]] = ..., model_version: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class LookupResult(_message.Message):
    __slots__ = ("block_id", "hit", "location", "nbytes", "known", "token_count")
    BLOCK_ID_FIELD_NUMBER: _ClassVar[int]
    HIT_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    NBYTES_FIELD_NUMBER: _ClassVar[int]
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    block_id: str
    hit: bool
    location: str
    nbytes: int
    known: bool
    token_count: int
    def __init__(self, block_id: _Optional[str] = ..., hit: _Optional[bool] = ..., location: _Optional[str] = ..., nbytes: _Optional[int] = ..., known: _Optional[bool] = ..., token_count: _Optional[int] = ...) -> None: ...

class LookupResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[LookupResult]
    def __init__(self, results: _Optional[_Iterable[_Union[LookupResult, _Mapping]]] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class ModelVersionStats(_message.Message):
    __slots__ = ("model_version", "entries", "bytes")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    entries: int
    bytes: int
    def __init__(self, model_version: _Optional[str] = ..., entries: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("blocks", "documents", "entries", "bytes", "by_model_version", "collections")
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    BY_MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    blocks: int
    documents: int
    entries: int
    bytes: int
    by_model_version: _containers.RepeatedCompositeFieldContainer[ModelVersionStats]
    collections: int
    def __init__(self, blocks: _Optional[int] = ..., documents: _Optional[int] = ..., entries: _Optional[int] = ..., bytes: _Optional[int] = ..., by_model_version: _Optional[_Iterable[_Union[ModelVersionStats, _Mapping]]] = ..., collections: _Optional[int] = ...) -> None: ...

class EvictRequest(_message.Message):
    __slots__ = ("tenant", "block_ids", "model_version", "max_bytes")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    BLOCK_IDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    block_ids: _containers.RepeatedScalarFieldContainer[str]
    model_version: str
    max_bytes: int
    def __init__(self, tenant: _Optional[str] = ..., block_ids: _Optional[_Iterable[str]] = ..., model_version: _Optional[str] = ..., max_bytes: _Optional[int] = ...) -> None: ...

class EvictResponse(_message.Message):
    __slots__ = ("entries", "bytes")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    entries: int
    bytes: int
    def __init__(self, entries: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...

class BlockText(_message.Message):
    __slots__ = ("text", "token_count")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    text: str
    token_count: int
    def __init__(self, text: _Optional[str] = ..., token_count: _Optional[int] = ...) -> None: ...

class RegisterBlocksRequest(_message.Message):
    __slots__ = ("tenant", "blocks", "collection", "document_id", "documents")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    blocks: _containers.RepeatedCompositeFieldContainer[BlockText]
    collection: str
    document_id: str
    documents: _containers.RepeatedCompositeFieldContainer[DocumentBlocks]
    def __init__(self, tenant: _Optional[str] = ..., blocks: _Optional[_Iterable[_Union[BlockText, _Mapping]]] = ..., collection: _Optional[str] = ..., document_id: _Optional[str] = ..., documents: _Optional[_Iterable[_Union[DocumentBlocks, _Mapping]]] = ...) -> None: ...

class DocumentBlocks(_message.Message):
    __slots__ = ("document_id", "blocks")
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    document_id: str
    blocks: _containers.RepeatedCompositeFieldContainer[BlockText]
    def __init__(self, document_id: _Optional[str] = ..., blocks: _Optional[_Iterable[_Union[BlockText, _Mapping]]] = ...) -> None: ...

class RegisterBlocksResponse(_message.Message):
    __slots__ = ("block_ids", "documents")
    BLOCK_IDS_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    block_ids: _containers.RepeatedScalarFieldContainer[str]
    documents: _containers.RepeatedCompositeFieldContainer[RegisteredDocument]
    def __init__(self, block_ids: _Optional[_Iterable[str]] = ..., documents: _Optional[_Iterable[_Union[RegisteredDocument, _Mapping]]] = ...) -> None: ...

class RegisteredDocument(_message.Message):
    __slots__ = ("document_id", "block_ids")
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    BLOCK_IDS_FIELD_NUMBER: _ClassVar[int]
    document_id: str
    block_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, document_id: _Optional[str] = ..., block_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetBlocksRequest(_message.Message):
    __slots__ = ("tenant", "block_ids")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    BLOCK_IDS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    block_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tenant: _Optional[str] = ..., block_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class StoredBlock(_message.Message):
    __slots__ = ("block_id", "text", "token_count")
    BLOCK_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    block_id: str
    text: str
    token_count: int
    def __init__(self, block_id: _Optional[str] = ..., text: _Optional[str] = ..., token_count: _Optional[int] = ...) -> None: ...

class GetBlocksResponse(_message.Message):
    __slots__ = ("blocks",)
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    blocks: _containers.RepeatedCompositeFieldContainer[StoredBlock]
    def __init__(self, blocks: _Optional[_Iterable[_Union[StoredBlock, _Mapping]]] = ...) -> None: ...

class KVEntry(_message.Message):
    __slots__ = ("block_id", "model_version", "location", "nbytes")
    BLOCK_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    NBYTES_FIELD_NUMBER: _ClassVar[int]
    block_id: str
    model_version: str
    location: str
    nbytes: int
    def __init__(self, block_id: _Optional[str] = ..., model_version: _Optional[str] = ..., location: _Optional[str] = ..., nbytes: _Optional[int] = ...) -> None: ...

class CommitEntriesRequest(_message.Message):
    __slots__ = ("tenant", "entries")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    entries: _containers.RepeatedCompositeFieldContainer[KVEntry]
    def __init__(self, tenant: _Optional[str] = ..., entries: _Optional[_Iterable[_Union[KVEntry, _Mapping]]] = ...) -> None: ...

class CommitEntriesResponse(_message.Message):
    __slots__ = ("committed",)
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    committed: int
    def __init__(self, committed: _Optional[int] = ...) -> None: ...

class ListCollectionRequest(_message.Message):
    __slots__ = ("tenant", "collection", "limit")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    collection: str
    limit: int
    def __init__(self, tenant: _Optional[str] = ..., collection: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListCollectionResponse(_message.Message):
    __slots__ = ("blocks",)
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    blocks: _containers.RepeatedCompositeFieldContainer[StoredBlock]
    def __init__(self, blocks: _Optional[_Iterable[_Union[StoredBlock, _Mapping]]] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("tenant", "collection", "query", "k")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    collection: str
    query: str
    k: int
    def __init__(self, tenant: _Optional[str] = ..., collection: _Optional[str] = ..., query: _Optional[str] = ..., k: _Optional[int] = ...) -> None: ...

class SearchHit(_message.Message):
    __slots__ = ("block_id", "score", "text", "token_count")
    BLOCK_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    block_id: str
    score: float
    text: str
    token_count: int
    def __init__(self, block_id: _Optional[str] = ..., score: _Optional[float] = ..., text: _Optional[str] = ..., token_count: _Optional[int] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits",)
    HITS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[SearchHit]
    def __init__(self, hits: _Optional[_Iterable[_Union[SearchHit, _Mapping]]] = ...) -> None: ...
