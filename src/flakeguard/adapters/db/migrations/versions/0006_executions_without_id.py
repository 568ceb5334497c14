"""executions lose their surrogate id (COPY ~28 % less server CPU)

Nothing refers to `executions.id`: rows are read by test case (`ix_executions_test_case`)
or by run (`ix_executions_workflow_run_id`) and leave with their run. Its sequence
(`nextval` per copied row) and primary-key index cost PostgreSQL ~28 % of a COPY's CPU
(300k rows: 2.8-2.9 s with it, 2.0-2.3 s without, server CPU measured around asyncpg
`copy_records_to_table`), and `flakeguard import-junit` of 300k results took 8.0-8.2 s
with it, 6.8-7.2 s without (two alternated runs each).

The table then has no primary key. Logical replication of its deletes (runs removed) needs
`ALTER TABLE executions REPLICA IDENTITY FULL`; nothing else here depends on one.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 03:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


# SQLite rebuilds the table (batch mode) and checks the triggers that name it when the new
# one is renamed: migration 0005's trigger is set aside meanwhile (same text as there).
_SQLITE_TRIGGER = """
    CREATE TRIGGER executions_leave_with_run AFTER DELETE ON workflow_runs
    BEGIN
        DELETE FROM executions WHERE workflow_run_id = OLD.id;
    END
    """


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.execute("DROP TRIGGER IF EXISTS executions_leave_with_run")
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("id")
    if sqlite:
        op.execute(_SQLITE_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # Numbers the existing rows and restores the sequence and the key.
        op.execute("ALTER TABLE executions ADD COLUMN id BIGSERIAL")
        op.create_primary_key("pk_executions", "executions", ["id"])
        return
    op.execute("DROP TRIGGER IF EXISTS executions_leave_with_run")
    with op.batch_alter_table("executions", recreate="always") as batch:
        batch.add_column(sa.Column("id", sa.Integer(), nullable=False, primary_key=True))
    op.execute(_SQLITE_TRIGGER)
