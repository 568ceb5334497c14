"""What every CLI module shares: settings loading, running coroutines, one-line failures."""

from __future__ import annotations

import asyncio
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


def run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except ConfigError as error:
        raise fail(f"invalid configuration: {error}") from None
    except FlakeGuardError as error:
        raise fail(str(error), 1) from None
