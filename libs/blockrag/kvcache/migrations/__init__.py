"""Alembic migrations of the CacheIndex schema, run from code (no alembic.ini).

``upgrade(engine)`` brings a database to the newest revision; it is what CacheIndex.migrate
calls. To add a revision, write versions/NNNN_<what>.py by hand, or generate a skeleton with

    from alembic import command
    from blockrag.kvcache.migrations import alembic_config
    command.revision(alembic_config(), "what changed", rev_id="0002")

then update index_schema.py to match (tests/kvcache/test_index.py compares the two).
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext

# Our own version table, so the index can share a database with other alembic users.
VERSION_TABLE = "blockrag_index_version"
# Serializes concurrent migrations of one PostgreSQL database (SQLite: BEGIN IMMEDIATE does).
_PG_LOCK_ID = 0x626C6B72_696E6478  # b"blkrindx"
_HERE = Path(__file__).resolve().parent


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """An alembic Config over this directory; env.py migrates ``connection``."""
    config = Config()
    # configparser interpolates "%": escape it in case the install path holds one.
    config.set_main_option("script_location", str(_HERE).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Migrate the database to ``revision`` in one transaction; idempotent.

    Raises alembic's CommandError when the database is at a revision this build does not
    know (written by a newer blockrag).
    """
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_LOCK_ID})
        command.upgrade(alembic_config(connection), revision)


def current_revision(engine: sa.Engine) -> str | None:
    """The revision the database is at; None for a database never migrated."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()
