"""worker slots: how many analyses a worker generates at once, and how many it holds now

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 09:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: rows of workers from before this release have neither.
    with op.batch_alter_table("worker_heartbeats", schema=None) as batch_op:
        batch_op.add_column(sa.Column("slots", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("slots_in_use", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("worker_heartbeats", schema=None) as batch_op:
        batch_op.drop_column("slots_in_use")
        batch_op.drop_column("slots")
