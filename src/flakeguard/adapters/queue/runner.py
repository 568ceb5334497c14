"""The one worker factory: the only module that touches BullMQ `Worker` options and errors.

It applies notes/bullmq.md's fixes (socket timeout > 10 s, `drainDelay=1`, `autorun=False`
then `getRedisVersion()` on both connections, 10 s lock / 5 s stalled check), validates
payloads, binds the log context, records metrics, and maps our error hierarchy to what
BullMQ should do:

| raised                          | BullMQ outcome                                   |
|---------------------------------|--------------------------------------------------|
| pydantic `ValidationError`      | failed at once (`UnrecoverableError`), no retry  |
| `PermanentJobError`             | failed at once                                   |
| `GitHubRateLimited(retry_after)`| moved to delayed for `retry_after`, no attempt used |
| anything else                   | retried with jittered exponential backoff        |

The failed reason always starts with the category: `[validation] workflowRunId: ...`.
"""

from __future__ import annotations

import asyncio
import errno
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import httpx
import redis.exceptions
import structlog
from bullmq import Worker
from bullmq.custom_errors import DelayedError, UnrecoverableError, WaitingChildrenError
from pydantic import ValidationError
from sqlalchemy import exc as sa_exc

from flakeguard.adapters.queue.connection import RedisTarget
from flakeguard.adapters.queue.names import QueueName, redis_queue_name
from flakeguard.adapters.queue.payloads import Payload
from flakeguard.errors import (
    ErrorCategory,
    FlakeGuardError,
    GitHubRateLimited,
    PermanentJobError,
)
from flakeguard.observability import log_context

if TYPE_CHECKING:
    from flakeguard.observability import Metrics

P = TypeVar("P", bound=Payload)
log = structlog.get_logger("flakeguard.queue")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_delay_ms: int = 5000
    max_delay_ms: int = 30000
    multiplier: float = 2.0
    jitter: float = 0.2


def backoff_delay_ms(
    attempts_made: int, policy: RetryPolicy, uniform: Callable[[float, float], float]
) -> int:
    """Delay before retry number `attempts_made` (1 = first retry).

    `min(max, base x multiplier^(n-1)) x U(1-j, 1+j)`, then capped at `max` again, so a burst
    of failures spreads out and no delay exceeds the cap. With the defaults (5 s, x2, 30 s,
    j = 0.2): retry 1 in 4-6 s, retry 2 in 8-12 s, retry 3 in 16-24 s, retry 4+ in 24-30 s.
    """
    exponent = max(0, attempts_made - 1)
    raw = min(float(policy.max_delay_ms), policy.base_delay_ms * policy.multiplier**exponent)
    jittered = raw * uniform(1.0 - policy.jitter, 1.0 + policy.jitter)
    return max(1, int(min(float(policy.max_delay_ms), jittered)))


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    lock_duration_ms: int = 10_000
    lock_renew_ms: int = 2_500
    """Renew 4 times per lock period: a CPU-starved event loop has 7.5 s of slack."""
    stalled_interval_ms: int = 5_000
    max_stalled_count: int = 2
    """A job that stalls twice (two crashed workers, or a starved one) fails; once is recovered."""
    max_outage_retries: int = 40
    """Re-delays for a database/Redis/network outage, outside the job's attempts (~15 min)."""
    drain_delay_s: int = 1
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    worker_name: str = "flakeguard-worker"
    prefix: str = "bull"


@dataclass(slots=True)
class JobContext:
    """What a processor may know and do about its job besides the payload."""

    job_id: str
    queue: QueueName
    attempts_made: int
    correlation_id: str
    _job: Any = field(repr=False)

    async def progress(self, value: int | Mapping[str, Any]) -> None:
        await self._job.updateProgress(value if isinstance(value, int) else dict(value))


Handle = Callable[[P, JobContext], Awaitable[Mapping[str, Any] | None]]


@dataclass(frozen=True, slots=True)
class QueueHandler(Generic[P]):
    queue: QueueName
    payload_type: type[P]
    handle: Handle[P]
    concurrency: int


def classify(error: BaseException) -> ErrorCategory:
    """The category of an exception, for failed reasons and retry metrics."""
    if isinstance(error, FlakeGuardError):
        return error.category
    if isinstance(error, ValidationError):
        return ErrorCategory.VALIDATION
    if isinstance(error, redis.exceptions.RedisError):
        return ErrorCategory.REDIS
    if isinstance(error, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DBAPIError)):
        return ErrorCategory.DATABASE
    if isinstance(error, httpx.TransportError | ConnectionError | TimeoutError):
        return ErrorCategory.NETWORK
    if isinstance(error, MemoryError) or (
        isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.ENOMEM, errno.EMFILE)
    ):
        return ErrorCategory.SYSTEM
    return ErrorCategory.PROCESSING


def is_outage(error: BaseException) -> bool:
    """A dependency is unreachable (not a bad query or bad data): wait, don't burn attempts.

    True for lost or refused connections to PostgreSQL, Redis or the network; false for
    errors a retry cannot fix (constraint violations, programming errors).
    """
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, (sa_exc.OperationalError, sa_exc.InterfaceError)):
        return True
    if isinstance(error, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        return True
    seen: BaseException | None = error
    while seen is not None:  # asyncpg / OS errors arrive wrapped
        if isinstance(seen, (ConnectionError, TimeoutError)) or type(seen).__name__ in (
            "CannotConnectNowError",
            "ConnectionDoesNotExistError",
            "ConnectionFailureError",
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _validation_summary(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "payload"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


class _FetchingWorker(Worker):  # type: ignore[misc]  # bullmq is untyped
    """BullMQ's worker, taking its next job in the round trip that completes one.

    BullMQ's `moveToFinished` script can move the next waiting job to active under the same
    token and return it (`fetchNext`); the Node worker does so whenever it is not closing,
    bullmq-python's `processJob` always passes `fetch_next=False`, so each job costs a
    second round trip (`moveToActive`, ~4 % of the worker's CPU in
    `bench/github_ingest.py`). This is bullmq 3.4.4's `processJob` (the version is
    pinned) with that one change: a job fetched so is returned, and `Worker.run` processes
    a job that one of its tasks returns as it does one from `getNextJob`. When nothing
    waits, or the worker is closing, it returns None and `run` asks for jobs as before.
    """

    async def processJob(self, job: Any, token: str) -> Any:  # noqa: N802 - bullmq's name
        try:
            if "removeOnComplete" not in job.opts and "removeOnComplete" in self.opts:
                job.opts["removeOnComplete"] = self.opts["removeOnComplete"]
            if "removeOnFail" not in job.opts and "removeOnFail" in self.opts:
                job.opts["removeOnFail"] = self.opts["removeOnFail"]

            self.jobs.add((job, token))
            controller = self.lockManager.track_job(
                job.id,
                token,
                int(time.time() * 1000),
                should_create_controller=self._processor_wants_signal,
            )

            if job.deferredFailure:
                await job.moveToFailed(UnrecoverableError(job.deferredFailure), token)
                self.emit("failed", job, UnrecoverableError(job.deferredFailure))
                return None

            if controller is not None:
                result = await self.processor(job, token, controller.signal)
            else:
                result = await self.processor(job, token)
            fetched = None
            if not self.forceClosing:
                fetch_next = not self.closing and not self.paused
                completed = await self.backend.moveToCompleted(
                    job,
                    result,
                    job.opts.get("removeOnComplete", False),
                    token,
                    fetch_next=fetch_next,
                )
                job.returnvalue = result
                job.attemptsMade = job.attemptsMade + 1
                if fetch_next:
                    # [data, id, rate-limit delay, delay-until]; all None when nothing was
                    # waiting, which marks the worker drained as an empty moveToActive does.
                    data, job_id, limit_until, delay_until = completed.get("result") or (
                        None,
                        None,
                        None,
                        None,
                    )
                    fetched = await self.nextJobFromJobData(
                        data, job_id, limit_until or 0, delay_until or 0, token
                    )
            self.emit("completed", job, result)
            if fetched is not None:
                self.emit("active", fetched, "waiting")
            return fetched
        except (DelayedError, WaitingChildrenError):
            return None
        except Exception as err:  # noqa: BLE001 - as bullmq: the job failed, the worker goes on
            try:
                if not self.forceClosing:
                    await job.moveToFailed(err, token)

                self.emit("failed", job, err)
            except Exception as err:  # noqa: BLE001 - as bullmq
                self.emit("error", err, job)
            return None
        finally:
            self.jobs.discard((job, token))
            self.lockManager.untrack_job(job.id)


class QueueRunner(Generic[P]):
    """Runs one queue's BullMQ worker with our processor wrapper around `handler.handle`."""

    def __init__(
        self,
        target: RedisTarget,
        handler: QueueHandler[P],
        options: WorkerOptions,
        metrics: Metrics,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._target = target
        self._handler = handler
        self._options = options
        self._metrics = metrics
        self._rng = rng or random.Random()
        queue = handler.queue.value
        # Labelled children looked up once: `labels()` costs microseconds on every job.
        self._in_progress = metrics.jobs_in_progress.labels(queue)
        self._completed = metrics.jobs_processed.labels(queue, "completed")
        self._duration = metrics.job_duration.labels(queue)
        self._worker: _FetchingWorker | None = None
        self._task: asyncio.Task[None] | None = None
        self.name = redis_queue_name(handler.queue, cluster=target.is_cluster)

    @property
    def queue(self) -> QueueName:
        return self._handler.queue

    @property
    def worker(self) -> Worker:
        if self._worker is None:
            raise RuntimeError("runner not started")
        return self._worker

    def _backoff_strategy(self, attempts_made: int, _type: str, _err: Any, _job: Any) -> int:
        return backoff_delay_ms(attempts_made, self._options.retry, self._rng.uniform)

    async def start(self) -> None:
        o = self._options
        self._worker = _FetchingWorker(
            self.name,
            self._process,
            {
                "connection": self._target.bullmq_connection(),
                "concurrency": self._handler.concurrency,
                "autorun": False,
                "drainDelay": o.drain_delay_s,
                "lockDuration": o.lock_duration_ms,
                "lockRenewTime": o.lock_renew_ms,
                "stalledInterval": o.stalled_interval_ms,
                "maxStalledCount": o.max_stalled_count,
                "name": o.worker_name,
                "prefix": o.prefix,
                "settings": {"backoffStrategy": self._backoff_strategy},
            },
        )
        # notes/bullmq.md D2: without this the worker rounds every block up to whole seconds.
        await self._worker.blockingRedisConnection.getRedisVersion()
        await self._worker.redisConnection.getRedisVersion()
        self._worker.on("error", self._on_error)
        self._task = asyncio.create_task(self._worker.run(), name=f"worker:{self.name}")
        # Closing a worker whose run() has not reached its loop yet leaks a reconnecting
        # client (bullmq sets up locks after close): wait until it runs.
        for _ in range(500):
            if self._worker.running or self._task.done():
                break
            await asyncio.sleep(0.01)

    def _on_error(self, error: BaseException, *_: Any) -> None:
        log.error(
            "queue.worker_error", queue=self.name, error=str(error)[:500], category=classify(error)
        )

    async def close(self, timeout_s: float) -> bool:
        """Stop taking jobs, let in-flight ones finish within `timeout_s`; True if all did.

        On timeout the remaining jobs are abandoned unfinished: their locks expire and
        another worker recovers them as stalled (nothing is lost).
        """
        if self._worker is None:
            return True
        finished = True
        try:
            await asyncio.wait_for(self._worker.close(), timeout=timeout_s)
        except TimeoutError:
            finished = False
            with suppress(Exception):
                await self._worker.close(force=True)
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await self._task
        return finished

    async def _process(self, job: Any, token: str) -> Any:
        queue = self._handler.queue.value
        data = job.data if isinstance(job.data, dict) else {}
        correlation_id = str(data.get("correlationId") or os.urandom(8).hex())
        repository = data.get("repository")
        context = {
            "jobId": str(job.id),
            "queue": queue,
            "correlationId": correlation_id,
            "attempt": job.attemptsMade + 1,
        }
        if isinstance(repository, dict):
            context["repository"] = f"{repository.get('owner')}/{repository.get('repo')}"
        if "workflowRunId" in data:
            context["workflowRunId"] = data["workflowRunId"]
        started = time.perf_counter()
        with log_context(**context):
            self._in_progress.inc()
            try:
                result = await self._run_handler(job, token, data, correlation_id)
            except DelayedError:
                self._metrics.jobs_processed.labels(queue, "delayed").inc()
                raise
            except UnrecoverableError as error:
                self._metrics.jobs_processed.labels(queue, "failed").inc()
                log.warning("job.failed_permanently", reason=str(error)[:1000])
                raise
            except Exception as error:
                category = classify(error)
                self._metrics.job_retries.labels(queue, category.value).inc()
                final = job.attemptsMade + 1 >= int(job.opts.get("attempts") or 1)
                self._metrics.jobs_processed.labels(queue, "failed" if final else "retried").inc()
                log.warning(
                    "job.attempt_failed",
                    category=category,
                    error=str(error)[:1000],
                    final=final,
                )
                if category is ErrorCategory.SYSTEM:
                    log.error("job.system_error_alert", error=str(error)[:500])
                raise _categorised(error, category) from error
            else:
                self._completed.inc()
                log.info("job.completed", duration_s=round(time.perf_counter() - started, 4))
                return result
            finally:
                self._in_progress.dec()
                self._duration.observe(time.perf_counter() - started)

    async def _run_handler(
        self, job: Any, token: str, data: dict[str, Any], correlation_id: str
    ) -> Any:
        try:
            payload = self._handler.payload_type.model_validate(data)
        except ValidationError as error:
            raise UnrecoverableError(
                f"[{ErrorCategory.VALIDATION}] invalid {self._handler.queue} payload: "
                f"{_validation_summary(error)}"
            ) from None
        ctx = JobContext(
            job_id=str(job.id),
            queue=self._handler.queue,
            attempts_made=int(job.attemptsMade),
            correlation_id=correlation_id,
            _job=job,
        )
        try:
            result = await self._handler.handle(payload, ctx)
        except GitHubRateLimited as error:
            wait_ms = max(1000, int(error.retry_after_s * 1000))
            log.info("job.rate_limited", retry_after_s=error.retry_after_s)
            self._metrics.job_retries.labels(self._handler.queue.value, error.category.value).inc()
            await job.moveToDelayed(int(time.time() * 1000) + wait_ms, token)
            raise DelayedError() from None
        except PermanentJobError as error:
            raise UnrecoverableError(f"[{error.category}] {error}") from None
        except Exception as error:
            outages = int(data.get("_outageRetries") or 0)
            if not is_outage(error) or outages >= self._options.max_outage_retries:
                raise
            # Like a rate limit: wait for the dependency to come back without using one of
            # the job's attempts (a 20 s PostgreSQL restart must not send jobs to the DLQ).
            category = classify(error)
            wait_ms = backoff_delay_ms(outages + 1, self._options.retry, self._rng.uniform)
            log.warning(
                "job.dependency_down", category=category, retry_in_ms=wait_ms, outage=outages + 1
            )
            self._metrics.job_retries.labels(self._handler.queue.value, category.value).inc()
            await job.updateData({**data, "_outageRetries": outages + 1})
            await job.moveToDelayed(int(time.time() * 1000) + wait_ms, token)
            raise DelayedError() from None
        return dict(result) if result is not None else None


class _CategorisedError(Exception):
    """Carries the category into BullMQ's failed reason; the cause keeps the stack."""


def _categorised(error: BaseException, category: ErrorCategory) -> _CategorisedError:
    message = str(error) or type(error).__name__
    return _CategorisedError(f"[{category}] {type(error).__name__}: {message[:2000]}")
