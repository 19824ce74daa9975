"""feedback on critiques, shadow jobs paired with their primaries, guard statistics on events

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 09:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_ASSIGNMENTS = "assignment IN ('split', 'forced', 'fallback')"
NEW_ASSIGNMENTS = "assignment IN ('split', 'forced', 'fallback', 'shadow')"


def upgrade() -> None:
    # Additive: nullable or defaulted columns, so workers and producers of the previous release
    # keep working while hosts are upgraded one at a time.
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.Column("rating", sa.Integer(), nullable=False),
        sa.Column("helpful", sa.Boolean(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("simulated", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("rating BETWEEN 1 AND 5", name=op.f("ck_feedback_rating_range")),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_feedback_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feedback")),
        sa.UniqueConstraint("job_id", "source", name=op.f("uq_feedback_job_id")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("shadow_of", sa.String(length=36), nullable=True))
        batch_op.create_index(batch_op.f("ix_jobs_shadow_of"), ["shadow_of"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_jobs_shadow_of_jobs"), "jobs", ["shadow_of"], ["id"],
            ondelete="CASCADE",
        )  # fmt: skip
        batch_op.drop_constraint(batch_op.f("ck_jobs_assignment_known"), type_="check")
        batch_op.create_check_constraint(batch_op.f("ck_jobs_assignment_known"), NEW_ASSIGNMENTS)
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("shadow", sa.Float(), server_default=sa.text("0"), nullable=False)
        )
    with op.batch_alter_table("rollout_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("shadow", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("details", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rollout_events", schema=None) as batch_op:
        batch_op.drop_column("details")
        batch_op.drop_column("shadow")
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.drop_column("shadow")
    op.execute("DELETE FROM jobs WHERE assignment = 'shadow'")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_jobs_assignment_known"), type_="check")
        batch_op.create_check_constraint(batch_op.f("ck_jobs_assignment_known"), OLD_ASSIGNMENTS)
        batch_op.drop_constraint(batch_op.f("fk_jobs_shadow_of_jobs"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_jobs_shadow_of"))
        batch_op.drop_column("shadow_of")
    op.drop_table("feedback")
