"""Database engines and migrations: PostgreSQL (asyncpg) or the embedded SQLite file."""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Insert, Select, Table, Update, any_, bindparam, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def database_url(configured: str | None, data_dir: Path) -> str:
    """The SQLAlchemy async URL: the configured one with an async driver, or embedded SQLite.

    >>> database_url("postgresql://u@h/db", Path("/d"))
    'postgresql+asyncpg://u@h/db'
    >>> database_url(None, Path("/d"))
    'sqlite+aiosqlite:////d/flakeguard.db'
    """
    if configured is None:
        return f"sqlite+aiosqlite:///{(data_dir / 'flakeguard.db').absolute()}"
    url = make_url(configured)
    if url.drivername in ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"):
        url = url.set(drivername="postgresql+asyncpg")
    elif url.drivername == "sqlite":
        url = url.set(drivername="sqlite+aiosqlite")
    return url.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers (health checks, the CLI) work while a worker writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def create_engine(url: str, *, pool_size: int = 10, max_overflow: int = 10) -> AsyncEngine:
    """An async engine with settings that suit the dialect.

    PostgreSQL: at most `pool_size + max_overflow` connections; the overflow ones are closed
    when returned (see `bootstrap.database_pool_size`)."""
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        # No pre-ping: it costs three round trips per checkout. A connection that died with
        # its server fails that job's attempt; SQLAlchemy then invalidates the pool and the
        # retry (BullMQ backoff) gets fresh connections.
        pool_recycle=1800,
        connect_args={"server_settings": {"application_name": "flakeguard-worker"}},
    )


def _alembic_config(connection: Connection) -> Config:
    # Imported here: alembic (with mako and pygments) takes ~0.3 s to import, and only
    # migrations need it; a worker or CLI command on PostgreSQL never migrates.
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    """Upgrade the schema to `revision` (idempotent; serialised on PostgreSQL by a lock)."""
    from alembic import command  # see `_alembic_config`

    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # Several workers may start at once: one migrates, the others wait and find it done.
            await conn.execute(text("SELECT pg_advisory_xact_lock(727272)"))
        await conn.run_sync(lambda sync: command.upgrade(_alembic_config(sync), revision))


async def downgrade(engine: AsyncEngine, revision: str = "base") -> None:
    from alembic import command

    async with engine.begin() as conn:
        await conn.run_sync(lambda sync: command.downgrade(_alembic_config(sync), revision))


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        exists = await conn.run_sync(lambda sync: sync.dialect.has_table(sync, "alembic_version"))
        if not exists:
            return None
        row = (await conn.execute(text("SELECT version_num FROM alembic_version"))).first()
        return None if row is None else str(row[0])


def dialect_insert(dialect: str, table: Table) -> Any:
    """An INSERT with `on_conflict_do_*` for the engine's dialect (PostgreSQL or SQLite)."""
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)


def among(dialect: str, column: ColumnElement[Any], values: Sequence[Any]) -> ColumnElement[bool]:
    """`column IN (values)`: one array parameter on PostgreSQL, an IN list on SQLite.

    SQLAlchemy renders an IN list per execution, one bind (and cast) per value: ~25 µs per
    thousand ids of pure Python on every query (profiled in bench/github_ingest.py). An
    array parameter is one bind, and the statement text stays the same for every list size.
    """
    if dialect == "postgresql":
        return column == any_(
            bindparam(None, list(values), type_=postgresql.ARRAY(column.type), unique=True)
        )
    return column.in_(list(values))


def among_param(dialect: str, column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
    """`column IN (:name)` for a statement built once (`Prepared`), the list given per
    execution: one array parameter on PostgreSQL, an expanding IN list elsewhere."""
    if dialect == "postgresql":
        return column == any_(bindparam(name, type_=postgresql.ARRAY(column.type)))
    return column.in_(bindparam(name, expanding=True))


@asynccontextmanager
async def raw_connection(conn: AsyncConnection) -> AsyncIterator[Any]:
    """The asyncpg connection under a PostgreSQL `AsyncConnection`, for what SQLAlchemy
    would slow down (COPY, array binds, statements without its execution layer, advisory
    locks).

    Inside `engine.begin()`, SQLAlchemy's driver adapter sends BEGIN with its first
    statement: a raw statement before that would run outside the transaction (committed
    alone, kept on rollback), so it is refused here.

    SQLAlchemy never sees these statements fail, so a connection that died under one (its
    server restarted) is handled here as SQLAlchemy handles its own: the pooled connection
    is invalidated (the pool has no pre-ping: it would hand the dead one out again) and the
    error leaves as `sqlalchemy.exc.InterfaceError` with `connection_invalidated`, which the
    queue runner treats as an outage (re-delayed, no attempt used). Any other error, and
    any error while the connection is still open, passes through unchanged.
    """
    sync = conn.sync_connection
    if sync is not None and not sync.closed and not sync.invalidated:
        # Checked out already (the common case): reading it needs no greenlet, which
        # `get_raw_connection` spawns on every call (~40 µs a statement).
        raw = sync.connection
    else:
        raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    if driver is None:
        raise RuntimeError("asyncpg connection is not open")
    in_transaction = conn.in_transaction() and not getattr(raw.dbapi_connection, "autocommit", True)
    if in_transaction and not driver.is_in_transaction():
        raise RuntimeError(
            "a raw statement before the transaction's first SQLAlchemy statement "
            "would run outside the transaction"
        )
    try:
        yield driver
    except Exception as exc:
        if not driver.is_closed():
            raise
        await conn.invalidate(exc)
        raise sa_exc.InterfaceError(
            "a statement on the raw asyncpg connection", None, exc, connection_invalidated=True
        ) from exc


_Compiled = tuple[str, tuple[str, ...], dict[str, Any], dict[str, Any]]


class Prepared:
    """A statement built once with named `bindparam`s, for hot paths: a SELECT, or an
    INSERT / UPDATE (with or without RETURNING) whose values are `bindparam`s.

    On PostgreSQL it is compiled once and run through the raw asyncpg connection: no
    SQLAlchemy execution context, cursor emulation or `Row` objects (asyncpg's records
    unpack like tuples). Parameters go through the bind processors SQLAlchemy would apply
    (a JSON value is serialised as it would be); result columns come as asyncpg decodes
    them (JSON decoded, timestamps aware), so it is only for statements whose columns need
    no other SQLAlchemy result processing. Elsewhere it runs through SQLAlchemy as usual.
    """

    def __init__(self, statement: Select[Any] | Insert | Update) -> None:
        self.statement = statement
        self._postgresql: _Compiled | None = None

    def _compiled(self, dialect: Dialect) -> _Compiled:
        if self._postgresql is None:
            compiled = self.statement.compile(dialect=dialect)
            if "POSTCOMPILE" in compiled.string:
                raise ValueError("Prepared statements cannot hold IN lists: use ANY or OR")
            # Values of the literal binds (constants in the statement); the named ones are
            # supplied per call.
            placeholders = {n: None for n, bind in compiled.binds.items() if bind.required}
            defaults = dict(compiled.construct_params(placeholders))
            # Columns left out of an INSERT/UPDATE get their Python-side defaults, which
            # SQLAlchemy computes per execution: constants only here.
            for columns, attribute in (
                (compiled.insert_prefetch, "default"),
                (compiled.update_prefetch, "onupdate"),
            ):
                for column in columns:
                    default = getattr(column, attribute)
                    if default is None or not default.is_scalar:
                        raise ValueError(f"Prepared statements need a value for {column.key}")
                    defaults[column.key] = default.arg
            processors = {
                name: processor
                for name, bind in compiled.binds.items()
                if (processor := bind.type.dialect_impl(dialect).bind_processor(dialect))
            }
            self._postgresql = (
                compiled.string,
                tuple(compiled.positiontup or ()),
                defaults,
                processors,
            )
        return self._postgresql

    def _arguments(self, dialect: Dialect, params: dict[str, Any]) -> tuple[str, list[Any]]:
        """The SQL and its positional arguments for one set of named parameters."""
        sql, order, defaults, processors = self._compiled(dialect)
        values = {**defaults, **params}
        for name, processor in processors.items():
            values[name] = processor(values[name])
        return sql, [values[n] for n in order]

    async def all(self, conn: AsyncConnection, **params: Any) -> Sequence[Sequence[Any]]:
        """The rows the statement returns."""
        if conn.dialect.name != "postgresql":
            found: Sequence[Sequence[Any]] = (await conn.execute(self.statement, params)).all()
            return found
        sql, arguments = self._arguments(conn.dialect, params)
        async with raw_connection(conn) as driver:
            rows: Sequence[Sequence[Any]] = await driver.fetch(sql, *arguments)
        return rows

    async def partitions(
        self, conn: AsyncConnection, size: int, **params: Any
    ) -> AsyncIterator[Sequence[Sequence[Any]]]:
        """The rows of a SELECT in lists of at most `size`, read as they are consumed: on
        PostgreSQL a cursor (in a transaction of its own: use an autocommit connection,
        `reading`), elsewhere SQLAlchemy's streamed result."""
        if conn.dialect.name != "postgresql":
            statement = self.statement.execution_options(yield_per=size)
            result = await conn.stream(statement, params)
            async for partition in result.partitions(size):
                yield partition
            return
        sql, arguments = self._arguments(conn.dialect, params)
        async with raw_connection(conn) as driver, driver.transaction():
            cursor = await driver.cursor(sql, *arguments)
            while rows := await cursor.fetch(size):
                yield rows

    async def execute_many(self, conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
        """Run a statement that returns no rows once per parameter set of `rows`."""
        if conn.dialect.name != "postgresql":
            await conn.execute(self.statement, list(rows))
            return
        sql = self._compiled(conn.dialect)[0]
        arguments = [self._arguments(conn.dialect, params)[1] for params in rows]
        async with raw_connection(conn) as driver:
            await driver.executemany(sql, arguments)

    async def execute(self, conn: AsyncConnection, **params: Any) -> None:
        """Run a statement that returns no rows."""
        if conn.dialect.name != "postgresql":
            await conn.execute(self.statement, params)
            return
        sql, arguments = self._arguments(conn.dialect, params)
        async with raw_connection(conn) as driver:
            await driver.execute(sql, *arguments)


_AUTOCOMMIT: weakref.WeakKeyDictionary[AsyncEngine, AsyncEngine] = weakref.WeakKeyDictionary()


def reading(engine: AsyncEngine) -> AsyncConnection:
    """A connection for read-only queries, in autocommit: no BEGIN/ROLLBACK round trips.

    Use as `async with reading(engine) as conn:`; writes keep using `engine.begin()`. The
    autocommit view of an engine is made once (`execution_options` costs ~90 µs a call).
    """
    autocommit = _AUTOCOMMIT.get(engine)
    if autocommit is None:
        autocommit = _AUTOCOMMIT[engine] = engine.execution_options(isolation_level="AUTOCOMMIT")
    return autocommit.connect()


@asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One transaction for raw statements (`Prepared`, COPY) and SQLAlchemy's alike,
    committed on leaving, rolled back on an error.

    On PostgreSQL the asyncpg driver sends BEGIN and COMMIT itself on an autocommit
    connection: SQLAlchemy's adapter, which sends BEGIN lazily with its own first
    statement (see `raw_connection`), stays out of it, so a raw statement may come first.
    Elsewhere it is `engine.begin()`.
    """
    if engine.dialect.name != "postgresql":
        async with engine.begin() as conn:
            yield conn
        return
    async with reading(engine) as conn, raw_connection(conn) as driver, driver.transaction():
        yield conn


@asynccontextmanager
async def reading_on(
    engine: AsyncEngine, conn: AsyncConnection | None
) -> AsyncIterator[AsyncConnection]:
    """`conn` when the caller already holds one (its reads belong with its other work),
    else a `reading` connection of its own."""
    if conn is not None:
        yield conn
        return
    async with reading(engine) as fresh:
        yield fresh


def aware(value: datetime) -> datetime:
    """SQLite returns naive datetimes; everything we store is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
