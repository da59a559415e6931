"""API keys: one row per key, its tenant and role, the hash of the key (never the key).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

Spelled out rather than imported from index_schema, as in 0001.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(20), primary_key=True),
        sa.Column("tenant", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("label", sa.String(255), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("revoked_at", sa.Double, nullable=True),
        sa.CheckConstraint("role IN ('reader', 'writer', 'admin')", name="ck_api_keys_role"),
    )
    op.create_index("ix_api_keys_tenant", "api_keys", ["tenant", "created_at"])


def downgrade() -> None:
    op.drop_table("api_keys")
