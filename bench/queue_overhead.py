"""No-op jobs through our worker vs bare bullmq, same Redis, same job options, one run.

Each measurement runs in a fresh process (alternating bare / ours, 3 rounds) so neither
warms the other. Jobs are enqueued first (addBulk), then one worker process drains them
with concurrency 10; throughput = jobs / (first start -> last completion).
"Ours" includes payload validation (pydantic), JSON logging (to /dev/null), metrics and
the error mapping of `QueueRunner`; "bare" is `bullmq.Worker` with an empty processor.

    python bench/queue_overhead.py [--jobs 20000] [--rounds 3]

Target (issue 2): ours >= 0.8 x bare, and >= 2,000 jobs/s per process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from typing import Any

import redis

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
CONCURRENCY = 10


def job_data(i: int) -> dict[str, Any]:
    return {
        "workflowRunId": i + 1,
        "repository": {"owner": "acme", "repo": "project", "installationId": 67890},
        "priority": "normal",
        "metadata": {"runAttempt": 1, "headSha": "abc1234", "headBranch": "main"},
    }


async def fill(queue: Any, jobs: int, opts: dict[str, Any]) -> None:
    for start in range(0, jobs, 1000):
        await queue.addBulk(
            [
                {"name": "process-run", "data": job_data(i), "opts": opts}
                for i in range(start, min(jobs, start + 1000))
            ]
        )


async def measure(mode: str, jobs: int) -> float:
    from bullmq import Queue, Worker

    from flakeguard.adapters.queue.connection import target_from_url
    from flakeguard.adapters.queue.names import QueueName
    from flakeguard.adapters.queue.payloads import RunsIngestPayload
    from flakeguard.adapters.queue.producer import JobPolicy, JobProducer
    from flakeguard.adapters.queue.runner import (
        JobContext,
        QueueHandler,
        QueueRunner,
        WorkerOptions,
    )
    from flakeguard.core.models import Priority
    from flakeguard.observability import Metrics, configure_logging
    from flakeguard.settings import LogLevel

    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    target = target_from_url(REDIS_URL)
    producer = JobProducer(target, JobPolicy(prefix=prefix))
    opts = producer.job_options(Priority.NORMAL, None)
    queue: Queue = producer.queues[QueueName.RUNS_INGEST]
    await fill(queue, jobs, opts)
    done = 0
    finished = asyncio.Event()
    first: list[float] = []

    def tick() -> None:
        nonlocal done
        if not first:
            first.append(time.perf_counter())
        done += 1
        if done == jobs:
            finished.set()

    if mode == "bare":

        async def bare(job: Any, token: str) -> None:
            tick()

        worker = Worker(
            "runs-ingest",
            bare,
            {
                "connection": target.bullmq_connection(),
                "concurrency": CONCURRENCY,
                "prefix": prefix,
            },
        )
        await finished.wait()
        elapsed = time.perf_counter() - first[0]
        await worker.close()
    else:
        with open(os.devnull, "w") as sink:
            configure_logging(LogLevel.INFO, stream=sink)

            async def ours(payload: RunsIngestPayload, ctx: JobContext) -> Mapping[str, Any] | None:
                tick()
                return None

            runner = QueueRunner(
                target,
                QueueHandler(
                    QueueName.RUNS_INGEST, RunsIngestPayload, ours, concurrency=CONCURRENCY
                ),
                WorkerOptions(prefix=prefix),
                Metrics(),
            )
            await runner.start()
            await finished.wait()
            elapsed = time.perf_counter() - first[0]
            await runner.close(10)
    await producer.close()
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=5000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])
    client.close()
    return jobs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", choices=["bare", "ours"])
    args = parser.parse_args()
    if args.child:
        print(json.dumps({"rate": asyncio.run(measure(args.child, args.jobs))}))
        return
    rates: dict[str, list[float]] = {"bare": [], "ours": []}
    for _ in range(args.rounds):
        for mode in ("bare", "ours"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", mode, "--jobs", str(args.jobs)],
                capture_output=True,
                text=True,
                check=True,
            )
            rates[mode].append(json.loads(out.stdout.strip().splitlines()[-1])["rate"])
    bare, ours = statistics.median(rates["bare"]), statistics.median(rates["ours"])
    print(f"jobs per run: {args.jobs}, worker concurrency {CONCURRENCY}, rounds {args.rounds}")
    print(
        f"bare bullmq : {bare:8.0f} jobs/s  (runs: {', '.join(f'{r:.0f}' for r in rates['bare'])})"
    )
    print(
        f"flakeguard  : {ours:8.0f} jobs/s  (runs: {', '.join(f'{r:.0f}' for r in rates['ours'])})"
    )
    print(f"ratio ours/bare: {ours / bare:.2f}  (target >= 0.80; ours >= 2000 jobs/s)")


if __name__ == "__main__":
    main()
