"""KV writes in flight: one row per object a writer is about to put, until its entry commits.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

A writer records its intent (the object's location) before the object exists and swaps the
intent for the kv_entries row in one transaction after; the orphan sweeper keeps every object
that either names, so a write in flight is never swept, and expires intents older than its
grace period (a crashed writer's). An index on kv_entries.location lets the sweeper ask
"does a row name this object?" per object listed.

Spelled out rather than imported from index_schema, as in 0001.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "kv_writes",
        sa.Column("location", sa.String(1024), primary_key=True),
        sa.Column("tenant", sa.String(255), nullable=False),
        sa.Column("block_id", sa.String(36), nullable=False),
        sa.Column("model_version", sa.String(255), nullable=False),
        sa.Column("started_at", sa.Double, nullable=False),
    )
    op.create_index("ix_kv_writes_started", "kv_writes", ["started_at"])
    op.create_index("ix_kv_entries_location", "kv_entries", ["location"])


def downgrade() -> None:
    op.drop_index("ix_kv_entries_location", "kv_entries")
    op.drop_table("kv_writes")
