"""The database engine of a CacheIndex: SQLite (one file shared by processes) or PostgreSQL.

SQLite needs care to be shared: WAL lets readers run beside the one writer, a busy timeout
makes writers wait instead of failing, and write transactions start with BEGIN IMMEDIATE. The
last one matters: a deferred transaction that reads and then writes cannot wait for the lock
(SQLite answers "database is locked" at once, busy timeout or not), so every method that writes
takes the write lock up front through ``writer(engine)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from blockrag.errors import StorageConfigError

_BEGIN_OPTION = "blockrag_sqlite_begin"


@dataclass(frozen=True)
class IndexConfig:
    """How to reach the index database.

    ``url``: "sqlite:///path/index.db" or "postgresql+psycopg://user@host:5432/db"
    ("postgresql://" means psycopg 3 too).
    """

    url: str
    sqlite_busy_timeout_s: float = 30.0  # how long a writer waits for another one
    pool_size: int = 5  # connections kept per process

    def __post_init__(self) -> None:
        if self.sqlite_busy_timeout_s < 0 or self.pool_size < 1:
            raise StorageConfigError(
                f"index config: sqlite_busy_timeout_s must be >= 0 and pool_size >= 1; got "
                f"{self.sqlite_busy_timeout_s}, {self.pool_size}"
            )


def create_index_engine(config: IndexConfig) -> sa.Engine:
    """An engine for ``config.url``; StorageConfigError for an unusable URL."""
    url = _parse(config.url)
    backend = url.get_backend_name()
    if backend == "postgresql":
        if url.drivername == "postgresql":
            # Plain postgresql:// would mean psycopg2, which blockrag does not ship.
            url = url.set(drivername="postgresql+psycopg")
        return _create(url, pool_size=config.pool_size, pool_pre_ping=True)
    if backend == "sqlite":
        return _sqlite_engine(url, config)
    raise StorageConfigError(
        f"cache index URL {_shown(url)} uses unsupported database {backend!r}; use "
        f"sqlite:///path/index.db or postgresql+psycopg://user@host:5432/db"
    )


def writer(engine: sa.Engine) -> sa.Engine:
    """The same engine (same pool) whose transactions take SQLite's write lock on BEGIN."""
    return engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})


def shown_url(engine: sa.Engine) -> str:
    """The engine's URL without its password, for messages."""
    return _shown(engine.url)


def _parse(text: str) -> URL:
    try:
        return make_url(text)
    except (ArgumentError, ValueError, TypeError) as e:
        raise StorageConfigError(
            f"malformed cache index URL {text!r}; expected sqlite:///path/index.db or "
            f"postgresql+psycopg://user@host:5432/db"
        ) from e


def _shown(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def _create(url: URL, **kwargs: object) -> sa.Engine:
    try:
        return sa.create_engine(url, **kwargs)  # type: ignore[arg-type]
    except (ArgumentError, ImportError) as e:
        raise StorageConfigError(f"cannot create an engine for {_shown(url)}: {e}") from e


def _sqlite_engine(url: URL, config: IndexConfig) -> sa.Engine:
    database = url.database or ""
    in_memory = database in ("", ":memory:") or url.query.get("mode") == "memory"
    if in_memory or database.startswith("file:"):
        raise StorageConfigError(
            f"cache index URL {_shown(url)}: an in-memory SQLite index cannot be shared between "
            f"connections; give a file, as in sqlite:///var/lib/blockrag/index.db"
        )
    Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = _create(url, pool_size=config.pool_size)
    busy_ms = int(config.sqlite_busy_timeout_s * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        # We emit BEGIN ourselves (below); the driver's implicit BEGIN would be DEFERRED.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching to WAL itself waits for other connections.
            cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")  # durable enough under WAL, faster
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        mode = connection.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine
