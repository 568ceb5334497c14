"""workflow runs record the environments (jobs, artifacts) already stored

Ingestion is idempotent per (run, attempt, environment): the jobs of one run attempt may
arrive separately (one manifest line per matrix leg, a late artifact) and each is stored
once.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 17:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workflow_runs") as batch:
        batch.add_column(sa.Column("envs", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workflow_runs") as batch:
        batch.drop_column("envs")
