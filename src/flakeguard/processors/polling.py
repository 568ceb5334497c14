"""`polling`: discover completed runs of enabled repositories and enqueue their ingestion."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from flakeguard.adapters.queue.names import QueueName
from flakeguard.adapters.queue.payloads import PollingPayload
from flakeguard.adapters.queue.runner import JobContext, QueueHandler
from flakeguard.deps import Deps
from flakeguard.processors.discovery import poll_repositories

log = structlog.get_logger("flakeguard.polling")


async def poll(deps: Deps, payload: PollingPayload) -> dict[str, Any]:
    if deps.github is None:
        log.info("polling.skipped", reason="GitHub App not configured")
        return {"skipped": "GitHub App not configured", "enqueued": 0}
    return await poll_repositories(deps, payload)


def handler(deps: Deps) -> QueueHandler[PollingPayload]:
    async def handle(payload: PollingPayload, ctx: JobContext) -> Mapping[str, Any]:
        return await poll(deps, payload)

    return QueueHandler(
        queue=QueueName.POLLING, payload_type=PollingPayload, handle=handle, concurrency=1
    )
