"""check runs remember which annotations they already carry

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 16:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("check_runs") as batch:
        batch.add_column(sa.Column("annotated", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("check_runs") as batch:
        batch.drop_column("annotated")
