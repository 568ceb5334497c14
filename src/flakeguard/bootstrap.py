"""The composition root: builds every client once, runs the worker, closes everything.

`open_deps(settings)` is the only place that turns settings into live clients (embedded
Redis, database engine, queues, GitHub). `run_worker(settings)` runs the four queue
workers and the HTTP server until SIGTERM/SIGINT, then shuts down gracefully: readiness
goes 503, workers stop taking jobs and finish in-flight ones within the shutdown timeout,
connections close, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import redis.asyncio as aioredis
import structlog

from flakeguard.adapters.db.engine import create_engine, database_url, migrate
from flakeguard.adapters.github.client import GitHubClient, GitHubConfig
from flakeguard.adapters.github.source import GitHubChecks, GitHubRunSource
from flakeguard.adapters.queue.connection import (
    EmbeddedRedis,
    RedisTarget,
    cluster_target,
    target_from_url,
)
from flakeguard.adapters.queue.names import ALL_QUEUES
from flakeguard.adapters.queue.producer import JobPolicy, JobProducer
from flakeguard.adapters.queue.runner import (
    QueueHandler,
    QueueRunner,
    RetryPolicy,
    WorkerOptions,
)
from flakeguard.database import utc_now
from flakeguard.deps import CheckPublisher, Deps, RunSource
from flakeguard.observability import Metrics
from flakeguard.processors import polling, runs_analyze, runs_ingest, tests_recompute
from flakeguard.settings import Settings

log = structlog.get_logger("flakeguard.worker")
QUEUE_SAMPLE_INTERVAL_S = 5.0


@dataclass(slots=True)
class AppState:
    """What the HTTP layer needs from the running process, in one object."""

    deps: Deps
    redis: aioredis.Redis | Any
    """A client for our own commands (health, webhook dedup); a RedisCluster on Cluster."""
    redis_nodes: int = 1
    started_monotonic: float = field(default_factory=time.monotonic)
    shutting_down: bool = False

    @property
    def uptime_ms(self) -> int:
        return int((time.monotonic() - self.started_monotonic) * 1000)


@dataclass(slots=True)
class Runtime:
    """Live resources beside `Deps` that only the process entry points need."""

    deps: Deps
    redis_target: RedisTarget
    state: AppState


def redis_target(settings: Settings, embedded: EmbeddedRedis | None) -> RedisTarget:
    url = settings.redis_url.get_secret_value() if settings.redis_url else None
    if settings.redis_cluster_enabled:
        return cluster_target(settings.redis_cluster_nodes, url)
    if url is not None:
        return target_from_url(url)
    if embedded is None:
        raise RuntimeError("embedded Redis requested but not started")
    return embedded.start()


MIN_POOL_SIZE: Final = 10


def database_pool_size(settings: Settings) -> int:
    """PostgreSQL connections the worker keeps open: one per job it may run at once
    (`runs-ingest`, `runs-analyze`, `polling`, `tests-recompute`), at least 10.

    The pool may overflow by 10, but overflow connections are closed when they are
    returned. Too small a pool therefore opens a connection for every burst above it:
    PostgreSQL forks a backend, and each statement is prepared again on the new connection.
    With 10, the 24-job GitHub bench opened 45 connections per 150 runs; with 26, 20.
    Defaults (5 + 3 + 2) keep 10 + 10, as before; size PostgreSQL's `max_connections` for
    (pool + 10) per worker process.
    """
    jobs = settings.worker_concurrency + settings.high_priority_concurrency + 2
    return max(MIN_POOL_SIZE, jobs)


def job_policy(settings: Settings) -> JobPolicy:
    """The producer's job options (attempts, backoff, retention, prefix) from settings."""
    return JobPolicy(
        attempts=settings.max_retry_attempts,
        retry_delay_ms=settings.retry_delay_ms,
        keep_completed=settings.remove_on_complete,
        keep_failed=settings.remove_on_fail,
        keep_failed_age_s=settings.dlq_max_age_days * 86400,
        prefix=settings.queue_prefix,
    )


def github_config(settings: Settings) -> GitHubConfig | None:
    pem = settings.github_private_key_pem()
    if settings.github_app_id is None or pem is None:
        return None
    return GitHubConfig(
        app_id=settings.github_app_id,
        private_key_pem=pem,
        api_url=settings.github_api_url,
        write_spacing_s=settings.github_write_spacing_ms / 1000,
    )


@asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    run_source: RunSource | None = None,
    checks: CheckPublisher | None = None,
    clock: Callable[[], datetime] = utc_now,
    metrics: Metrics | None = None,
) -> AsyncIterator[Runtime]:
    """Build every client once; close them all on exit (in reverse order)."""
    async with contextlib.AsyncExitStack() as stack:
        embedded = EmbeddedRedis(settings.data_dir / "redis") if settings.embedded_redis else None
        if embedded is not None:
            stack.callback(embedded.close)
        target = redis_target(settings, embedded)
        db_url = settings.database_url.get_secret_value() if settings.database_url else None
        engine = create_engine(
            database_url(db_url, settings.data_dir), pool_size=database_pool_size(settings)
        )
        stack.push_async_callback(engine.dispose)
        if settings.embedded_database or engine.dialect.name == "sqlite":  # a file we own
            await migrate(engine)
        producer = JobProducer(
            target,
            job_policy(settings),
        )
        stack.push_async_callback(producer.close)
        metrics = metrics or Metrics()
        github: GitHubClient | None = None
        config = github_config(settings)
        if config is not None:
            github = GitHubClient(config, observer=metrics)
            stack.push_async_callback(github.aclose)
        if run_source is None:
            run_source = GitHubRunSource(github, settings.max_artifact_bytes)
        if checks is None and github is not None:
            checks = GitHubChecks(github)
        deps = Deps(
            settings=settings,
            engine=engine,
            producer=producer,
            metrics=metrics,
            run_source=run_source,
            clock=clock,
            github=github,
            checks=checks,
        )
        redis_client: Any = target.cluster_client() if target.is_cluster else target.client()
        stack.push_async_callback(redis_client.aclose)
        nodes = len(target.cluster_nodes) if target.is_cluster else 1
        state = AppState(deps=deps, redis=redis_client, redis_nodes=nodes)
        log.info(
            "worker.dependencies_ready",
            redis=target.description,
            database=engine.dialect.name,
            github=github is not None,
        )
        yield Runtime(deps=deps, redis_target=target, state=state)


def build_runners(runtime: Runtime) -> list[QueueRunner[Any]]:
    s = runtime.deps.settings
    options = WorkerOptions(
        lock_duration_ms=s.lock_duration_ms,
        stalled_interval_ms=s.stalled_interval_ms,
        retry=RetryPolicy(
            base_delay_ms=s.retry_delay_ms,
            max_delay_ms=s.max_retry_delay_ms,
            multiplier=s.backoff_multiplier,
            jitter=s.retry_jitter,
        ),
        worker_name=s.worker_name,
        prefix=s.queue_prefix,
    )
    handlers: list[QueueHandler[Any]] = [
        runs_ingest.handler(runtime.deps),
        runs_analyze.handler(runtime.deps),
        tests_recompute.handler(runtime.deps),
        polling.handler(runtime.deps),
    ]
    return [QueueRunner(runtime.redis_target, h, options, runtime.deps.metrics) for h in handlers]


QUEUE_STATES = ("waiting", "prioritized", "active", "completed", "failed", "delayed")


async def sample_queues_once(
    runtime: Runtime, previous: dict[str, tuple[float, int]] | None = None
) -> None:
    """Refresh queue-size, DLQ, throughput and process gauges once.

    `previous` carries (monotonic time, completed count) per queue between calls; throughput
    is this process's completions per second since the last call (no figure on the first).
    """
    metrics = runtime.deps.metrics
    previous = {} if previous is None else previous
    for name in ALL_QUEUES:
        try:
            counts = await runtime.deps.producer.queues[name].getJobCounts(*QUEUE_STATES)
        except Exception as error:  # noqa: BLE001  # a Redis outage must not kill sampling
            log.debug("metrics.sample_failed", queue=name, error=type(error).__name__)
            continue
        for state_name in QUEUE_STATES:
            metrics.queue_size.labels(name.value, state_name).set(int(counts.get(state_name, 0)))
        metrics.dlq_size.labels(name.value).set(int(counts.get("failed", 0)))
        done = int(metrics.jobs_processed.labels(name.value, "completed")._value.get())
        now = time.monotonic()
        if name.value in previous:
            then, before = previous[name.value]
            metrics.queue_throughput.labels(name.value).set((done - before) / max(now - then, 1e-6))
        previous[name.value] = (now, done)
    metrics.sample_process()


async def sample_queues(runtime: Runtime, stop: asyncio.Event) -> None:
    """Refresh queue-size, DLQ and throughput gauges every few seconds."""
    previous: dict[str, tuple[float, int]] = {}
    while not stop.is_set():
        await sample_queues_once(runtime, previous)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=QUEUE_SAMPLE_INTERVAL_S)
