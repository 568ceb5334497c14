"""`HistoryCache`: every pass gets what a fresh read gives, reading only what changed."""

from __future__ import annotations

import io
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from flakeguard.adapters.artifacts import ReportSource
from flakeguard.adapters.db.engine import create_engine, database_url, migrate
from flakeguard.adapters.db.history import CaseInfo, load_run_index, read_histories
from flakeguard.adapters.db.history_cache import HistoryCache
from flakeguard.adapters.db.runs import ensure_repository, store_run
from flakeguard.adapters.db.tables import CaseRow, WorkflowRunRow, table_of
from flakeguard.core.models import ExecutionRecord, RunRef

pytestmark = pytest.mark.integration
START = datetime(2026, 11, 1, tzinfo=UTC)
TESTS = [f"test_{i}" for i in range(12)]


def junit(results: dict[str, str]) -> bytes:
    """name -> 'pass' | 'fail' | 'rerun' (a failed attempt, then a pass)."""
    cases = []
    for name, kind in results.items():
        case = f'<testcase classname="tests.test_shop" name="{name}" time="0.1"'
        if kind == "fail":
            cases.append(f'{case}><failure message="boom">trace</failure></testcase>')
        elif kind == "rerun":
            cases.append(
                f'{case}><failure message="boom">trace</failure>'
                f'<rerunFailure message="boom">trace</rerunFailure></testcase>'
            )
        else:
            cases.append(f"{case}/>")
    return (f'<testsuites><testsuite name="s">{"".join(cases)}</testsuite></testsuites>').encode()


async def store(
    engine: AsyncEngine,
    repo_id: int,
    run_id: int,
    env: str,
    results: dict[str, str],
    *,
    branch: str,
) -> None:
    data = junit(results)
    source = ReportSource(f"{env}.xml", len(data), lambda: io.BytesIO(data))

    async def groups() -> AsyncIterator[tuple[str, ReportSource]]:
        yield env, source

    started = START + timedelta(hours=run_id)
    run = RunRef("acme/shop", run_id, 1, f"{run_id:040x}", branch, started_at=started)
    await store_run(engine, repo_id, run, groups(), now=started)


async def all_cases(engine: AsyncEngine) -> list[CaseInfo]:
    c = table_of(CaseRow)
    columns = (c.c.id, c.c.test_key, c.c.suite, c.c.class_name, c.c.name, c.c.file)
    async with engine.connect() as conn:
        rows = (await conn.execute(select(*columns).order_by(c.c.id))).all()
    return [CaseInfo(*row) for row in rows]


def canonical(histories: dict[str, list[ExecutionRecord]]) -> dict[str, list[tuple[object, ...]]]:
    """Order-free form: a fresh read has no set order within a test either."""
    return {
        key: sorted(tuple(str(value) for value in record) for record in records)
        for key, records in histories.items()
    }


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
async def test_a_pass_reads_what_a_fresh_read_gives_and_only_what_changed(
    backend: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("pg_url" if backend == "postgresql" else "sqlite_url")
    engine = create_engine(database_url(url, Path(".")))
    rng = random.Random(20261129)
    cache = HistoryCache()
    try:
        await migrate(engine)
        repo_id = await ensure_repository(engine, "acme", "shop", now=START)
        runs: list[int] = []
        since, default_branch = START, "main"
        checked = 0
        for step in range(40):
            action = (
                "run"
                if step < 4
                else rng.choice(["run", "run", "run", "env", "delete", "window", "branch"])
            )
            if action == "run" or (action in ("env", "delete") and not runs):
                run_id = 100 + step
                results = {t: rng.choice(["pass"] * 6 + ["fail", "rerun"]) for t in TESTS}
                await store(engine, repo_id, run_id, "ci/linux", results,
                            branch=rng.choice(["main", "main", "feature"]))  # fmt: skip
                runs.append(run_id)
            elif action == "env":  # another job's report joins a run seen before
                run_id = rng.choice(runs)
                results = {t: rng.choice(["pass", "fail"]) for t in rng.sample(TESTS, 5)}
                await store(engine, repo_id, run_id, f"ci/job{step}", results, branch="main")
            elif action == "delete":
                run_id = runs.pop(rng.randrange(len(runs)))
                w = table_of(WorkflowRunRow)
                async with engine.begin() as conn:
                    await conn.execute(delete(w).where(w.c.run_id == run_id))
            elif action == "window":
                since += timedelta(hours=rng.choice([1, 3]))
            else:
                default_branch = "feature" if default_branch == "main" else "main"
            cases = await all_cases(engine)
            wanted = rng.sample(cases, k=rng.randint(1, len(cases)))  # passes see some tests
            index = await load_run_index(
                engine, repo_id, since=since, default_branch=default_branch
            )
            fresh = await read_histories(engine, wanted, index)
            expected = {case.test_key: fresh[case.id] for case in wanted if case.id in fresh}
            before = cache.read_records
            got = await cache.histories(engine, wanted, index)
            assert canonical(got) == canonical(expected), (step, action)
            checked += sum(map(len, expected.values()))
            if action == "window":
                assert cache.read_records - before <= sum(
                    len(expected.get(case.test_key, [])) for case in wanted
                )
        # Everything compared, while the cache read a fraction of what fresh reads did.
        assert checked > 1000
        assert cache.read_records < checked / 2
    finally:
        await engine.dispose()


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_a_new_run_costs_its_own_executions_and_the_budget_holds(
    backend: str, request: pytest.FixtureRequest
) -> None:
    engine = create_engine(database_url(request.getfixturevalue("pg_url"), Path(".")))
    cache = HistoryCache(max_records=30)
    try:
        await migrate(engine)
        repo_id = await ensure_repository(engine, "acme", "shop", now=START)
        for run_id in range(1, 4):
            await store(engine, repo_id, run_id, "ci/linux", dict.fromkeys(TESTS, "fail"),
                        branch="main")  # fmt: skip
        cases = await all_cases(engine)
        few = cases[:5]

        async def pass_over(chosen: list[CaseInfo]) -> dict[str, list[ExecutionRecord]]:
            index = await load_run_index(engine, repo_id, since=START, default_branch="main")
            return await cache.histories(engine, chosen, index)

        assert sum(map(len, (await pass_over(few)).values())) == 15
        assert cache.read_records == 15
        await store(engine, repo_id, 4, "ci/linux", dict.fromkeys(TESTS, "pass"), branch="main")
        got = await pass_over(few)
        assert sum(map(len, got.values())) == 20
        assert cache.read_records == 15 + 5  # the new run's five executions, nothing else
        # All twelve tests (48 records) cannot stay under a budget of 30.
        await pass_over(cases)
        assert cache.records <= 30
        assert len(cache) < len(cases)
    finally:
        await engine.dispose()
