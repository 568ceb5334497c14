"""executions leave with their run by a trigger, not a foreign key (COPY ~2x less server CPU)

The last foreign key on `executions` (to `workflow_runs`, cascading) cost PostgreSQL one
referential-integrity check per copied row: an index probe and a row lock on the run, which
doubled the server's CPU for a run's COPY (300k rows: 6.2 s with the key, 3.1 s without,
postmaster CPU measured around `flakeguard import-junit`). Every execution row is written in
the transaction that creates or locks its run (`store_run`), so the check protected nothing.

What the key also did, removing a run's executions when the run goes (directly or by the
cascade from its repository), is now a trigger on `workflow_runs`:
- PostgreSQL: one statement-level trigger with a transition table, so deleting many runs is
  one `DELETE ... USING` rather than one per run;
- SQLite: a row-level trigger (SQLite has no statement-level triggers). Foreign-key actions
  fire triggers on both.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 02:15:00
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_PG_UP = (
    """
    CREATE FUNCTION executions_leave_with_run() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM executions AS e USING gone WHERE e.workflow_run_id = gone.id;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER executions_leave_with_run AFTER DELETE ON workflow_runs
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION executions_leave_with_run()
    """,
)
_PG_DOWN = (
    "DROP TRIGGER IF EXISTS executions_leave_with_run ON workflow_runs",
    "DROP FUNCTION IF EXISTS executions_leave_with_run()",
)
_SQLITE_UP = (
    """
    CREATE TRIGGER executions_leave_with_run AFTER DELETE ON workflow_runs
    BEGIN
        DELETE FROM executions WHERE workflow_run_id = OLD.id;
    END
    """,
)
_SQLITE_DOWN = ("DROP TRIGGER IF EXISTS executions_leave_with_run",)
_FOREIGN_KEY = "fk_executions_workflow_run_id_workflow_runs"


def upgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.drop_constraint(_FOREIGN_KEY, type_="foreignkey")
    postgresql = op.get_bind().dialect.name == "postgresql"
    for statement in _PG_UP if postgresql else _SQLITE_UP:
        op.execute(statement)


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for statement in _PG_DOWN if postgresql else _SQLITE_DOWN:
        op.execute(statement)
    # Rows whose run went while the trigger was missing (none, if nobody dropped it by hand)
    # would make the key fail to build.
    op.execute(
        "DELETE FROM executions WHERE NOT EXISTS"
        " (SELECT 1 FROM workflow_runs AS r WHERE r.id = executions.workflow_run_id)"
    )
    with op.batch_alter_table("executions") as batch:
        batch.create_foreign_key(
            _FOREIGN_KEY, "workflow_runs", ["workflow_run_id"], ["id"], ondelete="CASCADE"
        )
