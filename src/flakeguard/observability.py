"""Logging setup and the metric objects, declared once.

Logs are JSON lines in the spec's shape (`level`, `time`, `pid`, `hostname`, `msg`, plus
the job context bound with contextvars: `jobId`, `queue`, `correlationId`, `repository`,
`workflowRunId`). Metrics live in one `Metrics` object with its own registry, built by the
composition root, so tests and several workers in one process never share global state.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, TextIO

import orjson
import psutil
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from flakeguard.settings import LogLevel

# pino's numbers; 'trace' sits below logging.DEBUG.
_LEVEL_NUMBERS: dict[LogLevel, int] = {
    LogLevel.TRACE: 5,
    LogLevel.DEBUG: logging.DEBUG,
    LogLevel.INFO: logging.INFO,
    LogLevel.WARN: logging.WARNING,
    LogLevel.ERROR: logging.ERROR,
    LogLevel.FATAL: logging.CRITICAL,
}
_OUTPUT_NAMES = {"warning": "warn", "critical": "fatal", "exception": "error"}

_SECRET_KEYS = frozenset({"token", "authorization", "password", "secret", "private_key", "jwt"})
_SECRET_KEY_SPELLINGS = frozenset(
    spelling for key in _SECRET_KEYS for spelling in (key, key.upper(), key.title())
)

_JOB_CONTEXT: ContextVar[Mapping[str, Any]] = ContextVar(
    "flakeguard_log_context", default=MappingProxyType({})
)
"""Fields every log line of the current job carries (one variable: cheap to set per job)."""


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add `fields` to every log line emitted inside the block (and tasks it starts)."""
    merged = {**_JOB_CONTEXT.get(), **fields}
    token = _JOB_CONTEXT.set(merged)
    try:
        yield
    finally:
        _JOB_CONTEXT.reset(token)


def _merge_context(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    context = _JOB_CONTEXT.get()
    if context:
        for key, value in context.items():
            event.setdefault(key, value)
    return event


class _Clock:
    """ISO-8601 UTC with milliseconds; the seconds part is formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(
        self, _: Any, __: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        event["time"] = f"{self._prefix}.{int((now - second) * 1000):03d}Z"
        return event


def _rename_fields(
    _: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    event["msg"] = event.pop("event", "")
    level = str(event.get("level", method))
    event["level"] = _OUTPUT_NAMES.get(level, level)
    return event


def _drop_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # Defence in depth: nobody should log these keys, but if someone does, the value never leaves.
    for key in _SECRET_KEY_SPELLINGS.intersection(event):
        event[key] = "[redacted]"
    return event


def configure_logging(level: LogLevel, *, stream: TextIO | None = None) -> None:
    """Route structlog and the standard `logging` module to JSON lines on `stream`.

    Without a stream, lines go to whatever `sys.stdout` is when each line is written (not
    when logging was configured), so a replaced or closed stdout never breaks logging.
    """
    static = {"pid": os.getpid(), "hostname": socket.gethostname()}

    def add_static(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event.update(static)
        return event

    add_time = _Clock()

    number = _LEVEL_NUMBERS[level]
    structlog.configure(
        processors=[
            _merge_context,
            structlog.processors.add_log_level,
            add_time,
            add_static,
            _drop_secrets,
            structlog.processors.format_exc_info,
            _rename_fields,
            structlog.processors.JSONRenderer(
                serializer=lambda obj, **_: orjson.dumps(obj).decode()
            ),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(max(number, logging.DEBUG)),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
    # Libraries (uvicorn, alembic, bullmq) log through `logging`: same format, same level.
    handler: logging.StreamHandler[TextIO] = (
        logging.StreamHandler(stream) if stream is not None else _CurrentStdoutHandler()
    )
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                add_time,
                add_static,
                _drop_secrets,
                _rename_fields,
                structlog.processors.JSONRenderer(
                    serializer=lambda obj, **_: orjson.dumps(obj, default=str).decode()
                ),
            ],
            foreign_pre_chain=[structlog.processors.add_log_level],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(number, logging.DEBUG))
    # Libraries that configure their own handlers (uvicorn's default config, say) would
    # bypass the JSON format: route them through the root handler.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "alembic", "bullmq"):
        library = logging.getLogger(name)
        library.handlers.clear()
        library.propagate = True
        library.disabled = False
    for noisy in ("uvicorn.access", "httpx", "httpcore", "aiosqlite", "asyncio", "alembic"):
        logging.getLogger(noisy).setLevel(max(number, logging.WARNING))


class _CurrentStdoutHandler(logging.StreamHandler[TextIO]):
    """A stream handler writing to the `sys.stdout` of the moment."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        super().emit(record)


def get_logger(name: str | None = None) -> Any:
    """A structlog logger; `name` is bound as `logger` when given."""
    log = structlog.get_logger()
    return log.bind(logger=name) if name else log


_DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_SCORE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


class Metrics:
    """Every metric of the spec, with the spec's names (`flakeguard_worker_*`)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        p = "flakeguard_worker_"
        self.jobs_processed = Counter(
            p + "jobs_processed",
            "Jobs finished, by queue and status",
            ["queue", "status"],
            registry=r,
        )
        self.job_duration = Histogram(
            p + "job_processing_duration_seconds",
            "Job processing time",
            ["queue"],
            buckets=_DURATION_BUCKETS_S,
            registry=r,
        )
        self.jobs_in_progress = Gauge(
            p + "jobs_in_progress", "Jobs being processed now", ["queue"], registry=r
        )
        self.job_retries = Counter(
            p + "job_retries",
            "Failed attempts, by error category",
            ["queue", "error_type"],
            registry=r,
        )
        self.queue_size = Gauge(
            p + "queue_size", "Jobs per queue and state", ["queue", "state"], registry=r
        )
        self.queue_throughput = Gauge(
            p + "queue_throughput",
            "Jobs finished per second (last sampling window)",
            ["queue"],
            registry=r,
        )
        self.dlq_size = Gauge(
            p + "dlq_size", "Jobs in the dead-letter (failed) set", ["queue"], registry=r
        )
        self.memory_usage = Gauge(
            p + "memory_usage_bytes", "Process memory by type", ["type"], registry=r
        )
        self.cpu_usage = Gauge(p + "cpu_usage_percent", "Process CPU utilisation", registry=r)
        self.health = Gauge(p + "health", "1 when the worker can take jobs, else 0", registry=r)
        self.github_calls = Counter(
            p + "github_api_calls", "GitHub API calls", ["endpoint", "status"], registry=r
        )
        self.github_duration = Histogram(
            p + "github_api_duration_seconds",
            "GitHub API call duration",
            ["endpoint"],
            buckets=_DURATION_BUCKETS_S,
            registry=r,
        )
        self.github_rate_limit_remaining = Gauge(
            p + "github_rate_limit_remaining",
            "Remaining GitHub API requests",
            ["installation", "resource"],
            registry=r,
        )
        self.tests_analyzed = Counter(p + "tests_analyzed", "Tests scored", registry=r)
        self.flaky_tests_detected = Counter(
            p + "flaky_tests_detected", "Tests classed flaky by an analysis", registry=r
        )
        self.flakiness_score = Histogram(
            p + "flakiness_score",
            "Distribution of computed scores",
            buckets=_SCORE_BUCKETS,
            registry=r,
        )
        self.test_results_ingested = Counter(
            p + "test_results_ingested", "Test executions stored", registry=r
        )
        self.analysis_passes = Counter(
            p + "analysis_passes",
            "Scoring passes run by runs-analyze (analyses of one repository waiting at the"
            " same time share a pass: compare with jobs_processed_total)",
            registry=r,
        )
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # primes the counter: the first call always returns 0.0

    def sample_process(self) -> None:
        """Refresh memory and CPU gauges (called before each scrape)."""
        with self._process.oneshot():
            info = self._process.memory_info()
            self.memory_usage.labels("rss").set(info.rss)
            self.memory_usage.labels("vms").set(info.vms)
            self.cpu_usage.set(self._process.cpu_percent(None))

    # GitHubObserver protocol (adapters/github/client.py) ---------------------------------
    def on_response(self, endpoint: str, status: int, duration_s: float) -> None:
        self.github_calls.labels(endpoint, str(status)).inc()
        self.github_duration.labels(endpoint).observe(duration_s)

    def on_rate_limit(
        self,
        installation_id: int | None,
        resource: str,
        remaining: int,
        limit: int,
        reset_epoch_s: int,
    ) -> None:
        self.github_rate_limit_remaining.labels(str(installation_id or "app"), resource).set(
            remaining
        )

    def observe_scores(self, scores: Iterable[float]) -> None:
        for score in scores:
            self.flakiness_score.observe(score)
