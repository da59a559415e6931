"""Block search reads its GIN index directly: fastupdate off on PostgreSQL.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

With fastupdate on (PostgreSQL's default), new rows' lexemes go to the index's pending list,
merged into the index only by VACUUM, autovacuum's ANALYZE or when the list passes
gin_pending_list_limit (4 MB), and every search reads the whole list until then: up to 512
pages per question, whatever it asks. Off, each INSERT updates the index itself (ingest pays a
little more) and a search reads the posting lists of its own lexemes only. The list the index
holds now is merged here.

SQLite: nothing (FTS5 has no such list).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER INDEX ix_blocks_search SET (fastupdate = off)")
        op.execute("SELECT gin_clean_pending_list('ix_blocks_search'::regclass)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER INDEX ix_blocks_search RESET (fastupdate)")
