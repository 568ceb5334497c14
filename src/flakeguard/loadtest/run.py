"""`run_load_test(config)`: emulator + real worker processes + real jobs, then the figures.

The load test starts the GitHub emulator with generated repositories and runs (artifacts from
`templates`), starts `workers` `flakeguard worker` processes pointed at it, enqueues real
`runs-ingest` jobs (full run metadata) at the requested rate, injects the planned faults,
waits (bounded) until every job is completed or failed, then reads every job back from Redis
(latency = `finishedOn - timestamp`) and checks the database for duplicated rows.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from flakeguard.adapters.db.engine import create_engine, database_url, migrate
from flakeguard.adapters.queue.connection import RedisTarget, target_from_url
from flakeguard.adapters.queue.names import QueueName
from flakeguard.adapters.queue.payloads import RepositoryRef, RunMetadata, RunsIngestPayload
from flakeguard.adapters.queue.producer import JobPolicy, JobProducer
from flakeguard.emulator import (
    Emulator,
    Fault,
    FaultKind,
    RunningEmulator,
    Scenario,
    start_emulator,
)
from flakeguard.loadtest.faults import FaultPlan
from flakeguard.loadtest.services import (
    EmbeddedRedislite,
    OwnedPostgres,
    OwnedRedis,
    free_port,
)
from flakeguard.loadtest.templates import (
    DIALECTS,
    Template,
    generated_templates,
    pick_size,
    poisoned_templates,
)

KEEP_ALL_JOBS = 10_000_000
"""removeOnComplete/removeOnFail counts: every job of the test stays readable afterwards."""
READY_TIMEOUT_S = 90.0
RSS_SAMPLE_INTERVAL_S = 0.25
ENQUEUE_RETRY_S = 120.0
"""How long one enqueue keeps retrying while Redis restarts."""
Progress = Callable[[int, int, int], None]
"""(enqueued, completed, failed) after each poll."""


class LoadTestError(RuntimeError):
    """The load test cannot run as configured (the message says why)."""


@dataclass(frozen=True, slots=True)
class LoadTestConfig:
    jobs: int
    rate_per_min: float
    concurrency: int
    workers: int = 2
    faults: FaultPlan = field(default_factory=FaultPlan)
    seed: int = 1
    own_services: bool = False
    poison_share: float = 0.0
    repos: int = 20
    repos_per_installation: int = 5
    settle_timeout_s: float = 180.0
    """After the last enqueue, how long to wait for the queue to drain."""
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    work_dir: Path | None = None
    keep_work_dir: bool = False
    worker_env: Mapping[str, str] = field(default_factory=dict)
    """Extra environment for the worker processes (e.g. LOCK_DURATION_MS)."""

    @property
    def load_duration_s(self) -> float:
        return self.jobs * 60.0 / self.rate_per_min


@dataclass(slots=True)
class LoadReport:
    jobs: int
    rate_per_min: float
    concurrency: int
    workers: int
    mode: str
    throughput_jobs_per_min: float
    success_rate: float
    error_rate: float
    jobs_completed: int
    jobs_failed: int
    jobs_unfinished: int
    """Still queued or running when the wait ended: throughput too low, not lost."""
    jobs_lost: int
    """Enqueued, then gone without completing or failing: the number that must be 0."""
    rows_duplicated: int
    runs_stored: int
    executions_stored: int
    peak_rss_mb: float
    peak_rss_mb_per_worker: list[float]
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    duration_s: float
    poisoned_jobs: int
    failed_non_poisoned: int
    failed_reasons: dict[str, int]
    fault_events: list[str]
    worker_exits: list[str]
    work_dir: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class PlannedJob:
    payload: RunsIngestPayload
    template: str
    poisoned: bool


@dataclass(slots=True)
class WorkerProcess:
    slot: int
    proc: subprocess.Popen[bytes]
    health_port: int
    log_path: Path


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0 for no values.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
    2.0
    """
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, int(-(-q * len(ordered) // 100)))
    return ordered[min(rank, len(ordered)) - 1]


class _Services:
    """Redis and the database for one load test: external, embedded or owned."""

    def __init__(self, config: LoadTestConfig, work_dir: Path) -> None:
        self.redis_url: str
        self.database_url: str | None
        self.owned_redis: OwnedRedis | None = None
        self.owned_pg: OwnedPostgres | None = None
        self.embedded: EmbeddedRedislite | None = None
        self._config = config
        self._work_dir = work_dir
        self.mode = "external"

    def start(self) -> None:
        env = self._config.env
        if self._config.own_services:
            self.mode = "own-services"
            self.owned_redis = OwnedRedis(self._work_dir / "redis")
            self.owned_redis.start()
            self.owned_pg = OwnedPostgres(self._work_dir / "pg")
            self.owned_pg.init()
            self.owned_pg.start()
            self.redis_url, self.database_url = self.owned_redis.url, self.owned_pg.url
            return
        if self._config.faults.restarts_services:
            raise LoadTestError(
                "redis_restart/pg_restart are refused against servers the load test did not "
                "start (they may be shared): use --own-services"
            )
        redis_url = env.get("REDIS_URL")
        if redis_url is None:
            self.mode = "embedded"
            self.embedded = EmbeddedRedislite(self._work_dir / "redis")
            self.embedded.start()
            redis_url = self.embedded.url
        elif env.get("DATABASE_URL") is None:
            self.mode = "embedded-db"
        self.redis_url = redis_url
        self.database_url = env.get("DATABASE_URL")

    def stop(self) -> None:
        for stop in (
            self.owned_redis.stop if self.owned_redis else None,
            self.owned_pg.stop if self.owned_pg else None,
            self.embedded.stop if self.embedded else None,
        ):
            if stop is not None:
                with contextlib.suppress(Exception):
                    stop()


def plan_jobs(
    config: LoadTestConfig, emu: Emulator, owner_tag: str, templates: list[Template]
) -> list[PlannedJob]:
    """Repositories, runs and their faults in the emulator; one payload per run."""
    rng = random.Random(config.seed)
    normal = {t.name: t for t in templates if not t.poisoned}
    poison = [t for t in templates if t.poisoned]
    for t in templates:
        emu.add_artifact_template(t.name, t.zip_bytes)
    repos = []
    for index in range(config.repos):
        installation_id = 900_000 + index // config.repos_per_installation
        owner = f"{owner_tag}-{index // config.repos_per_installation}"
        repos.append(
            (
                emu.add_repo(f"{owner}/svc{index}", installation_id, repo_id=700_000 + index),
                installation_id,
            )
        )
    started = datetime(2026, 1, 1, tzinfo=UTC)
    planned = []
    for i in range(config.jobs):
        spec, installation_id = rng.choice(repos)
        poisoned = bool(poison) and rng.random() < config.poison_share
        if poisoned:
            template = rng.choice(poison).name
        else:
            template = f"{rng.choice(DIALECTS)}-{pick_size(rng)}"
            if template not in normal:
                raise LoadTestError(f"no template {template}")
        run_id = 5_000_000 + i
        sha = f"{rng.getrandbits(160):040x}"
        branch = "main" if rng.random() < 0.6 else f"feature-{rng.randrange(50)}"
        created = started + timedelta(minutes=i)
        run = emu.add_run(
            spec, run_id, head_sha=sha, head_branch=branch, created_at=created,
            conclusion="success", artifacts=[("junit-results", template)],
        )  # fmt: skip
        _arm_faults(emu, config.faults, rng, run_id, [a.id for a in run.artifacts])
        payload = RunsIngestPayload(
            workflow_run_id=run_id,
            repository=RepositoryRef(
                owner=spec.owner, repo=spec.name, installation_id=installation_id
            ),
            metadata=RunMetadata(
                run_status="completed",
                conclusion="success",
                head_sha=sha,
                head_branch=branch,
                run_attempt=1,
                event="push",
                workflow_name="CI",
                created_at=created,
            ),
            correlation_id=f"loadtest-{i}",
        )
        planned.append(PlannedJob(payload, template, poisoned))
    return planned


def _arm_faults(
    emu: Emulator, plan: FaultPlan, rng: random.Random, run_id: int, artifact_ids: list[int]
) -> None:
    listing = rf"/actions/runs/{run_id}/artifacts$"
    targets = [listing] + [rf"/actions/artifacts/{a}/zip$" for a in artifact_ids]
    draws = (
        (plan.github_5xx, Fault(FaultKind.SERVER_ERROR)),
        (plan.github_429, Fault(FaultKind.RETRY_AFTER, retry_after_s=1.0)),
        (plan.github_slow, Fault(FaultKind.SLOW, delay_s=1.5)),
    )
    for share, fault in draws:
        if share and rng.random() < share:
            emu.faults.add(dataclasses.replace(fault, path_regex=rng.choice(targets), count=1))


class LoadTest:
    """One load test run; `await LoadTest(config).run()`."""

    def __init__(self, config: LoadTestConfig, progress: Progress | None = None) -> None:
        if config.jobs < 1 or config.rate_per_min <= 0 or config.workers < 1:
            raise LoadTestError("--jobs, --rate and --workers must be positive")
        self.config = config
        self._progress = progress
        self._owned_tmp = config.work_dir is None
        self.work_dir = config.work_dir or Path(tempfile.mkdtemp(prefix="flakeguard-loadtest-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.prefix = f"lt-{uuid.uuid4().hex[:10]}"
        self.owner_tag = f"lt{uuid.uuid4().hex[:8]}"
        self.services = _Services(config, self.work_dir)
        self.workers: dict[int, WorkerProcess] = {}
        self.peak_rss: dict[int, int] = collections.defaultdict(int)
        self.events: list[str] = []
        self.worker_exits: list[str] = []
        self._next_slot = 0
        self._stop = asyncio.Event()
        self._t0 = 0.0
        self._emu: RunningEmulator | None = None

    # -- processes -------------------------------------------------------------------
    def _worker_env(self, emu: Emulator, key_path: Path) -> dict[str, str]:
        env = {
            k: v
            for k, v in self.config.env.items()
            if not k.startswith(("GITHUB_", "POLLING_", "REDIS_", "DATABASE_"))
        }
        env.update(
            {
                "REDIS_URL": self.services.redis_url,
                "QUEUE_PREFIX": self.prefix,
                "FLAKEGUARD_DATA_DIR": str(self.work_dir / "data"),
                "GITHUB_APP_ID": emu.app_id,
                "GITHUB_PRIVATE_KEY_PATH": str(key_path),
                "GITHUB_API_URL": emu.api_url,
                "GITHUB_WRITE_SPACING_MS": "100",
                "WORKER_CONCURRENCY": str(self.config.concurrency),
                "POLLING_ENABLED": "false",
                "HTTP_HOST": "127.0.0.1",
                "LOG_LEVEL": "warn",
                "REMOVE_ON_COMPLETE": str(KEEP_ALL_JOBS),
                "REMOVE_ON_FAIL": str(KEEP_ALL_JOBS),
                "SHUTDOWN_TIMEOUT_S": "10",
                **self.config.worker_env,
            }
        )
        if self.services.database_url is not None:
            env["DATABASE_URL"] = self.services.database_url
        return env

    def _spawn_worker(self, env: Mapping[str, str]) -> WorkerProcess:
        slot = self._next_slot
        self._next_slot += 1
        health = free_port()
        log_path = self.work_dir / f"worker-{slot}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(  # our own interpreter and module
                [sys.executable, "-m", "flakeguard", "worker"],
                env={**env, "HEALTH_CHECK_PORT": str(health), "METRICS_PORT": str(free_port())},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        worker = WorkerProcess(slot, proc, health, log_path)
        self.workers[slot] = worker
        return worker

    async def _wait_ready(self, worker: WorkerProcess) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if worker.proc.poll() is not None:
                    tail = worker.log_path.read_text(errors="replace")[-1500:]
                    raise LoadTestError(f"worker {worker.slot} exited at start:\n{tail}")
                with contextlib.suppress(httpx.HTTPError):
                    url = f"http://127.0.0.1:{worker.health_port}/health/ready"
                    if (await client.get(url)).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        raise LoadTestError(f"worker {worker.slot} not ready after {READY_TIMEOUT_S} s")

    async def _stop_workers(self) -> None:
        for worker in self.workers.values():
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for worker in self.workers.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(worker.proc.wait, max(0.1, deadline - time.monotonic()))
            if worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait()
            code = worker.proc.returncode
            if code not in (0, -signal.SIGKILL):
                self.worker_exits.append(f"worker {worker.slot} exited with {code}")

    # -- background tasks --------------------------------------------------------------
    async def _sample_rss(self) -> None:
        while not self._stop.is_set():
            for slot, worker in list(self.workers.items()):
                with contextlib.suppress(psutil.Error):
                    rss = psutil.Process(worker.proc.pid).memory_info().rss
                    self.peak_rss[slot] = max(self.peak_rss[slot], rss)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), RSS_SAMPLE_INTERVAL_S)

    def _event(self, what: str) -> None:
        self.events.append(f"t={time.monotonic() - self._t0:.1f}s {what}")

    async def _at(self, at_s: float) -> None:
        await asyncio.sleep(max(0.0, self._t0 + at_s - time.monotonic()))

    async def _kill9(self, at_s: float, env: Mapping[str, str]) -> None:
        await self._at(at_s)
        alive = sorted(s for s, w in self.workers.items() if w.proc.poll() is None)
        if not alive:
            return
        pick = random.Random(self.config.seed + len(self.events)).randrange(len(alive))
        victim = self.workers[alive[pick]]
        victim.proc.send_signal(signal.SIGKILL)
        self._event(f"kill -9 worker {victim.slot} (pid {victim.proc.pid})")
        replacement = self._spawn_worker(env)
        await self._wait_ready(replacement)
        self._event(f"replacement worker {replacement.slot} ready")

    async def _restart(self, kind: str, at_s: float, down_s: float) -> None:
        await self._at(at_s)
        service = self.services.owned_redis if kind == "redis" else self.services.owned_pg
        if service is None:
            raise LoadTestError(f"{kind} restart needs --own-services")
        self._event(f"{kind} stop (down {down_s:.0f} s)")
        await asyncio.to_thread(service.restart, down_s)
        self._event(f"{kind} started again")

    # -- the run -----------------------------------------------------------------------
    async def _enqueue_all(
        self, producer: JobProducer, planned: list[PlannedJob], job_ids: list[str]
    ) -> None:
        interval_s = 60.0 / self.config.rate_per_min
        for i, job in enumerate(planned):
            await self._at(i * interval_s)
            deadline = time.monotonic() + ENQUEUE_RETRY_S
            while True:
                try:
                    enqueued = await producer.ingest(job.payload)
                    break
                except Exception as error:  # Redis restarting: retry, same dedup key
                    if time.monotonic() > deadline:
                        raise LoadTestError(f"enqueue kept failing: {error}") from error
                    await asyncio.sleep(0.25)
            job_ids.append(enqueued.job_id)

    async def _wait_settled(
        self, target: RedisTarget, total: int, enqueued: list[str], feeder: asyncio.Task[None]
    ) -> None:
        client = target.client()
        base = f"{self.prefix}:{QueueName.RUNS_INGEST.value}"
        deadline: float | None = None
        try:
            while True:
                if feeder.done() and feeder.exception() is not None:
                    return
                if deadline is None and len(enqueued) == total:
                    deadline = time.monotonic() + self.config.settle_timeout_s
                try:
                    done = int(await client.zcard(f"{base}:completed"))
                    failed = int(await client.zcard(f"{base}:failed"))
                except Exception:  # noqa: BLE001  # Redis restarting: poll again
                    done = failed = -1
                if self._progress is not None and done >= 0:
                    self._progress(len(enqueued), done, failed)
                if len(enqueued) == total and done + failed >= total:
                    return
                if deadline is not None and time.monotonic() > deadline:
                    return
                await asyncio.sleep(0.5)
        finally:
            await client.aclose()

    async def _read_jobs(
        self, target: RedisTarget, job_ids: list[str]
    ) -> tuple[list[float], list[float], int, int, int, collections.Counter[str], set[str]]:
        """Latencies, time stamps, completed, failed, unfinished, failure reasons, failed ids.

        A job whose hash still exists but is neither completed nor failed is *unfinished*
        (still queued, delayed or active when the wait ended: too slow, not lost); a job whose
        hash is gone without a completion is *lost* (the caller counts those).
        """
        client = target.client()
        base = f"{self.prefix}:{QueueName.RUNS_INGEST.value}"
        latencies: list[float] = []
        stamps: list[float] = []
        completed = failed = unfinished = 0
        reasons: collections.Counter[str] = collections.Counter()
        failed_ids: set[str] = set()
        try:
            for start in range(0, len(job_ids), 500):
                chunk = job_ids[start : start + 500]
                pipe = client.pipeline(transaction=False)
                for job_id in chunk:
                    pipe.hmget(f"{base}:{job_id}", "timestamp", "finishedOn", "failedReason")
                    pipe.zscore(f"{base}:completed", job_id)
                    pipe.zscore(f"{base}:failed", job_id)
                results = await pipe.execute()
                for k, job_id in enumerate(chunk):
                    (stamp, finished, reason), in_done, in_failed = results[3 * k : 3 * k + 3]
                    if in_done is not None and finished:
                        completed += 1
                        latencies.append(float(finished) - float(stamp))
                        stamps.extend((float(stamp), float(finished)))
                    elif in_failed is not None:
                        failed += 1
                        failed_ids.add(job_id)
                        reasons[re.sub(r"\d+", "N", str(reason))[:120]] += 1
                    elif stamp is not None:
                        unfinished += 1
        finally:
            await client.aclose()
        return latencies, stamps, completed, failed, unfinished, reasons, failed_ids

    async def _duplicates(self, engine: AsyncEngine) -> tuple[int, int, int]:
        """(duplicated rows, runs stored, executions stored) for this test's repositories."""
        like = {"owner": f"{self.owner_tag}-%"}
        async with engine.connect() as conn:
            dup_runs = await conn.scalar(
                text(
                    "SELECT COALESCE(SUM(c - 1), 0) FROM (SELECT COUNT(*) AS c FROM workflow_runs w"
                    " JOIN repositories r ON r.id = w.repository_id WHERE r.owner LIKE :owner"
                    " GROUP BY w.repository_id, w.run_id, w.run_attempt HAVING COUNT(*) > 1) d"
                ),
                like,
            )
            dup_execs = await conn.scalar(
                text(
                    "SELECT COALESCE(SUM(c - 1), 0) FROM (SELECT COUNT(*) AS c FROM executions e"
                    " JOIN workflow_runs w ON w.id = e.workflow_run_id"
                    " JOIN repositories r ON r.id = w.repository_id WHERE r.owner LIKE :owner"
                    " GROUP BY e.workflow_run_id, e.test_case_id, e.env_key, e.retry_index"
                    " HAVING COUNT(*) > 1) d"
                ),
                like,
            )
            runs = await conn.scalar(
                text(
                    "SELECT COUNT(*) FROM workflow_runs w JOIN repositories r"
                    " ON r.id = w.repository_id WHERE r.owner LIKE :owner"
                ),
                like,
            )
            executions = await conn.scalar(
                text(
                    "SELECT COUNT(*) FROM executions e JOIN workflow_runs w"
                    " ON w.id = e.workflow_run_id JOIN repositories r ON r.id = w.repository_id"
                    " WHERE r.owner LIKE :owner"
                ),
                like,
            )
        return int(dup_runs or 0) + int(dup_execs or 0), int(runs or 0), int(executions or 0)

    async def _delete_queue_keys(self, target: RedisTarget) -> None:
        client = target.client()
        try:
            batch: list[str] = []
            async for key in client.scan_iter(match=f"{self.prefix}:*", count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    await client.delete(*batch)
                    batch.clear()
            if batch:
                await client.delete(*batch)
        finally:
            await client.aclose()

    async def run(self) -> LoadReport:
        try:
            return await self._run()
        finally:
            self.services.stop()
            if self._emu is not None:
                await asyncio.to_thread(self._emu.close)
            if self._owned_tmp and not self.config.keep_work_dir:
                shutil.rmtree(self.work_dir, ignore_errors=True)

    async def _run(self) -> LoadReport:
        config = self.config
        await asyncio.to_thread(self.services.start)
        data_dir = self.work_dir / "data"
        engine = create_engine(database_url(self.services.database_url, data_dir))
        target = target_from_url(self.services.redis_url)
        producer = JobProducer(
            target,
            JobPolicy(prefix=self.prefix, keep_completed=KEEP_ALL_JOBS, keep_failed=KEEP_ALL_JOBS),
        )
        tasks: list[asyncio.Task[Any]] = []
        try:
            # Migrate once before the workers start (several SQLite writers must not race it).
            await migrate(engine)
            self._emu = await asyncio.to_thread(start_emulator, Scenario())
            emu = self._emu.emulator
            templates = generated_templates(config.seed)
            if config.poison_share > 0:
                templates += poisoned_templates()
            planned = plan_jobs(config, emu, self.owner_tag, templates)
            key_path = self.work_dir / "app.pem"
            key_path.write_text(emu.private_key_pem)
            key_path.chmod(0o600)
            env = self._worker_env(emu, key_path)
            started = [self._spawn_worker(env) for _ in range(config.workers)]
            await asyncio.gather(*(self._wait_ready(w) for w in started))
            tasks.append(asyncio.create_task(self._sample_rss()))
            self._t0 = time.monotonic()
            plan = config.faults
            chaos = [self._kill9(t, env) for t in plan.kill_times(config.load_duration_s)]
            chaos += [self._restart("redis", o.at_s, o.down_s) for o in plan.redis_restarts]
            chaos += [self._restart("pg", o.at_s, o.down_s) for o in plan.pg_restarts]
            chaos_task = asyncio.gather(*chaos)
            job_ids: list[str] = []
            enqueue = asyncio.create_task(self._enqueue_all(producer, planned, job_ids))
            await self._wait_settled(target, len(planned), job_ids, enqueue)
            await enqueue
            await chaos_task
            duration_s = time.monotonic() - self._t0
            (
                latencies,
                stamps,
                completed,
                failed,
                unfinished,
                reasons,
                failed_ids,
            ) = await self._read_jobs(target, job_ids)
            # Connections pooled before a PostgreSQL restart are dead: start a fresh pool.
            await engine.dispose()
            duplicated, runs, executions = await self._duplicates(engine)
        finally:
            self._stop.set()
            for task in tasks:
                with contextlib.suppress(Exception):
                    await task
            await self._stop_workers()
            with contextlib.suppress(Exception):
                if self.services.mode in ("external", "embedded-db"):
                    await self._delete_queue_keys(target)
            with contextlib.suppress(Exception):
                await producer.close()
            await engine.dispose()
        poisoned_ids = {job_ids[i] for i, job in enumerate(planned) if job.poisoned}
        span_min = (max(stamps) - min(stamps)) / 60_000 if stamps else 0.0
        total = len(planned)
        return LoadReport(
            jobs=total,
            rate_per_min=config.rate_per_min,
            concurrency=config.concurrency,
            workers=config.workers,
            mode=self.services.mode,
            throughput_jobs_per_min=round(completed / span_min, 1) if span_min else 0.0,
            success_rate=round(completed / total, 4),
            error_rate=round(failed / total, 4),
            jobs_completed=completed,
            jobs_failed=failed,
            jobs_unfinished=unfinished,
            jobs_lost=total - completed - failed - unfinished,
            rows_duplicated=duplicated,
            runs_stored=runs,
            executions_stored=executions,
            peak_rss_mb=round(max(self.peak_rss.values(), default=0) / 2**20, 1),
            peak_rss_mb_per_worker=[
                round(self.peak_rss[s] / 2**20, 1) for s in sorted(self.peak_rss)
            ],
            latency_p50_ms=percentile(latencies, 50),
            latency_p95_ms=percentile(latencies, 95),
            latency_p99_ms=percentile(latencies, 99),
            latency_max_ms=max(latencies, default=0.0),
            duration_s=round(duration_s, 1),
            poisoned_jobs=len(poisoned_ids),
            failed_non_poisoned=len(failed_ids - poisoned_ids),
            failed_reasons=dict(reasons.most_common(10)),
            fault_events=self.events,
            worker_exits=self.worker_exits,
            work_dir=str(self.work_dir) if config.keep_work_dir or not self._owned_tmp else None,
        )


async def run_load_test(config: LoadTestConfig, progress: Progress | None = None) -> LoadReport:
    return await LoadTest(config, progress).run()
