"""Helpers shared by integration and e2e tests (not fixtures: plain functions)."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flakeguard.adapters.db.engine import migrate
from flakeguard.adapters.local_source import LocalRunSource
from flakeguard.adapters.queue.names import QueueName
from flakeguard.adapters.queue.runner import QueueRunner
from flakeguard.bootstrap import Runtime, build_runners, open_runtime
from flakeguard.deps import CheckPublisher
from flakeguard.settings import Settings, load_settings

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def make_settings(
    *, redis_url: str, database_url: str, prefix: str, data_dir: Path, **extra: str
) -> Settings:
    env = {
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "QUEUE_PREFIX": prefix,
        "FLAKEGUARD_DATA_DIR": str(data_dir),
        "POLLING_ENABLED": "false",
        "LOG_LEVEL": "warn",
        **extra,
    }
    return load_settings(env)


@asynccontextmanager
async def runtime_for(
    settings: Settings,
    *,
    runs_root: Path | None = None,
    checks: CheckPublisher | None = None,
    clock: Callable[[], datetime] | None = None,
) -> AsyncIterator[Runtime]:
    source = LocalRunSource(runs_root) if runs_root is not None else None
    async with open_runtime(
        settings,
        run_source=source,
        checks=checks,
        clock=clock or (lambda: datetime.now(UTC)),
    ) as runtime:
        if not settings.embedded_database:
            await migrate(runtime.deps.engine)
        yield runtime


@asynccontextmanager
async def running_workers(
    runtime: Runtime, queues: Sequence[QueueName] | None = None
) -> AsyncIterator[list[QueueRunner[Any]]]:
    runners = [r for r in build_runners(runtime) if queues is None or r.queue in queues]
    for runner in runners:
        await runner.start()
    try:
        yield runners
    finally:
        for runner in runners:
            await runner.close(10)


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], timeout_s: float = 20.0, interval_s: float = 0.05
) -> None:
    """Poll `predicate` until true; fail with a clear message after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s} s")


def write_local_run(
    root: Path,
    *,
    owner: str,
    repo: str,
    run_id: int,
    attempt: int = 1,
    head_sha: str = "a" * 40,
    branch: str = "main",
    jobs: dict[str, Sequence[Path]] | None = None,
    started_at: datetime | None = None,
    workflow: str = "ci",
) -> Path:
    """Lay out a run for `LocalRunSource`: run.json plus one folder per job with copies."""
    folder = root / owner / repo / str(run_id) / str(attempt)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.json").write_text(
        json.dumps(
            {
                "head_sha": head_sha,
                "head_branch": branch,
                "event": "push",
                "workflow": workflow,
                "started_at": (started_at or datetime(2026, 11, 1, tzinfo=UTC)).isoformat(),
                "conclusion": "success",
            }
        )
    )
    for job, files in (jobs or {}).items():
        job_dir = folder / job
        job_dir.mkdir(exist_ok=True)
        for file in files:
            shutil.copy(file, job_dir / file.name)
    return folder
