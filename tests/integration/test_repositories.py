"""`ensure_repository`: created once, a read when nothing changed, updated when it did."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from flakeguard.adapters.db.engine import create_engine, database_url, migrate
from flakeguard.adapters.db.runs import ensure_repository
from flakeguard.adapters.db.tables import RepositoryRow, table_of

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
async def test_created_once_then_updated_only_on_change(
    backend: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("pg_url" if backend == "postgresql" else "sqlite_url")
    engine = create_engine(database_url(url, Path(".")))
    t = table_of(RepositoryRow)
    try:
        await migrate(engine)
        # Concurrent first sightings agree on one row.
        ids = await asyncio.gather(
            *(ensure_repository(engine, "acme", "shop", now=NOW) for _ in range(5))
        )
        assert len(set(ids)) == 1
        repo_id = ids[0]
        # Nothing to change (or nothing known): the same id, the row untouched.
        assert await ensure_repository(engine, "acme", "shop", now=NOW) == repo_id
        # A new installation and default branch are written.
        later = datetime(2026, 11, 2, tzinfo=UTC)
        assert (
            await ensure_repository(
                engine, "acme", "shop", now=later, installation_id=42, default_branch="trunk"
            )
            == repo_id
        )
        # The same values again: no write (updated_at stays).
        even_later = datetime(2026, 11, 3, tzinfo=UTC)
        await ensure_repository(
            engine, "acme", "shop", now=even_later, installation_id=42, default_branch="trunk"
        )
        async with engine.connect() as conn:
            row = (
                await conn.execute(select(t.c.installation_id, t.c.default_branch, t.c.updated_at))
            ).one()
            count = await conn.scalar(select(func.count()).select_from(t))
        assert count == 1
        assert (row.installation_id, row.default_branch) == (42, "trunk")
        assert row.updated_at.replace(tzinfo=UTC) == later
    finally:
        await engine.dispose()
