"""Issue 4 acceptance: ingestion under GitHub's scripted faults (emulator + workers + stores).

One repository per fault, each in its own installation (GitHub's waits block an installation),
plus a control repository without faults. The GitHub client runs on a fake clock shared with
the emulator: its sleeps are recorded and move the clock instead of the wall, so the test
checks the exact waits GitHub asked for without spending them. Waits over the client's
inline cap (a secondary limit without headers: 60 s; an exhausted primary limit: until the
reset) must re-delay the JOB in BullMQ for that long without using an attempt; the test then
moves the clock past the wait and promotes the job.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from bullmq import Job
from sqlalchemy import func, select

from flakeguard.adapters.db.engine import migrate
from flakeguard.adapters.db.tables import ExecutionRow, RepositoryRow, WorkflowRunRow, table_of
from flakeguard.adapters.github.client import GitHubClient, GitHubConfig
from flakeguard.adapters.github.source import GitHubChecks, GitHubRunSource
from flakeguard.adapters.queue.names import QueueName
from flakeguard.adapters.queue.payloads import RepositoryRef, RunMetadata, RunsIngestPayload
from flakeguard.bootstrap import Runtime, open_runtime
from flakeguard.emulator import (
    ArtifactSpec,
    Emulator,
    FaultKind,
    FaultTarget,
    InstallationSpec,
    RepoSpec,
    RunSpec,
    Scenario,
    run_emulator,
    zip_members,
)
from tests.support import FIXTURES, make_settings, running_workers, wait_for

pytestmark = pytest.mark.e2e

JUNIT = FIXTURES / "junit"
OWNER = "acme"
# Dated relative to now: analysis only scores runs inside its lookback window.
T0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
REPOS = {
    name: RepoSpec(id=6000 + i, owner=OWNER, name=name, installation_id=300 + i)
    for i, name in enumerate(
        ("control", "burst5xx", "retry429", "secondary", "primary", "expired", "slowblob")
    )
}
RUN_ID = {name: 70_000 + i for i, name in enumerate(REPOS)}
GONE_RUN_ID = 79_999
"""A second run in `expired`: one good artifact and one whose download answers 410."""
SECONDARY_FALLBACK_S = 60.0
PRIMARY_RESET_S = 120.0
SLOW_BLOB_S = 0.4


class FakeTime:
    """Wall time plus an offset that the client's sleeps advance (shared with the emulator)."""

    def __init__(self) -> None:
        self.offset_s = 0.0
        self.sleeps_s: list[float] = []

    def now(self) -> float:
        return time.time() + self.offset_s

    async def sleep(self, seconds: float) -> None:
        self.sleeps_s.append(round(seconds, 3))
        self.offset_s += max(0.0, seconds)
        await asyncio.sleep(0)


def _run(repo: str, run_id: int, *artifacts: ArtifactSpec) -> RunSpec:
    return RunSpec(
        id=run_id,
        repo_id=REPOS[repo].id,
        head_sha=f"{run_id:040d}",
        created_at=T0,
        conclusion="failure",
        artifacts=artifacts,
    )


def _artifact(ident: int, name: str = "junit", *, expired: bool = False) -> ArtifactSpec:
    return ArtifactSpec(ident, name, "pytest", expired=expired)


def scenario() -> Scenario:
    runs = [
        _run(name, RUN_ID[name], _artifact(RUN_ID[name], expired=name == "expired"))
        for name in REPOS
    ]
    runs.append(
        _run("expired", GONE_RUN_ID, _artifact(GONE_RUN_ID), _artifact(GONE_RUN_ID + 1, "gone"))
    )
    return Scenario(
        installations=tuple(InstallationSpec(r.installation_id, OWNER) for r in REPOS.values()),
        repos=tuple(REPOS.values()),
        runs=tuple(runs),
        artifact_templates={
            "pytest": zip_members(
                {"junit.xml": (JUNIT / "pytest/generated-pytest-xunit2.xml").read_bytes()}
            )
        },
    )


@dataclass(slots=True)
class Env:
    emu: Emulator
    runtime: Runtime
    fake: FakeTime
    job_ids: dict[int, str] = field(default_factory=dict)


@pytest.fixture
async def env(queue_prefix: str, redis_url: str, pg_url: str, tmp_path: Path) -> AsyncIterator[Env]:
    fake = FakeTime()
    async with run_emulator(scenario(), clock=fake.now) as emu:
        config = GitHubConfig(
            app_id=emu.app_id,
            private_key_pem=emu.private_key_pem,
            api_url=emu.api_url,
            write_spacing_s=0.0,
        )
        settings = make_settings(
            redis_url=redis_url,
            database_url=pg_url,
            prefix=queue_prefix,
            data_dir=tmp_path,
            WORKER_CONCURRENCY="8",
        )
        client = GitHubClient(config, clock=fake.now, sleep=fake.sleep)
        try:
            source = GitHubRunSource(client, settings.max_artifact_bytes)
            async with open_runtime(
                settings, run_source=source, checks=GitHubChecks(client)
            ) as runtime:
                await migrate(runtime.deps.engine)
                yield Env(emu, runtime, fake)
        finally:
            await client.aclose()


def _payload(repo: str, run_id: int) -> RunsIngestPayload:
    spec = REPOS[repo]
    return RunsIngestPayload(
        workflow_run_id=run_id,
        repository=RepositoryRef(owner=OWNER, repo=repo, installation_id=spec.installation_id),
        metadata=RunMetadata(
            run_status="completed",
            conclusion="failure",
            head_sha=f"{run_id:040d}",
            head_branch="main",
            event="push",
            workflow_name="CI",
            created_at=T0,
        ),
    )


async def _job(env: Env, run_id: int) -> Job:
    job = await Job.fromId(
        env.runtime.deps.producer.queues[QueueName.RUNS_INGEST], env.job_ids[run_id]
    )
    assert job is not None
    return job


async def _state(env: Env, run_id: int) -> str:
    queue = env.runtime.deps.producer.queues[QueueName.RUNS_INGEST]
    return str(await queue.getJobState(env.job_ids[run_id]))


async def _delayed_until_ms(env: Env, run_id: int) -> int:
    """When BullMQ will release the delayed job (the delayed set's score is ms × 0x1000)."""
    queue = env.runtime.deps.producer.queues[QueueName.RUNS_INGEST]
    score = await queue.client.zscore(queue.keys["delayed"], env.job_ids[run_id])
    assert score is not None
    return int(score) // 0x1000


async def _wait_state(env: Env, run_id: int, states: set[str], timeout_s: float = 30) -> None:
    async def reached() -> bool:
        return await _state(env, run_id) in states

    await wait_for(reached, timeout_s=timeout_s)


async def _run_rows(env: Env) -> dict[int, tuple[int, list[dict[str, Any]]]]:
    """run id → (stored attempts of it, problems of the stored attempt)."""
    w = table_of(WorkflowRunRow)
    async with env.runtime.deps.engine.connect() as conn:
        rows = list(await conn.execute(select(w.c.run_id, w.c.problems)))
    out: dict[int, tuple[int, list[dict[str, Any]]]] = {}
    for run_id, problems in rows:
        count, _ = out.get(int(run_id), (0, []))
        out[int(run_id)] = (count + 1, list(problems or []))
    return out


async def _executions_by_run(env: Env) -> dict[int, int]:
    w, e = table_of(WorkflowRunRow), table_of(ExecutionRow)
    async with env.runtime.deps.engine.connect() as conn:
        rows = await conn.execute(
            select(w.c.run_id, func.count(e.c.test_case_id))
            .join(e, e.c.workflow_run_id == w.c.id, isouter=True)
            .group_by(w.c.run_id)
        )
        return {int(run_id): int(count) for run_id, count in rows}


async def test_faults_lose_no_job_duplicate_nothing_and_honour_githubs_waits(env: Env) -> None:
    emu, fake, runtime = env.emu, env.fake, env.runtime
    artifacts = r"/actions/runs/{}/artifacts$"
    burst = emu.faults.add_fault(
        artifacts.format(RUN_ID["burst5xx"]), FaultKind.SERVER_ERROR, count=3
    )
    too_many = emu.faults.add_fault(
        artifacts.format(RUN_ID["retry429"]), FaultKind.RETRY_AFTER, retry_after_s=7
    )
    secondary = emu.faults.add_fault(
        artifacts.format(RUN_ID["secondary"]), FaultKind.SECONDARY_LIMIT
    )
    primary = emu.faults.add_fault(
        artifacts.format(RUN_ID["primary"]),
        FaultKind.PRIMARY_EXHAUSTED,
        reset_in_s=PRIMARY_RESET_S,
    )
    gone = emu.faults.add_fault(rf"/artifacts/{GONE_RUN_ID + 1}/zip$", FaultKind.GONE)
    slow = emu.faults.add_fault(
        r".", FaultKind.SLOW, target=FaultTarget.BLOB, delay_s=SLOW_BLOB_S, count=None
    )

    async with running_workers(runtime, [QueueName.RUNS_INGEST, QueueName.RUNS_ANALYZE]):
        # The slow-blob fault applies to every download; only `slowblob` is checked for it,
        # the others just take a little longer.
        enqueued_at_ms = int(time.time() * 1000)
        for name, run_id in [*RUN_ID.items(), ("expired", GONE_RUN_ID)]:
            enqueued = await runtime.deps.producer.ingest(_payload(name, run_id))
            env.job_ids[run_id] = enqueued.job_id

        # Long waits re-delay the job instead of holding a worker slot, without an attempt.
        # The secondary limit's 60 s fallback counts from when it fires; the primary limit's
        # reset is a fixed time on the fake clock, which other jobs' recorded sleeps (5xx
        # backoff, retry-after) move forward before it fires: at most by the final offset.
        for name, wait_s, clock_advance_s in (
            ("secondary", SECONDARY_FALLBACK_S, 0.0),
            ("primary", PRIMARY_RESET_S, None),
        ):
            run_id = RUN_ID[name]
            await _wait_state(env, run_id, {"delayed"})
            job = await _job(env, run_id)
            assert job.attemptsMade == 0
            advance_s = fake.offset_s if clock_advance_s is None else clock_advance_s
            delayed_until_ms = await _delayed_until_ms(env, run_id)
            assert delayed_until_ms >= enqueued_at_ms + (wait_s - advance_s) * 1000
            # Far longer than any inline wait: the job was re-delayed, not slept in a slot.
            assert delayed_until_ms >= enqueued_at_ms + 50_000
        assert emu.faults.fired(secondary) == 1
        assert emu.faults.fired(primary) == 1

        # Every other job finishes meanwhile: the delayed ones took no worker slot.
        others = [r for n, r in RUN_ID.items() if n not in ("secondary", "primary")]
        for run_id in [*others, GONE_RUN_ID]:
            await _wait_state(env, run_id, {"completed", "failed"})

        # GitHub's time passes (fake clock), then BullMQ's (promote): both jobs complete.
        fake.offset_s += PRIMARY_RESET_S + 5
        for name in ("secondary", "primary"):
            await (await _job(env, RUN_ID[name])).promote()
        for name in ("secondary", "primary"):
            await _wait_state(env, RUN_ID[name], {"completed", "failed"})

        async def analysed() -> bool:
            counts = await runtime.deps.producer.queues[QueueName.RUNS_ANALYZE].getJobCounts(
                "waiting", "prioritized", "active", "delayed"
            )
            return not any(int(v) for v in counts.values())

        await wait_for(analysed, timeout_s=30)

    # No job lost: all completed, except the expired-only run, failed once with its reason.
    for name, run_id in [*RUN_ID.items(), ("expired", GONE_RUN_ID)]:
        job = await _job(env, run_id)
        state = await _state(env, run_id)
        if run_id == RUN_ID["expired"]:
            assert state == "failed"
            assert job.attemptsMade == 1  # permanent: never retried
            assert "expired" in str(job.failedReason)
        else:
            assert state == "completed", (name, state, job.failedReason)
            # One attempt, the successful one: rate-limit delays used none.
            assert job.attemptsMade == 1, name

    # No results duplicated: one row per run, each faulted run stored exactly what the
    # control run (same artifact, no fault) stored.
    rows = await _run_rows(env)
    assert set(rows) == {*RUN_ID.values(), GONE_RUN_ID}
    assert {count for count, _ in rows.values()} == {1}
    executions = await _executions_by_run(env)
    expected = executions[RUN_ID["control"]]
    assert expected > 0
    for name in ("burst5xx", "retry429", "secondary", "primary", "slowblob"):
        assert executions[RUN_ID[name]] == expected, name
    assert executions[GONE_RUN_ID] == expected  # the good artifact of the run
    assert executions[RUN_ID["expired"]] == 0

    # Expired artifacts are recorded on the run, not retried.
    _, expired_problems = rows[RUN_ID["expired"]]
    assert any("expired" in p["reason"] for p in expired_problems)
    _, gone_problems = rows[GONE_RUN_ID]
    assert [p["source"] for p in gone_problems] == ["gone.zip"]
    assert "410" in gone_problems[0]["reason"]
    assert emu.faults.fired(gone) == 1  # one download request: a 410 is final

    # Waits honoured what GitHub said (recorded on the fake clock): the 5xx burst waited
    # (n + 1)² s between its 3 retries, the 429 exactly its retry-after.
    assert emu.faults.fired(burst) == 3
    assert emu.faults.fired(too_many) == 1
    assert {1.0, 4.0, 9.0, 7.0} <= set(fake.sleeps_s)
    assert max(fake.sleeps_s) <= 10.0  # nothing longer was slept inline

    # The slow blob: served in two halves with a pause, ingested whole.
    assert emu.faults.fired(slow) >= 1
    slow_job = await _job(env, RUN_ID["slowblob"])
    assert slow_job.finishedOn is not None
    assert slow_job.processedOn is not None
    assert int(slow_job.finishedOn) - int(slow_job.processedOn) >= SLOW_BLOB_S * 1000 * 0.9
    # The blob origin never saw a credential.
    assert not any(r.has_authorization for r in emu.blob_requests())
    r = table_of(RepositoryRow)
    async with runtime.deps.engine.connect() as conn:
        stored_repos = await conn.scalar(select(func.count()).select_from(r))
    assert stored_repos == len(REPOS)
