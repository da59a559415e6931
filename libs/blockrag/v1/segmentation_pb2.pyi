from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SegmentOptions(_message.Message):
    __slots__ = ("max_block_tokens", "min_block_tokens", "granularity")
    MAX_BLOCK_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MIN_BLOCK_TOKENS_FIELD_NUMBER: _ClassVar[int]
    GRANULARITY_FIELD_NUMBER: _ClassVar[int]
    max_block_tokens: int
    min_block_tokens: int
    granularity: float
    def __init__(self, max_block_tokens: _Optional[int] = ..., min_block_tokens: _Optional[int] = ..., granularity: _Optional[float] = ...) -> None: ...

class SegmentRequest(_message.Message):
    __slots__ = ("text", "options")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    text: str
    options: SegmentOptions
    def __init__(self, text: _Optional[str] = ..., options: _Optional[_Union[SegmentOptions, _Mapping]] = ...) -> None: ...

class Segment(_message.Message):
    __slots__ = ("start", "end", "text", "token_count")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    text: str
    token_count: int
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ..., text: _Optional[str] = ..., token_count: _Optional[int] = ...) -> None: ...

class SegmentResponse(_message.Message):
    __slots__ = ("blocks",)
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    blocks: _containers.RepeatedCompositeFieldContainer[Segment]
    def __init__(self, blocks: _Optional[_Iterable[_Union[Segment, _Mapping]]] = ...) -> None: ...
