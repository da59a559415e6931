"""Model registry: model_versions, model_promotions, distill_runs, question_log.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06

Spelled out rather than imported from index_schema, as in 0001. The partial unique indexes
keep one active version and one pending-or-running distillation run per tenant scope.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _where(condition: str) -> dict[str, sa.TextClause]:
    return {"sqlite_where": sa.text(condition), "postgresql_where": sa.text(condition)}


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("version_id", sa.String(19), primary_key=True),
        sa.Column("tenant", sa.String(255), nullable=False),
        sa.Column("base_model", sa.String(255), nullable=False),
        sa.Column("base_fingerprint", sa.String(255), nullable=False),
        sa.Column("adapter_key", sa.Text, nullable=False),
        sa.Column(
            "parent_version", sa.String(19),
            sa.ForeignKey("model_versions.version_id", name="fk_model_versions_parent"),
            nullable=True,
        ),
        sa.Column("fingerprint", sa.String(255), nullable=True),
        sa.Column("training", sa.Text, nullable=False),
        sa.Column("evaluation", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("promoted_at", sa.Double, nullable=True),
        sa.CheckConstraint(
            "status IN ('candidate', 'active', 'retired', 'failed')",
            name="ck_model_versions_status",
        ),
    )
    op.create_index("ix_model_versions_tenant", "model_versions", ["tenant", "created_at"])
    op.create_index(
        "ux_model_versions_active", "model_versions", ["tenant"], unique=True,
        **_where("status = 'active'"),
    )
    op.create_table(
        "model_promotions",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(255), nullable=False),
        sa.Column(
            "version_id", sa.String(19),
            sa.ForeignKey("model_versions.version_id", name="fk_model_promotions_version"),
            nullable=True,
        ),
        sa.Column(
            "previous_version", sa.String(19),
            sa.ForeignKey("model_versions.version_id", name="fk_model_promotions_previous"),
            nullable=True,
        ),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("at", sa.Double, nullable=False),
        sa.CheckConstraint("action IN ('promote', 'rollback')", name="ck_model_promotions_action"),
    )
    op.create_index("ix_model_promotions_tenant", "model_promotions", ["tenant", "seq"])
    op.create_table(
        "distill_runs",
        sa.Column("run_id", sa.String(20), primary_key=True),
        sa.Column("tenant", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("config", sa.Text, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("total_steps", sa.Integer, nullable=False),
        sa.Column("metrics", sa.Text, nullable=False),
        sa.Column("checkpoint_key", sa.Text, nullable=True),
        sa.Column(
            "version_id", sa.String(19),
            sa.ForeignKey("model_versions.version_id", name="fk_distill_runs_version"),
            nullable=True,
        ),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')",
            name="ck_distill_runs_status",
        ),
    )
    op.create_index("ix_distill_runs_tenant", "distill_runs", ["tenant", "created_at"])
    op.create_index(
        "ux_distill_runs_going", "distill_runs", ["tenant"], unique=True,
        **_where("status IN ('pending', 'running')"),
    )
    op.create_table(
        "question_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(255), nullable=False),
        sa.Column("question", sa.Text, nullable=False),
        sa.Column("block_ids", sa.Text, nullable=False),
        sa.Column("model_version", sa.String(255), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.create_index("ix_question_log_tenant", "question_log", ["tenant", "id"])
    op.create_index("ix_question_log_created", "question_log", ["created_at"])


def downgrade() -> None:
    op.drop_table("question_log")
    op.drop_table("distill_runs")
    op.drop_table("model_promotions")
    op.drop_table("model_versions")
