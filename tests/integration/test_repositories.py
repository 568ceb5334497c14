"""`ensure_repository`: created once, read (or cached) when nothing changed, else updated."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from flakeguard.adapters.db.engine import create_engine, database_url, migrate
from flakeguard.adapters.db.runs import RepositoryIds, ensure_repository
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


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
async def test_known_rows_answer_without_the_database_until_a_payload_differs(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """`known` (one process's `RepositoryIds`): a row up to date is answered from it; a new
    installation goes to the database, which writes it, and the cache follows."""
    url = request.getfixturevalue("pg_url" if backend == "postgresql" else "sqlite_url")
    engine = create_engine(database_url(url, Path(".")))
    t = table_of(RepositoryRow)
    known = RepositoryIds(max_entries=2)
    try:
        await migrate(engine)
        repo_id = await ensure_repository(
            engine, "acme", "shop", now=NOW, installation_id=7, known=known
        )
        assert known.get("acme", "shop") == (repo_id, 7, "main")
        # Another process moves the repository to installation 8: this process's payloads
        # that still name 7 (or none) are answered from the cache, without a read.
        async with engine.begin() as conn:
            await conn.execute(t.update().values(installation_id=8))
        assert (
            await ensure_repository(engine, "acme", "shop", now=NOW, installation_id=7, known=known)
            == repo_id
        )
        assert await ensure_repository(engine, "acme", "shop", now=NOW, known=known) == repo_id
        assert known.get("acme", "shop") == (repo_id, 7, "main")
        # A payload naming installation 9 differs from the cache: read, written, cached.
        assert (
            await ensure_repository(engine, "acme", "shop", now=NOW, installation_id=9, known=known)
            == repo_id
        )
        assert known.get("acme", "shop") == (repo_id, 9, "main")
        async with engine.connect() as conn:
            assert await conn.scalar(select(t.c.installation_id)) == 9
        # Bounded: the oldest entry goes first.
        for name in ("a", "b"):
            await ensure_repository(engine, "acme", name, now=NOW, known=known)
        assert known.get("acme", "shop") is None
        assert known.get("acme", "b") is not None
    finally:
        await engine.dispose()
