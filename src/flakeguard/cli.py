"""`flakeguard ...`: the command line (typer + rich)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from flakeguard.errors import ConfigError, FlakeGuardError
from flakeguard.observability import configure_logging
from flakeguard.settings import Settings, load_settings

T = TypeVar("T")
app = typer.Typer(
    name="flakeguard",
    help="FlakeGuard workers: ingest CI test results, detect flaky tests, report on GitHub.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one line on stderr and return the exit to raise."""
    typer.echo(f"flakeguard: {message}", err=True)
    return typer.Exit(code)


def settings_or_exit(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except ConfigError as error:
        raise fail(f"invalid configuration: {error}") from None


def run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except ConfigError as error:
        raise fail(f"invalid configuration: {error}") from None
    except FlakeGuardError as error:
        raise fail(str(error), 1) from None


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
    from flakeguard.bootstrap import run_worker

    run(run_worker(settings))


def _worker_process() -> None:
    settings = load_settings()
    configure_logging(settings.log_level)
    from flakeguard.bootstrap import run_worker

    asyncio.run(run_worker(settings))


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


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
