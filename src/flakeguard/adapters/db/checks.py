"""What a check run shows: every test outcome at one head SHA, and our check-run ids."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Final, NamedTuple

from sqlalchemy import and_, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from flakeguard.adapters.db.engine import Prepared, dialect_insert, raw_connection, reading
from flakeguard.adapters.db.history import OUTCOMES
from flakeguard.adapters.db.tables import (
    CaseRow,
    CheckRunRow,
    ExecutionRow,
    WorkflowRunRow,
    table_of,
)
from flakeguard.core.models import FAILING, Outcome


class ShaOutcome(NamedTuple):
    """A test's final result at a head SHA (latest attempt of every run at that SHA).

    A named tuple: a check run reads one per test at the SHA, and one is built in ~0.7 µs
    where a frozen dataclass takes ~1.9 µs.
    """

    test_case_id: int
    test_key: str
    name: str
    class_name: str
    file: str | None
    outcome: Outcome
    message: str | None
    signature: str | None
    runs: tuple[int, ...]
    """The runs at the SHA (`workflow_runs.id` of their latest attempts) where it ran."""

    @property
    def failed(self) -> bool:
        return self.outcome in FAILING


def _outcomes_at_sha_query() -> Prepared:
    w, e, c = table_of(WorkflowRunRow), table_of(ExecutionRow), table_of(CaseRow)
    repository_id = bindparam("repository_id", type_=w.c.repository_id.type)
    head_sha = bindparam("head_sha", type_=w.c.head_sha.type)
    latest = (
        select(w.c.run_id, func.max(w.c.run_attempt).label("attempt"))
        .where(w.c.repository_id == repository_id, w.c.head_sha == head_sha)
        .group_by(w.c.run_id)
        .subquery()
    )
    return Prepared(
        select(
            w.c.id,
            c.c.id,
            c.c.test_key,
            c.c.name,
            c.c.class_name,
            c.c.file,
            e.c.outcome,
            e.c.message,
            e.c.signature,
        )
        .select_from(
            w.join(latest, and_(w.c.run_id == latest.c.run_id, w.c.run_attempt == latest.c.attempt))
            .join(e, e.c.workflow_run_id == w.c.id)
            .join(c, c.c.id == e.c.test_case_id)
        )
        .where(w.c.repository_id == repository_id, w.c.head_sha == head_sha, e.c.is_final.is_(True))
    )


_OUTCOMES_AT_SHA: Final = _outcomes_at_sha_query()


async def outcomes_at_sha(
    engine: AsyncEngine, repository_id: int, head_sha: str
) -> list[ShaOutcome]:
    """Final outcome per test over the latest attempt of each run at `head_sha`.

    A test that failed in any run's latest attempt counts as failed (with that message).
    """
    async with reading(engine) as conn:
        return await _read_outcomes(conn, repository_id, head_sha)


async def _read_outcomes(
    conn: AsyncConnection, repository_id: int, head_sha: str
) -> list[ShaOutcome]:
    merged: dict[int, ShaOutcome] = {}
    rows = await _OUTCOMES_AT_SHA.all(conn, repository_id=repository_id, head_sha=head_sha)
    for run_row_id, case_id, key, name, class_name, file, raw_outcome, message, signature in rows:
        current = merged.get(case_id)
        outcome = OUTCOMES[raw_outcome]
        if current is None:
            merged[case_id] = ShaOutcome(
                case_id, key, name, class_name, file, outcome, message, signature, (run_row_id,)
            )
        elif outcome in FAILING and not current.failed:
            merged[case_id] = ShaOutcome(
                case_id,
                key,
                name,
                class_name,
                file,
                outcome,
                message,
                signature,
                (*current.runs, run_row_id),
            )
        else:
            merged[case_id] = current._replace(runs=(*current.runs, run_row_id))
    return sorted(merged.values(), key=lambda o: o.test_case_id)


@dataclass(frozen=True, slots=True)
class StoredCheckRun:
    check_run_id: int
    annotated: frozenset[str]


async def head_sha_of_check_run(
    engine: AsyncEngine, repository_id: int, check_run_id: int
) -> str | None:
    t = table_of(CheckRunRow)
    async with reading(engine) as conn:
        found = await conn.scalar(
            select(t.c.head_sha).where(
                t.c.repository_id == repository_id, t.c.check_run_id == check_run_id
            )
        )
    return None if found is None else str(found)


_LOCAL_LOCKS: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()
"""In-process locks for SQLite (embedded mode runs one worker process); entries vanish when
no coroutine holds or waits on them."""


class CheckRunRecord:
    """Our row for one commit's check run, held exclusively: see `check_run_record`."""

    def __init__(
        self,
        conn: AsyncConnection,
        repository_id: int,
        head_sha: str,
        name: str,
        stored: StoredCheckRun | None,
    ) -> None:
        self._conn = conn
        self._where = (repository_id, head_sha, name)
        self.stored = stored
        """The check run created before for this commit, None if none was."""

    @property
    def connection(self) -> AsyncConnection:
        """The record's connection, for reads that belong under its lock."""
        return self._conn

    async def outcomes(self) -> list[ShaOutcome]:
        """`outcomes_at_sha` of the record's commit, read on its connection: under its lock,
        so the last analysis to publish shows every run stored before it did."""
        repository_id, head_sha, _ = self._where
        return await _read_outcomes(self._conn, repository_id, head_sha)

    async def remember(self, check_run_id: int, now: datetime, annotated: frozenset[str]) -> None:
        """Record the check run's id and the annotations GitHub now holds."""
        repository_id, head_sha, name = self._where
        await _upsert_check_run(self._conn.dialect.name).execute(  # autocommit: alone
            self._conn,
            repository_id=repository_id,
            head_sha=head_sha,
            name=name,
            check_run_id=check_run_id,
            updated_at=now,
            annotated=sorted(annotated),
        )


@functools.cache
def _upsert_check_run(dialect: str) -> Prepared:
    """Built once per dialect; values come as parameters."""
    columns = ("repository_id", "head_sha", "name", "check_run_id", "updated_at", "annotated")
    stmt = dialect_insert(dialect, table_of(CheckRunRow)).values(
        {column: bindparam(column) for column in columns}
    )
    return Prepared(
        stmt.on_conflict_do_update(
            index_elements=["repository_id", "head_sha", "name"],
            set_={
                "check_run_id": stmt.excluded.check_run_id,
                "updated_at": stmt.excluded.updated_at,
                "annotated": stmt.excluded.annotated,
            },
        )
    )


def _stored_query() -> Prepared:
    t = table_of(CheckRunRow)
    return Prepared(
        select(t.c.check_run_id, t.c.annotated).where(
            t.c.repository_id == bindparam("repository_id", type_=t.c.repository_id.type),
            t.c.head_sha == bindparam("head_sha", type_=t.c.head_sha.type),
            t.c.name == bindparam("name", type_=t.c.name.type),
        )
    )


_STORED: Final = _stored_query()


async def _stored(
    conn: AsyncConnection, repository_id: int, head_sha: str, name: str
) -> StoredCheckRun | None:
    rows = await _STORED.all(conn, repository_id=repository_id, head_sha=head_sha, name=name)
    if not rows:
        return None
    ((check_run_id, annotated),) = rows
    return StoredCheckRun(int(check_run_id), frozenset(annotated or ()))


@asynccontextmanager
async def check_run_record(
    engine: AsyncEngine, repository_id: int, head_sha: str, name: str
) -> AsyncIterator[CheckRunRecord]:
    """Our record of one commit's check run, held exclusively across every worker process
    while GitHub is called, so two analyses of one commit never both create a check run.

    One connection in autocommit does it all: on PostgreSQL a session advisory lock on a
    63-bit hash of (repository, SHA, name), the read of the row, its upsert, the unlock (no
    transaction is left open during the GitHub call). SQLite (one embedded process): an
    in-process lock around the same connection work.
    """
    digest = hashlib.blake2b(f"{repository_id}:{head_sha}:{name}".encode(), digest_size=8)
    key = int.from_bytes(digest.digest(), "big") >> 1
    if engine.dialect.name == "postgresql":
        # The lock and unlock on the asyncpg connection: no SQLAlchemy statement to build.
        async with reading(engine) as conn, raw_connection(conn) as driver:
            await driver.execute("SELECT pg_advisory_lock($1)", key)
            try:
                stored = await _stored(conn, repository_id, head_sha, name)
                yield CheckRunRecord(conn, repository_id, head_sha, name, stored)
            finally:
                await driver.execute("SELECT pg_advisory_unlock($1)", key)
        return
    lock = _LOCAL_LOCKS.get(key)
    if lock is None:
        lock = asyncio.Lock()
        _LOCAL_LOCKS[key] = lock
    async with lock, reading(engine) as conn:
        stored = await _stored(conn, repository_id, head_sha, name)
        yield CheckRunRecord(conn, repository_id, head_sha, name, stored)
