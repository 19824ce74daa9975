"""deliveries and cancellation: the outbox of outcome notices, a `cancelled` status

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 09:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUSES = "status IN ('queued', 'running', 'succeeded', 'failed')"
NEW_STATUSES = "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')"


def upgrade() -> None:
    # Additive: one more allowed status and a nullable column; old workers ignore both.
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cancel_requested_at", sa.DateTime(timezone=True)))
        batch_op.drop_constraint(batch_op.f("ck_jobs_status_known"), type_="check")
        batch_op.create_check_constraint(batch_op.f("ck_jobs_status_known"), NEW_STATUSES)
    op.create_table(
        "deliveries",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=2048), nullable=False),
        sa.Column("queue", sa.String(length=200), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("log", sa.JSON(), nullable=False),
        sa.CheckConstraint("kind IN ('task', 'webhook')", name=op.f("ck_deliveries_kind_known")),
        sa.CheckConstraint(
            "state IN ('pending', 'delivered', 'undelivered')",
            name=op.f("ck_deliveries_state_known"),
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_deliveries_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_deliveries_job_id"), ["job_id"], unique=False)
        batch_op.create_index(
            "ix_deliveries_state_next_attempt_at", ["state", "next_attempt_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_state_next_attempt_at")
        batch_op.drop_index(batch_op.f("ix_deliveries_job_id"))
    op.drop_table("deliveries")
    # The old schema knows no `cancelled`: such jobs become failures that say so.
    op.execute(
        "UPDATE jobs SET status = 'failed', error_kind = 'cancelled' WHERE status = 'cancelled'"
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_jobs_status_known"), type_="check")
        batch_op.create_check_constraint(batch_op.f("ck_jobs_status_known"), OLD_STATUSES)
        batch_op.drop_column("cancel_requested_at")
