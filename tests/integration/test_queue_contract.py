"""The queue contract end to end on the real Redis and PostgreSQL (issue 2 acceptance)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from bullmq import Job
from sqlalchemy import func, select

from flakeguard.adapters.db.tables import ExecutionRow, WorkflowRunRow
from flakeguard.adapters.queue.names import QueueName
from flakeguard.adapters.queue.payloads import (
    RepositoryRef,
    RunMetadata,
    RunsAnalyzePayload,
    RunsIngestPayload,
)
from flakeguard.adapters.queue.runner import (
    JobContext,
    QueueHandler,
    QueueRunner,
    RetryPolicy,
    WorkerOptions,
    _FetchingWorker,
)
from flakeguard.errors import TransientJobError
from tests.support import (
    FIXTURES,
    make_settings,
    running_workers,
    runtime_for,
    wait_for,
    write_local_run,
)

pytestmark = pytest.mark.integration

JUNIT = FIXTURES / "junit"


async def _count(runtime: Any, table: Any) -> int:
    async with runtime.deps.engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)) or 0)


async def _job(runtime: Any, queue: QueueName, job_id: str) -> Job:
    job = await Job.fromId(runtime.deps.producer.queues[queue], job_id)
    assert job is not None
    return job


async def test_node_style_camelcase_job_is_ingested_and_enqueues_analysis(
    queue_prefix: str, redis_url: str, pg_url: str, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    write_local_run(
        runs,
        owner="acme",
        repo="project",
        run_id=12345,
        jobs={"ubuntu": [JUNIT / "pytest/junit.fail.xml"]},
    )
    settings = make_settings(
        redis_url=redis_url, database_url=pg_url, prefix=queue_prefix, data_dir=tmp_path
    )
    async with runtime_for(settings, runs_root=runs) as rt:
        ingest_queue = rt.deps.producer.queues[QueueName.RUNS_INGEST]
        # Exactly what the spec's Node example writes: camelCase data, its own options.
        job = await ingest_queue.add(
            "process-run",
            {
                "workflowRunId": 12345,
                "repository": {"owner": "acme", "repo": "project", "installationId": 67890},
                "priority": "high",
            },
            {"priority": 2, "attempts": 3},
        )
        async with running_workers(rt, [QueueName.RUNS_INGEST]):

            async def done() -> bool:
                return bool(
                    await (await _job(rt, QueueName.RUNS_INGEST, str(job.id))).isCompleted()
                )

            await wait_for(done)
        finished = await _job(rt, QueueName.RUNS_INGEST, str(job.id))
        assert finished.returnvalue["created"] is True
        assert finished.returnvalue["cases"] > 0
        assert await _count(rt, WorkflowRunRow.__table__) == 1
        assert await _count(rt, ExecutionRow.__table__) == finished.returnvalue["executions"]
        analyze_counts = await rt.deps.producer.queues[QueueName.RUNS_ANALYZE].getJobCounts(
            "prioritized", "waiting"
        )
        assert sum(analyze_counts.values()) == 1
        analysis = await _job(rt, QueueName.RUNS_ANALYZE, finished.returnvalue["analysisJobId"])
        assert analysis.data["workflowRunId"] == 12345
        assert analysis.data["repository"]["owner"] == "acme"


async def test_duplicate_dedup_key_is_processed_once_and_reingest_adds_nothing(
    queue_prefix: str, redis_url: str, pg_url: str, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    write_local_run(
        runs, owner="acme", repo="dup", run_id=7, jobs={"linux": [JUNIT / "pytest/junit.fail.xml"]}
    )
    settings = make_settings(
        redis_url=redis_url, database_url=pg_url, prefix=queue_prefix, data_dir=tmp_path
    )
    payload = RunsIngestPayload(
        workflow_run_id=7,
        repository=RepositoryRef(owner="acme", repo="dup", installation_id=1),
        metadata=RunMetadata(run_attempt=1),
    )
    async with runtime_for(settings, runs_root=runs) as rt:
        first = await rt.deps.producer.ingest(payload)
        second = await rt.deps.producer.ingest(payload)
        assert not first.deduplicated
        assert second.deduplicated
        assert second.job_id == first.job_id
        queue = rt.deps.producer.queues[QueueName.RUNS_INGEST]
        async with running_workers(rt, [QueueName.RUNS_INGEST]):

            async def completed(n: int) -> bool:
                return int((await queue.getJobCounts("completed"))["completed"]) == n

            await wait_for(lambda: completed(1))
            executions = await _count(rt, ExecutionRow.__table__)
            # After completion the key is free: a late duplicate (webhook after polling) runs,
            # and storage recognises the run attempt, so no row is added.
            third = await rt.deps.producer.ingest(payload)
            assert not third.deduplicated
            await wait_for(lambda: completed(2))
        third_job = await _job(rt, QueueName.RUNS_INGEST, third.job_id)
        assert third_job.returnvalue["created"] is False
        assert await _count(rt, ExecutionRow.__table__) == executions
        assert await _count(rt, WorkflowRunRow.__table__) == 1


async def test_invalid_payload_fails_at_once_with_a_clear_reason(
    queue_prefix: str, redis_url: str, pg_url: str, tmp_path: Path
) -> None:
    settings = make_settings(
        redis_url=redis_url, database_url=pg_url, prefix=queue_prefix, data_dir=tmp_path
    )
    async with runtime_for(settings, runs_root=tmp_path) as rt:
        queue = rt.deps.producer.queues[QueueName.RUNS_INGEST]
        job = await queue.add(
            "process-run",
            {"workflowRunId": "not-a-number", "repository": {"owner": "a b", "repo": "x"}},
            {"priority": 3, "attempts": 3, "backoff": {"type": "fixed", "delay": 100}},
        )
        async with running_workers(rt, [QueueName.RUNS_INGEST]):

            async def failed() -> bool:
                return bool(await (await _job(rt, QueueName.RUNS_INGEST, str(job.id))).isFailed())

            await wait_for(failed)
        failed_job = await _job(rt, QueueName.RUNS_INGEST, str(job.id))
        assert failed_job.attemptsMade == 1  # never retried
        assert failed_job.failedReason.startswith("[validation] invalid runs-ingest payload")
        assert "workflowRunId" in failed_job.failedReason
        assert "repository.owner" in failed_job.failedReason


async def test_transient_failure_retries_three_times_with_growing_jittered_delays(
    queue_prefix: str, redis_url: str, pg_url: str, tmp_path: Path
) -> None:
    settings = make_settings(
        redis_url=redis_url, database_url=pg_url, prefix=queue_prefix, data_dir=tmp_path
    )
    attempts: list[float] = []

    async def always_fails(payload: RunsIngestPayload, ctx: JobContext) -> Mapping[str, Any] | None:
        attempts.append(time.monotonic())
        raise TransientJobError("GitHub is having a bad day")

    async with runtime_for(settings, runs_root=tmp_path) as rt:
        retry = RetryPolicy(base_delay_ms=300, max_delay_ms=700, multiplier=2, jitter=0.2)
        runner = QueueRunner(
            rt.redis_target,
            QueueHandler(QueueName.RUNS_INGEST, RunsIngestPayload, always_fails, concurrency=1),
            WorkerOptions(retry=retry, prefix=queue_prefix),
            rt.deps.metrics,
        )
        enqueued = await rt.deps.producer.ingest(
            RunsIngestPayload(workflow_run_id=1, repository=RepositoryRef(owner="a", repo="b"))
        )
        await runner.start()
        try:

            async def failed() -> bool:
                return bool(
                    await (await _job(rt, QueueName.RUNS_INGEST, enqueued.job_id)).isFailed()
                )

            await wait_for(failed)
        finally:
            await runner.close(5)
        job = await _job(rt, QueueName.RUNS_INGEST, enqueued.job_id)
        assert job.attemptsMade == 3
        assert job.failedReason == "[network] TransientJobError: GitHub is having a bad day"
        assert len(attempts) == 3
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        # Lower bounds only (a loaded machine may be late, never early): 300 ms x U(0.8, 1.2)
        # then 600 ms x U(0.8, 1.2) capped at 700 ms.
        assert gaps[0] >= 0.24
        assert gaps[1] >= 0.48
        retried = rt.deps.metrics.job_retries.labels("runs-ingest", "network")._value.get()
        assert retried == 3


async def test_dependency_outage_waits_without_using_attempts(
    queue_prefix: str, redis_url: str, pg_url: str, tmp_path: Path
) -> None:
    """A database outage longer than the retry budget must not send jobs to the DLQ."""
    settings = make_settings(
        redis_url=redis_url, database_url=pg_url, prefix=queue_prefix, data_dir=tmp_path
    )
    calls: list[float] = []

    async def database_down_three_times(
        payload: RunsIngestPayload, ctx: JobContext
    ) -> Mapping[str, Any] | None:
        calls.append(time.monotonic())
        if len(calls) <= 3:  # more failures than the job has attempts (2)
            raise OSError(111, "Connection refused") from ConnectionRefusedError()
        return {"ok": True}

    async with runtime_for(settings, runs_root=tmp_path) as rt:
        runner = QueueRunner(
            rt.redis_target,
            QueueHandler(QueueName.RUNS_INGEST, RunsIngestPayload, database_down_three_times, 1),
            WorkerOptions(
                retry=RetryPolicy(base_delay_ms=100, max_delay_ms=200), prefix=queue_prefix
            ),
            rt.deps.metrics,
        )
        queue = rt.deps.producer.queues[QueueName.RUNS_INGEST]
        job = await queue.add(
            "process-run",
            {"workflowRunId": 3, "repository": {"owner": "a", "repo": "b"}},
            {"priority": 3, "attempts": 2},
        )
        await runner.start()
        try:

            async def completed() -> bool:
                return bool(
                    await (await _job(rt, QueueName.RUNS_INGEST, str(job.id))).isCompleted()
                )

            await wait_for(completed)
        finally:
            await runner.close(5)
        done = await _job(rt, QueueName.RUNS_INGEST, str(job.id))
        assert done.returnvalue == {"ok": True}
        assert len(calls) == 4
        assert done.attemptsMade == 1  # three outages cost no attempt
        assert done.data["_outageRetries"] == 3


async def test_ingest_many_adds_in_one_round_trip_and_deduplicates_like_ingest(
    queue_prefix: str, redis_url: str, pg_url: str, tmp_path: Path
) -> None:
    """A poller's page goes in with `ingest_many`: a run already pending (added by a webhook)
    and a run listed twice each give one job; every payload gets its job's id."""
    settings = make_settings(
        redis_url=redis_url, database_url=pg_url, prefix=queue_prefix, data_dir=tmp_path
    )

    def payload(run_id: int) -> RunsIngestPayload:
        return RunsIngestPayload(
            workflow_run_id=run_id,
            repository=RepositoryRef(owner="acme", repo="bulk", installation_id=1),
            metadata=RunMetadata(run_attempt=1),
        )

    async with runtime_for(settings, runs_root=tmp_path) as rt:
        from_webhook = await rt.deps.producer.ingest(payload(2))
        ids = await rt.deps.producer.ingest_many(
            [payload(1), payload(2), payload(3), payload(1)], batch=3
        )
        queue = rt.deps.producer.queues[QueueName.RUNS_INGEST]
        jobs = await queue.getJobs(["waiting", "prioritized"], 0, -1)
    assert ids[1] == from_webhook.job_id
    assert ids[3] == ids[0]
    assert len(set(ids)) == 3
    assert sorted(job.data["workflowRunId"] for job in jobs) == [1, 2, 3]
    assert sorted(str(job.id) for job in jobs) == sorted(set(ids))


async def test_follow_up_analysis_deduplicates_like_analyze(
    queue_prefix: str, redis_url: str, pg_url: str, tmp_path: Path
) -> None:
    """The analysis an ingestion adds (one round trip) joins a pending one for the same run
    attempt, whichever way that one came, and returns its id."""
    settings = make_settings(
        redis_url=redis_url, database_url=pg_url, prefix=queue_prefix, data_dir=tmp_path
    )
    repo = RepositoryRef(owner="acme", repo="follow", installation_id=1)
    async with runtime_for(settings, runs_root=tmp_path) as rt:
        producer = rt.deps.producer
        from_api = await producer.analyze(RunsAnalyzePayload(workflow_run_id=7, repository=repo))
        again = await producer.follow_up_analysis(
            RunsAnalyzePayload(workflow_run_id=7, repository=repo)
        )
        first = await producer.follow_up_analysis(
            RunsAnalyzePayload(workflow_run_id=8, repository=repo, run_attempt=2)
        )
        second = await producer.follow_up_analysis(
            RunsAnalyzePayload(workflow_run_id=8, repository=repo, run_attempt=2)
        )
        other_attempt = await producer.follow_up_analysis(
            RunsAnalyzePayload(workflow_run_id=8, repository=repo, run_attempt=3)
        )
        jobs = await producer.queues[QueueName.RUNS_ANALYZE].getJobs(
            ["waiting", "prioritized"], 0, -1
        )
    assert again == from_api.job_id
    assert second == first
    assert len({from_api.job_id, first, other_attempt}) == 3
    assert sorted(str(job.id) for job in jobs) == sorted({from_api.job_id, first, other_attempt})


async def test_a_worker_takes_the_next_job_as_it_completes_one(
    queue_prefix: str,
    redis_url: str,
    pg_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Five waiting jobs, one slot: each completion brings the next job back in the same
    round trip (BullMQ's fetchNext), so only the first job costs a `moveToActive`; all five
    complete, in order, each once."""
    settings = make_settings(
        redis_url=redis_url, database_url=pg_url, prefix=queue_prefix, data_dir=tmp_path
    )
    fetches: list[str] = []
    to_active = _FetchingWorker.moveToActive

    async def counted(self: Any, token: str) -> Any:
        fetches.append(token)
        return await to_active(self, token)

    monkeypatch.setattr(_FetchingWorker, "moveToActive", counted)
    seen: list[tuple[int, int]] = []  # (run id, moveToActive calls so far)

    async def record(payload: RunsIngestPayload, ctx: JobContext) -> Mapping[str, Any] | None:
        seen.append((payload.workflow_run_id, len(fetches)))
        return {"run": payload.workflow_run_id}

    async with runtime_for(settings, runs_root=tmp_path) as rt:
        repo = RepositoryRef(owner="acme", repo="fetch")
        ids = await rt.deps.producer.ingest_many(
            [RunsIngestPayload(workflow_run_id=run_id, repository=repo) for run_id in range(1, 6)]
        )
        runner = QueueRunner(
            rt.redis_target,
            QueueHandler(QueueName.RUNS_INGEST, RunsIngestPayload, record, concurrency=1),
            WorkerOptions(prefix=queue_prefix),
            rt.deps.metrics,
        )
        queue = rt.deps.producer.queues[QueueName.RUNS_INGEST]
        await runner.start()
        try:

            async def all_done() -> bool:
                return int((await queue.getJobCounts("completed"))["completed"]) == 5

            await wait_for(all_done)
        finally:
            await runner.close(5)
        jobs = [await _job(rt, QueueName.RUNS_INGEST, job_id) for job_id in ids]
    # One moveToActive brought the first job; the other four came with a completion (one
    # round trip per job would have made it 1, 2, 3, 4, 5).
    assert seen == [(1, 1), (2, 1), (3, 1), (4, 1), (5, 1)]
    assert [job.returnvalue for job in jobs] == [{"run": n} for n in range(1, 6)]
