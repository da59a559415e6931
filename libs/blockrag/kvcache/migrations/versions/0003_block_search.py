"""Full-text search over block texts, in the database's own index.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08

PostgreSQL: a stored generated tsvector column on blocks (english configuration: stemmed,
stop words dropped) under a GIN index. Being generated, it is filled for every existing row by
this ALTER and kept up to date by every INSERT without a trigger.

SQLite: an FTS5 table holding each block's text with its tenant and id (unindexed), kept by
triggers on blocks, and rebuilt here from the blocks already registered. It keeps its own copy
of the text rather than pointing at blocks' rowids, which VACUUM may renumber (blocks has no
INTEGER PRIMARY KEY).

Both: an index on document_blocks (tenant, block_id), so a search checks a candidate's
collection with one index probe instead of listing the collection.

The names are spelled out here, as in 0001; blockrag.kvcache.index_search queries them.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SQLITE = (
    # porter over unicode61: the same stemming idea as PostgreSQL's english configuration
    "CREATE VIRTUAL TABLE block_search USING fts5("
    "text, tenant UNINDEXED, block_id UNINDEXED, tokenize = 'porter unicode61')",
    "CREATE TRIGGER block_search_insert AFTER INSERT ON blocks BEGIN "
    "INSERT INTO block_search (text, tenant, block_id) VALUES (new.text, new.tenant, new.block_id); "
    "END",
    # Blocks are never deleted today, and a text never changes (the id is its hash): these two
    # keep the index right should that change. They scan block_search (its columns but text
    # are unindexed).
    "CREATE TRIGGER block_search_delete AFTER DELETE ON blocks BEGIN "
    "DELETE FROM block_search WHERE tenant = old.tenant AND block_id = old.block_id; "
    "END",
    "CREATE TRIGGER block_search_update AFTER UPDATE OF text ON blocks BEGIN "
    "UPDATE block_search SET text = new.text WHERE tenant = old.tenant AND block_id = old.block_id; "
    "END",
    "INSERT INTO block_search (text, tenant, block_id) SELECT text, tenant, block_id FROM blocks",
)

_POSTGRESQL = (
    "ALTER TABLE blocks ADD COLUMN search_vector tsvector "
    "GENERATED ALWAYS AS (to_tsvector('english'::regconfig, text)) STORED",
    "CREATE INDEX ix_blocks_search ON blocks USING gin (search_vector)",
)


def upgrade() -> None:
    statements = _POSTGRESQL if op.get_bind().dialect.name == "postgresql" else _SQLITE
    for statement in statements:
        op.execute(statement)
    op.create_index("ix_document_blocks_block", "document_blocks", ["tenant", "block_id"])


def downgrade() -> None:
    op.drop_index("ix_document_blocks_block", "document_blocks")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_blocks_search")
        op.execute("ALTER TABLE blocks DROP COLUMN search_vector")
    else:
        for trigger in ("block_search_insert", "block_search_delete", "block_search_update"):
            op.execute(f"DROP TRIGGER {trigger}")
        op.execute("DROP TABLE block_search")
