"""Polling and repository discovery, used by the `polling` processor and the worker start.

Cursor rule: each poll lists completed runs created since `cursor - OVERLAP` (a run
created before the cursor that finishes late is still listed) and skips the
(run id, attempt) pairs already enqueued inside that window. The list request carries
the stored ETag: an unchanged listing answers 304 and costs no rate-limit budget.
Enqueued jobs carry the dedup key `ingest:{owner}/{repo}:{run}:{attempt}`, the same as
webhooks use, so a run seen both ways is ingested once.

Budget rule: polling stops early (and the next scheduled run continues) when an
installation's remaining budget falls under `RESERVE_SHARE` of its limit, keeping the rest
for ingestion and check runs.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import structlog

from flakeguard.adapters.db.repos import PollState, enabled_repositories, save_poll_state
from flakeguard.adapters.db.runs import ensure_repository
from flakeguard.adapters.github.client import RepoCoords, WorkflowRunInfo
from flakeguard.adapters.queue.names import QueueName
from flakeguard.adapters.queue.payloads import (
    PollingPayload,
    RepositoryRef,
    RunMetadata,
    RunsIngestPayload,
)
from flakeguard.core.models import Priority
from flakeguard.deps import Deps

log = structlog.get_logger("flakeguard.polling")

OVERLAP = timedelta(hours=6)
"""Longest run duration we expect; GitHub cancels jobs after 6 h by default."""
RESERVE_SHARE = 0.2
DISCOVERY_SCHEDULER_ID = "discover-installations"


def new_runs(
    runs: list[WorkflowRunInfo], seen: tuple[tuple[int, int, float], ...]
) -> list[WorkflowRunInfo]:
    """Completed runs not enqueued before, oldest first.

    >>> new_runs([], ())
    []
    """
    known = {(run_id, attempt) for run_id, attempt, _ in seen}
    fresh = [r for r in runs if r.status == "completed" and (r.id, r.run_attempt) not in known]
    return sorted(fresh, key=lambda r: (r.created_at, r.id, r.run_attempt))


def advance(
    state: PollState, enqueued: list[WorkflowRunInfo], now: datetime
) -> tuple[datetime | None, tuple[tuple[int, int, float], ...]]:
    """The new cursor and seen-set after enqueuing `enqueued`; pruned to the overlap window."""
    seen = list(state.seen) + [(r.id, r.run_attempt, r.created_at.timestamp()) for r in enqueued]
    cursor = state.cursor
    if enqueued:
        newest = max(r.created_at for r in enqueued)
        cursor = newest if cursor is None or newest > cursor else cursor
    horizon = ((cursor or now) - OVERLAP).timestamp()
    return cursor, tuple(s for s in seen if s[2] >= horizon)


async def discover(deps: Deps) -> int:
    """Record every repository of every installation; returns how many were seen."""
    if deps.github is None:
        return 0
    now = deps.clock()
    count = 0
    for installation in await deps.github.list_installations():
        if installation.suspended:
            continue
        for repo in await deps.github.list_installation_repositories(installation.id):
            await ensure_repository(
                deps.engine,
                repo.owner,
                repo.name,
                now=now,
                installation_id=installation.id,
                default_branch=repo.default_branch,
                github_id=repo.id,
            )
            await schedule_repository(deps, repo.owner, repo.name, installation.id)
            count += 1
    return count


async def schedule_repository(deps: Deps, owner: str, name: str, installation_id: int) -> None:
    payload = PollingPayload(
        repository=RepositoryRef(owner=owner, repo=name, installation_id=installation_id)
    )
    await deps.producer.schedule(
        QueueName.POLLING,
        f"poll-{owner}-{name}",
        deps.settings.polling_interval_minutes * 60_000,
        payload,
        Priority.LOW,
    )


async def install_polling_schedule(deps: Deps) -> None:
    """At worker start: one discovery scheduler plus one per enabled repository."""
    await deps.producer.schedule(
        QueueName.POLLING,
        DISCOVERY_SCHEDULER_ID,
        deps.settings.polling_interval_minutes * 60_000,
        PollingPayload(),
        Priority.LOW,
    )
    for state in await enabled_repositories(deps.engine):
        if state.installation_id is not None:
            await schedule_repository(deps, state.owner, state.name, state.installation_id)


def _budget_low(deps: Deps, installation_id: int) -> bool:
    if deps.github is None:
        return True
    state = deps.github.rate_limit_snapshot().get(installation_id)
    return state is not None and state.limit > 0 and state.remaining < state.limit * RESERVE_SHARE


async def poll_repository(deps: Deps, state: PollState) -> int:
    """Enqueue the new completed runs of one repository; returns how many."""
    if deps.github is None or state.installation_id is None:
        return 0
    if _budget_low(deps, state.installation_id):
        log.info(
            "polling.deferred", repository=f"{state.owner}/{state.name}", reason="rate budget low"
        )
        return 0
    now = deps.clock()
    coords = RepoCoords(state.owner, state.name, state.installation_id)
    since = (state.cursor or now - OVERLAP) - OVERLAP
    page = await deps.github.list_workflow_runs(
        coords,
        status="completed",
        created_since=since,
        max_pages=deps.settings.polling_batch_size,
        etag=state.etag,
    )
    if page.not_modified:
        return 0
    fresh = new_runs(page.runs, state.seen)
    await deps.producer.ingest_many(
        [
            RunsIngestPayload(
                workflow_run_id=run.id,
                repository=RepositoryRef(
                    owner=state.owner, repo=state.name, installation_id=state.installation_id
                ),
                priority=Priority.NORMAL,
                metadata=RunMetadata(
                    run_status=run.status,
                    conclusion=run.conclusion,
                    head_sha=run.head_sha,
                    head_branch=run.head_branch,
                    run_attempt=run.run_attempt,
                    event=run.event,
                    workflow_name=run.name,
                    created_at=run.created_at,
                ),
            )
            for run in fresh
        ]
    )
    cursor, seen = advance(state, fresh, now)
    await save_poll_state(
        deps.engine, state.repository_id, cursor=cursor, seen=seen, etag=page.etag, now=now
    )
    return len(fresh)


async def poll_repositories(deps: Deps, payload: PollingPayload) -> dict[str, Any]:
    states = await enabled_repositories(deps.engine)
    if payload.repository is None:
        discovered = await discover(deps)
        return {"discovered": discovered, "enqueued": 0}
    ref = payload.repository
    targets = [s for s in states if (s.owner, s.name) == (ref.owner, ref.repo)]
    enqueued = 0
    for state in targets:
        if state.installation_id is None and ref.installation_id is not None:
            state = PollState(
                state.repository_id,
                state.owner,
                state.name,
                ref.installation_id,
                state.cursor,
                state.seen,
                state.etag,
            )
        enqueued += await poll_repository(deps, state)
    log.info("polling.done", repositories=len(targets), enqueued=enqueued)
    return {"repositories": len(targets), "enqueued": enqueued}
