"""`runs-analyze`: score the tests a run touched, update quarantine, publish the check run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from flakeguard.adapters.db.checks import outcomes_at_sha
from flakeguard.adapters.db.history import (
    CaseInfo,
    StoredScore,
    find_repository,
    load_quarantine,
    load_stored_scores,
    run_cases,
    select_cases,
)
from flakeguard.adapters.db.runs import find_run
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


Touched = tuple[CaseInfo, bool]
"""A test a run touched, and whether it failed or retried in that run ("unsettled")."""


@dataclass(frozen=True, slots=True)
class SharedPass:
    """A scoring pass's result, and the stored scores of the touched tests it left alone
    (settled: healthy, score 0, passed again, not quarantined)."""

    result: AnalysisResult
    settled: dict[str, StoredScore]


ScoringGroups = PassCoalescer[tuple[int, ScoringPolicy], Touched, SharedPass]
"""Scoring passes shared by the analyses of one repository waiting at the same time,
keyed by repository and policy."""


async def cases_to_rescore(
    engine: AsyncEngine, touched: Sequence[Touched]
) -> tuple[list[CaseInfo], dict[str, StoredScore]]:
    """The touched tests whose classification these runs can change, and the stored scores
    of the others (a check run shows them as they are).

    A healthy test with a score of 0 that passed again keeps its score exactly (no failure
    in its window, none added), so re-reading its whole history per run is wasted work.
    Re-scored: tests that failed or retried in a run, tests never scored, tests with any
    evidence (score > 0 or not healthy), and quarantined tests (release counts clean runs).
    `tests-recompute` and `flakeguard analyze` still re-score everything.
    """
    unique: dict[int, CaseInfo] = {}
    unsettled: set[int] = set()
    for case_info, failed_or_retried in touched:
        unique[case_info.id] = case_info
        if failed_or_retried:
            unsettled.add(case_info.id)
    cases = list(unique.values())
    stored = await load_stored_scores(engine, cases)
    quarantined = {
        key
        for key, states in (
            await load_quarantine(engine, {c.test_key: c.id for c in cases})
        ).items()
        if any(s.is_active for s in states)
    }
    rescore = [
        c
        for c in cases
        if c.id in unsettled
        or c.test_key in quarantined
        or (score := stored.get(c.test_key)) is None
        or score.score > 0
        or score.verdict is not Verdict.HEALTHY
    ]
    rescored = {c.test_key for c in rescore}
    return rescore, {k: v for k, v in stored.items() if k not in rescored}


def _own_share(result: AnalysisResult, cases: list[CaseInfo]) -> AnalysisResult:
    """The part of a shared pass's result about `cases` (counts included)."""
    keys = {c.test_key for c in cases}
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
    repo = await find_repository(deps.engine, ref.owner, ref.repo)
    if repo is None:
        raise PermanentJobError(f"repository {ref.full_name} has no stored results")
    run = await find_run(deps.engine, repo.id, payload.workflow_run_id, payload.run_attempt)
    if run is None:
        raise PermanentJobError(
            f"run {ref.full_name}#{payload.workflow_run_id} attempt {payload.run_attempt} "
            "is not stored; ingest it first"
        )
    touched_cases, unsettled = await run_cases(deps.engine, run.id)
    if payload.requested_action is not None:
        # A button acts on the whole commit (every run at the SHA), so score all its tests,
        # not only those of the run the button's job names.
        at_sha = await outcomes_at_sha(deps.engine, repo.id, run.head_sha)
        extra = {o.test_case_id for o in at_sha} - {c.id for c in touched_cases}
        if extra:
            touched_cases += await select_cases(deps.engine, repo.id, ids=sorted(extra))
    touched = [(c, c.id in unsettled) for c in touched_cases]
    config = payload.analysis_config
    policy = scoring_policy(config.lookback_days, config.min_runs_threshold)
    context = scoring_context(deps)

    async def run_pass(union: list[Touched]) -> SharedPass:
        deps.metrics.analysis_passes.inc()
        cases, settled = await cases_to_rescore(deps.engine, union)
        result = await analyze_cases(
            context, repo, cases, policy=policy, update_quarantine=True, keep_results=True
        )
        return SharedPass(result, settled)

    if groups is not None and payload.requested_action is None:
        items = {(c.id, flag): (c, flag) for c, flag in touched}
        shared = await groups.run((repo.id, policy), items, run_pass)
    else:
        shared = await run_pass(touched)
    result = _own_share(shared.result, touched_cases)
    if payload.requested_action is not None:
        await apply_button(deps, repo, run.head_sha, payload.requested_action, result.rollups)
        # Redraw with the quarantine states the button just changed.
        rescored = [c for c in touched_cases if c.test_key in result.rollups]
        result = await analyze_cases(
            context, repo, rescored, policy=policy, update_quarantine=False, keep_results=True
        )
        shared = SharedPass(result, {})
    # The whole pass's scores, not only this run's share: fewer stored scores to read back.
    published = await publish_check_run(deps, repo, run, shared.result, shared.settled)
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
