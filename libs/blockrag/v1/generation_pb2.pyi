from blockrag.v1 import segmentation_pb2 as _segmentation_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Document(_message.Message):
    __slots__ = ("id", "text")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class IngestRequest(_message.Message):
    __slots__ = ("collection", "documents", "tenant", "segment_options")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    documents: _containers.RepeatedCompositeFieldContainer[Document]
    tenant: str
    segment_options: _segmentation_pb2.SegmentOptions
    def __init__(self, collection: _Optional[str] = ..., documents: _Optional[_Iterable[_Union[Document, _Mapping]]] = ..., tenant: _Optional[str] = ..., segment_options: _Optional[_Union[_segmentation_pb2.SegmentOptions, _Mapping]] = ...) -> None: ...

class IngestedDocument(_message.Message):
    __slots__ = ("document_id", "block_ids", "block_tokens")
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    BLOCK_IDS_FIELD_NUMBER: _ClassVar[int]
    BLOCK_TOKENS_FIELD_NUMBER: _ClassVar[int]
    document_id: str
    block_ids: _containers.RepeatedScalarFieldContainer[str]
    block_tokens: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, document_id: _Optional[str] = ..., block_ids: _Optional[_Iterable[str]] = ..., block_tokens: _Optional[_Iterable[int]] = ...) -> None: ...

class FailedDocument(_message.Message):
    __slots__ = ("document_id", "reason")
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    document_id: str
    reason: str
    def __init__(self, document_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class IngestResponse(_message.Message):
    __slots__ = ("documents", "computed_blocks", "model_version", "failed_documents")
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    COMPUTED_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    FAILED_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    documents: _containers.RepeatedCompositeFieldContainer[IngestedDocument]
    computed_blocks: int
    model_version: str
    failed_documents: _containers.RepeatedCompositeFieldContainer[FailedDocument]
    def __init__(self, documents: _Optional[_Iterable[_Union[IngestedDocument, _Mapping]]] = ..., computed_blocks: _Optional[int] = ..., model_version: _Optional[str] = ..., failed_documents: _Optional[_Iterable[_Union[FailedDocument, _Mapping]]] = ...) -> None: ...

class ContextBlock(_message.Message):
    __slots__ = ("block_id", "text")
    BLOCK_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    block_id: str
    text: str
    def __init__(self, block_id: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("context", "question", "max_new_tokens", "temperature", "collection", "top_k", "tenant", "seed")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    context: _containers.RepeatedCompositeFieldContainer[ContextBlock]
    question: str
    max_new_tokens: int
    temperature: float
    collection: str
    top_k: int
    tenant: str
    seed: int
    def __init__(self, context: _Optional[_Iterable[_Union[ContextBlock, _Mapping]]] = ..., question: _Optional[str] = ..., max_new_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., collection: _Optional[str] = ..., top_k: _Optional[int] = ..., tenant: _Optional[str] = ..., seed: _Optional[int] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("prompt_tokens", "cached_tokens", "computed_tokens", "ttft_ms", "blocks_by_tier", "completion_tokens", "e2e_ms", "model_version", "block_ids")
    class BlocksByTierEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPUTED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_BY_TIER_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    E2E_MS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    BLOCK_IDS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    cached_tokens: int
    computed_tokens: int
    ttft_ms: float
    blocks_by_tier: _containers.ScalarMap[str, int]
    completion_tokens: int
    e2e_ms: float
    model_version: str
    block_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, prompt_tokens: _Optional[int] = ..., cached_tokens: _Optional[int] = ..., computed_tokens: _Optional[int] = ..., ttft_ms: _Optional[float] = ..., blocks_by_tier: _Optional[_Mapping[str, int]] = ..., completion_tokens: _Optional[int] = ..., e2e_ms: _Optional[float] = ..., model_version: _Optional[str] = ..., block_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("text", "done", "usage")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    text: str
    done: bool
    usage: Usage
    def __init__(self, text: _Optional[str] = ..., done: _Optional[bool] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ...) -> None: ...
