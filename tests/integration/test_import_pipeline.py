"""`import_all` parses the next run while the current one is written, in manifest order."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from flakeguard.adapters.db.engine import migrate
from flakeguard.adapters.db.runs import ParsedReport
from flakeguard.adapters.db.tables import (
    CaseRow,
    ExecutionRow,
    ReportRow,
    WorkflowRunRow,
    table_of,
)
from flakeguard.core.models import ReportProblem
from flakeguard.database import open_database
from flakeguard.processors import imports
from flakeguard.processors.imports import ImportOutcome, ImportSpec, import_all
from tests.integration.test_analysis_flow import junit
from tests.support import make_settings

pytestmark = pytest.mark.integration


def _specs(folder: Path) -> list[ImportSpec]:
    folder.mkdir()
    (folder / "ok.xml").write_text(junit({"test_a": "pass", "test_b": "fail"}))
    # Cut in the closing tags: both testcases are complete.
    (folder / "truncated.xml").write_text(junit({"test_c": "pass", "test_d": "pass"})[:-20])
    (folder / "not-junit.xml").write_text("<html><body>502 Bad Gateway</body></html>")
    paths = [
        ["ok.xml"],
        ["ok.xml", "not-junit.xml"],  # one bad file beside a good one
        ["missing.xml"],  # nothing there: recorded, nothing stored
        ["truncated.xml"],  # the complete cases of a cut file are kept
        ["ok.xml"],
    ]
    return [
        ImportSpec(
            repo="acme/shop", run_id=100 + i, sha=f"{i:040x}", paths=[folder / p for p in ps]
        )
        for i, ps in enumerate(paths)
    ]


async def test_runs_are_stored_in_order_with_their_problems(
    tmp_path: Path, pg_url: str, redis_url: str, queue_prefix: str
) -> None:
    specs = _specs(tmp_path / "xml")
    settings = make_settings(
        redis_url=redis_url, database_url=pg_url, prefix=queue_prefix, data_dir=tmp_path
    )
    seen: list[tuple[int, int]] = []

    def progress(spec: ImportSpec, outcome: ImportOutcome) -> None:
        seen.append((spec.run_id, outcome.executions))

    async with open_database(settings) as engine:
        await migrate(engine)
        outcome = await import_all(engine, iter(specs), lambda: datetime.now(UTC), progress)
        runs, executions = table_of(WorkflowRunRow), table_of(ExecutionRow)
        async with engine.connect() as conn:
            stored = dict((await conn.execute(select(runs.c.run_id, runs.c.executions))).all())
            total = len((await conn.execute(select(executions.c.test_case_id))).all())
    assert [run_id for run_id, _ in seen] == [100, 101, 102, 103, 104]
    assert [executions for _, executions in seen] == [2, 4, 4, 6, 8]  # cumulative
    assert stored == {100: 2, 101: 2, 102: 0, 103: 2, 104: 2}
    assert total == 8
    assert (outcome.runs, outcome.created, outcome.executions) == (5, 5, 8)
    reasons = sorted(p.source.rsplit("/", 1)[-1] for p in outcome.problems)
    assert reasons == ["missing.xml", "missing.xml", "not-junit.xml", "truncated.xml"]


async def test_a_failing_import_leaves_no_parsing_behind(
    tmp_path: Path,
    pg_url: str,
    redis_url: str,
    queue_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    specs = _specs(tmp_path / "xml")
    settings = make_settings(
        redis_url=redis_url, database_url=pg_url, prefix=queue_prefix, data_dir=tmp_path
    )
    parse_ahead = imports._parse_ahead
    stuck: list[asyncio.Task[object]] = []
    parsing_102 = asyncio.Event()

    async def slow_for_102(spec: ImportSpec) -> list[tuple[str, ParsedReport | ReportProblem]]:
        if spec.run_id == 102:
            stuck.append(asyncio.current_task())  # type: ignore[arg-type]
            parsing_102.set()
            await asyncio.Event().wait()  # a parse that would never end
        return await parse_ahead(spec)

    monkeypatch.setattr(imports, "_parse_ahead", slow_for_102)
    import_run = imports.import_run

    async def failing_101(*args: Any, **kwargs: Any) -> tuple[bool, int, int, list[ReportProblem]]:
        if args[1].run_id == 101:
            await parsing_102.wait()  # 102 is being parsed ahead
            raise RuntimeError("database went away")  # writing 101 fails
        return await import_run(*args, **kwargs)

    monkeypatch.setattr(imports, "import_run", failing_101)
    async with open_database(settings) as engine:
        await migrate(engine)
        with pytest.raises(RuntimeError, match="database went away"):
            await import_all(engine, iter(specs), lambda: datetime.now(UTC))
    assert len(stuck) == 1
    assert stuck[0].cancelled()


_ATTEMPTS_XML = """<?xml version="1.0" encoding="UTF-8"?>
<testsuite name="s" tests="6">
  <testcase classname="c" name="passes" time="0.5"/>
  <testcase classname="c" name="fails" time="0.25">
    <failure message="m" type="T">x</failure>
  </testcase>
  <testcase classname="c" name="errs" time="0.125"><error message="e" type="E">y</error></testcase>
  <testcase classname="c" name="skipped"><skipped/></testcase>
  <testcase classname="c" name="flaky" time="2.0">
    <flakyFailure message="timeout" type="Timeout"><stackTrace>at a</stackTrace></flakyFailure>
    <flakyError message="boom" type="Boom"><stackTrace>at b</stackTrace></flakyError>
  </testcase>
  <testcase classname="c" name="flaky_failing" time="1.0">
    <failure message="m" type="T">z</failure>
    <rerunFailure message="m2" type="T"><stackTrace>at c</stackTrace></rerunFailure>
  </testcase>
</testsuite>
"""


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
async def test_every_attempt_is_stored_with_its_index_and_the_final_one_marked(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, redis_url: str, queue_prefix: str
) -> None:
    """The rows `store_run` builds (one per attempt; single-attempt cases take a shorter
    path) and the report's counts, which the infrastructure-outage filter reads."""
    report = tmp_path / "attempts.xml"
    report.write_text(_ATTEMPTS_XML)
    spec = ImportSpec(repo="acme/shop", run_id=7, sha="f" * 40, paths=[report])
    url = request.getfixturevalue("pg_url" if backend == "postgresql" else "sqlite_url")
    settings = make_settings(
        redis_url=redis_url, database_url=url, prefix=queue_prefix, data_dir=tmp_path
    )
    async with open_database(settings) as engine:
        await migrate(engine)
        await import_all(engine, iter([spec]), lambda: datetime.now(UTC))
        e, c, r = table_of(ExecutionRow), table_of(CaseRow), table_of(ReportRow)
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        c.c.name,
                        e.c.retry_index,
                        e.c.is_final,
                        e.c.outcome,
                        e.c.duration_s,
                        e.c.failure_type,
                    )
                    .join(c, c.c.id == e.c.test_case_id)
                    .order_by(c.c.name, e.c.retry_index)
                )
            ).all()
            counts = (await conn.execute(select(r.c.cases, r.c.failed, r.c.failed_share))).one()
    assert [tuple(row) for row in rows] == [
        ("errs", 0, True, "error", 0.125, "E"),
        ("fails", 0, True, "failed", 0.25, "T"),
        ("flaky", 0, False, "failed", None, "Timeout"),
        ("flaky", 1, False, "error", None, "Boom"),
        ("flaky", 2, True, "passed", 2.0, None),
        ("flaky_failing", 0, False, "failed", 1.0, "T"),  # the element's own failure first
        ("flaky_failing", 1, True, "failed", None, "T"),
        ("passes", 0, True, "passed", 0.5, None),
        ("skipped", 0, True, "skipped", None, None),
    ]
    # Six cases; five ran (the skipped one did not); two finally failed (errs, fails) and one
    # finally failed after a rerun (flaky_failing).
    assert tuple(counts) == (6, 3, 0.6)
