"""What the registry's stores share: checks of names and JSON values, ids, per-scope locks.

The checks are the same on every backend (SQLite would store what PostgreSQL refuses, such as
NUL characters or over-long names).
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from blockrag.errors import InvalidRequestError, NotFoundError
from blockrag.kvcache.index_schema import NAME_LEN
from blockrag.names import name, text  # noqa: F401 - the stores' checks, used as d.name, d.text

SHARED = ""  # the tenant scope of versions and runs that every tenant may use

# First keys of PostgreSQL's two-key advisory locks, one per kind of per-scope write.
VERSIONS_LOCK = 0x626C6D76  # b"blmv"
RUNS_LOCK = 0x626C7275  # b"blru"


def new_id(prefix: str) -> str:
    """``prefix`` + 16 random hex digits."""
    return prefix + secrets.token_hex(8)


def scope(value: object) -> str:
    """A tenant scope: SHARED ("") or a tenant name."""
    if not isinstance(value, str) or len(value) > NAME_LEN or "\0" in value:
        raise InvalidRequestError(
            f"tenant must be a string of at most {NAME_LEN} characters without NUL (\"\" is "
            f"the shared scope); got {value!r:.80}"
        )
    return value


def integer(value: object, what: str, minimum: int, maximum: int | None = None) -> int:
    """An int (not a bool) within [minimum, maximum]."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise InvalidRequestError(f"{what} must be an int {bound}; got {value!r:.80}")
    return value


def positive(value: object, what: str) -> float:
    """A finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
        math.isfinite(value) and value > 0
    ):
        raise InvalidRequestError(f"{what} must be a finite number > 0; got {value!r:.80}")
    return float(value)


def dump_json(value: object, what: str, kind: type = Mapping) -> str:
    """``value`` (a JSON object, or a list when ``kind`` is list) as standard JSON text:
    string keys, no NaN or infinity; tuples come back as lists."""
    if not isinstance(value, kind):
        raise InvalidRequestError(
            f"{what} must be a JSON {'object' if kind is Mapping else 'list'}; got "
            f"{type(value).__name__}"
        )
    if isinstance(value, Mapping) and not all(isinstance(k, str) for k in value):
        raise InvalidRequestError(f"{what} must have string keys; got {list(value)!r:.80}")
    try:
        encoded = json.dumps(value, sort_keys=True, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise InvalidRequestError(f"{what} is not JSON (no NaN or infinity either): {e}") from e
    return encoded  # ASCII: NUL and other controls are escaped


def load_json(encoded: str) -> Any:
    """The value of JSON text written by ``dump_json``."""
    return json.loads(encoded)


def lock_scope(conn: sa.Connection, kind: int, tenant: str) -> None:
    """Serialize the writers of one scope until the transaction ends.

    On PostgreSQL, a transaction-scoped advisory lock keyed by (kind, hash of the scope);
    SQLite needs none, since a writer(engine) transaction holds the database's write lock.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(:kind, hashtext(:tenant))"),
            {"kind": kind, "tenant": tenant},
        )


def get_row(conn: sa.Connection, key: sa.Column, value: str, missing: str, *, lock: bool = False) -> sa.Row:
    """The row of key's table whose key equals value (locked for update when asked);
    NotFoundError(missing) when there is none."""
    query = sa.select(key.table).where(key == value)
    row = conn.execute(query.with_for_update() if lock else query).one_or_none()
    if row is None:
        raise NotFoundError(missing)
    return row
