"""The dead-letter queue mechanism (issue 6 item 2) on the real Redis: `QueueAdmin`."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from flakeguard.adapters.queue.admin import (
    MS_PER_DAY,
    CleanableState,
    JobNotFound,
    JobState,
    JobStateConflict,
    QueueAdmin,
    error_category,
)
from flakeguard.adapters.queue.names import QueueName
from flakeguard.adapters.queue.payloads import RepositoryRef, RunMetadata, RunsIngestPayload
from flakeguard.adapters.queue.runner import JobContext, QueueHandler, QueueRunner, WorkerOptions
from flakeguard.bootstrap import Runtime
from flakeguard.errors import ErrorCategory, PermanentJobError
from flakeguard.settings import Settings
from tests.support import make_settings, runtime_for, wait_for

pytestmark = pytest.mark.integration

INGEST = QueueName.RUNS_INGEST


class ScriptedHandler:
    """Fails each job its first `failures` times (poisoned input: no automatic retry), then
    succeeds; `failures=None` fails forever. Counts calls per job id."""

    def __init__(self, failures: int | None) -> None:
        self.failures = failures
        self.calls: Counter[str] = Counter()

    async def handle(self, payload: RunsIngestPayload, ctx: JobContext) -> Mapping[str, Any]:
        self.calls[ctx.job_id] += 1
        if self.failures is None or self.calls[ctx.job_id] <= self.failures:
            raise PermanentJobError(
                f"run {payload.workflow_run_id}: poisoned artifact",
                category=ErrorCategory.POISONED_INPUT,
            )
        return {"run": payload.workflow_run_id}


@asynccontextmanager
async def ingest_worker(rt: Runtime, handler: ScriptedHandler) -> AsyncIterator[QueueRunner[Any]]:
    """A real BullMQ worker on runs-ingest running `handler` (closed on exit)."""
    runner: QueueRunner[Any] = QueueRunner(
        rt.redis_target,
        QueueHandler(INGEST, RunsIngestPayload, handler.handle, concurrency=2),
        WorkerOptions(prefix=rt.deps.settings.queue_prefix),
        rt.deps.metrics,
    )
    await runner.start()
    try:
        yield runner
    finally:
        await runner.close(10)


def ingest_payload(run_id: int) -> RunsIngestPayload:
    return RunsIngestPayload(
        workflow_run_id=run_id,
        repository=RepositoryRef(owner="acme", repo="dlq", installation_id=7),
        metadata=RunMetadata(run_attempt=1),
    )


async def count(rt: Runtime, state: str, queue: QueueName = INGEST) -> int:
    counts = await rt.deps.producer.queues[queue].getJobCounts(state)
    return int(counts.get(state, 0))


async def fail_jobs(rt: Runtime, run_ids: range) -> list[str]:
    """Enqueue one ingest job per run id and let a worker fail each at once (and any other
    job waiting in the queue); returns the new ids."""
    ids = [(await rt.deps.producer.ingest(ingest_payload(run_id))).job_id for run_id in run_ids]
    bull = rt.deps.producer.queues[INGEST]
    async with ingest_worker(rt, ScriptedHandler(failures=None)):

        async def all_failed() -> bool:
            states = [await bull.getJobState(job_id) for job_id in ids]
            return states == ["failed"] * len(ids)

        await wait_for(all_failed)
    return ids


def settings_for(queue_prefix: str, redis_url: str, sqlite_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        redis_url=redis_url, database_url=sqlite_url, prefix=queue_prefix, data_dir=tmp_path
    )


def test_error_category_reads_the_prefix_only() -> None:
    assert error_category("[network] TransientJobError: boom") == "network"
    assert error_category("[rate_limit] wait") == "rate_limit"
    assert error_category("plain failure [network]") is None
    assert error_category(None) is None
    assert error_category("") is None


async def test_stats_count_prioritized_as_waiting_and_show_pause(
    queue_prefix: str, redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    async with runtime_for(settings_for(queue_prefix, redis_url, sqlite_url, tmp_path)) as rt:
        admin = QueueAdmin(rt.deps.producer.queues)
        for run_id in (1, 2, 3):
            await rt.deps.producer.ingest(ingest_payload(run_id))
        # A Node producer's job without priority lands in `wait`, ours in `prioritized`.
        await rt.deps.producer.queues[INGEST].add("process-run", {"workflowRunId": 9})
        stats = await admin.stats(INGEST)
        assert (stats.waiting, stats.active, stats.failed, stats.paused) == (4, 0, 0, False)
        assert (await admin.pause(INGEST)).paused is True
        assert (await admin.stats(INGEST)).paused is True
        assert (await admin.stats(QueueName.POLLING)).paused is False
        resumed = await admin.resume(INGEST)
        assert resumed.paused is False
        assert resumed.waiting == 4


async def test_failed_jobs_listed_newest_first_with_reason_category_stack_and_pages(
    queue_prefix: str, redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    async with runtime_for(settings_for(queue_prefix, redis_url, sqlite_url, tmp_path)) as rt:
        admin = QueueAdmin(rt.deps.producer.queues)
        ids = await fail_jobs(rt, range(100, 105))
        first = await admin.failed(INGEST, start=0, limit=2)
        second = await admin.failed(INGEST, start=2, limit=2)
        last = await admin.failed(INGEST, start=4, limit=2)
        beyond = await admin.failed(INGEST, start=10, limit=2)
        assert (first.total, len(first.jobs), len(second.jobs), len(last.jobs)) == (5, 2, 2, 1)
        assert beyond.jobs == ()
        listed = [j.job_id for page in (first, second, last) for j in page.jobs]
        assert sorted(listed) == sorted(ids)
        finished = [j.finished_at_ms or 0 for page in (first, second, last) for j in page.jobs]
        assert finished == sorted(finished, reverse=True)
        job = first.jobs[0]
        assert job.state is JobState.FAILED
        assert job.error_category == "poisoned_input"
        assert job.failed_reason is not None
        assert job.failed_reason.startswith("[poisoned_input] run 10")
        assert job.stacktrace
        assert "Error" in job.stacktrace[0]
        assert (job.attempts_made, job.max_attempts) == (1, 3)
        assert job.data["repository"] == {"owner": "acme", "repo": "dlq", "installationId": 7}
        assert job.processed_at_ms is not None
        assert job.finished_at_ms is not None
        assert job.created_at_ms <= job.processed_at_ms <= job.finished_at_ms
        with pytest.raises(ValueError, match="limit"):
            await admin.failed(INGEST, start=0, limit=0)


async def test_job_lookup_in_any_state_and_bullmq_keys_are_not_jobs(
    queue_prefix: str, redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    async with runtime_for(settings_for(queue_prefix, redis_url, sqlite_url, tmp_path)) as rt:
        admin = QueueAdmin(rt.deps.producer.queues)
        enqueued = await rt.deps.producer.ingest(ingest_payload(1))
        await rt.deps.producer.queues[INGEST].pause()  # creates the `meta` hash
        job = await admin.job(INGEST, enqueued.job_id)
        assert job.state is JobState.PRIORITIZED
        assert job.data["workflowRunId"] == 1
        assert job.failed_reason is None
        assert job.error_category is None
        # Ids that name BullMQ's own keys (hash, stream, string, list) are "not found".
        for bogus in ("meta", "events", "id", f"{enqueued.job_id}:logs", "missing", "x" * 300):
            with pytest.raises(JobNotFound):
                await admin.job(INGEST, bogus)
        with pytest.raises(JobNotFound):
            await admin.job(QueueName.POLLING, enqueued.job_id)


async def test_retry_moves_a_failed_job_back_and_a_worker_completes_it(
    queue_prefix: str, redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    async with runtime_for(settings_for(queue_prefix, redis_url, sqlite_url, tmp_path)) as rt:
        admin = QueueAdmin(rt.deps.producer.queues)
        handler = ScriptedHandler(failures=1)
        job_id = (await rt.deps.producer.ingest(ingest_payload(42))).job_id
        async with ingest_worker(rt, handler):

            async def state_is(state: JobState) -> bool:
                return (await admin.job(INGEST, job_id)).state is state

            await wait_for(lambda: state_is(JobState.FAILED))
            retried = await admin.retry(INGEST, job_id)
            # Attempts reset: the operator's retry gets the full budget again.
            assert retried.attempts_made == 0
            assert retried.failed_reason is None
            await wait_for(lambda: state_is(JobState.COMPLETED))
        done = await admin.job(INGEST, job_id)
        assert handler.calls[job_id] == 2
        assert done.return_value == {"run": 42}
        assert done.attempts_made == 1
        assert await count(rt, "failed") == 0


async def test_retry_and_delete_refuse_jobs_that_are_not_failed_or_do_not_exist(
    queue_prefix: str, redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    async with runtime_for(settings_for(queue_prefix, redis_url, sqlite_url, tmp_path)) as rt:
        admin = QueueAdmin(rt.deps.producer.queues)
        waiting = (await rt.deps.producer.ingest(ingest_payload(5))).job_id
        with pytest.raises(JobStateConflict, match="is prioritized, not failed") as conflict:
            await admin.retry(INGEST, waiting)
        assert conflict.value.state == "prioritized"
        with pytest.raises(JobStateConflict):
            await admin.delete_failed(INGEST, waiting)
        with pytest.raises(JobNotFound, match="not found in queue runs-ingest"):
            await admin.retry(INGEST, "424242")
        with pytest.raises(JobNotFound):
            await admin.delete_failed(INGEST, "424242")
        assert (await admin.job(INGEST, waiting)).state is JobState.PRIORITIZED


async def test_retry_all_failed_counts_and_reprocesses_and_delete_removes_one(
    queue_prefix: str, redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    async with runtime_for(settings_for(queue_prefix, redis_url, sqlite_url, tmp_path)) as rt:
        admin = QueueAdmin(rt.deps.producer.queues)
        ids = await fail_jobs(rt, range(1, 5))
        await admin.delete_failed(INGEST, ids[0])
        with pytest.raises(JobNotFound):
            await admin.job(INGEST, ids[0])
        assert await count(rt, "failed") == 3
        assert await admin.retry_all_failed(INGEST) == 3
        assert await count(rt, "failed") == 0
        assert (await admin.stats(INGEST)).waiting == 3
        assert await admin.retry_all_failed(INGEST) == 0
        handler = ScriptedHandler(failures=0)
        async with ingest_worker(rt, handler):

            async def all_completed() -> bool:
                return await count(rt, "completed") == 3

            await wait_for(all_completed)
        assert sorted(handler.calls) == sorted(ids[1:])


async def test_clean_removes_finished_jobs_older_than_grace_within_limit(
    queue_prefix: str, redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    async with runtime_for(settings_for(queue_prefix, redis_url, sqlite_url, tmp_path)) as rt:
        admin = QueueAdmin(rt.deps.producer.queues)
        ids = await fail_jobs(rt, range(1, 5))
        # They all failed moments ago: a one-hour grace keeps every one.
        assert await admin.clean(INGEST, CleanableState.FAILED, grace_ms=3_600_000, limit=10) == ()
        assert await admin.clean(INGEST, CleanableState.COMPLETED, grace_ms=0, limit=10) == ()
        removed = await admin.clean(INGEST, CleanableState.FAILED, grace_ms=0, limit=3)
        assert len(removed) == 3
        assert set(removed) <= set(ids)
        assert await count(rt, "failed") == 1
        with pytest.raises(ValueError, match="limit"):
            await admin.clean(INGEST, CleanableState.FAILED, grace_ms=0, limit=0)


async def test_retention_drops_old_failures_then_keeps_the_newest(
    queue_prefix: str, redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    async with runtime_for(settings_for(queue_prefix, redis_url, sqlite_url, tmp_path)) as rt:
        admin = QueueAdmin(rt.deps.producer.queues)
        ids = await fail_jobs(rt, range(1, 7))
        # Age two failures past the 14-day limit, the way BullMQ records a failure time.
        redis = rt.state.redis
        bull = rt.deps.producer.queues[INGEST]
        old_ms = int((await admin.job(INGEST, ids[0])).finished_at_ms or 0) - 20 * MS_PER_DAY
        for job_id in ids[:2]:
            await redis.hset(bull.toKey(job_id), "finishedOn", old_ms)
            await redis.zadd(bull.toKey("failed"), {job_id: old_ms})
        newest = [j.job_id for j in (await admin.failed(INGEST, limit=2)).jobs]
        result = await admin.apply_retention(INGEST, max_age_days=14, keep=2)
        assert (result.removed_by_age, result.removed_by_count) == (2, 2)
        remaining = await admin.failed(INGEST, limit=10)
        assert remaining.total == 2
        assert [j.job_id for j in remaining.jobs] == newest
        for job_id in ids[:2]:
            with pytest.raises(JobNotFound):
                await admin.job(INGEST, job_id)
        again = await admin.apply_retention(INGEST, max_age_days=14, keep=2)
        assert (again.removed_by_age, again.removed_by_count) == (0, 0)
