"""`flakeguard queues ...` and `flakeguard enqueue ...`: operate the queues from a shell.

These commands talk to Redis directly (REDIS_URL, or the embedded Redis in the data dir),
so they work without a running worker. Queue names accept every spelling (`runs-ingest`,
`runs:ingest`, `runs%3Aingest`). Tables by default, one JSON document with `--json`.
Exit codes: 0 done, 1 the operation was refused (job not found, wrong state) or Redis is
unreachable, 2 bad arguments or configuration.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import redis.exceptions
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from flakeguard.adapters.queue.admin import (
    CleanableState,
    FailedPage,
    JobRecord,
    QueueAdmin,
    QueueStats,
)
from flakeguard.adapters.queue.connection import EmbeddedRedis, RedisTarget
from flakeguard.adapters.queue.names import ALL_QUEUES, QueueName, UnknownQueueError
from flakeguard.adapters.queue.names import parse_queue_name as _parse_queue_name
from flakeguard.adapters.queue.payloads import (
    Payload,
    RecomputeOptions,
    RecomputePayload,
    RecomputeScope,
    RecomputeScopeType,
    RepositoryRef,
    RunMetadata,
    RunsAnalyzePayload,
    RunsIngestPayload,
)
from flakeguard.adapters.queue.producer import Enqueued, JobProducer
from flakeguard.cli_common import fail, run, settings_or_exit
from flakeguard.core.models import Priority
from flakeguard.settings import Settings

T = TypeVar("T")
P = TypeVar("P", bound=Payload)
REASON_PREVIEW_CHARS = 120
REDIS_PING_TIMEOUT_S = 5.0

queues_app = typer.Typer(
    help="Inspect and operate the queues and their dead-letter queue (failed jobs).",
    no_args_is_help=True,
)
enqueue_app = typer.Typer(help="Enqueue a job with its typed payload.", no_args_is_help=True)

QueueArg = Annotated[str, typer.Argument(help="Queue: runs-ingest, runs:ingest, polling, ...")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


async def ping_redis(target: RedisTarget) -> None:
    """Fail fast when Redis is down: BullMQ's own client retries for about six minutes."""
    client: Any = target.cluster_client() if target.is_cluster else target.client()
    try:
        await asyncio.wait_for(client.ping(), timeout=REDIS_PING_TIMEOUT_S)
    except TimeoutError:
        raise redis.exceptions.TimeoutError(
            f"no answer within {REDIS_PING_TIMEOUT_S:.0f} s from {target.description}"
        ) from None
    finally:
        await client.aclose()


@asynccontextmanager
async def open_producer(settings: Settings) -> AsyncIterator[JobProducer]:
    """A `JobProducer` on the configured Redis, closed (with any embedded Redis) on exit."""
    from flakeguard.bootstrap import job_policy, redis_target  # heavy: only when used

    embedded = EmbeddedRedis(settings.data_dir / "redis") if settings.embedded_redis else None
    try:
        target = redis_target(settings, embedded)
        await ping_redis(target)
        producer = JobProducer(target, job_policy(settings))
        try:
            yield producer
        finally:
            await producer.close()
    finally:
        if embedded is not None:
            embedded.close()


def _with_producer(settings: Settings, action: Callable[[JobProducer], Awaitable[T]]) -> T:
    async def go() -> T:
        async with open_producer(settings) as producer:
            return await action(producer)

    try:
        return run(go())
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
        # redis-py's message names host and port only, never the password.
        raise fail(f"cannot reach Redis: {error}", 1) from None


def _with_admin(settings: Settings, action: Callable[[QueueAdmin], Awaitable[T]]) -> T:
    return _with_producer(settings, lambda producer: action(QueueAdmin(producer.queues)))


def parse_queue(raw: str) -> QueueName:
    try:
        return _parse_queue_name(raw)
    except UnknownQueueError as error:
        raise fail(str(error)) from None


def _print_json(value: Any) -> None:
    def plain(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if isinstance(obj, tuple | list):
            return [plain(item) for item in obj]
        return obj

    typer.echo(json.dumps(plain(value), default=str, sort_keys=True))


def _when(epoch_ms: int | None) -> str:
    if not epoch_ms:
        return "-"
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _stats_table(rows: list[QueueStats]) -> Table:
    table = Table(title="queues")
    for column in ("queue", "waiting", "active", "delayed", "failed", "completed", "paused"):
        table.add_column(column, justify="left" if column == "queue" else "right")
    for s in rows:
        table.add_row(
            s.queue.value,
            str(s.waiting),
            str(s.active),
            str(s.delayed),
            str(s.failed),
            str(s.completed),
            "yes" if s.paused else "no",
        )
    return table


def _failed_table(page: FailedPage) -> Table:
    shown = f"{page.start + 1}-{page.start + len(page.jobs)}" if page.jobs else "none"
    table = Table(title=f"{page.queue.value}: failed jobs {shown} of {page.total}")
    table.add_column("id", no_wrap=True)
    table.add_column("category", no_wrap=True)
    table.add_column("attempts", justify="right")
    table.add_column("failed at (UTC)", no_wrap=True)
    table.add_column("reason", overflow="fold")
    for job in page.jobs:
        table.add_row(
            job.job_id,
            job.error_category or "-",
            f"{job.attempts_made}/{job.max_attempts}",
            _when(job.finished_at_ms),
            (job.failed_reason or "")[:REASON_PREVIEW_CHARS],
        )
    return table


def _job_table(job: JobRecord) -> Table:
    table = Table(title=f"{job.queue.value} job {job.job_id}", show_header=False)
    table.add_column("field", no_wrap=True)
    table.add_column("value", overflow="fold")
    rows = {
        "name": job.name,
        "state": job.state.value,
        "attempts": f"{job.attempts_made}/{job.max_attempts}",
        "priority": str(job.priority),
        "created (UTC)": _when(job.created_at_ms),
        "processed (UTC)": _when(job.processed_at_ms),
        "finished (UTC)": _when(job.finished_at_ms),
        "category": job.error_category or "-",
        "failed reason": job.failed_reason or "-",
        "data": json.dumps(job.data, default=str),
    }
    for field, value in rows.items():
        table.add_row(field, value)
    return table


@queues_app.command("stats")
def stats_command(
    queue: Annotated[str | None, typer.Argument(help="One queue (default: all).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Job counts per queue (waiting includes prioritized jobs)."""
    settings = settings_or_exit()
    names = [parse_queue(queue)] if queue else list(ALL_QUEUES)

    async def action(admin: QueueAdmin) -> list[QueueStats]:
        return [await admin.stats(name) for name in names]

    rows = _with_admin(settings, action)
    if as_json:
        _print_json(rows)
    else:
        Console().print(_stats_table(rows))


@queues_app.command("failed")
def failed_command(
    queue: QueueArg,
    start: Annotated[int, typer.Option(min=0, help="Skip this many (newest first).")] = 0,
    limit: Annotated[int, typer.Option(min=1, max=500, help="Page size.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """List the dead-letter queue (failed jobs), newest failure first."""
    settings = settings_or_exit()
    name = parse_queue(queue)
    page = _with_admin(settings, lambda admin: admin.failed(name, start=start, limit=limit))
    if as_json:
        _print_json(page)
    else:
        Console().print(_failed_table(page))


@queues_app.command("job")
def job_command(
    queue: QueueArg,
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    as_json: JsonOpt = False,
) -> None:
    """Show one job in any state, with its payload and failure."""
    settings = settings_or_exit()
    name = parse_queue(queue)
    job = _with_admin(settings, lambda admin: admin.job(name, job_id))
    if as_json:
        _print_json(job)
    else:
        Console().print(_job_table(job))


@queues_app.command("retry")
def retry_command(
    queue: QueueArg,
    job_id: Annotated[str, typer.Argument(help="Id of a failed job.")],
    as_json: JsonOpt = False,
) -> None:
    """Move one failed job back to waiting (attempts reset); a worker reprocesses it."""
    settings = settings_or_exit()
    name = parse_queue(queue)
    job = _with_admin(settings, lambda admin: admin.retry(name, job_id))
    if as_json:
        _print_json(job)
    else:
        typer.echo(f"retried {name.value} job {job.job_id}: now {job.state.value}")


@queues_app.command("retry-failed")
def retry_failed_command(queue: QueueArg, as_json: JsonOpt = False) -> None:
    """Retry every failed job of a queue."""
    settings = settings_or_exit()
    name = parse_queue(queue)
    count = _with_admin(settings, lambda admin: admin.retry_all_failed(name))
    if as_json:
        _print_json({"queue": name.value, "retried": count})
    else:
        typer.echo(f"retried {count} failed {name.value} job(s)")


@queues_app.command("delete")
def delete_command(
    queue: QueueArg,
    job_id: Annotated[str, typer.Argument(help="Id of a failed job.")],
    as_json: JsonOpt = False,
) -> None:
    """Delete one failed job from the dead-letter queue."""
    settings = settings_or_exit()
    name = parse_queue(queue)
    _with_admin(settings, lambda admin: admin.delete_failed(name, job_id))
    if as_json:
        _print_json({"queue": name.value, "job_id": job_id, "deleted": True})
    else:
        typer.echo(f"deleted failed {name.value} job {job_id}")


@queues_app.command("pause")
def pause_command(queue: QueueArg, as_json: JsonOpt = False) -> None:
    """Stop workers taking new jobs from a queue (in-flight jobs finish)."""
    settings = settings_or_exit()
    name = parse_queue(queue)
    stats = _with_admin(settings, lambda admin: admin.pause(name))
    if as_json:
        _print_json(stats)
    else:
        typer.echo(f"paused {name.value} ({stats.waiting} waiting)")


@queues_app.command("resume")
def resume_command(queue: QueueArg, as_json: JsonOpt = False) -> None:
    """Let workers take jobs from a paused queue again."""
    settings = settings_or_exit()
    name = parse_queue(queue)
    stats = _with_admin(settings, lambda admin: admin.resume(name))
    if as_json:
        _print_json(stats)
    else:
        typer.echo(f"resumed {name.value} ({stats.waiting} waiting)")


@queues_app.command("clean")
def clean_command(
    queue: QueueArg,
    state: Annotated[
        CleanableState, typer.Option(help="Which finished jobs to remove.")
    ] = CleanableState.COMPLETED,
    grace_s: Annotated[
        int, typer.Option("--grace-s", min=0, help="Keep jobs that finished within this.")
    ] = 0,
    limit: Annotated[int, typer.Option(min=1, help="Remove at most this many.")] = 1000,
    as_json: JsonOpt = False,
) -> None:
    """Remove completed or failed jobs that finished more than --grace-s seconds ago."""
    settings = settings_or_exit()
    name = parse_queue(queue)
    removed = _with_admin(
        settings, lambda admin: admin.clean(name, state, grace_ms=grace_s * 1000, limit=limit)
    )
    if as_json:
        _print_json({"queue": name.value, "state": state.value, "removed": list(removed)})
    else:
        typer.echo(f"removed {len(removed)} {state.value} {name.value} job(s)")


@queues_app.command("retention")
def retention_command(
    queue: Annotated[str | None, typer.Argument(help="One queue (default: all).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Apply the DLQ retention policy now: DLQ_MAX_AGE_DAYS, then REMOVE_ON_FAIL newest kept."""
    settings = settings_or_exit()
    names = [parse_queue(queue)] if queue else list(ALL_QUEUES)

    async def action(admin: QueueAdmin) -> list[Any]:
        return [
            await admin.apply_retention(
                name, max_age_days=settings.dlq_max_age_days, keep=settings.remove_on_fail
            )
            for name in names
        ]

    results = _with_admin(settings, action)
    if as_json:
        _print_json(results)
    else:
        for r in results:
            typer.echo(
                f"{r.queue.value}: removed {r.removed_by_age} by age, {r.removed_by_count} by count"
            )


# -- enqueue ---------------------------------------------------------------------------


def _repository(repo: str, installation_id: int | None) -> RepositoryRef:
    owner, _, name = repo.partition("/")
    return RepositoryRef.model_validate(
        {"owner": owner, "repo": name, "installation_id": installation_id}
    )


def _build(factory: Callable[[], P]) -> P:
    """Validate a payload from options; invalid -> one line naming the fields, exit 2."""
    try:
        return factory()
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['msg']}"
            for e in error.errors()[:5]
        )
        raise fail(f"invalid job: {problems}") from None


def _report(enqueued: Enqueued, as_json: bool) -> None:
    if as_json:
        _print_json(
            {
                "queue": enqueued.queue.value,
                "job_id": enqueued.job_id,
                "deduplicated": enqueued.deduplicated,
            }
        )
    elif enqueued.deduplicated:
        typer.echo(f"already pending: {enqueued.queue.value} job {enqueued.job_id}")
    else:
        typer.echo(f"enqueued {enqueued.queue.value} job {enqueued.job_id}")


RepoOpt = Annotated[str, typer.Option("--repo", help="OWNER/NAME.")]
RunIdOpt = Annotated[int, typer.Option("--run-id", help="Workflow run id.")]
AttemptOpt = Annotated[int, typer.Option("--attempt", help="Run attempt.")]
InstallationOpt = Annotated[
    int | None, typer.Option("--installation-id", help="GitHub App installation id.")
]


@enqueue_app.command("ingest")
def enqueue_ingest(
    repo: RepoOpt,
    run_id: RunIdOpt,
    attempt: AttemptOpt = 1,
    installation_id: InstallationOpt = None,
    priority: Annotated[Priority, typer.Option(help="Job priority.")] = Priority.NORMAL,
    as_json: JsonOpt = False,
) -> None:
    """Enqueue a runs-ingest job (deduplicated per run attempt)."""
    settings = settings_or_exit()
    payload = _build(
        lambda: RunsIngestPayload(
            workflow_run_id=run_id,
            repository=_repository(repo, installation_id),
            priority=priority,
            metadata=RunMetadata(run_attempt=attempt),
        )
    )
    _report(_with_producer(settings, lambda producer: producer.ingest(payload)), as_json)


@enqueue_app.command("analyze")
def enqueue_analyze(
    repo: RepoOpt,
    run_id: RunIdOpt,
    attempt: AttemptOpt = 1,
    installation_id: InstallationOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Recompute even if analysed.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Enqueue a runs-analyze job (deduplicated per run attempt)."""
    settings = settings_or_exit()
    payload = _build(
        lambda: RunsAnalyzePayload(
            workflow_run_id=run_id,
            repository=_repository(repo, installation_id),
            run_attempt=attempt,
            force_recompute=force,
        )
    )
    _report(_with_producer(settings, lambda producer: producer.analyze(payload)), as_json)


@enqueue_app.command("recompute")
def enqueue_recompute(
    repo: RepoOpt,
    scope: Annotated[
        RecomputeScopeType, typer.Option(help="Which tests to re-score.")
    ] = RecomputeScopeType.ALL,
    pattern: Annotated[
        list[str] | None, typer.Option("--pattern", help="Pattern or test id (repeatable).")
    ] = None,
    lookback_days: Annotated[
        int | None, typer.Option("--lookback-days", help="History window in days.")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Tests per batch.")] = 500,
    installation_id: InstallationOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Enqueue a tests-recompute job (deduplicated by payload)."""
    settings = settings_or_exit()
    payload = _build(
        lambda: RecomputePayload(
            repository=_repository(repo, installation_id),
            recompute_scope=RecomputeScope(
                type=scope, patterns=tuple(pattern or ()), lookback_days=lookback_days
            ),
            options=RecomputeOptions(batch_size=batch_size),
        )
    )
    _report(_with_producer(settings, lambda producer: producer.recompute(payload)), as_json)
