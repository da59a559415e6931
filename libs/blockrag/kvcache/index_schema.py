"""Tables of the CacheIndex, as the queries see them.

The migrations (blockrag/kvcache/migrations/versions) create these tables; a test checks that
the migrated database and this module agree, so a change here needs a new migration.

Timestamps are unix seconds (double precision): the same type on SQLite and PostgreSQL, and
ordered without time zone surprises.
"""

from __future__ import annotations

import sqlalchemy as sa

NAME_LEN = 255  # tenant, collection, document_id, model_version
BLOCK_ID_LEN = 36  # "blk_" + 32 hex

metadata = sa.MetaData()


def _name(column: str, primary_key: bool = False) -> sa.Column:
    return sa.Column(column, sa.String(NAME_LEN), nullable=False, primary_key=primary_key)


blocks = sa.Table(
    "blocks",
    metadata,
    _name("tenant", primary_key=True),
    sa.Column("block_id", sa.String(BLOCK_ID_LEN), primary_key=True),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("token_count", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
)

# One row per registered document; ``seq`` grows with every first registration, so it is the
# ingest order. Re-registering a document keeps its row (and place) and replaces its blocks.
documents = sa.Table(
    "documents",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    _name("tenant"),
    _name("collection"),
    _name("document_id"),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.UniqueConstraint("tenant", "collection", "document_id", name="uq_documents_name"),
)

# The ordered blocks of a document.
document_blocks = sa.Table(
    "document_blocks",
    metadata,
    sa.Column(
        "document_seq",
        sa.Integer,
        sa.ForeignKey("documents.seq", name="fk_document_blocks_document"),
        primary_key=True,
    ),
    sa.Column("position", sa.Integer, primary_key=True),
    _name("tenant"),
    sa.Column("block_id", sa.String(BLOCK_ID_LEN), nullable=False),
    sa.ForeignKeyConstraint(
        ["tenant", "block_id"], ["blocks.tenant", "blocks.block_id"],
        name="fk_document_blocks_block",
    ),
)

# Where the KV of a block, computed by one model version, is stored.
kv_entries = sa.Table(
    "kv_entries",
    metadata,
    _name("tenant", primary_key=True),
    sa.Column("block_id", sa.String(BLOCK_ID_LEN), primary_key=True),
    _name("model_version", primary_key=True),
    sa.Column("location", sa.Text, nullable=False),
    sa.Column("nbytes", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("last_access_at", sa.Double, nullable=False),
    sa.Column("hits", sa.BigInteger, nullable=False),
    sa.ForeignKeyConstraint(
        ["tenant", "block_id"], ["blocks.tenant", "blocks.block_id"], name="fk_kv_entries_block"
    ),
    # LRU eviction walks a tenant's entries by last access; stats and version-wide eviction
    # group them by model version.
    sa.Index("ix_kv_entries_lru", "tenant", "last_access_at"),
    sa.Index("ix_kv_entries_version", "tenant", "model_version"),
)
