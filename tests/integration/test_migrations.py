"""Migrations apply on empty PostgreSQL and SQLite, match the models, and downgrade."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

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
        assert await current_revision(engine) == "0004"
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
