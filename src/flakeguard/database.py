"""The database alone, for commands that need no queues, no GitHub and no worker.

Kept apart from `bootstrap` (the worker's composition root) so that `flakeguard
import-junit` and the analysis commands do not import Redis, BullMQ, the GitHub client and
every processor: ~0.3 s of CPU at each start (`python -X importtime`).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Final

from sqlalchemy.ext.asyncio import AsyncEngine

from flakeguard.adapters.db.engine import create_engine, database_url, migrate
from flakeguard.settings import Settings


def utc_now() -> datetime:
    return datetime.now(UTC)


@asynccontextmanager
async def open_database(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """Only the database (CLI commands that need no queues); migrates embedded SQLite."""
    db_url = settings.database_url.get_secret_value() if settings.database_url else None
    engine = create_engine(database_url(db_url, settings.data_dir))
    try:
        if settings.embedded_database or engine.dialect.name == "sqlite":  # a file we own
            await migrate(engine)
        yield engine
    finally:
        await engine.dispose()


GC_THRESHOLDS: Final = (50_000, 20, 20)
"""The collector's thresholds for the worker (`bootstrap.tune_garbage_collector`) and for
batch commands (`collecting_rarely`)."""


@contextlib.contextmanager
def collecting_rarely() -> Iterator[None]:
    """The worker's collector thresholds (`GC_THRESHOLDS`) for a batch command, then back.

    `flakeguard import-junit` allocates millions of short-lived tuples that hold no cycles
    (results, rows); at the default thresholds the collector visits each of them and
    promotes the live ones through full collections. 300k results: 6.6-7.2 s of CPU at the
    default, 5.5-6.0 s with these (two alternated runs each; turning the collector off did
    no better). Cycles are still collected, and peak memory did not change.
    """
    before = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*before)
