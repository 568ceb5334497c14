"""`runs-ingest` keeps the test-case ids it learns per repository (`Deps.case_ids`)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from flakeguard.adapters.db.runs import CaseIdCaches
from flakeguard.adapters.db.tables import CaseRow, ExecutionRow, RepositoryRow, table_of
from flakeguard.adapters.queue.payloads import RepositoryRef, RunMetadata, RunsIngestPayload
from flakeguard.processors.runs_ingest import ingest
from tests.integration.test_analysis_flow import junit
from tests.support import make_settings, runtime_for, write_local_run

pytestmark = pytest.mark.integration


def _payload(run_id: int) -> RunsIngestPayload:
    return RunsIngestPayload(
        workflow_run_id=run_id,
        repository=RepositoryRef(owner="acme", repo="shop", installation_id=9),
        metadata=RunMetadata(run_attempt=1),
    )


async def test_later_runs_take_the_ids_learned_from_earlier_ones(
    queue_prefix: str, redis_url: str, pg_url: str, tmp_path: Path
) -> None:
    runs, reports = tmp_path / "runs", tmp_path / "xml"
    reports.mkdir()
    (reports / "1.xml").write_text(junit({"test_ok": "pass", "test_a": "fail"}))
    (reports / "2.xml").write_text(junit({"test_ok": "pass", "test_a": "fail", "test_b": "pass"}))
    for run_id in (1, 2):
        write_local_run(
            runs, owner="acme", repo="shop", run_id=run_id, jobs={"ci": [reports / f"{run_id}.xml"]}
        )
    settings = make_settings(
        redis_url=redis_url, database_url=pg_url, prefix=queue_prefix, data_dir=tmp_path
    )
    cases, executions = table_of(CaseRow), table_of(ExecutionRow)
    async with runtime_for(settings, runs_root=runs) as rt:
        first = await ingest(rt.deps, _payload(1))
        async with rt.deps.engine.connect() as conn:
            ids = dict((await conn.execute(select(cases.c.test_key, cases.c.id))).all())
            names = dict((await conn.execute(select(cases.c.name, cases.c.test_key))).all())
            repository_id = (await conn.execute(select(table_of(RepositoryRow).c.id))).scalar_one()
        cached = rt.deps.case_ids.for_repository(repository_id).ids
        assert {key: case_id for key, (case_id, _seen) in cached.items()} == ids
        assert len(ids) == 2
        # The second run takes cached ids without asking the database: proven by swapping
        # the two cached ids (fresh entries are trusted), which its rows then carry.
        ok_key, a_key = names["test_ok"], names["test_a"]
        cached[ok_key], cached[a_key] = cached[a_key], cached[ok_key]
        second = await ingest(rt.deps, _payload(2))
        async with rt.deps.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(executions.c.test_case_id, executions.c.outcome).where(
                        executions.c.workflow_run_id == second["workflowRunRowId"]
                    )
                )
            ).all()
            count = (await conn.execute(select(func.count()).select_from(cases))).scalar_one()
    assert first["created"]
    assert second["created"]
    assert count == 3  # test_b is new: looked up and inserted
    outcomes = dict(rows)
    assert len(outcomes) == 3
    # test_a failed and test_ok passed: each under the other's (swapped, cached) id.
    assert (outcomes[ids[ok_key]], outcomes[ids[a_key]]) == ("failed", "passed")


def test_the_caches_keep_the_most_recent_repositories_within_the_bound() -> None:
    caches = CaseIdCaches(max_entries=5)
    now = datetime.now(UTC)
    for repository_id in (1, 2, 3):
        caches.for_repository(repository_id).ids.update(
            {f"r{repository_id}t{i}": (i, now) for i in range(2)}
        )
    # 6 entries > 5: touching repository 2 drops the least recently used one, repository 1.
    assert caches.for_repository(2).repository_id == 2
    assert caches.for_repository(1).ids == {}  # dropped, starts empty
    assert len(caches.for_repository(3).ids) == 2
    # One repository alone over the bound is emptied rather than kept growing.
    big = caches.for_repository(4)
    big.ids.update({f"t{i}": (i, now) for i in range(9)})
    assert caches.for_repository(4).ids == {}
