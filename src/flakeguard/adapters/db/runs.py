"""Storing a run attempt's test results: bulk, idempotent, all-or-nothing.

One transaction per run attempt. The `workflow_runs` row is inserted first with
`ON CONFLICT DO NOTHING`; when it already exists the run was stored before and nothing
else happens (a concurrent duplicate waits on the unique index, then finds it). Test
executions go in with PostgreSQL `COPY` (SQLite: `executemany`). A worker killed halfway
leaves no partial run behind, because nothing is committed until the end.

Parsing is CPU work: each report is parsed in a thread so the event loop keeps renewing
job locks and answering health probes.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import and_, bindparam, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from flakeguard.adapters.artifacts import ReportSource
from flakeguard.adapters.db.engine import (
    Prepared,
    aware,
    dialect_insert,
    raw_connection,
    reading,
    transaction,
)
from flakeguard.adapters.db.history import RepositoryInfo
from flakeguard.adapters.db.tables import (
    CaseRow,
    ExecutionRow,
    ReportRow,
    RepositoryRow,
    WorkflowRunRow,
    table_of,
)
from flakeguard.core.junit import ParseLimits, ReportReader
from flakeguard.core.models import (
    FAILING,
    RAN,
    CaseResult,
    Outcome,
    ReportProblem,
    RunRef,
    test_key,
)

EXECUTION_COLUMNS = (  # the COPY column order of an execution row (also used by bench/)
    "test_case_id",
    "workflow_run_id",
    "report_id",
    "env_key",
    "retry_index",
    "is_final",
    "outcome",
    "duration_s",
    "failure_type",
    "signature",
    "message",
)
_KEY_BATCH = 5000
_CASE_INSERT_BATCH = 2000
"""8 bind parameters per test_cases row: 2,000 rows stay under asyncpg's and SQLite's 32,767."""
_INLINE_PARSE_BYTES = 256 * 1024
"""Reports up to this size (as declared; a ZIP member is cut there) are parsed on the
event loop: ~1-2 ms for a 500-test report, less than handing it to a thread and taking
the GIL back. Larger ones go to a thread, so the loop keeps renewing job locks."""
_LAST_SEEN_GRANULARITY = timedelta(hours=6)
_OUTCOME_VALUES: dict[Outcome, str] = {outcome: outcome.value for outcome in Outcome}
"""A dict lookup per execution row (~0.05 µs) instead of the enum's `value` property (~0.3 µs)."""


@dataclass(frozen=True, slots=True)
class ParsedReport:
    """One report, parsed off the event loop into compact values."""

    source: str
    cases: list[CaseResult]
    problem: ReportProblem | None
    keys: list[str]
    """`cases[i].test_key`, hashed off the event loop too (~1 µs a case)."""


def parse_source(source: ReportSource, limits: ParseLimits) -> ParsedReport:
    """Parse one report (blocking; call it in a thread)."""
    with source.open() as stream:
        reader = ReportReader(stream, source.name, limits)
        cases = list(reader)
    # The function, not the `test_key` property: one Python call less per case (-18 %).
    keys = [test_key(case.suite, case.class_name, case.name, case.file) for case in cases]
    return ParsedReport(source=source.name, cases=cases, problem=reader.problem, keys=keys)


def parse_item(
    item: ReportSource | ReportProblem | ParsedReport, limits: ParseLimits
) -> ParsedReport | ReportProblem:
    """One item of a run's groups, parsed (blocking; call it in a thread).

    A stream that itself fails (size cap, lying archive sizes) is a per-file problem.
    """
    if not isinstance(item, ReportSource):
        return item
    try:
        return parse_source(item, limits)
    except OSError as error:
        return ReportProblem(item.name, f"unreadable: {error}")


RunGroups = AsyncIterator[tuple[str, ReportSource | ReportProblem | ParsedReport]]
"""A run's reports by environment (job): sources to parse, problems, or parsed already."""


@dataclass(slots=True)
class CaseIdCache:
    """test_key -> (test_cases.id, last_seen_at written) of one repository, across runs.

    Safe to keep for a process: test_cases rows are never deleted except with their
    repository (whose id is never reused). `store_run` adds entries only after its
    transaction committed, so a rolled-back insert never leaves a dangling id here.
    """

    repository_id: int
    ids: dict[str, tuple[int, datetime]] = field(default_factory=dict)


@dataclass(slots=True)
class CaseIdCaches:
    """One worker process's `CaseIdCache` per repository, bounded in entries.

    A repository's runs mostly report the same tests, so `runs-ingest` looks up only the
    tests it has not seen (a 500-test run: one 500-row SELECT saved per run). Past
    `max_entries` test ids in all, the least recently used repositories are dropped (an
    entry holds ~200 bytes: 200,000 entries ~40 MB).
    """

    max_entries: int = 200_000
    _caches: dict[int, CaseIdCache] = field(default_factory=dict)

    def for_repository(self, repository_id: int) -> CaseIdCache:
        cache = self._caches.pop(repository_id, None)
        if cache is None:
            cache = CaseIdCache(repository_id)
        self._caches[repository_id] = cache  # insertion order = least recently used first
        total = sum(len(c.ids) for c in self._caches.values())
        for stale_id in list(self._caches):
            if total <= self.max_entries:
                break
            total -= len(self._caches[stale_id].ids)
            if stale_id == repository_id:
                cache.ids.clear()  # this repository alone is over the bound
            else:
                del self._caches[stale_id]
        return cache


@dataclass(slots=True)
class RepositoryIds:
    """One worker process's repository rows as `ensure_repository` last read or wrote them:
    (owner, name) -> (id, installation_id, default_branch).

    Every `runs-ingest` job names its repository: a row already up to date needs no
    connection and no read. Repository rows are never deleted, so a cached id stays right;
    a payload whose installation or default branch differs from the cached one goes to the
    database, which updates the row and the cache. Bounded: past `max_entries`, the oldest
    entries are dropped.
    """

    max_entries: int = 10_000
    _rows: dict[tuple[str, str], tuple[int, int | None, str]] = field(default_factory=dict)

    def get(self, owner: str, name: str) -> tuple[int, int | None, str] | None:
        return self._rows.get((owner, name))

    def put(self, owner: str, name: str, row: tuple[int, int | None, str]) -> None:
        rows = self._rows
        rows.pop((owner, name), None)
        rows[(owner, name)] = row
        while len(rows) > self.max_entries:
            del rows[next(iter(rows))]


def _up_to_date(
    row: tuple[int, int | None, str], installation_id: int | None, default_branch: str | None
) -> bool:
    """True when a payload's installation and default branch (None: not known) agree with
    the stored `row` (id, installation_id, default_branch): nothing to write."""
    _, found_installation, found_branch = row
    same_installation = installation_id in (None, found_installation)
    return same_installation and default_branch in (None, found_branch)


@dataclass(slots=True)
class StoredRun:
    workflow_run_id: int | None
    created: bool
    cases: int = 0
    executions: int = 0
    problems: list[ReportProblem] = field(default_factory=list)


def _repository_id_query() -> Prepared:
    t = table_of(RepositoryRow)
    return Prepared(
        select(t.c.id, t.c.installation_id, t.c.default_branch).where(
            t.c.owner == bindparam("owner", type_=t.c.owner.type),
            t.c.name == bindparam("name", type_=t.c.name.type),
        )
    )


_REPOSITORY_ID: Final = _repository_id_query()


async def ensure_repository(
    engine: AsyncEngine,
    owner: str,
    name: str,
    *,
    now: datetime,
    installation_id: int | None = None,
    default_branch: str | None = None,
    github_id: int | None = None,
    known: RepositoryIds | None = None,
) -> int:
    """The repository's id, creating the row on first sight (race-safe).

    The common case (the row exists and nothing changed) is one read, outside a transaction,
    or none when `known` holds the row up to date.
    """
    if known is not None:
        cached = known.get(owner, name)
        if cached is not None and _up_to_date(cached, installation_id, default_branch):
            return cached[0]
    table = table_of(RepositoryRow)
    async with reading(engine) as conn:
        found = await _REPOSITORY_ID.all(conn, owner=owner, name=name)
    if found:
        found_row = (int(found[0][0]), found[0][1], str(found[0][2]))
        if _up_to_date(found_row, installation_id, default_branch):
            if known is not None:
                known.put(owner, name, found_row)
            return found_row[0]
    query = _REPOSITORY_ID.statement
    async with engine.begin() as conn:
        stmt = (
            dialect_insert(engine.dialect.name, table)
            .values(
                owner=owner,
                name=name,
                installation_id=installation_id,
                github_id=github_id,
                default_branch=default_branch or "main",
                enabled=True,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["owner", "name"])
        )
        await conn.execute(stmt)
        row = (await conn.execute(query, {"owner": owner, "name": name})).one()
        changes: dict[str, Any] = {}
        if installation_id is not None and row.installation_id != installation_id:
            changes["installation_id"] = installation_id
        if default_branch is not None and row.default_branch != default_branch:
            changes["default_branch"] = default_branch
        if changes:
            await conn.execute(
                update(table).where(table.c.id == row.id).values(updated_at=now, **changes)
            )
    if known is not None:
        known.put(
            owner,
            name,
            (
                int(row.id),
                changes.get("installation_id", row.installation_id),
                str(changes.get("default_branch", row.default_branch)),
            ),
        )
    return int(row.id)


# Statements run for every run, built once as `Prepared`: on PostgreSQL they go through
# raw asyncpg (compiled once, no SQLAlchemy execution context); the values are the
# execution's parameters. `store_run` uses `transaction`, so a raw statement may be first.


_RUN_COLUMNS: Final = (
    "repository_id",
    "run_id",
    "run_attempt",
    "workflow",
    "head_sha",
    "head_branch",
    "event",
    "pr_number",
    "status",
    "conclusion",
    "started_at",
    "ingested_at",
    "source",
)


@functools.cache
def _insert_run(dialect: str) -> Prepared:
    runs = table_of(WorkflowRunRow)
    return Prepared(
        dialect_insert(dialect, runs)
        .values({name: bindparam(name) for name in _RUN_COLUMNS})
        .on_conflict_do_nothing(index_elements=["repository_id", "run_id", "run_attempt"])
        .returning(runs.c.id)
    )


def _update_run_counts() -> Prepared:
    runs = table_of(WorkflowRunRow)
    return Prepared(
        update(runs)
        .where(runs.c.id == bindparam("row_id"))
        .values({name: bindparam(name) for name in ("cases", "executions", "envs", "problems")})
    )


def _insert_report() -> Prepared:
    reports = table_of(ReportRow)
    columns = ("workflow_run_id", "env_key", "source", "cases", "failed", "failed_share")
    return Prepared(
        insert(reports).values({name: bindparam(name) for name in columns}).returning(reports.c.id)
    )


_UPDATE_RUN_COUNTS: Final = _update_run_counts()
_INSERT_REPORT: Final = _insert_report()


async def store_run(
    engine: AsyncEngine,
    repository_id: int,
    run: RunRef,
    groups: RunGroups,
    *,
    now: datetime,
    source_kind: str = "github",
    limits: ParseLimits | None = None,
    case_cache: CaseIdCache | None = None,
) -> StoredRun:
    """Store the reports of `run` in one transaction, each environment once.

    Idempotent per (run, attempt, environment): a second call with the same environments
    changes nothing (`created` is False); a call bringing a job not stored yet adds it.

    `case_cache` (same repository) saves the test_cases lookups of tests seen before.
    """
    parse_limits = limits or ParseLimits()
    if case_cache is not None and case_cache.repository_id != repository_id:
        case_cache = None
    learned: dict[str, tuple[int, datetime]] = {}
    runs = table_of(WorkflowRunRow)
    async with transaction(engine) as conn:
        inserted = await _insert_run(engine.dialect.name).all(
            conn,
            repository_id=repository_id,
            run_id=run.run_id,
            run_attempt=run.attempt,
            workflow=run.workflow,
            head_sha=run.head_sha,
            head_branch=run.branch,
            event=run.event,
            pr_number=run.pr_number,
            status="completed",
            conclusion=run.conclusion,
            started_at=run.started_at or now,
            ingested_at=now,
            source=source_kind,
        )
        row = inserted[0] if inserted else None
        known_envs: set[str] = set()
        previous: tuple[int, int, list[dict[str, Any]]] = (0, 0, [])
        if row is None:
            # Stored before: lock the row (concurrent imports of this attempt wait here),
            # then add only the environments it does not hold yet.
            found = (
                await conn.execute(
                    select(runs.c.id, runs.c.envs, runs.c.cases, runs.c.executions, runs.c.problems)
                    .where(
                        runs.c.repository_id == repository_id,
                        runs.c.run_id == run.run_id,
                        runs.c.run_attempt == run.attempt,
                    )
                    .with_for_update()
                )
            ).one()
            result = StoredRun(workflow_run_id=int(found.id), created=False)
            if found.envs is None:
                # Stored before environments were recorded (migration 0004): its reports
                # tell which jobs it holds; one with none is taken as complete.
                reports = table_of(ReportRow)
                stored_envs = await conn.execute(
                    select(reports.c.env_key)
                    .where(reports.c.workflow_run_id == found.id)
                    .distinct()
                )
                known_envs = {str(e) for (e,) in stored_envs}
                if not known_envs:
                    return result
            else:
                known_envs = set(found.envs)
            previous = (found.cases, found.executions, list(found.problems or ()))
        else:
            result = StoredRun(workflow_run_id=int(row[0]), created=True)
        new_envs: set[str] = set()
        async for env_key, item in groups:
            if env_key in known_envs:
                continue  # this job of this attempt was stored before: idempotent
            new_envs.add(env_key)
            if isinstance(item, ReportSource):
                if item.size_bytes is not None and item.size_bytes <= _INLINE_PARSE_BYTES:
                    parsed = parse_item(item, parse_limits)
                else:
                    parsed = await asyncio.to_thread(parse_item, item, parse_limits)
            else:
                parsed = item
            if isinstance(parsed, ReportProblem):
                result.problems.append(parsed)
                continue
            if parsed.problem is not None:
                result.problems.append(parsed.problem)
            if not parsed.cases:
                continue
            await _store_report(
                conn,
                repository_id,
                result.workflow_run_id or 0,
                env_key,
                parsed,
                now,
                case_cache.ids if case_cache is not None else {},
                learned,
            )
            result.cases += len(parsed.cases)
            result.executions += sum(len(c.attempts) for c in parsed.cases)
        if not new_envs:
            return result  # nothing new: a true re-delivery
        result.created = True
        await _UPDATE_RUN_COUNTS.execute(
            conn,
            row_id=result.workflow_run_id,
            cases=previous[0] + result.cases,
            executions=previous[1] + result.executions,
            envs=sorted(known_envs | new_envs),
            problems=previous[2]
            + [
                {"source": p.source, "reason": p.reason, "partial": p.partial}
                for p in result.problems
            ]
            or None,
        )
    if case_cache is not None:
        case_cache.ids.update(learned)  # committed: the ids are real
    return result


async def _store_report(
    conn: AsyncConnection,
    repository_id: int,
    workflow_run_id: int,
    env_key: str,
    parsed: ParsedReport,
    now: datetime,
    known: dict[str, tuple[int, datetime]],
    learned: dict[str, tuple[int, datetime]],
) -> None:
    finals = [case.attempts[-1].outcome for case in parsed.cases]
    ran = sum(map(finals.count, RAN))  # a C pass per outcome, not a generator per case
    failed = sum(map(finals.count, FAILING))
    ((report_id,),) = await _INSERT_REPORT.all(
        conn,
        workflow_run_id=workflow_run_id,
        env_key=env_key[:255],
        source=parsed.source,
        cases=len(parsed.cases),
        failed=failed,
        failed_share=failed / ran if ran else 0.0,
    )
    keys = parsed.keys
    ids = await _case_ids(conn, repository_id, parsed.cases, keys, now, known, learned)
    env = env_key[:255]
    value_of = _OUTCOME_VALUES
    rows: list[tuple[Any, ...]] = []
    append = rows.append
    for case, key in zip(parsed.cases, keys, strict=True):
        case_id = ids[key]
        attempts = case.attempts
        if len(attempts) == 1:  # most cases: no enumerate, no comparison
            outcome, duration_s, failure_type, message, signature = attempts[0]
            append(
                (
                    case_id,
                    workflow_run_id,
                    report_id,
                    env,
                    0,
                    True,
                    value_of[outcome],
                    duration_s,
                    failure_type,
                    signature,
                    message,
                )
            )
            continue
        last = len(attempts) - 1
        for index, (outcome, duration_s, failure_type, message, signature) in enumerate(attempts):
            append(
                (
                    case_id,
                    workflow_run_id,
                    report_id,
                    env,
                    index,
                    index == last,
                    value_of[outcome],
                    duration_s,
                    failure_type,
                    signature,
                    message,
                )
            )
    await _insert_executions(conn, rows)


async def _case_ids(
    conn: AsyncConnection,
    repository_id: int,
    cases: Sequence[CaseResult],
    case_keys: Sequence[str],
    now: datetime,
    known: dict[str, tuple[int, datetime]],
    learned: dict[str, tuple[int, datetime]],
) -> dict[str, int]:
    """test_key -> test_cases.id for `cases` (keys in `case_keys`), inserting unseen tests.

    `known` (committed, from earlier runs) answers tests whose last_seen_at is fresh;
    every id read or written here goes into `learned`.
    """
    found: dict[str, int] = {}
    wanted: dict[str, CaseResult] = {}
    fresh_after = now - _LAST_SEEN_GRANULARITY
    for case, key in zip(cases, case_keys, strict=True):
        if key in found or key in wanted:
            continue
        hit = known.get(key) or learned.get(key)
        if hit is not None and hit[1] >= fresh_after:
            found[key] = hit[0]
        else:
            wanted[key] = case
    if not wanted:
        return found
    if conn.dialect.name == "postgresql":
        found.update(await _pg_case_ids(conn, repository_id, wanted, now, learned))
        return found
    table = table_of(CaseRow)
    keys = list(wanted)
    for start in range(0, len(keys), _KEY_BATCH):
        chunk = keys[start : start + _KEY_BATCH]
        rows = await conn.execute(
            select(table.c.test_key, table.c.id, table.c.last_seen_at).where(
                table.c.repository_id == repository_id, table.c.test_key.in_(chunk)
            )
        )
        stale: list[int] = []
        for key, case_id, last_seen in rows.all():
            found[key] = case_id
            if last_seen is not None and aware(last_seen) < now - _LAST_SEEN_GRANULARITY:
                stale.append(case_id)
        if stale:
            await conn.execute(update(table).where(table.c.id.in_(stale)).values(last_seen_at=now))
    missing = [wanted[k] for k in keys if k not in found]
    for start in range(0, len(missing), _CASE_INSERT_BATCH):
        chunk_cases = missing[start : start + _CASE_INSERT_BATCH]
        stmt = (
            dialect_insert(conn.dialect.name, table)
            .values(
                [
                    {
                        "repository_id": repository_id,
                        "test_key": c.test_key,
                        "suite": c.suite,
                        "class_name": c.class_name,
                        "name": c.name,
                        "file": c.file,
                        "first_seen_at": now,
                        "last_seen_at": now,
                    }
                    for c in chunk_cases
                ]
            )
            .on_conflict_do_nothing(index_elements=["repository_id", "test_key"])
            .returning(table.c.test_key, table.c.id)
        )
        for key, case_id in (await conn.execute(stmt)).all():
            found[key] = case_id
    still_missing = [k for k in keys if k not in found]
    if still_missing:
        # Another transaction inserted them concurrently: read their ids.
        late = await conn.execute(
            select(table.c.test_key, table.c.id).where(
                table.c.repository_id == repository_id, table.c.test_key.in_(still_missing)
            )
        )
        found.update({str(k): int(v) for k, v in late})
    return found


async def _pg_case_ids(
    conn: AsyncConnection,
    repository_id: int,
    wanted: dict[str, CaseResult],
    now: datetime,
    learned: dict[str, tuple[int, datetime]],
) -> dict[str, int]:
    """PostgreSQL: three statements whatever the count (array binds, no IN lists to compile)."""
    async with raw_connection(conn) as driver:
        keys = list(wanted)
        found: dict[str, int] = {}
        stale: list[int] = []
        fresh_after = now - _LAST_SEEN_GRANULARITY
        for key, case_id, last_seen in await driver.fetch(
            "SELECT test_key, id, last_seen_at FROM test_cases"
            " WHERE repository_id = $1 AND test_key = ANY($2::text[])",
            repository_id,
            keys,
        ):
            found[key] = case_id
            if last_seen is not None and aware(last_seen) < fresh_after:
                stale.append(case_id)
                learned[key] = (case_id, now)
            else:
                learned[key] = (case_id, aware(last_seen) if last_seen is not None else now)
        if stale:
            await driver.execute(
                "UPDATE test_cases SET last_seen_at = $1 WHERE id = ANY($2::bigint[])", now, stale
            )
        missing = [wanted[k] for k in keys if k not in found]
        if missing:
            # ON CONFLICT: a concurrent transaction may insert the same tests; read theirs below.
            for key, case_id in await driver.fetch(
                "INSERT INTO test_cases (repository_id, test_key, suite, class_name, name, file,"
                " first_seen_at, last_seen_at)"
                " SELECT $1, k, s, c, n, f, $7, $7"
                " FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[])"
                " AS t(k, s, c, n, f)"
                " ON CONFLICT (repository_id, test_key) DO NOTHING RETURNING test_key, id",
                repository_id,
                [c.test_key for c in missing],
                [c.suite for c in missing],
                [c.class_name for c in missing],
                [c.name for c in missing],
                [c.file for c in missing],
                now,
            ):
                found[key] = case_id
                learned[key] = (case_id, now)
            late = [c.test_key for c in missing if c.test_key not in found]
            if late:
                for key, case_id in await driver.fetch(
                    "SELECT test_key, id FROM test_cases"
                    " WHERE repository_id = $1 AND test_key = ANY($2::text[])",
                    repository_id,
                    late,
                ):
                    found[key] = case_id
                    learned[key] = (case_id, now)
    return found


async def _insert_executions(conn: AsyncConnection, rows: Iterable[tuple[Any, ...]]) -> None:
    records = list(rows)
    if not records:
        return
    if conn.dialect.name == "postgresql":
        async with raw_connection(conn) as driver:
            await driver.copy_records_to_table(
                "executions", records=records, columns=list(EXECUTION_COLUMNS)
            )
        return
    await conn.execute(
        insert(table_of(ExecutionRow)),
        [dict(zip(EXECUTION_COLUMNS, record, strict=True)) for record in records],
    )


async def ping(engine: AsyncEngine) -> None:
    async with reading(engine) as conn:
        await conn.execute(text("SELECT 1"))


@dataclass(frozen=True, slots=True)
class StoredRunInfo:
    id: int
    run_id: int
    run_attempt: int
    head_sha: str
    head_branch: str | None
    conclusion: str | None
    workflow: str | None


def _find_analysed_run_query() -> Prepared:
    r, w = table_of(RepositoryRow), table_of(WorkflowRunRow)
    return Prepared(
        select(
            r.c.id,
            r.c.owner,
            r.c.name,
            r.c.default_branch,
            r.c.installation_id,
            w.c.id,
            w.c.run_id,
            w.c.run_attempt,
            w.c.head_sha,
            w.c.head_branch,
            w.c.conclusion,
            w.c.workflow,
        )
        .select_from(
            r.outerjoin(
                w,
                and_(
                    w.c.repository_id == r.c.id,
                    w.c.run_id == bindparam("run_id", type_=w.c.run_id.type),
                    w.c.run_attempt == bindparam("attempt", type_=w.c.run_attempt.type),
                ),
            )
        )
        .where(
            func.lower(r.c.owner) == bindparam("owner", type_=r.c.owner.type),
            func.lower(r.c.name) == bindparam("name", type_=r.c.name.type),
        )
    )


_FIND_ANALYSED_RUN: Final = _find_analysed_run_query()


async def find_repository_run(
    engine: AsyncEngine, owner: str, name: str, run_id: int, attempt: int
) -> tuple[RepositoryInfo | None, StoredRunInfo | None]:
    """The repository (owner and name matched case-insensitively, as `find_repository`
    does) and its stored run attempt, in one query; None for what is not stored."""
    async with reading(engine) as conn:
        rows = await _FIND_ANALYSED_RUN.all(
            conn, owner=owner.lower(), name=name.lower(), run_id=run_id, attempt=attempt
        )
    if not rows:
        return None, None
    (
        repository_id,
        stored_owner,
        stored_name,
        default_branch,
        installation_id,
        row_id,
        stored_run_id,
        run_attempt,
        head_sha,
        head_branch,
        conclusion,
        workflow,
    ) = rows[0]
    repo = RepositoryInfo(
        int(repository_id), stored_owner, stored_name, default_branch, installation_id
    )
    if row_id is None:
        return repo, None
    run = StoredRunInfo(
        int(row_id), stored_run_id, run_attempt, head_sha, head_branch, conclusion, workflow
    )
    return repo, run
