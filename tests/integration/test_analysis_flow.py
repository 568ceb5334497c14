"""Analysis end to end: import-junit, analyze, flaky --json, quarantine, runs-analyze, recompute."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bullmq import Job
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from flakeguard.adapters.db.history import (
    find_repository,
    rescore_candidates,
    save_quarantine,
    select_cases,
)
from flakeguard.adapters.db.runs import find_repository_run
from flakeguard.adapters.db.tables import CheckRunRow, table_of
from flakeguard.adapters.github.client import CheckRunBody, RepoCoords
from flakeguard.adapters.queue.names import QueueName
from flakeguard.adapters.queue.payloads import (
    RecomputeOptions,
    RecomputePayload,
    RecomputeScope,
    RecomputeScopeType,
    RepositoryRef,
    RunMetadata,
    RunsAnalyzePayload,
    RunsIngestPayload,
)
from flakeguard.cli import app
from flakeguard.core.quarantine import QuarantinePolicy, manual_add
from flakeguard.core.scoring import ALL_ENVS
from flakeguard.processors.check_runs import annotation_key, publish_check_run
from flakeguard.processors.runs_analyze import analyze_run
from flakeguard.processors.runs_ingest import ingest
from tests.support import make_settings, running_workers, runtime_for, wait_for, write_local_run

pytestmark = pytest.mark.integration
START = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)  # inside the 30-day lookback


def junit(cases: dict[str, str]) -> str:
    """A pytest-style report: name -> 'pass' | 'fail' | 'flaky' (fails, then passes on rerun)."""
    body = []
    for name, kind in cases.items():
        if kind == "fail":
            body.append(
                f'<testcase classname="tests.test_shop" name="{name}" time="0.1">'
                f'<failure message="assert 1 == 2">AssertionError at line 3</failure></testcase>'
            )
        elif kind == "flaky":
            body.append(
                f'<testcase classname="tests.test_shop" name="{name}" time="0.1"/>'
            )  # empty = failed attempt
            body.append(f'<testcase classname="tests.test_shop" name="{name}" time="0.1"/>')
        else:
            body.append(f'<testcase classname="tests.test_shop" name="{name}" time="0.1"/>')
    return (
        '<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests">'
        f'<testsuite name="pytest" tests="{len(cases)}">{"".join(body)}</testsuite></testsuites>'
    )


def write_history(folder: Path) -> Path:
    """12 runs on main: test_flaky fails on runs 3 and 8 and passes on their re-runs;
    test_broken fails from run 9 on; test_ok always passes. Returns the manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for run in range(12):
        for attempt in (1, 2) if run in (3, 8) else (1,):
            flaky = "fail" if run in (3, 8) and attempt == 1 else "pass"
            broken = "fail" if run >= 9 else "pass"
            path = folder / f"run{run}-{attempt}.xml"
            filler = {f"test_filler_{i}": "pass" for i in range(20)}  # a realistic suite size
            path.write_text(
                junit({"test_ok": "pass", "test_flaky": flaky, "test_broken": broken, **filler})
            )
            lines.append(
                {
                    "repo": "acme/shop",
                    "run_id": 1000 + run,
                    "attempt": attempt,
                    "sha": f"{run:040x}",
                    "branch": "main",
                    "started_at": (START + timedelta(hours=run, minutes=attempt)).isoformat(),
                    "workflow": "ci",
                    "job": "ubuntu",
                    "paths": [path.name],
                }
            )
    manifest = folder / "manifest.jsonl"
    manifest.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return manifest


def test_import_analyze_flaky_and_quarantine_through_the_cli(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = write_history(tmp_path / "history")
    monkeypatch.setenv("DATABASE_URL", pg_url)
    monkeypatch.setenv("LOG_LEVEL", "error")
    monkeypatch.setenv("FLAKEGUARD_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()
    assert runner.invoke(app, ["migrate"]).exit_code == 0
    imported = runner.invoke(app, ["import-junit", "--manifest", str(manifest)])
    assert imported.exit_code == 0, imported.output
    assert "imported 14 run attempts (14 new)" in imported.output
    again = runner.invoke(app, ["import-junit", "--manifest", str(manifest)])
    assert "(0 new)" in again.output  # idempotent per run attempt
    analyzed = runner.invoke(app, ["analyze", "--repo", "acme/shop"])
    assert analyzed.exit_code == 0, analyzed.output
    assert "scored 23 tests of acme/shop" in analyzed.output
    listed = runner.invoke(app, ["flaky", "--repo", "acme/shop", "--all", "--json"])
    assert listed.exit_code == 0, listed.output
    tests = {t["name"]: t for t in json.loads(listed.stdout)}
    assert {"test_ok", "test_flaky", "test_broken"} <= set(tests)
    assert len(tests) == 23
    for field in (
        "test_id",
        "suite",
        "class_name",
        "file",
        "score",
        "is_flaky",
        "class",
        "confidence",
        "quarantined",
        "runs",
        "failures",
        "components",
        "evidence",
        "reason",
    ):
        assert field in tests["test_flaky"]
    assert set(tests["test_flaky"]["components"]) == {
        "failure_rate",
        "inconsistency",
        "recency",
        "branch_diversity",
    }
    assert tests["test_flaky"]["class"] in ("flaky", "suspected")
    assert tests["test_broken"]["class"] == "broken"
    assert tests["test_broken"]["quarantined"] is False  # broken tests are never quarantined
    assert tests["test_ok"]["class"] == "healthy"
    assert tests["test_ok"]["score"] == 0
    default = json.loads(runner.invoke(app, ["flaky", "--repo", "acme/shop", "--json"]).stdout)
    assert "test_ok" not in {t["name"] for t in default}
    added = runner.invoke(
        app, ["quarantine", "add", "--repo", "acme/shop", "--test", "test_ok", "--reason", "T-1"]
    )
    assert added.exit_code == 0, added.output
    exported = runner.invoke(
        app, ["quarantine", "list", "--repo", "acme/shop", "--format", "pytest"]
    )
    assert "--deselect=tests/test_shop.py::test_ok" in exported.stdout
    removed = runner.invoke(
        app, ["quarantine", "remove", "--repo", "acme/shop", "--test", "test_ok"]
    )
    assert "released 1 quarantines" in removed.stdout
    after = runner.invoke(app, ["quarantine", "list", "--repo", "acme/shop", "--format", "json"])
    assert "test_ok" not in {t["name"] for t in json.loads(after.stdout)}


def test_jobs_of_one_run_attempt_are_each_stored_once(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: one manifest line per matrix leg of the same attempt (idempotent per job)."""
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.setenv("LOG_LEVEL", "error")
    for leg in ("ubuntu", "windows", "macos"):
        (tmp_path / f"{leg}.xml").write_text(junit({"test_a": "pass", f"test_{leg}": "fail"}))
    line = {"repo": "acme/shop", "run_id": 42, "attempt": 1, "sha": "f" * 40, "branch": "main"}
    two = tmp_path / "two.jsonl"
    two.write_text(
        "\n".join(
            json.dumps({**line, "job": leg, "paths": [f"{leg}.xml"]})
            for leg in ("ubuntu", "windows")
        )
    )
    runner = CliRunner()
    first = runner.invoke(app, ["import-junit", "--manifest", str(two)])
    assert first.exit_code == 0, first.output
    assert "2 run attempts (2 new): 4 test cases" in first.output
    replay = runner.invoke(app, ["import-junit", "--manifest", str(two)])
    assert "(0 new): 0 test cases" in replay.output
    late = runner.invoke(
        app,
        [
            "import-junit",
            str(tmp_path / "macos.xml"),
            "--repo",
            "acme/shop",
            "--run-id",
            "42",
            "--sha",
            "f" * 40,
            "--job",
            "macos",
        ],
    )
    assert "(1 new): 2 test cases" in late.output
    listed = runner.invoke(app, ["analyze", "--repo", "acme/shop"])
    assert "scored 4 tests" in listed.output  # test_a + one failing test per leg


def test_import_junit_rejects_an_unusable_manifest(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    bad = tmp_path / "m.jsonl"
    bad.write_text('{"repo": "acme/shop", "run_id": 1, "sha": "a", "paths": ["x.xml"]}\nnot json\n')
    result = CliRunner().invoke(app, ["import-junit", "--manifest", str(bad)])
    assert result.exit_code == 2
    assert "m.jsonl:2" in result.output
    missing = CliRunner().invoke(app, ["import-junit", str(tmp_path), "--repo", "acme/shop"])
    assert missing.exit_code == 2


class RecordingChecks:
    """A CheckPublisher that keeps what would be sent to GitHub."""

    def __init__(self) -> None:
        self.created: list[CheckRunBody] = []
        self.updates: list[tuple[int, CheckRunBody]] = []

    async def create(self, repo: RepoCoords, body: CheckRunBody) -> int:
        self.created.append(body)
        return 777

    async def update(self, repo: RepoCoords, check_run_id: int, body: CheckRunBody) -> None:
        self.updates.append((check_run_id, body))


async def test_runs_analyze_publishes_one_check_run_per_sha_updated_in_place(
    queue_prefix: str, redis_url: str, pg_url: str, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    reports = tmp_path / "xml"
    reports.mkdir()
    (reports / "a.xml").write_text(junit({"test_ok": "pass", "test_new": "fail"}))
    (reports / "b.xml").write_text(junit({"test_ok": "pass", "test_other": "fail"}))
    sha = "e" * 40
    # Two workflows (two runs) of the same commit.
    write_local_run(
        runs, owner="acme", repo="shop", run_id=1, head_sha=sha, jobs={"linux": [reports / "a.xml"]}
    )
    write_local_run(
        runs,
        owner="acme",
        repo="shop",
        run_id=2,
        head_sha=sha,
        jobs={"mac": [reports / "b.xml"]},
        workflow="e2e",
    )
    checks = RecordingChecks()
    settings = make_settings(
        redis_url=redis_url, database_url=pg_url, prefix=queue_prefix, data_dir=tmp_path
    )
    async with runtime_for(settings, runs_root=runs, checks=checks) as rt:
        analyze_queue = rt.deps.producer.queues[QueueName.RUNS_ANALYZE]
        async with running_workers(rt, [QueueName.RUNS_INGEST, QueueName.RUNS_ANALYZE]):
            for run_id in (1, 2):
                await rt.deps.producer.ingest(
                    RunsIngestPayload(
                        workflow_run_id=run_id,
                        repository=RepositoryRef(owner="acme", repo="shop", installation_id=9),
                        metadata=RunMetadata(run_attempt=1),
                    )
                )

                async def analyzed(n: int = run_id) -> bool:
                    return int((await analyze_queue.getJobCounts("completed"))["completed"]) == n

                await wait_for(analyzed, timeout_s=30)
    assert len(checks.created) == 1
    assert len(checks.updates) == 1
    first, (updated_id, second) = checks.created[0], checks.updates[0]
    assert updated_id == 777
    assert first.head_sha == sha
    assert first.conclusion is not None
    assert first.conclusion.value == "failure"
    assert "test_new" in first.summary
    assert "test_other" in second.summary
    assert "test_new" in second.summary
    first_paths = {(a.title, a.message) for a in first.annotations}
    assert all((a.title, a.message) not in first_paths for a in second.annotations)  # sent once


class SlowChecks(RecordingChecks):
    """GitHub taking its time: a create or update yields to the other analyses first."""

    async def create(self, repo: RepoCoords, body: CheckRunBody) -> int:
        await asyncio.sleep(0.05)
        return await super().create(repo, body)

    async def update(self, repo: RepoCoords, check_run_id: int, body: CheckRunBody) -> None:
        await asyncio.sleep(0.05)
        await super().update(repo, check_run_id, body)


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
async def test_analyses_of_one_commit_at_once_create_one_check_run(
    backend: str,
    queue_prefix: str,
    redis_url: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    """Three analyses publish the same commit's check run at the same time: the record
    (advisory lock on PostgreSQL, in-process lock on SQLite) lets one create it and the
    others update it, each sending only annotations GitHub does not have yet."""
    database_url = request.getfixturevalue("pg_url" if backend == "postgresql" else "sqlite_url")
    runs = tmp_path / "runs"
    (tmp_path / "r.xml").write_text(
        '<testsuite name="pytest"><testcase classname="tests.test_shop" name="test_ok"'
        ' file="tests/test_shop.py"/><testcase classname="tests.test_shop" name="test_new"'
        ' file="tests/test_shop.py" line="7"><failure message="assert 1 == 2">'
        "AssertionError</failure></testcase>"
        '<testcase classname="tests.test_shop" name="test_off"><skipped/></testcase>'
        '<testcase classname="tests.test_shop" name="test_boom"><error message="boom"/>'
        "</testcase></testsuite>"
    )
    sha = "c" * 40
    write_local_run(
        runs,
        owner="acme",
        repo="shop",
        run_id=3,
        head_sha=sha,
        jobs={"linux": [tmp_path / "r.xml"]},
    )
    checks = SlowChecks()
    settings = make_settings(
        redis_url=redis_url, database_url=database_url, prefix=queue_prefix, data_dir=tmp_path
    )
    async with runtime_for(settings, runs_root=runs, checks=checks) as rt:
        await ingest(
            rt.deps,
            RunsIngestPayload(
                workflow_run_id=3,
                repository=RepositoryRef(owner="acme", repo="shop", installation_id=9),
            ),
        )
        repo = await find_repository(rt.deps.engine, "acme", "shop")
        assert repo is not None
        _, run = await find_repository_run(rt.deps.engine, "acme", "shop", 3, 1)
        assert run is not None
        published = await asyncio.gather(*(publish_check_run(rt.deps, repo, run) for _ in range(3)))
        record_row = await stored_check_run_row(rt.deps.engine, repo.id, sha)
    assert published == [777, 777, 777]
    assert len(checks.created) == 1
    assert [check_run_id for check_run_id, _ in checks.updates] == [777, 777]
    assert len(checks.created[0].annotations) == 1  # test_new's failure (test_boom: no file)
    assert "**4 tests**: 1 passed, 2 failed, 1 skipped" in checks.created[0].summary
    assert all(not body.annotations for _, body in checks.updates)  # sent once only
    assert record_row == (777, [annotation_key(checks.created[0].annotations[0])])


async def stored_check_run_row(engine: AsyncEngine, repository_id: int, head_sha: str) -> object:
    t = table_of(CheckRunRow)
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(t.c.check_run_id, t.c.annotated).where(
                    t.c.repository_id == repository_id, t.c.head_sha == head_sha
                )
            )
        ).one()
    return (row.check_run_id, row.annotated)


async def test_recompute_scopes_and_progress(
    queue_prefix: str, redis_url: str, pg_url: str, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    (tmp_path / "r.xml").write_text(
        junit({"test_login": "pass", "test_logout": "fail", "test_cart": "pass"})
    )
    write_local_run(runs, owner="acme", repo="shop", run_id=5, jobs={"linux": [tmp_path / "r.xml"]})
    settings = make_settings(
        redis_url=redis_url, database_url=pg_url, prefix=queue_prefix, data_dir=tmp_path
    )
    async with runtime_for(settings, runs_root=runs) as rt:
        await rt.deps.producer.ingest(
            RunsIngestPayload(
                workflow_run_id=5, repository=RepositoryRef(owner="acme", repo="shop")
            )
        )
        queue = rt.deps.producer.queues[QueueName.TESTS_RECOMPUTE]
        async with running_workers(rt, [QueueName.RUNS_INGEST, QueueName.TESTS_RECOMPUTE]):
            ingest_queue = rt.deps.producer.queues[QueueName.RUNS_INGEST]

            async def ingested() -> bool:
                return int((await ingest_queue.getJobCounts("completed"))["completed"]) == 1

            await wait_for(ingested)
            pattern = await rt.deps.producer.recompute(
                RecomputePayload(
                    repository=RepositoryRef(owner="acme", repo="shop"),
                    recompute_scope=RecomputeScope(
                        type=RecomputeScopeType.TEST_PATTERN, patterns=("test_log*",)
                    ),
                    options=RecomputeOptions(batch_size=1),
                )
            )
            everything = await rt.deps.producer.recompute(
                RecomputePayload(repository=RepositoryRef(owner="acme", repo="shop"))
            )

            async def both_done() -> bool:
                return int((await queue.getJobCounts("completed"))["completed"]) == 2

            await wait_for(both_done)
        by_pattern = await Job.fromId(queue, pattern.job_id)
        full = await Job.fromId(queue, everything.job_id)
        assert by_pattern is not None
        assert full is not None
        assert by_pattern.returnvalue["tests"] == 2
        assert by_pattern.progress == {"done": 2, "total": 2}
        assert full.returnvalue["tests"] == 3


RUNS = 12


async def test_concurrent_analyses_share_scoring_passes_and_match_one_by_one(
    queue_prefix: str, redis_url: str, pg_url: str, tmp_path: Path
) -> None:
    """Twelve runs of one repository analysed at once: fewer scoring passes than runs, and the
    same per-run answers and check runs as analysing them one at a time."""
    import asyncio

    from sqlalchemy import select

    from flakeguard.adapters.db.tables import CaseRow, FlakeScoreRow, table_of
    from flakeguard.adapters.queue.payloads import RunsAnalyzePayload
    from flakeguard.processors.coalescing import PassCoalescer
    from flakeguard.processors.runs_analyze import ScoringGroups, analyze_run

    runs = tmp_path / "runs"
    reports = tmp_path / "xml"
    reports.mkdir()
    for run_id in range(1, RUNS + 1):
        # 30 passing tests keep each report's failed share low (no mass-failure filter).
        kinds = {f"test_ok_{n}": "pass" for n in range(30)}
        kinds[f"test_only_{run_id}"] = "pass"
        kinds["test_flaky"] = "fail" if run_id % 2 else "pass"
        kinds["test_broken"] = "fail"
        (reports / f"{run_id}.xml").write_text(junit(kinds))
        write_local_run(
            runs,
            owner="acme",
            repo="shop",
            run_id=run_id,
            head_sha=f"{run_id:040x}",
            jobs={"linux": [reports / f"{run_id}.xml"]},
            started_at=START + timedelta(hours=run_id),
        )

    async def analyse(database_url: str, concurrent: bool) -> tuple[list[object], list[str], int]:
        checks = RecordingChecks()
        settings = make_settings(
            redis_url=redis_url,
            database_url=database_url,
            prefix=f"{queue_prefix}{int(concurrent)}",
            data_dir=tmp_path / str(concurrent),
        )
        # A fixed clock: recency depends on "now", and both analyses must see the same one.
        clock = lambda: START + timedelta(days=1)  # noqa: E731
        async with runtime_for(settings, runs_root=runs, checks=checks, clock=clock) as rt:
            ingest_queue = rt.deps.producer.queues[QueueName.RUNS_INGEST]
            async with running_workers(rt, [QueueName.RUNS_INGEST]):
                for run_id in range(1, RUNS + 1):
                    await rt.deps.producer.ingest(
                        RunsIngestPayload(
                            workflow_run_id=run_id,
                            repository=RepositoryRef(owner="acme", repo="shop", installation_id=9),
                        )
                    )

                async def ingested() -> bool:
                    counts = await ingest_queue.getJobCounts("completed")
                    return int(counts["completed"]) == RUNS

                await wait_for(ingested, timeout_s=30)
            payloads = [
                RunsAnalyzePayload(
                    workflow_run_id=run_id,
                    repository=RepositoryRef(owner="acme", repo="shop", installation_id=9),
                )
                for run_id in range(1, RUNS + 1)
            ]
            groups: ScoringGroups = PassCoalescer()
            if concurrent:
                results = await asyncio.gather(*(analyze_run(rt.deps, p, groups) for p in payloads))
            else:
                results = [await analyze_run(rt.deps, p) for p in payloads]
            s, c = table_of(FlakeScoreRow), table_of(CaseRow)
            async with rt.deps.engine.connect() as conn:
                verdicts = sorted(
                    f"{row.name}:{row.scope}:{row.verdict}:{row.score:.6f}:{row.runs}:{row.failures}"
                    for row in await conn.execute(
                        select(
                            c.c.name, s.c.scope, s.c.verdict, s.c.score, s.c.runs, s.c.failures
                        ).join(c, c.c.id == s.c.test_case_id)
                    )
                )
        # Not "tests" (how many were re-scored): one at a time, a later run skips the
        # healthy tests an earlier analysis already settled.
        answers = [(r["flaky"], r["broken"], r["quarantined"], r["checkRunId"]) for r in results]
        bodies = sorted(
            (b.head_sha, b.conclusion.value if b.conclusion else "", b.summary)
            for b in checks.created
        )
        return [answers, bodies], verdicts, groups.passes

    import psycopg

    other_db = f"{pg_url.rsplit('/', 1)[1]}_seq"
    admin = pg_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{other_db}"')
        conn.execute(f'CREATE DATABASE "{other_db}"')
    try:
        together, together_scores, passes = await analyse(pg_url, concurrent=True)
        alone, alone_scores, _ = await analyse(pg_url.rsplit("/", 1)[0] + f"/{other_db}", False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{other_db}" WITH (FORCE)')
    assert 1 <= passes < RUNS
    assert together == alone
    assert together_scores == alone_scores
    answers = together[0]
    assert isinstance(answers, list)
    assert all(a[1] == 1 for a in answers)  # test_broken fails in every run


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
async def test_settled_tests_are_neither_rescored_nor_shown_but_a_failure_elsewhere_is(
    backend: str,
    queue_prefix: str,
    redis_url: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    """After a first analysis, `test_ok` and `test_x` are healthy with a score of 0, and
    `test_flaky` and `test_z` are possibly flaky. Run 2 passes the first three again: only
    `test_flaky` is re-scored. Run 3, another workflow of run 2's commit (not analysed),
    fails `test_x` and passes `test_z`. Run 2's check run shows `test_x`'s failure and
    `test_z` (its stored score, read because no run of the pass touched it), and does not
    list `test_ok`."""
    database_url = request.getfixturevalue("pg_url" if backend == "postgresql" else "sqlite_url")
    runs, reports = tmp_path / "runs", tmp_path / "xml"
    reports.mkdir()
    plan = {
        1: (
            "a" * 40,
            {"test_ok": "pass", "test_flaky": "flaky", "test_x": "pass", "test_z": "flaky"},
        ),
        2: ("b" * 40, {"test_ok": "pass", "test_flaky": "pass", "test_x": "pass"}),
        3: ("b" * 40, {"test_x": "fail", "test_z": "pass"}),
    }
    for run_id, (sha, cases) in plan.items():
        (reports / f"{run_id}.xml").write_text(junit(cases))
        write_local_run(
            runs,
            owner="acme",
            repo="shop",
            run_id=run_id,
            head_sha=sha,
            jobs={"linux": [reports / f"{run_id}.xml"]},
            started_at=START + timedelta(hours=run_id),
            workflow="e2e" if run_id == 3 else "ci",
        )
    checks = RecordingChecks()
    settings = make_settings(
        redis_url=redis_url, database_url=database_url, prefix=queue_prefix, data_dir=tmp_path
    )
    ref = RepositoryRef(owner="acme", repo="shop", installation_id=9)
    async with runtime_for(settings, runs_root=runs, checks=checks) as rt:
        for run_id in plan:
            await ingest(rt.deps, RunsIngestPayload(workflow_run_id=run_id, repository=ref))
        repo = await find_repository(rt.deps.engine, "acme", "shop")
        assert repo is not None
        row_ids = {}
        for run_id in plan:
            _, stored = await find_repository_run(rt.deps.engine, "acme", "shop", run_id, 1)
            assert stored is not None
            row_ids[run_id] = stored.id
        first = await analyze_run(rt.deps, RunsAnalyzePayload(workflow_run_id=1, repository=ref))
        candidates = {
            (run_id, case.name)
            for run_row_id, case in await rescore_candidates(rt.deps.engine, list(row_ids.values()))
            for run_id in plan
            if row_ids[run_id] == run_row_id
        }
        second = await analyze_run(rt.deps, RunsAnalyzePayload(workflow_run_id=2, repository=ref))
        body = checks.updates[-1][1] if checks.updates else checks.created[-1]
        # Someone quarantines test_x: the next publish of the commit mutes its failure.
        (x,) = await select_cases(rt.deps.engine, repo.id, name_patterns=["test_x"])
        muted = manual_add(x.test_key, ALL_ENVS, reason="t", now=START, policy=QuarantinePolicy())
        await save_quarantine(rt.deps.engine, {x.test_key: x.id}, [muted])
        _, run_2 = await find_repository_run(rt.deps.engine, "acme", "shop", 2, 1)
        assert run_2 is not None
        await publish_check_run(rt.deps, repo, run_2)
        republished = checks.updates[-1][1]
    assert first["tests"] == 4  # never scored before
    # test_flaky and test_z retried in run 1 (evidence: re-scored wherever they run);
    # test_x failed in run 3.
    assert candidates == {
        (1, "test_flaky"),
        (1, "test_z"),
        (2, "test_flaky"),
        (3, "test_x"),
        (3, "test_z"),
    }
    assert second["tests"] == 1
    assert body.head_sha == "b" * 40
    assert "**4 tests**: 3 passed, 1 failed" in body.summary
    shown = body.summary + (body.text or "")
    assert "New failures (1)\n- `tests.test_shop::test_x`" in shown
    assert "Possibly flaky (2)" in shown
    assert "test_shop::test_z` — " in shown
    assert "test_ok" not in shown
    again = republished.summary
    assert "New failures" not in again
    assert "Known flaky (quarantined) (1)\n- `tests.test_shop::test_x`" in again
