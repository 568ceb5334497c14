"""Scoring 10,000 tests x 500 executions (5M rows in PostgreSQL) through `flakeguard analyze`.

Builds a fresh database (`fgbench_analyze_*`, dropped at the end), loads 500 run attempts
of 10,000 tests with COPY (a realistic mix: stable, broken windows, flaky tests with
re-runs of red runs, three OS legs), then measures in fresh processes:

- `flakeguard analyze --repo bench/big` (the tests-recompute path, scope all): wall time and
  peak RSS of the process;
- the reference: one plain SQL scan of the same rows (the history query's join, streamed
  with `COPY (SELECT ...) TO STDOUT` into nothing).

    python bench/analyze.py [--tests 10000] [--runs 500]

Target (issue 5): < 60 s and < 500 MB on this 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import psutil

from flakeguard.adapters.db.runs import EXECUTION_COLUMNS

ADMIN_DSN = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
ENVS = ("ci/ubuntu", "ci/windows", "ci/macos")


def outcome_for(rng: random.Random, kind: str, run: int, runs: int) -> str:
    if kind == "flaky":
        return "failed" if rng.random() < 0.08 else "passed"
    if kind == "broken_window":
        return "failed" if runs // 3 <= run < runs // 3 + 20 else "passed"
    if kind == "skipped":
        return "skipped"
    return "passed"


async def load(dsn: str, tests: int, runs: int, seed: int) -> int:
    rng = random.Random(seed)
    conn = await asyncpg.connect(dsn)
    try:
        now = datetime.now(UTC)
        repo_id = await conn.fetchval(
            "INSERT INTO repositories (owner, name, default_branch, enabled, created_at, updated_at)"
            " VALUES ('bench', 'big', 'main', true, $1, $1) RETURNING id",
            now,
        )
        kinds = ["stable"] * tests
        for i in rng.sample(range(tests), tests // 20):
            kinds[i] = "flaky"
        for i in rng.sample(range(tests), tests // 50):
            kinds[i] = "broken_window" if kinds[i] == "stable" else kinds[i]
        for i in rng.sample(range(tests), tests // 100):
            kinds[i] = "skipped" if kinds[i] == "stable" else kinds[i]
        await conn.copy_records_to_table(
            "test_cases",
            records=[
                (
                    repo_id,
                    uuid.UUID(int=rng.getrandbits(128)).hex,
                    "suite",
                    f"pkg.mod{i % 200}",
                    f"test_{i}",
                    None,
                    now,
                    now,
                )
                for i in range(tests)
            ],
            columns=[
                "repository_id",
                "test_key",
                "suite",
                "class_name",
                "name",
                "file",
                "first_seen_at",
                "last_seen_at",
            ],
        )
        case_ids = [
            r["id"]
            for r in await conn.fetch(
                "SELECT id FROM test_cases WHERE repository_id=$1 ORDER BY id", repo_id
            )
        ]
        start = now - timedelta(days=25)
        total = 0
        for run in range(runs):
            env = ENVS[run % 3]
            sha = f"{run // 3:040x}"
            attempt = 2 if run % 10 == 9 else 1  # every tenth leg is a re-run of a red one
            run_row = await conn.fetchval(
                "INSERT INTO workflow_runs (repository_id, run_id, run_attempt, workflow, head_sha, head_branch,"
                " event, status, conclusion, started_at, ingested_at, source, cases, executions)"
                " VALUES ($1,$2,$3,'ci',$4,$5,'push','completed','success',$6,$6,'import',$7,$7) RETURNING id",
                repo_id,
                run // 3 * 10 + run % 3,
                attempt,
                sha,
                "main" if run % 4 else "feature",
                start + timedelta(minutes=70 * run),
                tests,
            )
            outcomes = [outcome_for(rng, kinds[i], run, runs) for i in range(tests)]
            failed = sum(o == "failed" for o in outcomes)
            report = await conn.fetchval(
                "INSERT INTO reports (workflow_run_id, env_key, source, cases, failed, failed_share)"
                " VALUES ($1,$2,'bench.xml',$3,$4,$5) RETURNING id",
                run_row,
                env,
                tests,
                failed,
                failed / tests,
            )
            await conn.copy_records_to_table(
                "executions",
                records=[
                    (
                        case_ids[i],
                        run_row,
                        report,
                        env,
                        0,
                        True,
                        o,
                        0.01,
                        None,
                        "sig" if o == "failed" else None,
                        None,
                    )
                    for i, o in enumerate(outcomes)
                ],
                columns=list(EXECUTION_COLUMNS),
            )
            total += tests
        await conn.execute("ANALYZE")
        return total
    finally:
        await conn.close()


def peak_rss_of(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        handle = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                peak = max(peak, handle.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{out[-3000:]}")
    return time.perf_counter() - started, peak / 2**20, out


async def plain_scan(dsn: str) -> tuple[float, int]:
    conn = await asyncpg.connect(dsn)
    sink = 0

    async def devnull(chunk: bytes) -> None:
        nonlocal sink
        sink += len(chunk)

    started = time.perf_counter()
    await conn.copy_from_query(
        "SELECT e.test_case_id, e.env_key, w.run_id, w.run_attempt, e.retry_index, e.is_final, w.head_sha,"
        " w.head_branch, e.outcome, w.started_at, e.signature, r.failed_share FROM executions e"
        " JOIN workflow_runs w ON e.workflow_run_id = w.id JOIN reports r ON e.report_id = r.id"
        " ORDER BY e.test_case_id",
        output=devnull,
    )
    elapsed = time.perf_counter() - started
    await conn.close()
    return elapsed, sink


async def main_async(args: argparse.Namespace) -> None:
    name = f"fgbench_analyze_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    dsn = ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    env = {**os.environ, "DATABASE_URL": dsn, "LOG_LEVEL": "warn"}
    try:
        subprocess.run(
            [sys.executable, "-m", "flakeguard", "migrate"],
            env=env,
            check=True,
            capture_output=True,
        )
        started = time.perf_counter()
        rows = await load(dsn, args.tests, args.runs, args.seed)
        print(
            f"loaded {rows:,} executions of {args.tests:,} tests in {time.perf_counter() - started:.1f} s"
        )
        scan_s, scanned = await plain_scan(dsn)
        wall_s, peak_mb, out = peak_rss_of(
            [
                sys.executable,
                "-m",
                "flakeguard",
                "analyze",
                "--repo",
                "bench/big",
                "--batch-size",
                "500",
            ],
            env,
        )
        print(out.strip().splitlines()[-1])
        print(
            f"plain SQL scan of the same rows: {scan_s:.1f} s ({scanned / 2**20:.0f} MB streamed)"
        )
        print(f"flakeguard analyze: {wall_s:.1f} s wall, peak RSS {peak_mb:.0f} MB")
        print(f"ratio analyze / plain scan: {wall_s / scan_s:.1f}x  (target: < 60 s, < 500 MB)")
    finally:
        admin = await asyncpg.connect(ADMIN_DSN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tests", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
