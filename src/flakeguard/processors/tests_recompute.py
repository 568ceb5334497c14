"""`tests-recompute`: re-score a repository's tests in batches (the spec's four scopes)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from flakeguard.adapters.db.history import find_repository, select_cases
from flakeguard.adapters.queue.names import QueueName
from flakeguard.adapters.queue.payloads import RecomputePayload, RecomputeScopeType
from flakeguard.adapters.queue.runner import JobContext, QueueHandler
from flakeguard.deps import Deps
from flakeguard.errors import PermanentJobError
from flakeguard.processors.analysis import (
    Progress,
    ScoringContext,
    analyze_cases,
    scoring_context,
    scoring_policy,
)

log = structlog.get_logger("flakeguard.recompute")


async def recompute(
    ctx: ScoringContext, payload: RecomputePayload, progress: Progress | None = None
) -> dict[str, Any]:
    """Score the payload's scope; the same path serves the queue and `flakeguard analyze`."""
    repo_ref = payload.repository
    repo = await find_repository(ctx.engine, repo_ref.owner, repo_ref.repo)
    if repo is None:
        raise PermanentJobError(f"repository {repo_ref.full_name} has no stored results")
    scope = payload.recompute_scope
    patterns = list(scope.patterns)
    cases = await select_cases(
        ctx.engine,
        repo.id,
        name_patterns=patterns
        if scope.type in (RecomputeScopeType.TEST_PATTERN, RecomputeScopeType.SPECIFIC_TESTS)
        else (),
        class_patterns=patterns if scope.type is RecomputeScopeType.CLASS_PATTERN else (),
    )
    result = await analyze_cases(
        ctx,
        repo,
        cases,
        policy=scoring_policy(scope.lookback_days, None),
        update_quarantine=payload.options.update_quarantine_status,
        batch_size=payload.options.batch_size,
        progress=progress,
    )
    log.info("tests.recomputed", tests=result.tests, flaky=result.flaky, broken=result.broken)
    return {
        "tests": result.tests,
        "flaky": result.flaky,
        "broken": result.broken,
        "quarantined": result.quarantined,
    }


def handler(deps: Deps) -> QueueHandler[RecomputePayload]:
    async def handle(payload: RecomputePayload, ctx: JobContext) -> Mapping[str, Any]:
        async def report(done: int, total: int) -> None:
            await ctx.progress({"done": done, "total": total})

        return await recompute(scoring_context(deps), payload, report)

    return QueueHandler(
        queue=QueueName.TESTS_RECOMPUTE,
        payload_type=RecomputePayload,
        handle=handle,
        concurrency=1,
    )
