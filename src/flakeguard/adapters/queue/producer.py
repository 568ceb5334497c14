"""Enqueue jobs with the queue contract of DESIGN.md §5 applied in one place."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bullmq import Queue

from flakeguard.adapters.queue.connection import RedisTarget
from flakeguard.adapters.queue.names import (
    ALL_QUEUES,
    PRIORITY_NUMBERS,
    QueueName,
    redis_queue_name,
)
from flakeguard.adapters.queue.payloads import (
    Payload,
    PollingPayload,
    RecomputePayload,
    RunsAnalyzePayload,
    RunsIngestPayload,
)
from flakeguard.core.models import Priority

JITTERED_BACKOFF = "jittered-exponential"
"""Our backoff type; the worker factory registers its strategy (BullMQ has no jitter)."""


@dataclass(frozen=True, slots=True)
class JobPolicy:
    attempts: int = 3
    retry_delay_ms: int = 5000
    keep_completed: int = 100
    keep_failed: int = 50
    keep_failed_age_s: int = 14 * 86400
    prefix: str = "bull"


@dataclass(frozen=True, slots=True)
class Enqueued:
    job_id: str
    queue: QueueName
    deduplicated: bool


_JOB_NAMES: dict[QueueName, str] = {
    QueueName.RUNS_INGEST: "process-run",
    QueueName.RUNS_ANALYZE: "analyze-run",
    QueueName.TESTS_RECOMPUTE: "recompute-tests",
    QueueName.POLLING: "poll",
}


class JobProducer:
    """Owns one BullMQ `Queue` per queue name; every enqueue goes through here."""

    def __init__(self, target: RedisTarget, policy: JobPolicy) -> None:
        self._policy = policy
        self._cluster = target.is_cluster
        connection = target.bullmq_connection()
        self.queues: Mapping[QueueName, Queue] = {
            q: Queue(
                redis_queue_name(q, cluster=self._cluster),
                {"connection": connection, "prefix": policy.prefix},
            )
            for q in ALL_QUEUES
        }

    async def close(self) -> None:
        for queue in self.queues.values():
            await queue.close()

    def job_options(self, priority: Priority, dedup_id: str | None) -> dict[str, Any]:
        p = self._policy
        opts: dict[str, Any] = {
            "priority": PRIORITY_NUMBERS[priority],
            "attempts": p.attempts,
            "backoff": {"type": JITTERED_BACKOFF, "delay": p.retry_delay_ms},
            "removeOnComplete": {"count": p.keep_completed},
            "removeOnFail": {"count": p.keep_failed, "age": p.keep_failed_age_s},
        }
        if dedup_id is not None:
            opts["deduplication"] = {"id": dedup_id}
        return opts

    async def enqueue(
        self, queue: QueueName, payload: Payload, *, priority: Priority, dedup_id: str | None
    ) -> Enqueued:
        """Add a job; with a dedup id, a job already pending for it is returned instead."""
        bull_queue = self.queues[queue]
        existing = None
        if dedup_id is not None:
            # BullMQ answers a deduplicated add with the pending job's id, so look first to
            # tell the caller whether this call created a job.
            existing = await bull_queue.getDeduplicationJobId(dedup_id)
        job = await bull_queue.add(
            _JOB_NAMES[queue], payload.to_job_data(), self.job_options(priority, dedup_id)
        )
        deduplicated = existing is not None and str(existing) == str(job.id)
        return Enqueued(job_id=str(job.id), queue=queue, deduplicated=deduplicated)

    async def ingest(self, payload: RunsIngestPayload) -> Enqueued:
        return await self.enqueue(
            QueueName.RUNS_INGEST, payload, priority=payload.priority, dedup_id=payload.dedup_key()
        )

    async def ingest_many(
        self, payloads: Sequence[RunsIngestPayload], batch: int = 100
    ) -> list[str]:
        """Add `runs-ingest` jobs in batches, each batch one MULTI/EXEC round trip
        (`Queue.addBulk`); returns the job ids, a pending job's id for a payload whose dedup
        key it holds (deduplication works as in `ingest`).

        For a poller's page of runs: one `ingest` per run is two round trips, each resumed
        only when the worker's busy event loop comes back to it. Enqueued one by one, the
        bench's pollers fed `runs-ingest` no faster than it drained (its queue held 0-1 jobs
        with 5-7 of 16 slots busy).
        """
        queue = self.queues[QueueName.RUNS_INGEST]
        name = _JOB_NAMES[QueueName.RUNS_INGEST]
        ids: list[str] = []
        for start in range(0, len(payloads), batch):
            jobs = await queue.addBulk(
                [
                    {
                        "name": name,
                        "data": p.to_job_data(),
                        "opts": self.job_options(p.priority, p.dedup_key()),
                    }
                    for p in payloads[start : start + batch]
                ]
            )
            ids.extend(str(job.id) for job in jobs)
        return ids

    async def analyze(self, payload: RunsAnalyzePayload) -> Enqueued:
        return await self.enqueue(
            QueueName.RUNS_ANALYZE, payload, priority=payload.priority, dedup_id=payload.dedup_key()
        )

    async def follow_up_analysis(self, payload: RunsAnalyzePayload) -> str:
        """Add the analysis that follows an ingestion, deduplicated as `analyze` does;
        returns the job id (a pending job's, when one holds the dedup key).

        One round trip: whether the add was deduplicated is not looked up first, as
        `analyze` does for the callers that report it (API, CLI, webhooks).
        """
        job = await self.queues[QueueName.RUNS_ANALYZE].add(
            _JOB_NAMES[QueueName.RUNS_ANALYZE],
            payload.to_job_data(),
            self.job_options(payload.priority, payload.dedup_key()),
        )
        return str(job.id)

    async def recompute(self, payload: RecomputePayload, dedup_id: str | None = None) -> Enqueued:
        return await self.enqueue(
            QueueName.TESTS_RECOMPUTE,
            payload,
            priority=payload.priority,
            dedup_id=dedup_id or payload.dedup_key(),
        )

    async def poll(self, payload: PollingPayload, *, priority: Priority = Priority.LOW) -> Enqueued:
        return await self.enqueue(QueueName.POLLING, payload, priority=priority, dedup_id=None)

    async def schedule(
        self,
        queue: QueueName,
        scheduler_id: str,
        every_ms: int,
        payload: Payload,
        priority: Priority,
    ) -> None:
        """Create or update a repeating job (BullMQ job scheduler); re-upserting keeps one."""
        await self.queues[queue].upsertJobScheduler(
            scheduler_id,
            {"every": every_ms},
            _JOB_NAMES[queue],
            payload.to_job_data(),
            {
                "priority": PRIORITY_NUMBERS[priority],
                "attempts": 1,
                "removeOnComplete": {"count": 10},
                "removeOnFail": {"count": self._policy.keep_failed},
            },
        )
