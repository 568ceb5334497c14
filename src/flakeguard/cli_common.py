"""What every CLI module shares: settings loading, running coroutines, one-line failures."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

import typer

from flakeguard.errors import ConfigError, FlakeGuardError
from flakeguard.settings import Settings, load_settings

T = TypeVar("T")


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one line on stderr and return the exit to raise."""
    typer.echo(f"flakeguard: {message}", err=True)
    return typer.Exit(code)


def settings_or_exit(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except ConfigError as error:
        raise fail(f"invalid configuration: {error}") from None


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The event loop of every command: uvloop where it is installed (Linux and macOS, via
    the `uvloop` dependency), asyncio's own elsewhere.

    uvloop runs the same worker with 2-6 % less CPU per run in `bench/github_ingest.py`
    (two sets of alternated runs: medians 55.8 vs 59.3 ms and 58.6 vs 60.0 ms); everything
    here uses only the public loop API.
    """
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine on a new event loop, with what was imported so far frozen.

    `gc.freeze()` moves every object alive now (modules, classes, SQLAlchemy's and
    pydantic's tables: ~120k objects for `import-junit`) out of the collector's reach, so
    the full collections that a command's millions of short-lived objects trigger no longer
    walk them. None of them is garbage. `flakeguard import-junit` of 300k results: 8.5-9.4 s
    of CPU without, 7.1 s with (two alternated runs each). The worker freezes again once
    started (`gc_tuning.tune_garbage_collector`).
    """
    gc.freeze()
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            return runner.run(coro)
    except ConfigError as error:
        raise fail(f"invalid configuration: {error}") from None
    except FlakeGuardError as error:
        raise fail(str(error), 1) from None
