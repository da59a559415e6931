"""Quotas shared by replicas, and blocks claimed by the write plans that registered them.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05

quota_tokens: precompute tokens admitted per tenant and second, the rate quota's window, which
every Precompute replica reads and adds to in one transaction (before: a window per replica, so
N replicas allowed N times the quota). quota_holds: KV bytes held by writes admitted and not
ended, counted with the stored bytes by the next admission. block_claims: the blocks a write
plan registered, kept by forget_blocks until the plan's write ends.

Spelled out rather than imported from index_schema, as in 0001.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "block_claims",
        sa.Column("plan", sa.String(20), primary_key=True),
        sa.Column("tenant", sa.String(255), primary_key=True),
        sa.Column("block_id", sa.String(36), primary_key=True),
        sa.Column("claimed_at", sa.Double, nullable=False),
    )
    op.create_index("ix_block_claims_block", "block_claims", ["tenant", "block_id"])
    op.create_index("ix_block_claims_claimed", "block_claims", ["claimed_at"])
    op.create_table(
        "quota_tokens",
        sa.Column("tenant", sa.String(255), primary_key=True),
        sa.Column("second", sa.BigInteger, primary_key=True),
        sa.Column("tokens", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_quota_tokens_second", "quota_tokens", ["second"])
    op.create_table(
        "quota_holds",
        sa.Column("plan", sa.String(20), primary_key=True),
        sa.Column("tenant", sa.String(255), nullable=False),
        sa.Column("nbytes", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
    )
    op.create_index("ix_quota_holds_tenant", "quota_holds", ["tenant", "expires_at"])


def downgrade() -> None:
    op.drop_table("quota_holds")
    op.drop_table("quota_tokens")
    op.drop_table("block_claims")
