"""Queue administration and the dead-letter queue (DESIGN.md §5: the failed set *is* the DLQ).

`QueueAdmin` wraps the BullMQ `Queue` objects the `JobProducer` owns and answers with frozen
dataclasses, never BullMQ objects. Every job lookup goes through one checked fetch, so a job
id that names one of BullMQ's own keys (`meta`, `events`, `1:logs`) is "not found", never a
Redis type error or a bogus job.

Retrying a failed job moves it back to waiting (or prioritized, keeping its priority) with
its attempt counter reset: an operator's retry gets the full retry budget again, otherwise a
job that exhausted its attempts would fail for good on its first transient error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis.exceptions
from bullmq import Job, Queue

from flakeguard.adapters.queue.names import QueueName
from flakeguard.errors import FlakeGuardError

MS_PER_DAY = 86_400_000
MAX_JOB_ID_CHARS = 256
_CATEGORY_PREFIX = re.compile(r"^\[([a-z0-9_]{1,40})\]")
_RETRY_OPTIONS = {"resetAttemptsMade": True, "resetAttemptsStarted": True}


class JobState(StrEnum):
    WAITING = "waiting"
    PRIORITIZED = "prioritized"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    DELAYED = "delayed"
    WAITING_CHILDREN = "waiting-children"
    UNKNOWN = "unknown"


class CleanableState(StrEnum):
    """The finished sets `clean` may trim (cleaning waiting or active jobs would lose work)."""

    COMPLETED = "completed"
    FAILED = "failed"


class QueueAdminError(FlakeGuardError):
    """Base of the admin errors; messages name the queue and job id only (no payload data)."""


class JobNotFound(QueueAdminError):  # noqa: N818  # public name agreed in issue 6
    def __init__(self, queue: QueueName, job_id: str) -> None:
        super().__init__(f"job {job_id[:80]!r} not found in queue {queue.value}")
        self.queue = queue
        self.job_id = job_id


class JobStateConflict(QueueAdminError):  # noqa: N818  # public name agreed in issue 6
    """The job exists but is not in the state the operation needs (or is locked by a worker)."""

    def __init__(self, queue: QueueName, job_id: str, state: str, wanted: str) -> None:
        super().__init__(
            f"job {job_id[:80]!r} in queue {queue.value} is {state}, not {wanted}"
            if state != wanted
            else f"job {job_id[:80]!r} in queue {queue.value} is locked by a worker"
        )
        self.queue = queue
        self.job_id = job_id
        self.state = state


@dataclass(frozen=True, slots=True)
class QueueStats:
    queue: QueueName
    waiting: int
    """Jobs ready to run, prioritized ones included (BullMQ keeps them in a separate set)."""
    active: int
    completed: int
    failed: int
    delayed: int
    paused: bool


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One job as an operator sees it; timestamps are epoch milliseconds."""

    queue: QueueName
    job_id: str
    name: str
    state: JobState
    data: Any
    """The payload as stored (camelCase JSON); it may hold repository data: admin-only."""
    failed_reason: str | None
    error_category: str | None
    """The `[category]` prefix of the failed reason (`network`, `validation`, ...), if any."""
    stacktrace: tuple[str, ...]
    attempts_made: int
    max_attempts: int
    priority: int
    created_at_ms: int
    processed_at_ms: int | None
    finished_at_ms: int | None
    return_value: Any
    progress: Any


@dataclass(frozen=True, slots=True)
class FailedPage:
    queue: QueueName
    total: int
    start: int
    jobs: tuple[JobRecord, ...]
    """Newest failure first."""


@dataclass(frozen=True, slots=True)
class RetentionResult:
    queue: QueueName
    removed_by_age: int
    removed_by_count: int


def error_category(failed_reason: str | None) -> str | None:
    """`"[network] TransientJobError: ..."` -> `"network"`; None without a prefix.

    >>> error_category("[rate_limit] slow down")
    'rate_limit'
    """
    if not failed_reason:
        return None
    match = _CATEGORY_PREFIX.match(failed_reason)
    return match.group(1) if match else None


def _int_or_none(value: Any) -> int | None:
    return int(value) if value else None


class QueueAdmin:
    """Inspect and operate the queues; holds no connection of its own (the producer's)."""

    def __init__(self, queues: Mapping[QueueName, Queue]) -> None:
        self._queues = queues

    async def stats(self, queue: QueueName) -> QueueStats:
        bull = self._queues[queue]
        counts = await bull.getJobCounts(
            "waiting", "prioritized", "active", "completed", "failed", "delayed"
        )
        return QueueStats(
            queue=queue,
            waiting=int(counts.get("waiting", 0)) + int(counts.get("prioritized", 0)),
            active=int(counts.get("active", 0)),
            completed=int(counts.get("completed", 0)),
            failed=int(counts.get("failed", 0)),
            delayed=int(counts.get("delayed", 0)),
            paused=bool(await bull.isPaused()),
        )

    async def failed(self, queue: QueueName, *, start: int = 0, limit: int = 50) -> FailedPage:
        """Failed jobs `start .. start+limit-1`, newest failure first, with the set's total."""
        if start < 0 or limit < 1:
            raise ValueError("start must be >= 0 and limit >= 1")
        bull = self._queues[queue]
        total = int((await bull.getJobCounts("failed")).get("failed", 0))
        jobs = await bull.getJobs(["failed"], start, start + limit - 1, False)
        records = tuple(self._record(queue, job, JobState.FAILED) for job in jobs if job.name)
        return FailedPage(queue=queue, total=total, start=start, jobs=records)

    async def job(self, queue: QueueName, job_id: str) -> JobRecord:
        """The job in any state; `JobNotFound` if it does not exist (or was removed)."""
        job = await self._fetch(queue, job_id)
        return self._record(queue, job, await self._state(job))

    async def retry(self, queue: QueueName, job_id: str) -> JobRecord:
        """Move one failed job back to waiting with its attempts reset; a worker picks it up.

        `JobNotFound` if absent, `JobStateConflict` if it is not failed (e.g. already retried).
        """
        job = await self._fetch(queue, job_id)
        state = await self._state(job)
        if state is not JobState.FAILED:
            raise JobStateConflict(queue, job_id, state.value, JobState.FAILED.value)
        try:
            await job.retry(JobState.FAILED.value, _RETRY_OPTIONS)
        except TypeError:
            # BullMQ reports a concurrent change (removed, retried by someone else) as a
            # TypeError from its script; tell the caller what the job is now.
            await self._raise_current(queue, job_id, JobState.FAILED)
        return await self.job(queue, job_id)

    async def retry_all_failed(self, queue: QueueName) -> int:
        """Retry every job failed at call time; returns how many were moved back to waiting.

        Jobs are retried one by one (not BullMQ's bulk `retryJobs`) so each keeps its
        priority and gets its attempts reset, exactly like `retry`.
        """
        bull = self._queues[queue]
        job_ids = [str(i) for i in await bull.backend.getRanges(["failed"], 0, -1, True)]
        moved = 0
        for job_id in job_ids:
            try:
                await self.retry(queue, job_id)
            except QueueAdminError:
                continue  # removed or retried concurrently: nothing left to do for it
            moved += 1
        return moved

    async def delete_failed(self, queue: QueueName, job_id: str) -> None:
        """Remove one failed job and its data; only failed jobs (the DLQ) can be deleted here."""
        job = await self._fetch(queue, job_id)
        state = await self._state(job)
        if state is not JobState.FAILED:
            raise JobStateConflict(queue, job_id, state.value, JobState.FAILED.value)
        removed = await self._queues[queue].remove(job_id)
        if removed != 1:
            raise JobStateConflict(queue, job_id, state.value, JobState.FAILED.value)

    async def pause(self, queue: QueueName) -> QueueStats:
        """Stop workers from taking new jobs of this queue (in-flight ones finish)."""
        await self._queues[queue].pause()
        return await self.stats(queue)

    async def resume(self, queue: QueueName) -> QueueStats:
        await self._queues[queue].resume()
        return await self.stats(queue)

    async def clean(
        self, queue: QueueName, state: CleanableState, *, grace_ms: int, limit: int
    ) -> tuple[str, ...]:
        """Remove up to `limit` jobs of `state` that finished more than `grace_ms` ago.

        Returns the removed ids. `limit` must be >= 1 (BullMQ's 0 means "no limit").
        """
        if grace_ms < 0 or limit < 1:
            raise ValueError("grace_ms must be >= 0 and limit >= 1")
        removed = await self._queues[queue].clean(grace_ms, limit, state.value)
        return tuple(str(job_id) for job_id in removed)

    async def apply_retention(
        self, queue: QueueName, *, max_age_days: int, keep: int
    ) -> RetentionResult:
        """The DLQ retention policy: drop failed jobs older than `max_age_days`, then keep
        only the `keep` newest failures.

        Example: 120 failed jobs, 30 of them older than 14 days, keep=50 -> 30 removed by
        age, then 40 of the remaining 90 (the oldest) removed by count; 50 remain.
        """
        if max_age_days < 1 or keep < 0:
            raise ValueError("max_age_days must be >= 1 and keep >= 0")
        bull = self._queues[queue]
        # 0 = no limit here: the policy applies to the whole failed set.
        by_age = await bull.clean(max_age_days * MS_PER_DAY, 0, CleanableState.FAILED.value)
        # Newest first, so everything from index `keep` on is over the budget.
        surplus = await bull.backend.getRanges(["failed"], keep, -1, False)
        by_count = 0
        for job_id in surplus:
            if await bull.remove(str(job_id)) == 1:
                by_count += 1
        return RetentionResult(queue=queue, removed_by_age=len(by_age), removed_by_count=by_count)

    async def _fetch(self, queue: QueueName, job_id: str) -> Job:
        if not job_id or len(job_id) > MAX_JOB_ID_CHARS:
            raise JobNotFound(queue, job_id)
        try:
            job = await Job.fromId(self._queues[queue], job_id)
        except redis.exceptions.ResponseError:
            # WRONGTYPE: the id names one of BullMQ's own keys (`events`, `id`, `1:logs`).
            raise JobNotFound(queue, job_id) from None
        # Every job hash has a name; BullMQ's `meta` hash does not.
        if job is None or not isinstance(job.name, str):
            raise JobNotFound(queue, job_id)
        return job

    async def _state(self, job: Job) -> JobState:
        raw = str(await job.getState())
        try:
            return JobState(raw)
        except ValueError:
            return JobState.UNKNOWN

    async def _raise_current(self, queue: QueueName, job_id: str, wanted: JobState) -> None:
        job = await self._fetch(queue, job_id)
        raise JobStateConflict(queue, job_id, (await self._state(job)).value, wanted.value)

    @staticmethod
    def _record(queue: QueueName, job: Job, state: JobState) -> JobRecord:
        reason = str(job.failedReason) if job.failedReason else None
        stack = job.stacktrace if isinstance(job.stacktrace, list) else []
        return JobRecord(
            queue=queue,
            job_id=str(job.id),
            name=str(job.name),
            state=state,
            data=job.data,
            failed_reason=reason,
            error_category=error_category(reason),
            stacktrace=tuple(str(line) for line in stack),
            attempts_made=int(job.attemptsMade or 0),
            max_attempts=int(job.opts.get("attempts") or 1),
            priority=int(job.priority or 0),
            created_at_ms=int(job.timestamp or 0),
            processed_at_ms=_int_or_none(job.processedOn),
            finished_at_ms=_int_or_none(job.finishedOn),
            return_value=job.returnvalue,
            progress=job.progress,
        )
