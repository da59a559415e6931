"""Initial cache index schema: blocks, documents, document_blocks, kv_entries.

Revision ID: 0001
Revises:
Create Date: 2026-11-29

The tables are spelled out here rather than imported from index_schema: a migration must keep
creating what it created when it was written, whatever the schema module says later.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "blocks",
        sa.Column("tenant", sa.String(255), primary_key=True),
        sa.Column("block_id", sa.String(36), primary_key=True),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("token_count", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.create_table(
        "documents",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(255), nullable=False),
        sa.Column("collection", sa.String(255), nullable=False),
        sa.Column("document_id", sa.String(255), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.UniqueConstraint("tenant", "collection", "document_id", name="uq_documents_name"),
    )
    op.create_table(
        "document_blocks",
        sa.Column(
            "document_seq", sa.Integer,
            sa.ForeignKey("documents.seq", name="fk_document_blocks_document"), primary_key=True,
        ),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("tenant", sa.String(255), nullable=False),
        sa.Column("block_id", sa.String(36), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant", "block_id"], ["blocks.tenant", "blocks.block_id"],
            name="fk_document_blocks_block",
        ),
    )
    op.create_table(
        "kv_entries",
        sa.Column("tenant", sa.String(255), primary_key=True),
        sa.Column("block_id", sa.String(36), primary_key=True),
        sa.Column("model_version", sa.String(255), primary_key=True),
        sa.Column("location", sa.Text, nullable=False),
        sa.Column("nbytes", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("last_access_at", sa.Double, nullable=False),
        sa.Column("hits", sa.BigInteger, nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant", "block_id"], ["blocks.tenant", "blocks.block_id"],
            name="fk_kv_entries_block",
        ),
    )
    op.create_index("ix_kv_entries_lru", "kv_entries", ["tenant", "last_access_at"])
    op.create_index("ix_kv_entries_version", "kv_entries", ["tenant", "model_version"])


def downgrade() -> None:
    op.drop_table("kv_entries")
    op.drop_table("document_blocks")
    op.drop_table("documents")
    op.drop_table("blocks")
