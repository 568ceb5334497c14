"""A worker process for the kill -9 test: takes one runs-ingest job and hangs in it.

Run as `python stall_worker.py REDIS_URL PREFIX MARKER_FILE`; it writes MARKER_FILE when the
job has started, then sleeps until killed.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flakeguard.adapters.queue.connection import target_from_url
from flakeguard.adapters.queue.names import QueueName
from flakeguard.adapters.queue.payloads import RunsIngestPayload
from flakeguard.adapters.queue.runner import JobContext, QueueHandler, QueueRunner, WorkerOptions
from flakeguard.observability import Metrics

LOCK_MS, STALLED_MS = 2000, 1000


async def main(redis_url: str, prefix: str, marker: Path) -> None:
    async def hang(payload: RunsIngestPayload, ctx: JobContext) -> Mapping[str, Any] | None:
        marker.write_text(ctx.job_id)
        await asyncio.sleep(3600)
        return None

    runner = QueueRunner(
        target_from_url(redis_url),
        QueueHandler(QueueName.RUNS_INGEST, RunsIngestPayload, hang, concurrency=1),
        WorkerOptions(lock_duration_ms=LOCK_MS, stalled_interval_ms=STALLED_MS, prefix=prefix),
        Metrics(),
    )
    await runner.start()
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], Path(sys.argv[3])))
