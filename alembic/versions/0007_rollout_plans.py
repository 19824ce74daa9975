"""rollout plans: step plans the guard loop moves forward (additive)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 05:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rollout_plans",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("advisor", sa.String(length=64), nullable=False),
        sa.Column("open_advisor", sa.String(length=64), nullable=True),
        sa.Column("variant", sa.String(length=63), nullable=False),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("min_jobs", sa.Integer(), nullable=False),
        sa.Column("min_minutes", sa.Float(), nullable=False),
        sa.Column("margin", sa.Float(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("weights_version", sa.Integer(), nullable=False),
        sa.Column("step_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('active', 'paused', 'completed', 'rolled_back', 'aborted')",
            name=op.f("ck_rollout_plans_status_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollout_plans")),
        sa.UniqueConstraint("open_advisor", name=op.f("uq_rollout_plans_open_advisor")),
    )
    with op.batch_alter_table("rollout_plans", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rollout_plans_advisor"), ["advisor"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("rollout_plans", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rollout_plans_advisor"))
    op.drop_table("rollout_plans")
