"""The commands' event loop."""

from __future__ import annotations

import asyncio
import gc

import pytest
import typer

from flakeguard.cli_common import run
from flakeguard.errors import FlakeGuardError


def test_commands_run_on_uvloop() -> None:
    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert run(loop_module()) == "uvloop"


def test_commands_run_with_the_startup_objects_frozen() -> None:
    async def frozen() -> int:
        return gc.get_freeze_count()

    gc.unfreeze()  # another test's command may have frozen objects already
    try:
        assert run(frozen()) > 0
    finally:
        gc.unfreeze()


def test_a_flakeguard_error_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    async def broken() -> None:
        raise FlakeGuardError("the database is gone")

    with pytest.raises(typer.Exit) as exited:
        run(broken())
    assert exited.value.exit_code == 1
    assert capsys.readouterr().err == "flakeguard: the database is gone\n"
