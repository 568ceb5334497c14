"""Migrations apply on empty PostgreSQL and SQLite, match the models, and downgrade."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from flakeguard.adapters.db.engine import (
    create_engine,
    current_revision,
    database_url,
    downgrade,
    migrate,
)
from flakeguard.adapters.db.tables import Base

pytestmark = pytest.mark.integration
EXPECTED_TABLES = {
    "repositories",
    "workflow_runs",
    "reports",
    "test_cases",
    "executions",
    "flake_scores",
    "quarantine",
    "check_runs",
}


def _diff(sync_conn: Any) -> list[Any]:
    context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
async def test_upgrade_matches_models_then_downgrade_empties(
    backend: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("pg_url" if backend == "postgresql" else "sqlite_url")
    engine = create_engine(database_url(url, Path(".")))
    try:
        await migrate(engine)
        await migrate(engine)  # idempotent
        assert await current_revision(engine) == "0006"
        async with engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
            assert tables >= EXPECTED_TABLES
            assert await conn.run_sync(_diff) == []
        await downgrade(engine, "base")
        async with engine.connect() as conn:
            left = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        assert left & EXPECTED_TABLES == set()
        assert await current_revision(engine) is None
    finally:
        await engine.dispose()


_NOW = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)


async def _add_run(conn: Any, run_id: int, repository_id: int, rows: int) -> int:
    workflow_run_id = (
        await conn.execute(
            text(
                "INSERT INTO workflow_runs (repository_id, run_id, run_attempt, head_sha,"
                " started_at, ingested_at, source, cases, executions)"
                " VALUES (:repo, :run, 1, 'abc', :now, :now, 'import', 0, 0) RETURNING id"
            ),
            {"repo": repository_id, "run": run_id, "now": _NOW},
        )
    ).scalar_one()
    await conn.execute(
        text(
            "INSERT INTO executions (test_case_id, workflow_run_id, report_id, env_key,"
            " retry_index, is_final, outcome) VALUES (:case, :run, 1, 'ci/test', 0, true, 'passed')"
        ),
        [{"case": case, "run": workflow_run_id} for case in range(1, rows + 1)],
    )
    return int(workflow_run_id)


async def _executions_by_run(conn: Any) -> dict[int, int]:
    result = await conn.execute(
        text("SELECT workflow_run_id, count(*) FROM executions GROUP BY workflow_run_id")
    )
    return {int(run): int(count) for run, count in result}


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
async def test_executions_leave_with_their_run_and_repository(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """Migration 0005 replaced the executions -> workflow_runs key by a trigger: deleting runs,
    one, several in one statement, or all of a repository's by its cascade, still removes
    exactly their executions."""
    url = request.getfixturevalue("pg_url" if backend == "postgresql" else "sqlite_url")
    engine = create_engine(database_url(url, Path(".")))
    try:
        await migrate(engine)
        async with engine.begin() as conn:
            repos = []
            for name in ("a", "b"):
                repos.append(
                    (
                        await conn.execute(
                            text(
                                "INSERT INTO repositories (owner, name, default_branch, enabled,"
                                " created_at, updated_at)"
                                " VALUES ('o', :name, 'main', true, :now, :now) RETURNING id"
                            ),
                            {"name": name, "now": _NOW},
                        )
                    ).scalar_one()
                )
            first = await _add_run(conn, 1, repos[0], 3)
            second = await _add_run(conn, 2, repos[0], 4)
            third = await _add_run(conn, 3, repos[0], 5)
            other = await _add_run(conn, 4, repos[1], 6)
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM workflow_runs WHERE id = :id"), {"id": first})
            assert await _executions_by_run(conn) == {second: 4, third: 5, other: 6}
            await conn.execute(
                text("DELETE FROM workflow_runs WHERE id IN (:a, :b)"), {"a": second, "b": third}
            )
            assert await _executions_by_run(conn) == {other: 6}
            await _add_run(conn, 5, repos[0], 2)
            await conn.execute(text("DELETE FROM repositories WHERE id = :id"), {"id": repos[0]})
            assert await _executions_by_run(conn) == {other: 6}
            await conn.execute(text("DELETE FROM repositories WHERE id = :id"), {"id": repos[1]})
            assert await _executions_by_run(conn) == {}
        await downgrade(engine, "0004")  # the key comes back
        async with engine.connect() as conn:
            keys = await conn.run_sync(lambda c: inspect(c).get_foreign_keys("executions"))
        assert [key["referred_table"] for key in keys] == ["workflow_runs"]
    finally:
        await engine.dispose()
