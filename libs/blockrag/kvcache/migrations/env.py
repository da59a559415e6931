"""Alembic environment: migrates the connection that blockrag.kvcache.migrations.upgrade passes.

There is no offline (SQL script) mode and no alembic.ini: the index migrates itself on open.
"""

from alembic import context

from blockrag.kvcache.index_schema import metadata
from blockrag.kvcache.migrations import VERSION_TABLE

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "the cache index migrations run through blockrag.kvcache.migrations.upgrade(engine) "
        "(CacheIndex.migrate), which passes a connection; offline mode is not supported"
    )
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    # SQLite cannot ALTER most things; batch mode rebuilds tables in later revisions.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
