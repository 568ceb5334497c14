"""`engine.Prepared`: the raw-asyncpg read path returns what SQLAlchemy returns."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import bindparam, select

from flakeguard.adapters.db.engine import Prepared, create_engine, database_url, migrate, reading
from flakeguard.adapters.db.runs import ensure_repository
from flakeguard.adapters.db.tables import RepositoryRow, table_of

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
async def test_rows_match_the_sqlalchemy_path(backend: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("pg_url" if backend == "postgresql" else "sqlite_url")
    engine = create_engine(database_url(url, Path(".")))
    t = table_of(RepositoryRow)
    try:
        await migrate(engine)
        for name, installation in (("shop", 7), ("cart", 7), ("docs", 8)):
            await ensure_repository(engine, "acme", name, now=NOW, installation_id=installation)
        query = (
            select(t.c.id, t.c.name, t.c.enabled)
            .where(t.c.installation_id == bindparam("installation"), t.c.owner == "acme")
            .order_by(t.c.name)
        )
        prepared = Prepared(query)
        async with reading(engine) as conn:
            expected = [tuple(r) for r in (await conn.execute(query, {"installation": 7})).all()]
            first = [tuple(r) for r in await prepared.all(conn, installation=7)]
            again = [tuple(r) for r in await prepared.all(conn, installation=8)]
        assert first == expected
        assert [name for _, name, _ in first] == ["cart", "shop"]
        assert [name for _, name, _ in again] == ["docs"]
        assert all(enabled is True for *_, enabled in first)
    finally:
        await engine.dispose()


async def test_in_lists_are_refused_on_postgresql(pg_url: str) -> None:
    engine = create_engine(database_url(pg_url, Path(".")))
    t = table_of(RepositoryRow)
    try:
        await migrate(engine)
        prepared = Prepared(select(t.c.id).where(t.c.name.in_(["a", "b"])))
        async with reading(engine) as conn:
            with pytest.raises(ValueError, match="IN lists"):
                await prepared.all(conn)
    finally:
        await engine.dispose()
