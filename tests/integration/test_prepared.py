"""`engine.Prepared`: the raw-asyncpg read path returns what SQLAlchemy returns."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import bindparam, insert, select, text, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection

from flakeguard.adapters.db.checks import check_run_record
from flakeguard.adapters.db.engine import (
    Prepared,
    among_param,
    create_engine,
    database_url,
    migrate,
    raw_connection,
    reading,
    transaction,
)
from flakeguard.adapters.db.runs import ensure_repository
from flakeguard.adapters.db.tables import (
    CheckRunRow,
    QuarantineRow,
    RepositoryRow,
    WorkflowRunRow,
    table_of,
)
from flakeguard.adapters.queue.runner import is_outage

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


async def test_a_connection_that_died_under_a_raw_statement_is_an_outage(pg_url: str) -> None:
    """PostgreSQL restarted under a pooled connection: the raw path invalidates it and
    raises what SQLAlchemy would, so the runner re-delays the job and the pool moves on."""
    engine = create_engine(database_url(pg_url, Path(".")))
    t = table_of(RepositoryRow)
    prepared = Prepared(select(t.c.id).where(t.c.name == bindparam("name")))
    try:
        await migrate(engine)

        async def read_until_it_fails(victim: AsyncConnection) -> None:
            for _ in range(50):  # the kill reaches the client asynchronously
                await prepared.all(victim, name="shop")
                await asyncio.sleep(0.02)

        async with reading(engine) as victim:
            pid = await victim.scalar(text("SELECT pg_backend_pid()"))
            async with reading(engine) as killer:
                await killer.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            with pytest.raises(sa_exc.InterfaceError) as raised:
                await read_until_it_fails(victim)
        assert raised.value.connection_invalidated
        assert is_outage(raised.value)
        async with reading(engine) as conn:  # the dead connection left the pool
            assert await prepared.all(conn, name="shop") == []
            assert await conn.scalar(text("SELECT pg_backend_pid()")) != pid
    finally:
        await engine.dispose()


async def test_other_raw_errors_pass_through_and_keep_the_connection(pg_url: str) -> None:
    engine = create_engine(database_url(pg_url, Path(".")))
    try:
        async with reading(engine) as conn:
            with pytest.raises(asyncpg.exceptions.UndefinedTableError):
                async with raw_connection(conn) as driver:
                    await driver.fetch("SELECT * FROM no_such_table")
            assert not conn.invalidated
            assert await conn.scalar(text("SELECT 1")) == 1
    finally:
        await engine.dispose()


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
async def test_writes_store_what_the_sqlalchemy_path_stores(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """An INSERT ... RETURNING and an UPDATE through `Prepared`, JSON values included (None
    too: SQLAlchemy's bind processor decides what it becomes), read back as SQLAlchemy
    reads them, equal to the same writes done through SQLAlchemy."""
    url = request.getfixturevalue("pg_url" if backend == "postgresql" else "sqlite_url")
    engine = create_engine(database_url(url, Path(".")))
    c = table_of(CheckRunRow)
    columns = ("repository_id", "head_sha", "name", "check_run_id", "updated_at", "annotated")
    insert_row = insert(c).values({n: bindparam(n) for n in columns}).returning(c.c.id)
    update_row = (
        update(c)
        .where(c.c.id == bindparam("row_id"))
        .values(annotated=bindparam("annotated"), check_run_id=bindparam("check_run_id"))
    )
    stored = select(
        c.c.head_sha, c.c.check_run_id, c.c.updated_at, c.c.annotated, c.c.annotated.is_(None)
    ).order_by(c.c.head_sha)
    try:
        await migrate(engine)
        repository_id = await ensure_repository(engine, "acme", "shop", now=NOW)
        async with engine.begin() as conn:
            for sha, annotated in (("a", ["k1", "k2"]), ("b", None)):
                values = {
                    "repository_id": repository_id,
                    "name": "flakeguard",
                    "check_run_id": 7,
                    "updated_at": NOW,
                    "annotated": annotated,
                }
                # SQLAlchemy first: its statement begins the transaction.
                sa_id = await conn.scalar(insert_row, {"head_sha": sha * 39 + "z", **values})
                ((raw_id,),) = await Prepared(insert_row).all(conn, head_sha=sha * 40, **values)
                for row_id in (raw_id, sa_id):
                    assert isinstance(row_id, int)
                await Prepared(update_row).execute(
                    conn, row_id=raw_id, annotated={"k": [1]}, check_run_id=8
                )
                await conn.execute(
                    update_row, {"row_id": sa_id, "annotated": {"k": [1]}, "check_run_id": 8}
                )
        async with reading(engine) as conn:
            rows = [tuple(r) for r in (await conn.execute(stored)).all()]
        raw_rows = [r[1:] for r in rows if not r[0].endswith("z")]
        sa_rows = [r[1:] for r in rows if r[0].endswith("z")]
        assert raw_rows == sa_rows
        assert raw_rows[0][0] == 8
        assert raw_rows[0][2] == {"k": [1]}
    finally:
        await engine.dispose()


async def test_a_raw_statement_before_the_transaction_began_is_refused(pg_url: str) -> None:
    """SQLAlchemy's asyncpg adapter sends BEGIN with a transaction's first statement: a raw
    statement before it would be committed alone, so it is refused; after it, it runs in
    the transaction and leaves with its rollback."""
    engine = create_engine(database_url(pg_url, Path(".")))
    t = table_of(RepositoryRow)
    rename = Prepared(update(t).where(t.c.id == bindparam("row_id")).values(name=bindparam("name")))
    try:
        await migrate(engine)
        repository_id = await ensure_repository(engine, "acme", "shop", now=NOW)
        with pytest.raises(RuntimeError, match="outside the transaction"):
            async with engine.begin() as conn:
                await rename.execute(conn, row_id=repository_id, name="renamed")

        async def rename_then_fail() -> None:
            async with engine.begin() as conn:
                await conn.execute(text("SELECT 1"))
                await rename.execute(conn, row_id=repository_id, name="renamed")
                raise ZeroDivisionError  # rolls the rename back

        with pytest.raises(ZeroDivisionError):
            await rename_then_fail()
        async with reading(engine) as conn:
            assert await conn.scalar(select(t.c.name).where(t.c.id == repository_id)) == "shop"
            await rename.execute(conn, row_id=repository_id, name="renamed")  # autocommit
        async with reading(engine) as conn:
            assert await conn.scalar(select(t.c.name).where(t.c.id == repository_id)) == "renamed"
    finally:
        await engine.dispose()


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
async def test_partitions_read_every_row_in_lists_of_the_size_asked(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """`Prepared.partitions` with a list parameter (`among_param`): an array on
    PostgreSQL (read through a cursor), an expanding IN list on SQLite."""
    url = request.getfixturevalue("pg_url" if backend == "postgresql" else "sqlite_url")
    engine = create_engine(database_url(url, Path(".")))
    t = table_of(RepositoryRow)
    try:
        await migrate(engine)
        ids = [await ensure_repository(engine, "acme", f"r{i:02}", now=NOW) for i in range(7)]
        query = Prepared(
            select(t.c.id, t.c.name)
            .where(among_param(engine.dialect.name, t.c.id, "ids"))
            .order_by(t.c.id)
        )
        wanted = ids[1:6]
        async with reading(engine) as conn:
            partitions = [
                [tuple(row) for row in partition]
                async for partition in query.partitions(conn, 2, ids=wanted)
            ]
            none = [p async for p in query.partitions(conn, 2, ids=[-1])]
        assert [len(p) for p in partitions] == [2, 2, 1]
        assert [row for p in partitions for row in p] == [
            (i, f"r{n:02}") for n, i in enumerate(ids) if i in wanted
        ]
        assert none == []
    finally:
        await engine.dispose()


async def test_columns_left_out_get_their_constant_defaults(pg_url: str) -> None:
    """SQLAlchemy fills a column left out of an INSERT with its Python-side default per
    execution; `Prepared` does the same for constants and refuses a computed default."""
    engine = create_engine(database_url(pg_url, Path(".")))
    w, q = table_of(WorkflowRunRow), table_of(QuarantineRow)
    given = ("repository_id", "run_id", "run_attempt", "head_sha", "started_at", "ingested_at")
    insert_run = insert(w).values({n: bindparam(n) for n in given}).returning(w.c.cases)
    try:
        await migrate(engine)
        repository_id = await ensure_repository(engine, "acme", "shop", now=NOW)
        async with reading(engine) as conn:
            rows = await Prepared(insert_run).all(
                conn,
                repository_id=repository_id,
                run_id=1,
                run_attempt=1,
                head_sha="a" * 40,
                started_at=NOW,
                ingested_at=NOW,
            )
            assert [tuple(r) for r in rows] == [(0,)]  # `cases` defaults to 0
            no_signatures = insert(q).values(test_case_id=bindparam("id"), scope=bindparam("s"))
            with pytest.raises(ValueError, match="need a value for signatures"):
                await Prepared(no_signatures).execute(conn, id=1, s="*")
    finally:
        await engine.dispose()


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
async def test_transaction_holds_raw_and_sqlalchemy_statements(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """`transaction`: a raw statement may come first; an error rolls back both kinds, a
    clean exit commits both."""
    url = request.getfixturevalue("pg_url" if backend == "postgresql" else "sqlite_url")
    engine = create_engine(database_url(url, Path(".")))
    t = table_of(RepositoryRow)
    rename = Prepared(update(t).where(t.c.id == bindparam("row_id")).values(name=bindparam("name")))
    rebranch = update(t).where(t.c.id == bindparam("row_id")).values(default_branch="dev")

    async def change(row_id: int, fail: bool) -> None:
        async with transaction(engine) as conn:
            await rename.execute(conn, row_id=row_id, name="renamed")
            await conn.execute(rebranch, {"row_id": row_id})
            if fail:
                raise ZeroDivisionError

    try:
        await migrate(engine)
        repository_id = await ensure_repository(engine, "acme", "shop", now=NOW)
        read = select(t.c.name, t.c.default_branch).where(t.c.id == repository_id)
        with pytest.raises(ZeroDivisionError):
            await change(repository_id, fail=True)
        async with reading(engine) as conn:
            assert tuple((await conn.execute(read)).one()) == ("shop", "main")
        await change(repository_id, fail=False)
        async with reading(engine) as conn:
            assert tuple((await conn.execute(read)).one()) == ("renamed", "dev")
    finally:
        await engine.dispose()


async def test_the_check_run_record_plans_generically_and_hands_its_connection_back_reset(
    pg_url: str,
) -> None:
    """While a commit's check-run record is held its connection uses generic plans (the
    view was re-planned at every execution); the setting leaves with the lock, so the
    pool's next user of that connection plans as PostgreSQL's configuration says."""
    engine = create_engine(database_url(pg_url, Path(".")), pool_size=1, max_overflow=0)
    try:
        await migrate(engine)
        repository_id = await ensure_repository(engine, "acme", "plans", now=NOW)
        async with reading(engine) as conn:
            configured = await conn.scalar(text("SHOW plan_cache_mode"))
        async with check_run_record(engine, repository_id, "f" * 40, "FlakeGuard") as record:
            held = await record.connection.scalar(text("SHOW plan_cache_mode"))
            stored, view = await record.read()
        async with reading(engine) as conn:  # the pool's one connection, again
            after = await conn.scalar(text("SHOW plan_cache_mode"))
    finally:
        await engine.dispose()
    assert held == "force_generic_plan"
    assert after == configured != "force_generic_plan"
    assert stored is None
    assert (view.total, view.shown) == (0, [])
