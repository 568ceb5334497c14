"""`flakeguard ...`: the command line (typer + rich)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from flakeguard.cli_common import fail, run, settings_or_exit
from flakeguard.errors import FlakeGuardError
from flakeguard.observability import configure_logging
from flakeguard.settings import Settings, load_settings

__all__ = ["app", "fail", "main", "run", "settings_or_exit"]

app = typer.Typer(
    name="flakeguard",
    help="FlakeGuard workers: ingest CI test results, detect flaky tests, report on GitHub.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.command()
def worker(
    reload: Annotated[
        bool, typer.Option("--reload", help="Restart when source files change (development).")
    ] = False,
) -> None:
    """Run the workers for all queues plus the health/metrics/API server."""
    settings = settings_or_exit()
    if reload:
        from watchfiles import run_process

        source = Path(__file__).parent
        run_process(source, target=_worker_process, callback=lambda changes: None)
        return
    configure_logging(settings.log_level)
    from flakeguard.worker import run_worker

    run(run_worker(settings))


def _worker_process() -> None:
    settings = load_settings()
    configure_logging(settings.log_level)
    from flakeguard.worker import run_worker

    run(run_worker(settings))


@app.command()
def migrate(
    revision: Annotated[
        str, typer.Argument(help="Target revision ('head', 'base', or an id).")
    ] = "head",
    down: Annotated[bool, typer.Option("--down", help="Downgrade to REVISION instead.")] = False,
) -> None:
    """Apply (or roll back) database migrations."""
    settings = settings_or_exit()
    configure_logging(settings.log_level)
    from flakeguard.adapters.db.engine import create_engine, database_url, downgrade
    from flakeguard.adapters.db.engine import migrate as upgrade

    async def go() -> None:
        url = settings.database_url.get_secret_value() if settings.database_url else None
        engine = create_engine(database_url(url, settings.data_dir))
        try:
            await (downgrade(engine, revision) if down else upgrade(engine, revision))
        finally:
            await engine.dispose()

    run(go())
    typer.echo(f"database at revision {revision}{' (downgraded)' if down else ''}")


@app.command()
def emulator(
    port: Annotated[int, typer.Option(help="API port (the blob host takes another).")] = 8089,
    scenario: Annotated[
        Path, typer.Option(help="Folder with scenario.json and artifact files.", exists=True)
    ] = Path("."),
    host: Annotated[str, typer.Option(help="Loopback address to bind.")] = "127.0.0.1",
) -> None:
    """Run the GitHub API emulator on loopback (see docs/emulator.md)."""
    from flakeguard.emulator import main as emulator_main

    emulator_main(port, scenario, host)


@app.command("import-junit")
def import_junit(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="XML files, folders (recursive) or ZIP archives.")
    ] = None,
    manifest: Annotated[
        Path | None, typer.Option(help="JSON-lines file, one run attempt per line.")
    ] = None,
    repo: Annotated[str | None, typer.Option(help="OWNER/NAME")] = None,
    run_id: Annotated[int | None, typer.Option("--run-id", help="CI run id.")] = None,
    sha: Annotated[str | None, typer.Option(help="Commit SHA that was tested.")] = None,
    branch: Annotated[str | None, typer.Option(help="Branch of the run.")] = None,
    attempt: Annotated[int, typer.Option(help="Re-run attempt of the run.")] = 1,
    job: Annotated[str, typer.Option(help="Job / matrix leg (the environment).")] = "default",
    workflow: Annotated[str, typer.Option(help="Workflow name.")] = "ci",
    started_at: Annotated[
        str | None, typer.Option("--started-at", help="ISO 8601 start time of the run.")
    ] = None,
    event: Annotated[str | None, typer.Option(help="push, pull_request, ...")] = None,
    pr_number: Annotated[int | None, typer.Option("--pr-number")] = None,
    default_branch: Annotated[
        str | None, typer.Option("--default-branch", help="The repository's default branch.")
    ] = None,
) -> None:
    """Import JUnit results from any CI (or a backfill) through the ingestion path."""
    from pydantic import ValidationError

    from flakeguard.database import open_database, utc_now
    from flakeguard.gc_tuning import collecting_rarely
    from flakeguard.processors.imports import ImportSpec, import_all, read_manifest

    settings = settings_or_exit()
    configure_logging(settings.log_level)
    if manifest is not None:
        if paths or repo or run_id or sha:
            raise fail("give either --manifest or PATH... with --repo/--run-id/--sha, not both")
        try:
            # Validate every line first: an unusable manifest imports nothing.
            specs = iter(list(read_manifest(manifest)))
        except FlakeGuardError as error:
            raise fail(str(error)) from None
    else:
        if not paths or repo is None or run_id is None or sha is None:
            raise fail("PATH..., --repo, --run-id and --sha are required (or use --manifest)")
        try:
            spec = ImportSpec(
                repo=repo,
                run_id=run_id,
                attempt=attempt,
                sha=sha,
                branch=branch,
                started_at=started_at,  # pydantic parses ISO 8601
                workflow=workflow,
                job=job,
                event=event,
                pr_number=pr_number,
                default_branch=default_branch,
                paths=tuple(paths),
            )
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise fail(f"invalid {where}: {first['msg']}") from None
        specs = iter([spec])
    with collecting_rarely():
        _run_import(settings, specs, open_database, import_all, utc_now)


def _run_import(
    settings: Settings, specs: Any, open_database: Any, import_all: Any, clock: Any
) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = Console(stderr=True)
    progress = Progress(
        TextColumn("importing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[executions]} results"),
        console=console,
        disable=not console.is_terminal,
        transient=True,
    )

    async def go() -> Any:
        async with open_database(settings) as engine:
            with progress:
                task = progress.add_task("import", total=None, executions=0)

                def step(_: Any, outcome: Any) -> None:
                    progress.update(task, advance=1, executions=outcome.executions)

                return await import_all(engine, specs, clock, step)

    outcome = run(go())
    for problem in outcome.problems:
        typer.echo(f"problem: {problem.source}: {problem.reason}", err=True)
    typer.echo(
        f"imported {outcome.runs} run attempts ({outcome.created} new): "
        f"{outcome.cases} test cases, {outcome.executions} results, "
        f"{len(outcome.problems)} files with problems"
    )
    if outcome.runs == 0:
        raise fail("nothing to import: the manifest has no runs")


def _register_analysis_commands() -> None:
    from flakeguard.cli_analysis import analyze, flaky, quarantine_app

    app.command("analyze")(analyze)
    app.command("flaky")(flaky)
    app.add_typer(quarantine_app, name="quarantine")


_register_analysis_commands()


def _register_ops_commands() -> None:
    from flakeguard.cli_ops import enqueue_app, queues_app

    app.add_typer(queues_app, name="queues")
    app.add_typer(enqueue_app, name="enqueue")


_register_ops_commands()


def _register_load_test_command() -> None:
    from flakeguard.loadtest.command import load_test

    app.command("load-test")(load_test)


_register_load_test_command()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
