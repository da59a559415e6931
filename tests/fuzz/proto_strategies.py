"""Hypothesis strategies for protobuf messages, built from their descriptors: every field may be
unset or set to a value of its type (boundary numbers, NaN and infinities, unknown enum numbers,
odd strings), with bounded sizes. `overrides` replaces the strategy of named fields
("GenerateRequest.max_new_tokens"), to keep expensive work (tokens generated) bounded."""

from __future__ import annotations

from collections.abc import Mapping

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

MAX_TEXT = 48  # characters of a random string
MAX_REPEATED = 4  # items of a repeated field
MAX_DEPTH = 3  # nested messages

# strings a service might trip over: blanks, NUL, paths, SQL and full-text query syntax, ids, scripts
NASTY_STRINGS = (
    "", " ", "\t\n", "\x00", "a\x00b", "default", "other", "blk_0000000000000000", "key_0000000000000000",
    "run_0000000000000000", "0" * 64, "../../etc/passwd", "/", ".", "~", "'; DROP TABLE blocks; --", "' OR 1=1 --",
    '"', '"unclosed', "*", "a*", "NEAR(a b)", "a OR b", "AND", "NOT x", "a AND", "^x", "-x", "col:x", "x:", "(", ")",
    "{}", "[]", "null", "{\"steps\": -1}", "{\"steps\": \"x\"}", "{\"lora\": 3}", "{\"nope\": 1}", "%", "_", "\\",
    "é", "🙂", "\u202e", "\ufeff", "x" * 300, "word " * 200, "\n\n\n\n", "[" * 1500 + "]" * 1500,
)

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-2**31, 2**31 - 1), FieldDescriptor.TYPE_SINT32: (-2**31, 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-2**31, 2**31 - 1), FieldDescriptor.TYPE_INT64: (-2**63, 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-2**63, 2**63 - 1), FieldDescriptor.TYPE_SFIXED64: (-2**63, 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1), FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1), FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def texts() -> st.SearchStrategy[str]:
    """Random text (no lone surrogates: protobuf strings are UTF-8) or a nasty one."""
    return st.one_of(st.sampled_from(NASTY_STRINGS),
                     st.text(st.characters(exclude_categories=("Cs",)), max_size=MAX_TEXT))


def integers(low: int, high: int) -> st.SearchStrategy[int]:
    """Any number of the range, often an edge: zero, one, a limit and one over it, the type's ends."""
    edges = sorted({v for v in (low, high, 0, 1, -1, 2, 64, 65, 1024, 1025, -2**31, 2**31 - 1) if low <= v <= high})
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def floats(width: int) -> st.SearchStrategy[float]:
    return st.one_of(st.sampled_from([0.0, -0.0, 1.0, -1.0, 2.0, 2.5, float("nan"), float("inf"), -float("inf")]),
                     st.floats(width=width, allow_nan=True, allow_infinity=True))


def scalar(field: FieldDescriptor) -> st.SearchStrategy:
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        return texts()
    if t == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=MAX_TEXT)
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == FieldDescriptor.TYPE_FLOAT:
        return floats(32)
    if t == FieldDescriptor.TYPE_DOUBLE:
        return floats(64)
    if t == FieldDescriptor.TYPE_ENUM:  # proto3 enums are open: unknown numbers parse too
        return st.one_of(st.sampled_from([v.number for v in field.enum_type.values]), integers(-2**31, 2**31 - 1))
    return integers(*_INT_RANGES[t])


def messages(descriptor: Descriptor, overrides: Mapping[str, st.SearchStrategy] | None = None,
             depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of `descriptor`'s type; each field unset or a random value (oneof members: the
    last one set wins, as in any client)."""
    overrides = overrides or {}
    fields = {}
    for field in descriptor.fields:
        key = f"{descriptor.name}.{field.name}"
        if key in overrides:
            fields[field.name] = overrides[key]
        elif field.message_type is not None and field.message_type.GetOptions().map_entry:
            k, v = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
            fields[field.name] = st.dictionaries(scalar(k), _value(v, overrides, depth), max_size=MAX_REPEATED)
        elif field.is_repeated:
            fields[field.name] = st.lists(_value(field, overrides, depth), max_size=MAX_REPEATED)
        else:
            fields[field.name] = _value(field, overrides, depth)
    cls = GetMessageClass(descriptor)
    return st.fixed_dictionaries({}, optional=fields).map(lambda values: _build(cls, values))


def _value(field: FieldDescriptor, overrides, depth: int) -> st.SearchStrategy:
    if field.message_type is None:
        return scalar(field)
    if depth >= MAX_DEPTH:
        return st.just(GetMessageClass(field.message_type)())
    return messages(field.message_type, overrides, depth + 1)


def _build(cls, values: dict) -> Message:
    message = cls()
    for name, value in values.items():
        field = cls.DESCRIPTOR.fields_by_name[name]
        target = getattr(message, name) if field.is_repeated or \
            field.message_type is not None else None
        if isinstance(value, dict):
            for k, v in value.items():
                if isinstance(v, Message):
                    target[k].CopyFrom(v)
                else:
                    target[k] = v
        elif isinstance(value, list):
            if field.message_type is not None:
                for v in value:
                    target.add().CopyFrom(v)
            else:
                target.extend(value)
        elif isinstance(value, Message):
            target.CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


def strings_of(message: Message) -> list[str]:
    """Every string and bytes value in the message (to tell an echo of the caller's own input
    from a leak)."""
    found = []
    for field, value in message.ListFields():
        values = value.values() if field.message_type is not None and field.message_type.GetOptions().map_entry \
            else value if field.is_repeated else [value]
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            found.extend(str(k) for k in value.keys())
        for v in values:
            if isinstance(v, Message):
                found.extend(strings_of(v))
            elif isinstance(v, str | bytes):
                found.append(v if isinstance(v, str) else v.decode(errors="replace"))
    return found
