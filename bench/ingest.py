"""End-to-end ingestion: `flakeguard import-junit --manifest` of ~1,000,000 results into PostgreSQL.

Generates (deterministically) RUNS run attempts x CASES test cases as JUnit files (one file per
run, 50 suites; 93 % pass, 3 % fail with a short stack, 1 % error, 3 % skipped; 0.5 % of cases
carry a Surefire ``flakyFailure`` retry) plus a manifest.jsonl, creates a fresh
``fgbench_<pid>`` database, runs ``flakeguard migrate``, then times ``flakeguard import-junit``
as a subprocess (wall time, results/s, peak RSS of the process sampled with psutil every 50 ms).
As the reference, in the same run, it COPYs the same rows (executions-shaped tuples, built
before the clock starts) into an identical empty table with asyncpg ``copy_records_to_table``,
one COPY per run like the store path. Prints figures and the ratio. Target (issue 3):
>= 50,000 results/s end to end, memory flat. The database is dropped at the end.

    python bench/ingest.py                      # 200 runs x 5,000 cases
    python bench/ingest.py --runs 20            # quicker
    python bench/ingest.py --keep DIR           # keep the generated files in DIR
    FLAKEGUARD_BENCH_PG=postgresql://postgres@127.0.0.1:5432 python bench/ingest.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from flakeguard.adapters.db.runs import EXECUTION_COLUMNS

SEED = 20240602
SUITES = 50
PG_SERVER = os.environ.get("FLAKEGUARD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
FLAKEGUARD = Path(sys.executable).with_name("flakeguard")

_STACK = "\n".join(
    f"\tat com.acme.shop.CartService.apply(CartService.java:{line})" for line in range(40, 46)
)


def generate(folder: Path, runs: int, cases: int) -> tuple[int, list[list[tuple[Any, ...]]]]:
    """Write the reports and manifest; return (results, per-run execution-shaped rows)."""
    rng = random.Random(SEED)
    per_suite = cases // SUITES
    manifest = folder / "manifest.jsonl"
    rows_per_run: list[list[tuple[Any, ...]]] = []
    results = 0
    with manifest.open("w", encoding="utf-8") as lines:
        for run in range(runs):
            path = folder / f"run-{run:04d}.xml"
            rows: list[tuple[Any, ...]] = []
            with path.open("w", encoding="utf-8") as out:
                out.write('<?xml version="1.0" encoding="UTF-8"?>\n<testsuites name="bench">\n')
                for s in range(SUITES):
                    cls = f"com.acme.module{s}.Feature{s}Test"
                    out.write(f'<testsuite name="{cls}" tests="{per_suite}">\n')
                    for c in range(per_suite):
                        case_id = s * per_suite + c + 1
                        roll = rng.random()
                        time_s = f"{rng.random() * 2:.3f}"
                        head = f'<testcase name="test_{c}" classname="{cls}" time="{time_s}"'
                        if roll < 0.005:
                            out.write(
                                f'{head}><flakyFailure message="timeout" type="Timeout">'
                                f"<stackTrace>{_STACK}</stackTrace></flakyFailure></testcase>\n"
                            )
                            rows.append((case_id, 0, "failed", None, "Timeout", "x" * 32))
                            rows.append((case_id, 1, "passed", float(time_s), None, None))
                        elif roll < 0.93:
                            out.write(head + "/>\n")
                            rows.append((case_id, 0, "passed", float(time_s), None, None))
                        elif roll < 0.96:
                            out.write(
                                f'{head}><failure message="expected: &lt;{c}&gt; but was: '
                                f'&lt;{c + 1}&gt;" type="AssertionError">{_STACK}</failure>'
                                "</testcase>\n"
                            )
                            rows.append(
                                (case_id, 0, "failed", float(time_s), "AssertionError", "x" * 32)
                            )
                        elif roll < 0.97:
                            out.write(
                                f'{head}><error message="Connection refused" type="IOError">'
                                f"{_STACK}</error></testcase>\n"
                            )
                            rows.append((case_id, 0, "error", float(time_s), "IOError", "x" * 32))
                        else:
                            out.write(f'{head}><skipped message="disabled"/></testcase>\n')
                            rows.append((case_id, 0, "skipped", float(time_s), None, None))
                    out.write("</testsuite>\n")
                out.write("</testsuites>\n")
            results += len(rows)
            rows_per_run.append(rows)
            spec = {
                "repo": "acme/shop",
                "run_id": 1000 + run,
                "attempt": 1,
                "sha": f"{run:040x}",
                "branch": "main",
                "started_at": f"2024-06-01T{run // 60 % 24:02d}:{run % 60:02d}:00Z",
                "workflow": "ci",
                "job": "test",
                "paths": [path.name],
            }
            lines.write(json.dumps(spec) + "\n")
    return results, rows_per_run


def _execution_records(
    rows_per_run: list[list[tuple[Any, ...]]],
) -> list[list[tuple[Any, ...]]]:
    """The rows the store path COPYs (ids stand in for the real ones), built before timing."""
    out: list[list[tuple[Any, ...]]] = []
    for run, rows in enumerate(rows_per_run, start=1):
        records = []
        for case_id, retry, outcome, duration, ftype, sig in rows:
            final = outcome != "failed" or retry != 0 or ftype != "Timeout"
            message = None if ftype is None else "expected: <1> but was: <2>"
            records.append(
                (case_id, run, run, "ci/test", retry, final, outcome, duration, ftype, sig, message)
            )
        out.append(records)
    return out


def run_measured(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MB incl. children, stdout) of one subprocess."""
    start = time.perf_counter()
    proc = psutil.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        try:
            rss = proc.memory_info().rss
            rss += sum(c.memory_info().rss for c in proc.children(recursive=True))
        except psutil.Error:
            rss = 0
        peak = max(peak, rss)
        time.sleep(0.05)
    elapsed = time.perf_counter() - start
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{command[1:3]} failed ({proc.returncode}): {stderr.decode()[-2000:]}")
    return elapsed, peak / 1e6, stdout.decode()


async def copy_reference(dsn: str, records: list[list[tuple[Any, ...]]]) -> float:
    """Seconds to COPY `records` (one COPY per run) into an empty executions-shaped table."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TABLE bench_executions (LIKE executions INCLUDING DEFAULTS INCLUDING INDEXES)"
        )
        columns = list(EXECUTION_COLUMNS)
        start = time.perf_counter()
        for run_records in records:
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "bench_executions", records=run_records, columns=columns
                )
        return time.perf_counter() - start
    finally:
        await conn.close()


async def admin(sql: str) -> None:
    conn = await asyncpg.connect(f"{PG_SERVER}/postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--cases", type=int, default=5000)
    parser.add_argument("--keep", type=Path, default=None)
    args = parser.parse_args()
    database = f"fgbench_{os.getpid()}"
    dsn = f"{PG_SERVER}/{database}"
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        results, rows_per_run = generate(folder, args.runs, args.cases)
        size_mb = sum(p.stat().st_size for p in folder.glob("run-*.xml")) / 1e6
        print(
            f"input: {args.runs} runs x {args.cases:,} cases = {results:,} results, {size_mb:.1f} MB"
        )
        records = _execution_records(rows_per_run)
        asyncio.run(admin(f'CREATE DATABASE "{database}"'))
        try:
            env = {**os.environ, "DATABASE_URL": dsn}
            run_measured([str(FLAKEGUARD), "migrate"], env)
            seconds, peak_mb, out = run_measured(
                [str(FLAKEGUARD), "import-junit", "--manifest", str(folder / "manifest.jsonl")],
                env,
            )
            print(f"import-junit: {out.strip()}")
            copy_s = asyncio.run(copy_reference(dsn, records))
            stored = asyncio.run(_count(dsn))
        finally:
            asyncio.run(admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    if stored != results:
        print(f"WARNING: {stored:,} executions stored, {results:,} expected")
    print(
        f"import-junit end to end: {seconds:.2f} s, {results / seconds:,.0f} results/s,"
        f" peak RSS {peak_mb:.1f} MB (target >= 50,000 results/s)"
    )
    print(f"plain COPY of the same rows: {copy_s:.2f} s, {results / copy_s:,.0f} rows/s")
    print(f"ratio import/COPY throughput: {copy_s / seconds:.2f}")


async def _count(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM executions"))
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
