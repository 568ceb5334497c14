"""What a check run shows: the test outcomes at one head SHA, and our check-run ids."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import weakref
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, NamedTuple

from sqlalchemy import ColumnElement, Join, and_, bindparam, case, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from flakeguard.adapters.db.engine import Prepared, dialect_insert, raw_connection, reading
from flakeguard.adapters.db.history import OUTCOMES, VERDICTS, StoredScore
from flakeguard.adapters.db.tables import (
    CaseRow,
    CheckRunRow,
    ExecutionRow,
    FlakeScoreRow,
    QuarantineRow,
    WorkflowRunRow,
    table_of,
)
from flakeguard.core.models import FAILING, Outcome, Verdict
from flakeguard.core.quarantine import QuarantineStatus
from flakeguard.core.scoring import ALL_ENVS


class ShaOutcome(NamedTuple):
    """A test's final result at a head SHA (latest attempt of every run at that SHA).

    A named tuple: a button reads one per test at the SHA, and one is built in ~0.7 µs
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
    runs: tuple[int, ...] = ()
    """The runs at the SHA (`workflow_runs.id` of their latest attempts) where it ran
    (`outcomes_at_sha`; a `ShaView` leaves it empty)."""

    @property
    def failed(self) -> bool:
        return self.outcome in FAILING


def _final_executions_at_sha() -> tuple[Join, ColumnElement[bool]]:
    """FROM and WHERE of the final executions of the latest attempt of every run at the
    SHA (the `repository_id` and `head_sha` parameters), for the queries below."""
    w, e = table_of(WorkflowRunRow), table_of(ExecutionRow)
    repository_id = bindparam("repository_id", type_=w.c.repository_id.type)
    head_sha = bindparam("head_sha", type_=w.c.head_sha.type)
    latest = (
        select(w.c.run_id, func.max(w.c.run_attempt).label("attempt"))
        .where(w.c.repository_id == repository_id, w.c.head_sha == head_sha)
        .group_by(w.c.run_id)
        .subquery()
    )
    joined = w.join(
        latest, and_(w.c.run_id == latest.c.run_id, w.c.run_attempt == latest.c.attempt)
    ).join(e, e.c.workflow_run_id == w.c.id)
    where = and_(
        w.c.repository_id == repository_id, w.c.head_sha == head_sha, e.c.is_final.is_(True)
    )
    return joined, where


def _outcomes_at_sha_query() -> Prepared:
    w, e, c = table_of(WorkflowRunRow), table_of(ExecutionRow), table_of(CaseRow)
    executions, at_sha = _final_executions_at_sha()
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
        .select_from(executions.join(c, c.c.id == e.c.test_case_id))
        .where(at_sha)
    )


_OUTCOMES_AT_SHA: Final = _outcomes_at_sha_query()


async def outcomes_at_sha(
    engine: AsyncEngine, repository_id: int, head_sha: str
) -> list[ShaOutcome]:
    """Final outcome per test over the latest attempt of each run at `head_sha`.

    A test that failed in any run's latest attempt counts as failed (with that message).
    """
    merged: dict[int, ShaOutcome] = {}
    async with reading(engine) as conn:
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


class ShaView(NamedTuple):
    """What a check run of a commit shows, read with our check-run row (`CheckRunRecord.read`)."""

    total: int
    passed: int
    failed: int
    skipped: int
    shown: list[tuple[ShaOutcome, StoredScore | None, bool]]
    """The tests worth showing: failed at the SHA, stored as flaky or suspected, or under
    an active quarantine; each with its stored roll-up score and whether it is quarantined."""


_SHOWN_VERDICTS: Final = (Verdict.FLAKY.value, Verdict.SUSPECTED.value)


def _one_of(column: ColumnElement[Any], values: Iterable[str]) -> ColumnElement[bool]:
    """`column IN (values)` as equalities: a `Prepared` statement holds no IN list."""
    return or_(*(column == value for value in sorted(values)))


def _sha_view_query() -> Prepared:
    """The counts and the shown tests of a SHA's check run, in one statement.

    Per test at the SHA, one final result over the latest attempt of every run there: a
    failing one if any (with its message), else a passing one, else what there is. Every
    row carries the counts; a row's test columns are NULL when no test is shown.

    The plan is fixed by the shape, whatever the statistics say: the flagged scores and the
    active quarantines are each read once (their `IN` sits under an `OR`, so PostgreSQL
    hashes them) and only the shown tests are joined to their names and scores. Joining
    every test of the SHA first cost ~4x as much (`bench/github_ingest.py`, issue 4).
    """
    w, e, c = table_of(WorkflowRunRow), table_of(ExecutionRow), table_of(CaseRow)
    s, q = table_of(FlakeScoreRow), table_of(QuarantineRow)
    executions, at_sha = _final_executions_at_sha()
    failing = case((_one_of(e.c.outcome, FAILING), 1), else_=0)
    passed = case((e.c.outcome == Outcome.PASSED.value, 1), else_=0)
    ranked = (
        select(
            e.c.test_case_id,
            e.c.outcome,
            e.c.message,
            e.c.signature,
            func.row_number()
            .over(
                partition_by=e.c.test_case_id,
                order_by=(failing.desc(), passed.desc(), w.c.id),
            )
            .label("choice"),
        )
        .select_from(executions)
        .where(at_sha)
        .subquery()
    )
    final = (
        select(ranked.c.test_case_id, ranked.c.outcome, ranked.c.message, ranked.c.signature)
        .where(ranked.c.choice == 1)
        .cte("final")
    )

    def count_of(condition: ColumnElement[bool]) -> ColumnElement[int]:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    counts = select(
        func.count().label("total"),
        count_of(final.c.outcome == Outcome.PASSED.value).label("passed"),
        count_of(_one_of(final.c.outcome, FAILING)).label("failed"),
        count_of(final.c.outcome == Outcome.SKIPPED.value).label("skipped"),
    ).cte("counts")
    active = q.c.state == QuarantineStatus.ACTIVE.value
    shown = (
        select(
            final.c.test_case_id,
            c.c.test_key,
            c.c.name,
            c.c.class_name,
            c.c.file,
            final.c.outcome,
            final.c.message,
            final.c.signature,
            s.c.verdict,
            s.c.score,
            s.c.runs,
            s.c.failures,
            select(q.c.id)
            .where(q.c.test_case_id == final.c.test_case_id, active)
            .exists()
            .label("quarantined"),
        )
        .select_from(
            final.join(c, c.c.id == final.c.test_case_id).outerjoin(
                s, and_(s.c.test_case_id == final.c.test_case_id, s.c.scope == ALL_ENVS)
            )
        )
        .where(
            or_(
                _one_of(final.c.outcome, FAILING),
                final.c.test_case_id.in_(
                    select(s.c.test_case_id).where(
                        s.c.scope == ALL_ENVS, _one_of(s.c.verdict, _SHOWN_VERDICTS)
                    )
                ),
                final.c.test_case_id.in_(select(q.c.test_case_id).where(active)),
            )
        )
        .subquery("shown")
    )
    r = table_of(CheckRunRow)
    ours = and_(
        r.c.repository_id == bindparam("repository_id", type_=r.c.repository_id.type),
        r.c.head_sha == bindparam("head_sha", type_=r.c.head_sha.type),
        r.c.name == bindparam("name", type_=r.c.name.type),
    )
    return Prepared(
        select(counts, r.c.check_run_id, r.c.annotated, shown).select_from(
            counts.outerjoin(r, ours).outerjoin(shown, true())
        )
    )


_SHA_VIEW: Final = _sha_view_query()


async def _read_record(
    conn: AsyncConnection, repository_id: int, head_sha: str, name: str
) -> tuple[StoredCheckRun | None, ShaView]:
    rows = await _SHA_VIEW.all(conn, repository_id=repository_id, head_sha=head_sha, name=name)
    total, passed, failed, skipped, check_run_id, annotated = rows[0][:6]
    stored = (
        None
        if check_run_id is None
        else StoredCheckRun(int(check_run_id), frozenset(annotated or ()))
    )
    shown: list[tuple[ShaOutcome, StoredScore | None, bool]] = []
    for row in rows:
        case_id, key, test_name, class_name, file, outcome, message, signature = row[6:14]
        if case_id is None:  # no test shown: the one row carries the counts only
            continue
        verdict, score, runs, failures, quarantined = row[14:]
        score_of = (
            None
            if verdict is None
            else StoredScore(VERDICTS[verdict], float(score), int(runs), int(failures))
        )
        sha_outcome = ShaOutcome(
            int(case_id), key, test_name, class_name, file, OUTCOMES[outcome], message, signature
        )
        shown.append((sha_outcome, score_of, bool(quarantined)))
    return stored, ShaView(int(total), int(passed), int(failed), int(skipped), shown)


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

    def __init__(self, conn: AsyncConnection, repository_id: int, head_sha: str, name: str) -> None:
        self._conn = conn
        self._where = (repository_id, head_sha, name)

    @property
    def connection(self) -> AsyncConnection:
        """The record's connection, for reads that belong under its lock."""
        return self._conn

    async def read(self) -> tuple[StoredCheckRun | None, ShaView]:
        """The check run created before for this commit (None if none was) and what the
        check run shows, in one statement on the record's connection: under its lock, so
        the last analysis to publish shows every run stored before it did."""
        return await _read_record(self._conn, *self._where)

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


@asynccontextmanager
async def check_run_record(
    engine: AsyncEngine, repository_id: int, head_sha: str, name: str
) -> AsyncIterator[CheckRunRecord]:
    """Our record of one commit's check run, held exclusively across every worker process
    while GitHub is called, so two analyses of one commit never both create a check run.

    One connection in autocommit does it all: on PostgreSQL a session advisory lock on a
    63-bit hash of (repository, SHA, name), the read of the row with what the check run
    shows (`CheckRunRecord.read`), its upsert, the unlock (no
    transaction is left open during the GitHub call). SQLite (one embedded process): an
    in-process lock around the same connection work.
    """
    digest = hashlib.blake2b(f"{repository_id}:{head_sha}:{name}".encode(), digest_size=8)
    key = int.from_bytes(digest.digest(), "big") >> 1
    if engine.dialect.name == "postgresql":
        # The lock and unlock on the asyncpg connection: no SQLAlchemy statement to build.
        # While the record is held, its statements run on generic plans: PostgreSQL kept
        # planning the view (`_SHA_VIEW`) for its parameters at every execution, ~1.5 ms
        # of its CPU a run, for the same index-driven plan. `key` is our integer, so each
        # pair goes in one simple-protocol message (one round trip, as the lock alone).
        async with reading(engine) as conn, raw_connection(conn) as driver:
            await driver.execute(
                f"SELECT pg_advisory_lock({int(key)}); SET plan_cache_mode = force_generic_plan"
            )
            try:
                yield CheckRunRecord(conn, repository_id, head_sha, name)
            finally:
                await driver.execute(
                    f"SELECT pg_advisory_unlock({int(key)}); RESET plan_cache_mode"
                )
        return
    lock = _LOCAL_LOCKS.get(key)
    if lock is None:
        lock = asyncio.Lock()
        _LOCAL_LOCKS[key] = lock
    async with lock, reading(engine) as conn:
        yield CheckRunRecord(conn, repository_id, head_sha, name)
