"""Stalled-job recovery after kill -9, and regressions for notes/bullmq.md's defects."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from bullmq import Job

from flakeguard.adapters.queue.connection import SOCKET_TIMEOUT_S, target_from_url
from flakeguard.adapters.queue.names import QueueName
from flakeguard.adapters.queue.payloads import RepositoryRef, RunsIngestPayload
from flakeguard.adapters.queue.producer import JobPolicy, JobProducer
from flakeguard.adapters.queue.runner import (
    JobContext,
    QueueHandler,
    QueueRunner,
    RetryPolicy,
    WorkerOptions,
)
from flakeguard.errors import TransientJobError
from flakeguard.observability import Metrics
from tests.support import wait_for

pytestmark = pytest.mark.integration
HERE = Path(__file__).parent


def _payload(run_id: int = 1) -> RunsIngestPayload:
    return RunsIngestPayload(workflow_run_id=run_id, repository=RepositoryRef(owner="o", repo="r"))


async def test_kill_9_mid_job_is_recovered_by_another_worker(
    queue_prefix: str, redis_url: str, tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    producer = JobProducer(target_from_url(redis_url), JobPolicy(prefix=queue_prefix))
    child = subprocess.Popen(
        [sys.executable, str(HERE / "stall_worker.py"), redis_url, queue_prefix, str(marker)],
        env={**os.environ, "PYTHONPATH": str(HERE.parents[1] / "src")},
    )
    rescued: list[str] = []

    async def finish(payload: RunsIngestPayload, ctx: JobContext) -> Mapping[str, Any] | None:
        rescued.append(ctx.job_id)
        return {"rescued": True}

    rescuer = QueueRunner(
        target_from_url(redis_url),
        QueueHandler(QueueName.RUNS_INGEST, RunsIngestPayload, finish, concurrency=1),
        WorkerOptions(lock_duration_ms=2000, stalled_interval_ms=1000, prefix=queue_prefix),
        Metrics(),
    )
    try:
        enqueued = await producer.ingest(_payload())

        async def started() -> bool:
            return marker.exists()

        await wait_for(started, timeout_s=30)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        await rescuer.start()
        queue = producer.queues[QueueName.RUNS_INGEST]

        async def completed() -> bool:
            job = await Job.fromId(queue, enqueued.job_id)
            return job is not None and await job.isCompleted()

        await wait_for(completed, timeout_s=30)
        job = await Job.fromId(queue, enqueued.job_id)
        assert job is not None
        assert job.returnvalue == {"rescued": True}
        assert rescued == [enqueued.job_id]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        await rescuer.close(5)
        await producer.close()


async def test_worker_factory_applies_the_bullmq_fixes(queue_prefix: str, redis_url: str) -> None:
    """D1 socket timeout > 10 s, D2 sub-second blocking enabled, D3 drainDelay=1, locks."""

    async def noop(payload: RunsIngestPayload, ctx: JobContext) -> Mapping[str, Any] | None:
        return None

    runner = QueueRunner(
        target_from_url(redis_url),
        QueueHandler(QueueName.RUNS_INGEST, RunsIngestPayload, noop, concurrency=2),
        WorkerOptions(prefix=queue_prefix),
        Metrics(),
    )
    await runner.start()
    try:
        worker = runner.worker
        kwargs = worker.blockingRedisConnection.conn.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == SOCKET_TIMEOUT_S > 10
        assert worker.blockingRedisConnection.capabilities["canDoubleTimeout"] is True
        assert worker.redisConnection.capabilities["canDoubleTimeout"] is True
        assert worker.opts["drainDelay"] == 1
        assert worker.opts["lockDuration"] == 10_000
        assert worker.opts["stalledInterval"] == 5_000
        assert worker.opts["lockRenewTime"] == 2_500  # renewals survive a starved loop
        assert worker.opts["maxStalledCount"] == 2
        assert callable(worker.opts["settings"]["backoffStrategy"])
    finally:
        await runner.close(5)


async def test_five_second_backoff_retries_on_an_idle_worker(
    queue_prefix: str, redis_url: str
) -> None:
    """notes/bullmq.md D1: with redis-py's 5 s socket timeout a 5 s backoff never retried.

    The bound is loose on purpose (the defect shows as > 25 s, never as 12 s).
    """
    producer = JobProducer(target_from_url(redis_url), JobPolicy(prefix=queue_prefix))
    seen: list[float] = []

    async def fail_once(payload: RunsIngestPayload, ctx: JobContext) -> Mapping[str, Any] | None:
        seen.append(time.monotonic())
        if len(seen) == 1:
            raise TransientJobError("first attempt fails")
        return None

    runner = QueueRunner(
        target_from_url(redis_url),
        QueueHandler(QueueName.RUNS_INGEST, RunsIngestPayload, fail_once, concurrency=1),
        WorkerOptions(prefix=queue_prefix, retry=RetryPolicy(base_delay_ms=5000, jitter=0.0)),
        Metrics(),
    )
    await runner.start()
    try:
        await producer.ingest(_payload(2))

        async def twice() -> bool:
            return len(seen) >= 2

        await wait_for(twice, timeout_s=12.5)
        assert seen[1] - seen[0] >= 4.9
    finally:
        await runner.close(5)
        await producer.close()
