"""The `flakeguard load-test` command (registered by `flakeguard.cli`)."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from flakeguard.loadtest.faults import FaultSpecError, parse_faults

if TYPE_CHECKING:
    from flakeguard.loadtest.run import LoadReport

TARGET_RSS_MB = 300.0


def _table(report: LoadReport) -> Table:
    table = Table(title=f"load test: {report.jobs} jobs at {report.rate_per_min:g}/min")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("mode", report.mode),
        ("workers × concurrency", f"{report.workers} × {report.concurrency}"),
        ("throughput (jobs/min)", f"{report.throughput_jobs_per_min:,.0f}"),
        ("success rate", f"{report.success_rate:.2%}"),
        ("error rate", f"{report.error_rate:.2%}"),
        ("jobs unfinished (still queued)", str(report.jobs_unfinished)),
        ("jobs lost", str(report.jobs_lost)),
        ("rows duplicated", str(report.rows_duplicated)),
        ("peak RSS per worker (MB)", f"{report.peak_rss_mb:.0f}"),
        ("latency p50 / p95 / p99 (ms)", (
            f"{report.latency_p50_ms:,.0f} / {report.latency_p95_ms:,.0f} / "
            f"{report.latency_p99_ms:,.0f}"
        )),
        ("runs / executions stored", f"{report.runs_stored:,} / {report.executions_stored:,}"),
        ("poisoned / other failures", f"{report.poisoned_jobs} / {report.failed_non_poisoned}"),
        ("duration (s)", f"{report.duration_s:.1f}"),
    ]  # fmt: skip
    for name, value in rows:
        table.add_row(name, value)
    return table


def load_test(
    jobs: Annotated[int, typer.Option("--jobs", min=1, help="runs-ingest jobs to enqueue.")],
    rate: Annotated[float, typer.Option("--rate", min=0.1, help="Jobs per minute.")],
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="WORKER_CONCURRENCY of each worker.")
    ],
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes.")] = 2,
    faults: Annotated[
        str | None,
        typer.Option("--faults", help="e.g. github_5xx=0.05,github_429=0.01,kill9=2"),
    ] = None,
    own_services: Annotated[
        bool,
        typer.Option(
            "--own-services",
            help="Start a throwaway Redis and PostgreSQL (needed for redis/pg restarts).",
        ),
    ] = False,
    poison: Annotated[
        float, typer.Option("--poison", min=0.0, max=1.0, help="Share of hostile artifacts.")
    ] = 0.0,
    seed: Annotated[int, typer.Option("--seed")] = 1,
    settle_timeout_s: Annotated[
        float, typer.Option("--settle-timeout", help="Max wait after the last enqueue (s).")
    ] = 180.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the work dir (worker logs).")] = False,
) -> None:
    """Run W real workers against the GitHub emulator at a job rate and report the figures."""
    # Imported here: the emulator and database stack cost every other command half a second.
    from flakeguard.loadtest.run import LoadTestConfig, LoadTestError, run_load_test

    try:
        plan = parse_faults(faults)
    except FaultSpecError as error:
        raise typer.BadParameter(str(error), param_hint="--faults") from None
    config = LoadTestConfig(
        jobs=jobs,
        rate_per_min=rate,
        concurrency=concurrency,
        workers=workers,
        faults=plan,
        seed=seed,
        own_services=own_services,
        poison_share=poison,
        settle_timeout_s=settle_timeout_s,
        keep_work_dir=keep,
    )
    console = Console(stderr=True)

    def progress(enqueued: int, completed: int, failed: int) -> None:
        if console.is_terminal:
            console.print(
                f"enqueued {enqueued}/{jobs}  completed {completed}  failed {failed}",
                end="\r",
            )

    try:
        report = asyncio.run(run_load_test(config, progress))
    except LoadTestError as error:
        typer.echo(f"flakeguard: load test failed: {error}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(report.to_json(), sort_keys=True))
    else:
        Console().print(_table(report))
        for event in report.fault_events:
            typer.echo(f"fault: {event}")
        for reason, count in report.failed_reasons.items():
            typer.echo(f"failed ×{count}: {reason}")
    missed = (
        report.jobs_lost
        or report.jobs_unfinished
        or report.rows_duplicated
        or report.failed_non_poisoned
        or report.peak_rss_mb >= TARGET_RSS_MB
    )
    if missed:
        raise typer.Exit(1)
