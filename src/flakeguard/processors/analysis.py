"""The scoring pass shared by `runs-analyze`, `tests-recompute` and `flakeguard analyze`.

Not a queue processor itself: it is the one recipe the three entry points call, so a test
scored by a run's analysis and by a full recompute goes through the same code.
Scoring runs in a thread (`asyncio.to_thread`) so the event loop keeps renewing job locks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from flakeguard.adapters.db.history import (
    CaseInfo,
    RepositoryInfo,
    load_quarantine,
    load_run_index,
    read_histories,
    save_quarantine,
    save_scores,
)
from flakeguard.adapters.db.history_cache import HistoryCache
from flakeguard.core.models import ExecutionRecord, FlakeScore, Verdict
from flakeguard.core.quarantine import QuarantinePolicy, QuarantineState, decide
from flakeguard.core.scoring import ALL_ENVS, ScoringPolicy, score_many
from flakeguard.deps import Deps
from flakeguard.observability import Metrics

Progress = Callable[[int, int], Awaitable[None]]


@dataclass(slots=True)
class AnalysisResult:
    tests: int = 0
    flaky: int = 0
    broken: int = 0
    quarantined: int = 0
    rollups: dict[str, FlakeScore] = field(default_factory=dict)
    """Per test key, the roll-up score (kept only when asked: a full recompute does not)."""
    quarantine: dict[str, QuarantineState] = field(default_factory=dict)


def scoring_policy(lookback_days: int | None, min_runs: int | None) -> ScoringPolicy:
    policy = ScoringPolicy()
    if lookback_days is not None:
        policy = replace(policy, lookback_days=lookback_days)
    if min_runs is not None:
        policy = replace(policy, min_runs=min_runs)
    return policy


def _current_state(states: Sequence[QuarantineState]) -> QuarantineState | None:
    active = [s for s in states if s.is_active]
    if active:
        return max(active, key=lambda s: s.since)
    ended = [s for s in states if s.released_at is not None]
    return max(ended, key=lambda s: s.released_at or s.since) if ended else None


def _decide_all(
    rollups: Mapping[str, FlakeScore],
    histories: Mapping[str, Sequence[ExecutionRecord]],
    existing: Mapping[str, Sequence[QuarantineState]],
    now: datetime,
    policy: QuarantinePolicy,
) -> list[QuarantineState]:
    changed: list[QuarantineState] = []
    for key, score in rollups.items():
        current = _current_state(existing.get(key, ()))
        history = histories.get(key, ())
        if current is not None and current.is_active:
            history = [r for r in history if r.at >= current.since]
        new = decide(current, score, history, now=now, policy=policy)
        if new is not None and new != current:
            changed.append(new)
    return changed


@dataclass(frozen=True, slots=True)
class ScoringContext:
    """What a scoring pass needs: the database, metrics and the clock (no queues)."""

    engine: AsyncEngine
    metrics: Metrics
    clock: Callable[[], datetime]


async def analyze_cases(
    deps: ScoringContext,
    repo: RepositoryInfo,
    cases: Sequence[CaseInfo],
    *,
    policy: ScoringPolicy,
    update_quarantine: bool,
    batch_size: int = 500,
    keep_results: bool = False,
    progress: Progress | None = None,
    history_cache: HistoryCache | None = None,
) -> AnalysisResult:
    """Score `cases` in batches, store the scores and (optionally) quarantine decisions.

    `history_cache` keeps the histories read for the next pass (`runs-analyze`, whose
    passes re-read the same tests); a full re-scoring reads each test once and passes none.
    """
    now = deps.clock()
    since = now - timedelta(days=policy.lookback_days)
    result = AnalysisResult()
    done = 0
    batches = [cases[start : start + batch_size] for start in range(0, len(cases), batch_size)]

    run_index = await load_run_index(
        deps.engine, repo.id, since=since, default_branch=repo.default_branch
    )

    async def fetch(batch: Sequence[CaseInfo]) -> dict[str, list[ExecutionRecord]]:
        if history_cache is not None:
            return await history_cache.histories(deps.engine, batch, run_index)
        read = await read_histories(deps.engine, batch, run_index)
        return {case.test_key: read[case.id] for case in batch if case.id in read}

    # Read the next batch from the database while the current one is scored in a thread.
    fetches = [asyncio.create_task(fetch(batches[0]))] if batches else []
    try:
        for index, batch in enumerate(batches):
            if index + 1 < len(batches):
                fetches.append(asyncio.create_task(fetch(batches[index + 1])))
            histories = await fetches.pop(0)  # popped: a scored batch is not kept alive
            await _score_batch(deps, batch, histories, now, policy, update_quarantine, result)
            if not keep_results:
                result.rollups.clear()
                result.quarantine.clear()
            done += len(batch)
            if progress is not None:
                await progress(done, len(cases))
    finally:
        for task in fetches:
            task.cancel()
    return result


async def _score_batch(
    deps: ScoringContext,
    batch: Sequence[CaseInfo],
    histories: dict[str, list[ExecutionRecord]],
    now: datetime,
    policy: ScoringPolicy,
    update_quarantine: bool,
    result: AnalysisResult,
) -> None:
    q_policy = QuarantinePolicy()
    case_ids = {c.test_key: c.id for c in batch}
    scores = await asyncio.to_thread(score_many, histories, now=now, policy=policy)
    await save_scores(deps.engine, case_ids, scores, now)
    rollups = {s.test_key: s for s in scores if s.scope == ALL_ENVS}
    deps.metrics.tests_analyzed.inc(len(rollups))
    deps.metrics.observe_scores(s.score for s in rollups.values())
    flaky = sum(1 for s in rollups.values() if s.verdict is Verdict.FLAKY)
    deps.metrics.flaky_tests_detected.inc(flaky)
    result.tests += len(rollups)
    result.flaky += flaky
    result.broken += sum(1 for s in rollups.values() if s.verdict is Verdict.BROKEN)
    existing = await load_quarantine(deps.engine, case_ids)
    if update_quarantine:
        changed = await asyncio.to_thread(_decide_all, rollups, histories, existing, now, q_policy)
        await save_quarantine(deps.engine, case_ids, changed)
        for state in changed:
            existing.setdefault(state.test_key, [])
            existing[state.test_key] = [
                s for s in existing[state.test_key] if s.scope != state.scope
            ] + [state]
    active = {k: s for k, states in existing.items() if (s := _current_state(states))}
    result.quarantined += sum(1 for s in active.values() if s.is_active)
    result.rollups.update(rollups)
    result.quarantine.update({k: s for k, s in active.items() if s.is_active})


def scoring_context(deps: Deps) -> ScoringContext:
    return ScoringContext(engine=deps.engine, metrics=deps.metrics, clock=deps.clock)
