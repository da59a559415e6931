"""The names the platform's stores keep (tenants, collections, document ids, labels) and the text
they keep: the same rules on every backend (SQLite would store what PostgreSQL refuses, such as
NUL characters or names longer than the schema's columns). A request is checked against them
before anything is written, so that a refusal never leaves part of it behind."""

from __future__ import annotations

from blockrag.errors import InvalidRequestError
from blockrag.kvcache.index_schema import NAME_LEN


def name(value: object, what: str) -> str:
    """A non-empty name that fits the schema's name columns."""
    if not isinstance(value, str) or not value or len(value) > NAME_LEN or "\0" in value:
        raise InvalidRequestError(
            f"{what} must be a non-empty string of at most {NAME_LEN} characters without NUL; "
            f"got {value!r:.80}"
        )
    return value


def text(value: object, what: str, *, empty: bool = False) -> str:
    """Free text without NUL; non-empty unless ``empty``."""
    if not isinstance(value, str) or (not value and not empty) or "\0" in value:
        raise InvalidRequestError(
            f"{what} must be a {'' if empty else 'non-empty '}string without NUL; "
            f"got {value!r:.80}"
        )
    return value
