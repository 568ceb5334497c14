"""The event loop every FlakeGuard process runs on: its commands and the emulator's servers."""

from __future__ import annotations

import asyncio


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (Linux and macOS, via the `uvloop` dependency), asyncio's
    own elsewhere.

    uvloop runs the same worker with 2-6 % less CPU per run in `bench/github_ingest.py`
    (two sets of alternated runs: medians 55.8 vs 59.3 ms and 58.6 vs 60.0 ms); everything
    here uses only the public loop API. The emulator's servers use it too: in the bench they
    share the machine's cores with the worker (emulator process CPU for 600 runs: 3.3-3.6 s
    against 3.8-4.3 s on asyncio's loop).
    """
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
