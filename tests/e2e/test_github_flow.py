"""Issue 4 acceptance, end to end: GitHub emulator + in-process workers + Redis + PostgreSQL.

Three repositories in two installations, runs with re-run attempts (attempt 2 at the same
head SHA), a second workflow at an already-used SHA, artifacts zipped from the JUnit corpus.
The repositories are discovered from the installations by a `polling` job, their runs are
then polled, and the same runs are also delivered as signed `workflow_run` webhooks (before
and after polling): every run attempt must be stored once, its executions once, every
ingest and analysis job must complete, each head SHA must carry exactly one check run, and
the check run's "quarantine" button must quarantine the commit's flaky/suspected tests.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from flakeguard.adapters.db.tables import (
    CaseRow,
    ExecutionRow,
    FlakeScoreRow,
    QuarantineRow,
    RepositoryRow,
    WorkflowRunRow,
    table_of,
)
from flakeguard.adapters.queue.names import QueueName
from flakeguard.adapters.queue.payloads import PollingPayload
from flakeguard.bootstrap import Runtime
from flakeguard.emulator import (
    ArtifactSpec,
    Emulator,
    InstallationSpec,
    RepoSpec,
    RunSpec,
    Scenario,
    run_emulator,
    zip_members,
)
from flakeguard.http.app import create_app
from tests.support import FIXTURES, make_settings, running_workers, runtime_for, wait_for

pytestmark = pytest.mark.e2e

SECRET = "e2e-webhook-secret"
JUNIT = FIXTURES / "junit"
SHA_A, SHA_B, SHA_C = "a" * 40, "b" * 40, "c" * 40
# Runs must fall inside the scoring lookback window, so they are dated relative to now.
T0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
WIDGETS = RepoSpec(id=5001, owner="acme", name="widgets", installation_id=101)
GADGETS = RepoSpec(id=5002, owner="acme", name="gadgets", installation_id=101)
TOOLS = RepoSpec(id=5003, owner="beta", name="tools", installation_id=202)


def _zip_of(*relative: str) -> bytes:
    """One artifact ZIP holding corpus files under their own names."""
    return zip_members({Path(r).name: (JUNIT / r).read_bytes() for r in relative})


def _run(
    repo: RepoSpec,
    run_id: int,
    head_sha: str,
    template: str,
    *,
    attempt: int = 1,
    minutes: int = 0,
    workflow: str = "CI",
    conclusion: str = "failure",
) -> RunSpec:
    return RunSpec(
        id=run_id,
        repo_id=repo.id,
        head_sha=head_sha,
        attempt=attempt,
        conclusion=conclusion,
        created_at=T0 + timedelta(minutes=minutes),
        workflow_name=workflow,
        # One artifact name for every attempt: attempts of a run share its test environment.
        artifacts=(ArtifactSpec(run_id * 10 + attempt, "junit", template),),
    )


PHP_REPORT = "phpunit/tester-v1.7-report.xml"
"""65 tests, 1 failure: a report with > 20 % failures is an outage to the scorer (no evidence)."""


def _passing_rerun() -> bytes:
    """The same report as re-run attempt 2 saw it: the failing test passed this time."""
    raw = (JUNIT / PHP_REPORT).read_bytes()
    stripped = re.sub(rb"<failure\b[^>]*?(/>|>.*?</failure>)", b"", raw, flags=re.S)
    assert stripped.count(b"<failure") == 0 < raw.count(b"<failure")
    return zip_members({"report.xml": stripped})


def scenario() -> Scenario:
    # Pinned timestamps and ids: the scenario is identical on every run.
    runs = (
        # widgets @ SHA_A: run 9001 fails one test, its re-run (attempt 2) passes it; a second
        # workflow (9002) at the same SHA must update the same check run.
        _run(WIDGETS, 9001, SHA_A, "php-failing"),
        _run(WIDGETS, 9001, SHA_A, "php-passing", attempt=2, minutes=1),
        _run(WIDGETS, 9002, SHA_A, "pytest-reruns", minutes=2, workflow="Nightly"),
        _run(GADGETS, 9101, SHA_B, "jest", minutes=3),
        _run(GADGETS, 9102, SHA_B, "jest", attempt=1, minutes=4),
        _run(TOOLS, 9201, SHA_C, "mixed", minutes=5),
        _run(TOOLS, 9201, SHA_C, "mixed", attempt=2, minutes=6, conclusion="success"),
    )
    return Scenario(
        installations=(InstallationSpec(101, "acme"), InstallationSpec(202, "beta")),
        repos=(WIDGETS, GADGETS, TOOLS),
        runs=runs,
        artifact_templates={
            "php-failing": _zip_of(PHP_REPORT),
            "php-passing": _passing_rerun(),
            "pytest-reruns": _zip_of("pytest/generated-pytest-rerunfailures.xml"),
            "jest": _zip_of("jest/jest-junit.xml"),
            "mixed": _zip_of("pytest/junit.fail.xml", "pytest/junit.xml"),
        },
    )


REPO_BY_ID = {r.id: r for r in (WIDGETS, GADGETS, TOOLS)}
RUN_ATTEMPTS = {(REPO_BY_ID[r.repo_id].full_name, r.id, r.attempt) for r in scenario().runs}


@dataclass(slots=True)
class Env:
    emu: Emulator
    runtime: Runtime
    webhook: httpx.AsyncClient


@pytest.fixture
async def env(queue_prefix: str, redis_url: str, pg_url: str, tmp_path: Path) -> AsyncIterator[Env]:
    async with run_emulator(scenario()) as emu:
        settings = make_settings(
            redis_url=redis_url,
            database_url=pg_url,
            prefix=queue_prefix,
            data_dir=tmp_path,
            GITHUB_APP_ID=emu.app_id,
            GITHUB_PRIVATE_KEY=emu.private_key_pem,
            GITHUB_API_URL=emu.api_url,
            GITHUB_WEBHOOK_SECRET=SECRET,
            GITHUB_WRITE_SPACING_MS="0",
            WORKER_CONCURRENCY="4",
        )
        async with runtime_for(settings) as runtime:
            transport = httpx.ASGITransport(app=create_app(runtime.state))
            async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
                yield Env(emu, runtime, client)


async def _deliver(env: Env, event: str, payload: dict[str, Any]) -> httpx.Response:
    delivery = await env.emu.deliver_webhook(
        "http://worker/webhooks/github", event, payload, SECRET, client=env.webhook
    )
    return httpx.Response(delivery.status_code, content=delivery.body)


async def _deliver_runs(env: Env) -> list[int]:
    statuses = []
    for full_name, run_id, attempt in sorted(RUN_ATTEMPTS):
        payload = env.emu.workflow_run_event(full_name, run_id, attempt=attempt)
        statuses.append((await _deliver(env, "workflow_run", payload)).status_code)
    return statuses


async def _scalar(env: Env, query: Any) -> Any:
    async with env.runtime.deps.engine.connect() as conn:
        return await conn.scalar(query)


async def _counts(env: Env, queue: QueueName) -> dict[str, int]:
    states = ("waiting", "prioritized", "active", "delayed", "completed", "failed")
    raw = await env.runtime.deps.producer.queues[queue].getJobCounts(*states)
    return {state: int(raw.get(state, 0)) for state in states}


async def _settled(env: Env) -> bool:
    """No job pending or running in the queues we feed (schedulers' next runs are minutes away)."""
    for queue in (QueueName.POLLING, QueueName.RUNS_INGEST, QueueName.RUNS_ANALYZE):
        counts = await _counts(env, queue)
        if counts["waiting"] or counts["prioritized"] or counts["active"]:
            return False
    return True


async def _stored_attempts(env: Env) -> list[tuple[str, int, int]]:
    w, r = table_of(WorkflowRunRow), table_of(RepositoryRow)
    async with env.runtime.deps.engine.connect() as conn:
        rows = await conn.execute(
            select(r.c.owner, r.c.name, w.c.run_id, w.c.run_attempt).join(
                r, r.c.id == w.c.repository_id
            )
        )
        return sorted((f"{o}/{n}", int(run), int(att)) for o, n, run, att in rows)


async def _execution_counts(env: Env) -> tuple[int, int]:
    """(all execution rows, distinct ones by their natural identity)."""
    e = table_of(ExecutionRow)
    total = int(await _scalar(env, select(func.count()).select_from(e)) or 0)
    identity = (c for c in e.c if c.name not in ("id",))
    distinct = select(*identity).distinct().subquery()
    unique = int(await _scalar(env, select(func.count()).select_from(distinct)) or 0)
    return total, unique


async def test_runs_polled_and_webhooked_are_ingested_once_and_checked_once_per_sha(
    env: Env,
) -> None:
    emu, runtime = env.emu, env.runtime
    async with running_workers(runtime):
        # 1. Webhooks for every run attempt before any polling happened.
        assert set(await _deliver_runs(env)) == {202}

        # 2. Discovery from the installations, then the per-repository pollers it schedules.
        await runtime.deps.producer.poll(PollingPayload())

        async def all_stored() -> bool:
            return len(await _stored_attempts(env)) == len(RUN_ATTEMPTS) and await _settled(env)

        await wait_for(all_stored, timeout_s=45)

        # Discovery recorded every repository with its installation.
        r = table_of(RepositoryRow)
        async with runtime.deps.engine.connect() as conn:
            repos = sorted(
                (str(o), str(n), int(i))
                for o, n, i in await conn.execute(select(r.c.owner, r.c.name, r.c.installation_id))
            )
        assert repos == sorted((x.owner, x.name, x.installation_id) for x in REPO_BY_ID.values())
        # Polling listed runs (a repo-scoped poll ran for each repository).
        polled = {q.path for q in emu.api_requests() if q.path.endswith("/actions/runs")}
        assert len(polled) == 3
        polls = await _counts(env, QueueName.POLLING)
        assert polls["completed"] >= 4  # discovery + one per repository
        assert polls["failed"] == 0

        executions_before = await _execution_counts(env)

        # 3. Everything again, both ways, after ingestion: webhooks with fresh delivery ids
        # and a repository poll (its cursor and ETag make it a no-op).
        assert set(await _deliver_runs(env)) == {202}
        await runtime.deps.producer.poll(
            PollingPayload.model_validate(
                {"repository": {"owner": "acme", "repo": "widgets", "installationId": 101}}
            )
        )
        await wait_for(lambda: _settled(env), timeout_s=30)

        # Each run attempt stored once, its executions once.
        assert await _stored_attempts(env) == sorted(RUN_ATTEMPTS)
        total, unique = await _execution_counts(env)
        assert (total, unique) == executions_before
        assert total == unique
        assert total > 40
        ingest = await _counts(env, QueueName.RUNS_INGEST)
        analyze = await _counts(env, QueueName.RUNS_ANALYZE)
        assert ingest["failed"] == 0
        assert ingest["delayed"] == 0
        assert ingest["completed"] >= len(RUN_ATTEMPTS)
        assert analyze["failed"] == 0
        assert analyze["completed"] >= len(RUN_ATTEMPTS)

        # Results landed: every attempt has executions.
        w, e = table_of(WorkflowRunRow), table_of(ExecutionRow)
        async with runtime.deps.engine.connect() as conn:
            per_run = {
                int(k): int(v)
                for k, v in await conn.execute(
                    select(w.c.id, func.count(e.c.test_case_id))
                    .join(e, e.c.workflow_run_id == w.c.id, isouter=True)
                    .group_by(w.c.id)
                )
            }
        assert len(per_run) == len(RUN_ATTEMPTS)
        assert min(per_run.values()) > 0

        # Exactly one check run per head SHA, across workflows and re-run attempts.
        checks = emu.check_runs
        per_sha = Counter((c.repo_id, c.head_sha) for c in checks)
        assert per_sha == Counter(
            {(WIDGETS.id, SHA_A): 1, (GADGETS.id, SHA_B): 1, (TOOLS.id, SHA_C): 1}
        )
        check_a = next(c for c in checks if c.head_sha == SHA_A)
        assert check_a.writes >= 3  # created once, updated by the later analyses
        assert "quarantine" in {a["identifier"] for a in check_a.actions}

        # 4. The check run's "quarantine" button quarantines the commit's possibly flaky tests.
        s, q, c = table_of(FlakeScoreRow), table_of(QuarantineRow), table_of(CaseRow)
        candidates_query = (
            select(func.count(func.distinct(s.c.test_case_id)))
            .join(c, c.c.id == s.c.test_case_id)
            .join(r, r.c.id == c.c.repository_id)
            .where(r.c.name == WIDGETS.name, s.c.verdict.in_(("flaky", "suspected")))
        )
        candidates = int(await _scalar(env, candidates_query) or 0)
        assert candidates > 0
        quarantined_query = (
            select(func.count(func.distinct(q.c.test_case_id)))
            .join(c, c.c.id == q.c.test_case_id)
            .join(r, r.c.id == c.c.repository_id)
            .where(r.c.name == WIDGETS.name, q.c.state == "active", q.c.manual.is_(True))
        )
        assert int(await _scalar(env, quarantined_query) or 0) == 0
        pressed = await _deliver(
            env, "check_run", emu.check_run_requested_action_event(check_a.id, "quarantine")
        )
        assert pressed.status_code == 202

        async def quarantined() -> bool:
            return int(await _scalar(env, quarantined_query) or 0) >= candidates

        await wait_for(quarantined, timeout_s=20)
        await wait_for(lambda: _settled(env), timeout_s=20)
        assert int(await _scalar(env, quarantined_query) or 0) == candidates
        # Redrawn in place: still one check run for the SHA.
        assert Counter(x.head_sha for x in emu.check_runs)[SHA_A] == 1
