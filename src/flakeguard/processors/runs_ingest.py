"""`runs-ingest`: fetch a run's JUnit reports, store them, enqueue its analysis."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from flakeguard.adapters.db.runs import ensure_repository, store_run
from flakeguard.adapters.queue.names import QueueName
from flakeguard.adapters.queue.payloads import RunsAnalyzePayload, RunsIngestPayload
from flakeguard.adapters.queue.runner import JobContext, QueueHandler
from flakeguard.deps import Deps
from flakeguard.errors import PermanentJobError

log = structlog.get_logger("flakeguard.ingest")


async def ingest(
    deps: Deps, payload: RunsIngestPayload, correlation_id: str | None = None
) -> dict[str, Any]:
    """Store the run attempt (idempotent) and enqueue `runs-analyze` for it.

    A run whose files are all unusable is still recorded (so it is never fetched again),
    then fails permanently with the files' reasons: it lands in the dead-letter queue.
    """
    now = deps.clock()
    opened = await deps.run_source.open_run(payload)
    repo = payload.repository
    repository_id = await ensure_repository(
        deps.engine,
        repo.owner,
        repo.repo,
        now=now,
        installation_id=repo.installation_id,
        known=deps.repository_ids,
    )
    stored = await store_run(
        deps.engine,
        repository_id,
        opened.run,
        opened.groups,
        now=now,
        case_cache=deps.case_ids.for_repository(repository_id),
    )
    if stored.created:
        deps.metrics.test_results_ingested.inc(stored.executions)
    analysis_job_id = await deps.producer.follow_up_analysis(
        RunsAnalyzePayload(
            workflow_run_id=payload.workflow_run_id,
            repository=repo,
            run_attempt=opened.run.attempt,
            correlation_id=correlation_id,
        )
    )
    log.info(
        "run.ingested",
        created=stored.created,
        cases=stored.cases,
        executions=stored.executions,
        problems=len(stored.problems),
        analysis_job=analysis_job_id,
    )
    if stored.created and stored.cases == 0 and stored.problems:
        reasons = "; ".join(f"{p.source}: {p.reason}" for p in stored.problems[:5])
        raise PermanentJobError(f"no usable test results in the run: {reasons}")
    return {
        "created": stored.created,
        "workflowRunRowId": stored.workflow_run_id,
        "cases": stored.cases,
        "executions": stored.executions,
        "problems": [{"source": p.source, "reason": p.reason} for p in stored.problems[:50]],
        "analysisJobId": analysis_job_id,
    }


def handler(deps: Deps) -> QueueHandler[RunsIngestPayload]:
    async def handle(payload: RunsIngestPayload, ctx: JobContext) -> Mapping[str, Any]:
        return await ingest(deps, payload, ctx.correlation_id)

    return QueueHandler(
        queue=QueueName.RUNS_INGEST,
        payload_type=RunsIngestPayload,
        handle=handle,
        concurrency=deps.settings.worker_concurrency,
    )
