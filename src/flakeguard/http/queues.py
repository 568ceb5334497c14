"""The queue-management REST API (`/queues/...`) over `QueueAdmin` and the `JobProducer`.

`{name}` accepts every spelling of a queue: `runs-ingest`, the spec's `runs:ingest`, and
URL-encoded `runs%3Aingest`; an unknown name is a 404 listing the known ones. Who may call
what is decided in `http/auth.py` (counts are open; payloads, stack traces and every change
need the admin token). Field names are snake_case and carry their units.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import redis.exceptions
from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flakeguard.adapters.queue.admin import (
    CleanableState,
    JobNotFound,
    JobRecord,
    JobState,
    JobStateConflict,
    QueueAdmin,
    QueueStats,
)
from flakeguard.adapters.queue.names import (
    ALL_QUEUES,
    QueueName,
    UnknownQueueError,
    parse_queue_name,
)
from flakeguard.adapters.queue.payloads import (
    Payload,
    PollingPayload,
    RecomputePayload,
    RunsAnalyzePayload,
    RunsIngestPayload,
)
from flakeguard.adapters.queue.producer import Enqueued, JobProducer
from flakeguard.http.auth import require_admin
from flakeguard.http.state import AppState

MAX_PAGE = 500
MAX_START = 1_000_000_000
MAX_GRACE_S = 10 * 365 * 86_400
MAX_CLEAN = 100_000
MAX_JOB_ID_CHARS = 256
ADMIN_CALL_TIMEOUT_S = 10.0

PAYLOAD_TYPES: dict[QueueName, type[Payload]] = {
    QueueName.RUNS_INGEST: RunsIngestPayload,
    QueueName.RUNS_ANALYZE: RunsAnalyzePayload,
    QueueName.TESTS_RECOMPUTE: RecomputePayload,
    QueueName.POLLING: PollingPayload,
}


class ApiModel(BaseModel):
    model_config = ConfigDict(frozen=True)


class ErrorBody(ApiModel):
    detail: str


class QueueStatsBody(ApiModel):
    queue: QueueName
    waiting: int = Field(description="Ready to run, prioritized jobs included.")
    active: int
    completed: int
    failed: int = Field(description="Size of the dead-letter queue (the failed set).")
    delayed: int
    paused: bool

    @classmethod
    def of(cls, stats: QueueStats) -> QueueStatsBody:
        return cls(
            queue=stats.queue,
            waiting=stats.waiting,
            active=stats.active,
            completed=stats.completed,
            failed=stats.failed,
            delayed=stats.delayed,
            paused=stats.paused,
        )


class JobBody(ApiModel):
    queue: QueueName
    job_id: str
    name: str
    state: JobState
    data: Any = Field(description="The payload as stored (camelCase JSON).")
    failed_reason: str | None
    error_category: str | None = Field(description="`[category]` prefix of the failed reason.")
    stacktrace: list[str]
    attempts_made: int
    max_attempts: int
    priority: int
    created_at_ms: int = Field(description="Epoch milliseconds.")
    processed_at_ms: int | None
    finished_at_ms: int | None
    return_value: Any
    progress: Any

    @classmethod
    def of(cls, job: JobRecord) -> JobBody:
        return cls(
            queue=job.queue,
            job_id=job.job_id,
            name=job.name,
            state=job.state,
            data=job.data,
            failed_reason=job.failed_reason,
            error_category=job.error_category,
            stacktrace=list(job.stacktrace),
            attempts_made=job.attempts_made,
            max_attempts=job.max_attempts,
            priority=job.priority,
            created_at_ms=job.created_at_ms,
            processed_at_ms=job.processed_at_ms,
            finished_at_ms=job.finished_at_ms,
            return_value=job.return_value,
            progress=job.progress,
        )


class FailedPageBody(ApiModel):
    queue: QueueName
    total: int
    start: int
    limit: int
    jobs: list[JobBody] = Field(description="Newest failure first.")


class RetryAllBody(ApiModel):
    queue: QueueName
    retried: int


class DeletedBody(ApiModel):
    queue: QueueName
    job_id: str
    deleted: bool


class CleanRequest(ApiModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    state: CleanableState
    grace_s: int = Field(default=0, ge=0, le=MAX_GRACE_S, description="Keep jobs newer than this.")
    limit: int = Field(default=1000, ge=1, le=MAX_CLEAN)


class CleanedBody(ApiModel):
    queue: QueueName
    state: CleanableState
    removed: int
    job_ids: list[str]


class EnqueuedBody(ApiModel):
    queue: QueueName
    job_id: str
    deduplicated: bool = Field(description="True: a pending job with the same key was returned.")


def _queue(
    name: Annotated[
        str,
        Path(
            max_length=200,
            description="`runs-ingest`, `runs:ingest` or `runs%3Aingest` (any queue's spelling).",
        ),
    ],
) -> QueueName:
    try:
        return parse_queue_name(name)
    except UnknownQueueError as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from None


QueueParam = Annotated[QueueName, Depends(_queue)]
JobIdParam = Annotated[str, Path(min_length=1, max_length=MAX_JOB_ID_CHARS)]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "Unknown queue or job."}
}
_AUTH: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No bearer token."},
    403: {"model": ErrorBody, "description": "Wrong token, or ADMIN_API_TOKEN not set."},
}
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "The job is not in the needed state."}
}


@asynccontextmanager
async def _answers() -> AsyncIterator[None]:
    """Map admin errors to HTTP statuses; a Redis outage is a 503, not a stack trace.

    Bounded: BullMQ's client retries a lost connection for minutes, an operator's request
    must not hang that long.
    """
    try:
        async with asyncio.timeout(ADMIN_CALL_TIMEOUT_S):
            yield
    except JobNotFound as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from None
    except JobStateConflict as error:
        raise HTTPException(status.HTTP_409_CONFLICT, str(error)) from None
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, TimeoutError):
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "redis unavailable") from None


async def enqueue_payload(producer: JobProducer, queue: QueueName, payload: Payload) -> Enqueued:
    """Enqueue through the producer's per-queue entry point (dedup keys, priorities)."""
    if isinstance(payload, RunsIngestPayload):
        return await producer.ingest(payload)
    if isinstance(payload, RunsAnalyzePayload):
        return await producer.analyze(payload)
    if isinstance(payload, RecomputePayload):
        return await producer.recompute(payload)
    if isinstance(payload, PollingPayload):
        return await producer.poll(payload)
    raise TypeError(f"no enqueue path for {type(payload).__name__} on {queue}")


def router_for(state: AppState) -> APIRouter:
    """The `/queues` routes for one running process (its producer and admin token)."""
    admin = QueueAdmin(state.deps.producer.queues)
    producer = state.deps.producer
    guarded = [Depends(require_admin(state.deps.settings.admin_api_token))]
    router = APIRouter(prefix="/queues", tags=["queues"])

    @router.get("", summary="Job counts of every queue (open, like /metrics).")
    async def list_queues() -> list[QueueStatsBody]:
        async with _answers():
            return [QueueStatsBody.of(await admin.stats(q)) for q in ALL_QUEUES]

    @router.get("/{name}/stats", summary="Job counts of one queue (open).", responses=_NOT_FOUND)
    async def queue_stats(queue: QueueParam) -> QueueStatsBody:
        async with _answers():
            return QueueStatsBody.of(await admin.stats(queue))

    @router.get(
        "/{name}/failed",
        summary="The dead-letter queue, paged, newest failure first.",
        dependencies=guarded,
        responses={**_AUTH, **_NOT_FOUND},
    )
    async def failed_jobs(
        queue: QueueParam,
        start: Annotated[int, Query(ge=0, le=MAX_START)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    ) -> FailedPageBody:
        async with _answers():
            page = await admin.failed(queue, start=start, limit=limit)
        return FailedPageBody(
            queue=queue,
            total=page.total,
            start=page.start,
            limit=limit,
            jobs=[JobBody.of(j) for j in page.jobs],
        )

    @router.get(
        "/{name}/jobs/{job_id}",
        summary="One job in any state.",
        dependencies=guarded,
        responses={**_AUTH, **_NOT_FOUND},
    )
    async def get_job(queue: QueueParam, job_id: JobIdParam) -> JobBody:
        async with _answers():
            return JobBody.of(await admin.job(queue, job_id))

    @router.post(
        "/{name}/retry/{job_id}",
        summary="Move one failed job back to waiting, attempts reset.",
        dependencies=guarded,
        responses={**_AUTH, **_NOT_FOUND, **_CONFLICT},
    )
    async def retry_job(queue: QueueParam, job_id: JobIdParam) -> JobBody:
        async with _answers():
            return JobBody.of(await admin.retry(queue, job_id))

    @router.post(
        "/{name}/retry-failed",
        summary="Retry every failed job of the queue.",
        dependencies=guarded,
        responses={**_AUTH, **_NOT_FOUND},
    )
    async def retry_failed(queue: QueueParam) -> RetryAllBody:
        async with _answers():
            return RetryAllBody(queue=queue, retried=await admin.retry_all_failed(queue))

    @router.post(
        "/{name}/pause",
        summary="Stop workers taking new jobs (in-flight ones finish).",
        dependencies=guarded,
        responses={**_AUTH, **_NOT_FOUND},
    )
    async def pause_queue(queue: QueueParam) -> QueueStatsBody:
        async with _answers():
            return QueueStatsBody.of(await admin.pause(queue))

    @router.post(
        "/{name}/resume",
        summary="Let workers take jobs again.",
        dependencies=guarded,
        responses={**_AUTH, **_NOT_FOUND},
    )
    async def resume_queue(queue: QueueParam) -> QueueStatsBody:
        async with _answers():
            return QueueStatsBody.of(await admin.resume(queue))

    @router.delete(
        "/{name}/failed/{job_id}",
        summary="Delete one failed job from the dead-letter queue.",
        dependencies=guarded,
        responses={**_AUTH, **_NOT_FOUND, **_CONFLICT},
    )
    async def delete_failed(queue: QueueParam, job_id: JobIdParam) -> DeletedBody:
        async with _answers():
            await admin.delete_failed(queue, job_id)
        return DeletedBody(queue=queue, job_id=job_id, deleted=True)

    @router.post(
        "/{name}/clean",
        summary="Remove completed or failed jobs finished more than grace_s ago.",
        dependencies=guarded,
        responses={**_AUTH, **_NOT_FOUND},
    )
    async def clean_queue(queue: QueueParam, request: CleanRequest) -> CleanedBody:
        async with _answers():
            removed = await admin.clean(
                queue, request.state, grace_ms=request.grace_s * 1000, limit=request.limit
            )
        return CleanedBody(
            queue=queue, state=request.state, removed=len(removed), job_ids=list(removed)
        )

    @router.post(
        "/{name}/jobs",
        summary="Enqueue a job with the queue's typed payload (camelCase or snake_case).",
        description=(
            "Body: `runs-ingest` RunsIngestPayload, `runs-analyze` RunsAnalyzePayload, "
            "`tests-recompute` RecomputePayload, `polling` PollingPayload. Invalid -> 422 "
            "with pydantic's errors. Deduplicated like every other producer."
        ),
        status_code=status.HTTP_201_CREATED,
        dependencies=guarded,
        responses={**_AUTH, **_NOT_FOUND},
    )
    async def enqueue_job(
        queue: QueueParam, body: Annotated[dict[str, Any], Body()]
    ) -> EnqueuedBody:
        try:
            payload = PAYLOAD_TYPES[queue].model_validate(body)
        except ValidationError as error:
            errors = error.errors(include_url=False, include_context=False)
            raise RequestValidationError(
                [{**e, "loc": ("body", *e["loc"])} for e in errors]
            ) from None
        async with _answers():
            enqueued = await enqueue_payload(producer, queue, payload)
        return EnqueuedBody(
            queue=enqueued.queue, job_id=enqueued.job_id, deduplicated=enqueued.deduplicated
        )

    return router
