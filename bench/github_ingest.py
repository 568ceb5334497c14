"""Runs ingested per minute from the GitHub emulator, and the API calls spent per run.

One worker process (the four queue runners in this process), real Redis (own key prefix,
deleted afterwards) and PostgreSQL (own database, dropped afterwards), the emulator in its own
process (`--emulator-in-process` serves it from a thread here instead, competing for the GIL).
The scenario: one installation, `--repos` repositories, `--runs` completed
runs with one artifact each (a ZIP of one generated JUnit file with `--tests` test cases,
~2 % failing, fixed seed), each run at its own head SHA (the worst case: one check-run create
per run). By default every run fails the same ~10 tests; `--failure-patterns N` gives run i
the i mod N-th of N reports with different failing tests, so that more tests carry evidence
and every scoring pass re-reads and re-scores their histories (closer to a suite with many
flaky tests). The clock starts when the discovery `polling` job is enqueued (discovery → one
poller per repository → `runs-ingest` → `runs-analyze` → check run) and stops when every
analysis is done, so polling is amortised into the figures.

API calls are counted from the emulator's request log (API origin only; blob downloads are
listed apart). Job latency = finish time - enqueue time of each `runs-ingest` job.

    python bench/github_ingest.py [--runs 600] [--tests 500] [--concurrency 16]
                                   [--analyze-concurrency 64] [--write-spacing-ms 0]
                                   [--failure-patterns 1]

Concurrency 16 for `runs-ingest` (WORKER_CONCURRENCY) and 64 for `runs-analyze`
(HIGH_PRIORITY_CONCURRENCY): an analysis mostly waits for its repository's shared scoring
pass, so its concurrency sets how many runs a pass covers. Run side by side with 8
(2026-11-29, two processes at once so that both see the same machine), 16 cost 0.85-0.88
of the CPU per run. Later the same day (600 runs, alternated): 16 gave 2,177-2,447
runs/min at 19.2-20.7 ms/run with ~7.6 runs a pass; 32 gave 2,575-2,651 at 17.2-18.5
(~13.6 a pass); 48 2,525-2,654 at 17.1-17.9 (~18); 96 2,226-2,470 (~23, analyses waiting
up to 1.6 s for their pass). In the next session, alternated at 600 runs: 32 and 64 were
even with one failure pattern (mean 3,823 and 3,835 runs/min over four pairs); with
`--failure-patterns 20`, 64 won three pairs of three (2,433-2,986 against 2,123-2,413
runs/min). Larger passes, fewer of them: 42-46 per 1,000 runs at 64 against 68-70 at 32
(one pattern).

Two benches at once ("side by side", to compare code on the same machine) need more
PostgreSQL connections than its default `max_connections` of 100: one bench at 16/64
held up to 67-68 (the worker's pool follows its concurrency). Run them side by side at
lower concurrency (16/16 each), or alternate them; "sorry, too many clients already" in
PostgreSQL's log means the comparison is void (jobs were retried).

Target (issue 4): >= 3,000 runs/min and <= 4 API calls per run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import random
import re
import statistics
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import psycopg
import redis
from sqlalchemy import func, select

from flakeguard.adapters.db.engine import migrate
from flakeguard.adapters.db.tables import ExecutionRow, WorkflowRunRow, table_of
from flakeguard.adapters.queue.names import QueueName
from flakeguard.adapters.queue.payloads import PollingPayload
from flakeguard.bootstrap import build_runners, open_runtime
from flakeguard.emulator import (
    InstallationSpec,
    RepoSpec,
    Scenario,
    run_emulator,
    zip_members,
)
from flakeguard.event_loop import new_event_loop
from flakeguard.gc_tuning import tune_garbage_collector
from flakeguard.observability import configure_logging
from flakeguard.settings import load_settings

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_ADMIN_DSN = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
SEED = 20261128
INSTALLATION_ID = 4001
TARGET_RUNS_PER_MIN = 3000
TARGET_CALLS_PER_RUN = 4.0


def junit_xml(tests: int, seed: int) -> bytes:
    """A pytest-like report with `tests` cases, ~2 % failing (deterministic for `seed`)."""
    rng = random.Random(seed)
    parts = [
        f'<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="{tests}">'
    ]
    for i in range(tests):
        name = f'classname="tests.test_mod{i // 25}" name="test_case_{i}" time="{rng.random():.3f}"'
        if rng.random() < 0.02:
            parts.append(
                f'<testcase {name}><failure message="AssertionError: {i} != {i + 1}">'
                f"assert {i} == {i + 1}</failure></testcase>"
            )
        else:
            parts.append(f"<testcase {name}/>")
    parts.append("</testsuite></testsuites>")
    return "".join(parts).encode()


@contextlib.contextmanager
def own_database() -> Iterator[str]:
    name = f"fgbench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def drop_prefix(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


_ID = re.compile(r"/\d+")


def endpoint_of(method: str, path: str) -> str:
    """`GET /repos/{o}/{r}/actions/runs/{id}/artifacts` style, numbers folded."""
    parts = path.split("/")
    if len(parts) > 3 and parts[1] == "repos":
        parts[2], parts[3] = "{o}", "{r}"
    return f"{method} {_ID.sub('/{id}', '/'.join(parts))}"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def build_scenario(args: argparse.Namespace) -> tuple[Scenario, tuple[RepoSpec, ...]]:
    # Repository i belongs to installation i mod N (its own account): GitHub serialises and
    # limits content-creating requests (check runs) per installation, and so does the client.
    installations = tuple(
        InstallationSpec(INSTALLATION_ID + k, "bench" if k == 0 else f"bench{k}")
        for k in range(args.installations)
    )
    repos = tuple(
        RepoSpec(
            id=9100 + i,
            owner=installations[i % len(installations)].account_login,
            name=f"repo{i}",
            installation_id=installations[i % len(installations)].id,
        )
        for i in range(args.repos)
    )
    scenario = Scenario(
        installations=installations,
        repos=repos,
        artifact_templates={
            f"junit{k}": zip_members({"junit.xml": junit_xml(args.tests, SEED + k)})
            for k in range(args.failure_patterns)
        },
    )
    return scenario, repos


def add_runs(emu: Any, repos: tuple[RepoSpec, ...], runs: int, patterns: int) -> None:
    started_at = datetime.now(UTC) - timedelta(hours=1)
    for i in range(runs):
        emu.add_run(
            repos[i % len(repos)],
            500_000 + i,
            head_sha=f"{i:040x}",
            created_at=started_at + timedelta(seconds=i),
            conclusion="failure",
            artifacts=[("junit", f"junit{i % patterns}")],
        )


def emulator_process(conn: Connection, args: argparse.Namespace) -> None:
    """The emulator in its own process (GitHub is not in the worker's process either)."""

    async def serve() -> None:
        scenario, repos = build_scenario(args)
        async with run_emulator(scenario) as emu:
            add_runs(emu, repos, args.runs, args.failure_patterns)
            conn.send({"api_url": emu.api_url, "app_id": emu.app_id, "key": emu.private_key_pem})
            loop = asyncio.get_running_loop()
            while True:
                message = await loop.run_in_executor(None, conn.recv)
                if message == "clear":
                    emu.clear_requests()
                    conn.send("cleared")
                elif message == "stop":
                    conn.send(
                        {
                            "api": Counter(
                                endpoint_of(r.method, r.path) for r in emu.api_requests()
                            ),
                            "blobs": len(emu.blob_requests()),
                            "check_runs": len(emu.check_runs),
                        }
                    )
                    return

    asyncio.run(serve())


class RemoteEmulator:
    """The parts of the emulator `measure` uses, served by `emulator_process`."""

    def __init__(self, args: argparse.Namespace) -> None:
        self._conn, child = multiprocessing.get_context("spawn").Pipe()
        self._process = multiprocessing.get_context("spawn").Process(
            target=emulator_process, args=(child, args), daemon=True
        )
        self._process.start()
        started = self._conn.recv()
        self.api_url: str = started["api_url"]
        self.app_id: str = started["app_id"]
        self.private_key_pem: str = started["key"]
        self.summary: dict[str, Any] = {}

    def clear_requests(self) -> None:
        self._conn.send("clear")
        self._conn.recv()

    def stop(self) -> None:
        self._conn.send("stop")
        self.summary = self._conn.recv()
        self._process.join(timeout=10)


class LocalEmulator:
    """The same interface over an emulator served from a thread of this process."""

    def __init__(self, emu: Any) -> None:
        self._emu = emu
        self.api_url: str = emu.api_url
        self.app_id: str = emu.app_id
        self.private_key_pem: str = emu.private_key_pem
        self.summary: dict[str, Any] = {}

    def clear_requests(self) -> None:
        self._emu.clear_requests()


@contextlib.asynccontextmanager
async def emulator_for(args: argparse.Namespace) -> AsyncIterator[Any]:
    if args.emulator_in_process:
        scenario, repos = build_scenario(args)
        async with run_emulator(scenario) as emu:
            add_runs(emu, repos, args.runs, args.failure_patterns)
            local = LocalEmulator(emu)
            yield local
            local.summary = {
                "api": Counter(endpoint_of(r.method, r.path) for r in emu.api_requests()),
                "blobs": len(emu.blob_requests()),
                "check_runs": len(emu.check_runs),
            }
        return
    remote = RemoteEmulator(args)
    try:
        yield remote
    finally:
        if not remote.summary:
            remote.stop()


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    prefix = f"fgbench-{uuid.uuid4().hex[:8]}"
    with own_database() as pg_url, TemporaryDirectory() as data_dir:
        async with emulator_for(args) as emu:
            settings = load_settings(
                {
                    "REDIS_URL": REDIS_URL,
                    "DATABASE_URL": pg_url,
                    "QUEUE_PREFIX": prefix,
                    "FLAKEGUARD_DATA_DIR": str(Path(data_dir)),
                    "LOG_LEVEL": "error",
                    "POLLING_ENABLED": "false",
                    "GITHUB_APP_ID": emu.app_id,
                    "GITHUB_PRIVATE_KEY": emu.private_key_pem,
                    "GITHUB_API_URL": emu.api_url,
                    "GITHUB_WRITE_SPACING_MS": str(args.write_spacing_ms),
                    "WORKER_CONCURRENCY": str(args.concurrency),
                    "HIGH_PRIORITY_CONCURRENCY": str(args.analyze_concurrency),
                    "REMOVE_ON_COMPLETE": str(args.runs * 4),
                }
            )
            with open(os.devnull, "w", encoding="utf-8") as devnull:
                configure_logging(settings.log_level, stream=devnull)
            try:
                async with open_runtime(settings) as runtime:
                    await migrate(runtime.deps.engine)
                    runners = build_runners(runtime)
                    for runner in runners:
                        await runner.start()
                    tune_garbage_collector()  # as `flakeguard worker` does once started
                    try:
                        emu.clear_requests()
                        t0 = time.perf_counter()
                        wall0_ms = time.time() * 1000  # the clock of BullMQ's finishedOn
                        cpu0 = time.process_time()
                        await runtime.deps.producer.poll(PollingPayload())
                        analyze = runtime.deps.producer.queues[QueueName.RUNS_ANALYZE]
                        ingest = runtime.deps.producer.queues[QueueName.RUNS_INGEST]
                        ingest_done_s: float | None = None
                        deadline = t0 + args.timeout_s
                        while time.perf_counter() < deadline:
                            counts = await ingest.getJobCounts("completed", "failed")
                            if (
                                ingest_done_s is None
                                and int(counts["completed"]) + int(counts["failed"]) >= args.runs
                            ):
                                ingest_done_s = time.perf_counter() - t0
                            done = await analyze.getJobCounts("completed", "failed")
                            if int(done["completed"]) + int(done["failed"]) >= args.runs:
                                break
                            # Seldom: this loop's CPU counts as the worker's. The times
                            # come from the jobs' finishedOn below, not from this loop.
                            await asyncio.sleep(0.25)
                        total_s = time.perf_counter() - t0
                        cpu_s = time.process_time() - cpu0
                    finally:
                        for runner in runners:
                            await runner.close(10)
                    jobs = await ingest.getJobs(["completed"], 0, -1)
                    analyses = await analyze.getJobs(["completed"], 0, -1)
                    if len(analyses) >= args.runs:
                        total_s = (max(int(j.finishedOn) for j in analyses) - wall0_ms) / 1000
                    if ingest_done_s is not None and len(jobs) >= args.runs:
                        ingest_done_s = (max(int(j.finishedOn) for j in jobs) - wall0_ms) / 1000
                    latencies_s = [
                        (int(j.finishedOn) - int(j.timestamp)) / 1000
                        for j in jobs
                        if j.finishedOn is not None
                    ]
                    failed = {
                        q.value: int(
                            (await runtime.deps.producer.queues[q].getJobCounts("failed"))["failed"]
                        )
                        for q in (QueueName.RUNS_INGEST, QueueName.RUNS_ANALYZE, QueueName.POLLING)
                    }
                    async with runtime.deps.engine.connect() as conn:
                        stored_runs = int(
                            await conn.scalar(
                                select(func.count()).select_from(table_of(WorkflowRunRow))
                            )
                            or 0
                        )
                        executions = int(
                            await conn.scalar(
                                select(func.count()).select_from(table_of(ExecutionRow))
                            )
                            or 0
                        )
            finally:
                drop_prefix(prefix)
            if isinstance(emu, RemoteEmulator):
                emu.stop()
        summary = emu.summary
        api, blobs, check_runs = summary["api"], summary["blobs"], summary["check_runs"]
    return {
        "total_s": total_s,
        "cpu_s": cpu_s,
        "ingest_s": ingest_done_s,
        "latencies_s": latencies_s,
        "api": api,
        "blobs": blobs,
        "check_runs": check_runs,
        "failed": failed,
        "stored_runs": stored_runs,
        "executions": executions,
    }


def report(args: argparse.Namespace, result: dict[str, Any]) -> None:
    runs = args.runs
    total_s = result["total_s"]
    api: Counter[str] = result["api"]
    api_total = sum(api.values())
    print(
        f"github_ingest: {runs} runs x {args.tests} tests "
        f"({args.failure_patterns} failure pattern(s)), {args.repos} repos, "
        f"{args.installations} installation(s), "
        f"concurrency {args.concurrency}/{args.analyze_concurrency}, "
        f"write spacing {args.write_spacing_ms} ms, event loop {result['loop']}"
    )
    print(
        f"stored runs {result['stored_runs']}, executions {result['executions']}, "
        f"check runs {result['check_runs']}, failed jobs {result['failed']}"
    )
    print(f"{'figure':<44} {'value':>12} {'target':>10}")
    rate = runs / total_s * 60
    print(f"{'runs/min (poll -> ingest -> analyze -> check)':<44} {rate:>12,.0f} {'>= 3,000':>10}")
    if result["ingest_s"]:
        ingest_rate = runs / result["ingest_s"] * 60
        print(f"{'runs/min (ingest only)':<44} {ingest_rate:>12,.0f}")
    # The worker's CPU (this process: the runners, plus the emulator with
    # --emulator-in-process): 3,000 runs/min in one process needs <= 20 ms per run.
    cpu_ms = result["cpu_s"] / runs * 1000
    busy = result["cpu_s"] / total_s
    print(f"{'worker CPU ms/run (share of one core)':<44} {cpu_ms:>8.1f} ({busy:.0%})")
    print(f"{'API calls/run (all)':<44} {api_total / runs:>12.2f} {'<= 4':>10}")
    for endpoint, count in api.most_common():
        print(f"  {endpoint:<42} {count / runs:>12.3f}   ({count})")
    print(f"{'blob downloads/run (not API)':<44} {result['blobs'] / runs:>12.2f}")
    lat = result["latencies_s"]
    print(f"{'ingest job latency p50 (s)':<44} {percentile(lat, 0.5):>12.2f}")
    print(f"{'ingest job latency p95 (s)':<44} {percentile(lat, 0.95):>12.2f}")
    if lat:
        print(f"{'ingest job latency mean (s)':<44} {statistics.fmean(lat):>12.2f}")
    ok_rate = rate >= TARGET_RUNS_PER_MIN
    ok_calls = api_total / runs <= TARGET_CALLS_PER_RUN
    print(
        f"targets: runs/min {'met' if ok_rate else 'MISSED'}, calls/run {'met' if ok_calls else 'MISSED'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=600)
    parser.add_argument("--tests", type=int, default=500)
    parser.add_argument("--repos", type=int, default=3)
    parser.add_argument(
        "--failure-patterns",
        type=int,
        default=1,
        help="distinct reports (each its own ~2 %% of failing tests), run i gets pattern i mod N;"
        " 1: every run fails the same tests",
    )
    parser.add_argument(
        "--installations",
        type=int,
        default=1,
        help="spread the repositories over this many GitHub App installations",
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--analyze-concurrency", type=int, default=64)
    parser.add_argument("--write-spacing-ms", type=int, default=0)
    parser.add_argument("--timeout-s", type=float, default=600.0)
    parser.add_argument(
        "--emulator-in-process",
        action="store_true",
        help="serve GitHub from a thread of the worker's process (it then competes for the GIL)",
    )
    parser.add_argument(
        "--asyncio-loop",
        action="store_true",
        help="run the worker on asyncio's own event loop instead of the worker's (uvloop)",
    )
    args = parser.parse_args()
    if args.failure_patterns < 1:
        parser.error("--failure-patterns must be at least 1")
    factory = asyncio.new_event_loop if args.asyncio_loop else new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        result = runner.run(measure(args))
        result["loop"] = type(runner.get_loop()).__module__  # "uvloop" or "asyncio.unix_events"
    report(args, result)


if __name__ == "__main__":
    main()
