"""stored scores: overall_score and the seven dimension scores beside each analysis (additive)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 08:40:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from store.scores import stored_scores

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 1000


def upgrade() -> None:
    # Nullable: a worker of the previous release writes only llm_outputs, and the report
    # reads such a row's scores from the document (producers/ops/report_rows.py).
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("overall_score", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("dimension_scores", sa.JSON(), nullable=True))
    jobs = sa.table(
        "jobs",
        sa.column("id", sa.String()),
        sa.column("llm_outputs", sa.JSON()),
        sa.column("overall_score", sa.Float()),
        sa.column("dimension_scores", sa.JSON()),
    )
    conn = op.get_bind()
    after = ""
    # Backfilled in id order, a batch at a time, by the same function the worker's write uses.
    while True:
        batch = conn.execute(
            sa.select(jobs.c.id, jobs.c.llm_outputs)
            .where(jobs.c.id > after, jobs.c.llm_outputs.is_not(None))
            .order_by(jobs.c.id)
            .limit(BATCH)
        ).all()
        if not batch:
            break
        conn.execute(
            jobs.update().where(jobs.c.id == sa.bindparam("job_id")),
            [{"job_id": job_id, **stored_scores(doc)} for job_id, doc in batch],
        )
        after = batch[-1].id


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("dimension_scores")
        batch_op.drop_column("overall_score")
