"""`runs-analyze`: score the tests a run touched, update quarantine, publish the check run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import structlog

from flakeguard.adapters.db.checks import outcomes_at_sha
from flakeguard.adapters.db.history import CaseInfo, rescore_candidates
from flakeguard.adapters.db.runs import find_repository_run
from flakeguard.adapters.queue.names import QueueName
from flakeguard.adapters.queue.payloads import RunsAnalyzePayload
from flakeguard.adapters.queue.runner import JobContext, QueueHandler
from flakeguard.core.models import Verdict
from flakeguard.core.scoring import ScoringPolicy
from flakeguard.deps import Deps
from flakeguard.errors import PermanentJobError
from flakeguard.processors.analysis import (
    AnalysisResult,
    analyze_cases,
    scoring_context,
    scoring_policy,
)
from flakeguard.processors.check_runs import apply_button, publish_check_run
from flakeguard.processors.coalescing import PassCoalescer

log = structlog.get_logger("flakeguard.analyze")


@dataclass(frozen=True, slots=True)
class SharedPass:
    """A scoring pass's result, the tests it re-scored for each run it covered (by
    `workflow_runs.id`, then test key), and those tests. A test the runs touched that the
    pass left alone is settled: healthy, score 0, not quarantined (`rescore_candidates`)."""

    result: AnalysisResult
    rescored: dict[int, set[str]]
    cases: list[CaseInfo]


ScoringGroups = PassCoalescer[tuple[int, ScoringPolicy], int, SharedPass]
"""Scoring passes shared by the analyses of one repository waiting at the same time,
keyed by repository and policy; each analysis brings its run."""


def _own_share(result: AnalysisResult, keys: set[str]) -> AnalysisResult:
    """The part of a shared pass's result about the tests `keys` (counts included)."""
    rollups = {k: s for k, s in result.rollups.items() if k in keys}
    quarantine = {k: s for k, s in result.quarantine.items() if k in keys}
    return AnalysisResult(
        tests=len(rollups),
        flaky=sum(1 for s in rollups.values() if s.verdict is Verdict.FLAKY),
        broken=sum(1 for s in rollups.values() if s.verdict is Verdict.BROKEN),
        quarantined=len(quarantine),
        rollups=rollups,
        quarantine=quarantine,
    )


async def analyze_run(
    deps: Deps, payload: RunsAnalyzePayload, groups: ScoringGroups | None = None
) -> dict[str, Any]:
    """Score what the run can change, then publish the commit's check run.

    With `groups`, the scoring pass is shared with the other analyses of the repository
    waiting at the same time (`coalescing`); a button press always scores on its own.
    """
    ref = payload.repository
    repo, run = await find_repository_run(
        deps.engine, ref.owner, ref.repo, payload.workflow_run_id, payload.run_attempt
    )
    if repo is None:
        raise PermanentJobError(f"repository {ref.full_name} has no stored results")
    if run is None:
        raise PermanentJobError(
            f"run {ref.full_name}#{payload.workflow_run_id} attempt {payload.run_attempt} "
            "is not stored; ingest it first"
        )
    config = payload.analysis_config
    policy = scoring_policy(config.lookback_days, config.min_runs_threshold)
    context = scoring_context(deps)

    async def run_pass(run_ids: list[int]) -> SharedPass:
        deps.metrics.analysis_passes.inc()
        candidates = await rescore_candidates(deps.engine, run_ids)
        rescored: dict[int, set[str]] = {}
        for run_row_id, case_info in candidates:
            rescored.setdefault(run_row_id, set()).add(case_info.test_key)
        cases = list({c.id: c for _, c in candidates}.values())
        result = await analyze_cases(
            context,
            repo,
            cases,
            policy=policy,
            update_quarantine=True,
            keep_results=True,
            history_cache=deps.history_cache,
        )
        return SharedPass(result, rescored, cases)

    if payload.requested_action is None:
        if groups is not None:
            shared = await groups.run((repo.id, policy), {run.id: run.id}, run_pass)
        else:
            shared = await run_pass([run.id])
        own = shared.rescored.get(run.id, set())
    else:
        # A button acts on the whole commit, so score the tests of every run at the SHA,
        # not only those of the run the button's job names.
        at_sha = await outcomes_at_sha(deps.engine, repo.id, run.head_sha)
        shared = await run_pass(sorted({r for o in at_sha for r in o.runs} | {run.id}))
        own = set().union(*shared.rescored.values())
        await apply_button(
            deps, repo, run.head_sha, payload.requested_action, shared.result.rollups
        )
        # Recount with the quarantine states the button just changed (the check run reads
        # them from the database).
        redrawn = await analyze_cases(
            context, repo, shared.cases, policy=policy, update_quarantine=False, keep_results=True
        )
        shared = replace(shared, result=redrawn)
    result = _own_share(shared.result, own)
    published = await publish_check_run(deps, repo, run)
    log.info(
        "run.analyzed",
        tests=result.tests,
        flaky=result.flaky,
        broken=result.broken,
        check_run=published,
    )
    return {
        "tests": result.tests,
        "flaky": result.flaky,
        "broken": result.broken,
        "quarantined": result.quarantined,
        "checkRunId": published,
    }


def handler(deps: Deps) -> QueueHandler[RunsAnalyzePayload]:
    groups: ScoringGroups = PassCoalescer()

    async def handle(payload: RunsAnalyzePayload, ctx: JobContext) -> Mapping[str, Any]:
        return await analyze_run(deps, payload, groups)

    return QueueHandler(
        queue=QueueName.RUNS_ANALYZE,
        payload_type=RunsAnalyzePayload,
        handle=handle,
        concurrency=deps.settings.high_priority_concurrency,
    )
