"""photo intake: the photo's facts, the prompt version and the model's image per job

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 09:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("photo", "prompt_version", "model_image_width", "model_image_height", "image_tokens")


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("photo", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("prompt_version", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("model_image_width", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("model_image_height", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("image_tokens", sa.Integer(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        for column in reversed(COLUMNS):
            batch_op.drop_column(column)
