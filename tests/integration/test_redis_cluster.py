"""A worker on a real 3-master Redis Cluster (issue 7 item 8).

The test starts its own redis-server processes in cluster mode on free loopback ports (never
the machine's shared Redis), joins them with `redis-cli --cluster create`, runs a worker
runtime with REDIS_CLUSTER_ENABLED against them, processes jobs on all four queues, and
checks that every key of a queue hashes to one slot (hash-tagged names). The servers are
stopped and their directories removed even when the test fails.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from bullmq import Job
from redis.cluster import RedisCluster as SyncRedisCluster

from flakeguard.adapters.queue.names import ALL_QUEUES, QueueName
from flakeguard.adapters.queue.payloads import (
    PollingPayload,
    RecomputePayload,
    RepositoryRef,
    RunMetadata,
    RunsIngestPayload,
)
from flakeguard.bootstrap import sample_queues_once
from flakeguard.core.models import Priority
from flakeguard.http.app import create_app
from tests.conftest import FIXTURES, IN_CI
from tests.support import make_settings, running_workers, runtime_for, wait_for, write_local_run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

MASTERS = 3
START_TIMEOUT_S = 15.0
IDLE_S = 11.0


@dataclass(frozen=True, slots=True)
class LocalCluster:
    ports: tuple[int, ...]

    def seeds(self, count: int) -> str:
        """REDIS_CLUSTER_NODES naming the first `count` masters (the client discovers the rest)."""
        return ",".join(f"127.0.0.1:{port}" for port in self.ports[:count])

    def client(self) -> SyncRedisCluster:
        return SyncRedisCluster(host="127.0.0.1", port=self.ports[0], decode_responses=True)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> tuple[int, ...]:
    """Ports whose cluster bus port (+10000) is free too."""
    rng = random.Random()
    chosen: list[int] = []
    for _ in range(500):
        port = rng.randrange(20000, 55000)
        if port in chosen or port + 10000 in chosen:
            continue
        if _port_free(port) and _port_free(port + 10000):
            chosen.append(port)
            if len(chosen) == count:
                return tuple(chosen)
    raise RuntimeError("no free loopback ports for a Redis Cluster")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} not installed: a Redis Cluster test needs redis-server and redis-cli"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def _wait_until(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout_s} s")


def _answers(port: int) -> bool:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _cluster_ok(port: int) -> bool:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, decode_responses=True)
    try:
        info = client.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
    except redis.RedisError:
        return False
    finally:
        client.close()
    text = info if isinstance(info, str) else str(info)
    return "cluster_state:ok" in text


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """Three masters, no replicas, all 16384 slots assigned; stopped afterwards."""
    server = _tool("redis-server")
    cli = _tool("redis-cli")
    ports = _free_ports(MASTERS)
    processes: list[subprocess.Popen[bytes]] = []
    root = tmp_path / "redis-cluster"
    try:
        for port in ports:
            node_dir = root / str(port)
            node_dir.mkdir(parents=True)
            processes.append(
                subprocess.Popen(
                    [
                        server,
                        "--port", str(port),
                        "--bind", "127.0.0.1",
                        "--cluster-enabled", "yes",
                        "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", "5000",
                        "--dir", str(node_dir),
                        "--save", "",
                        "--appendonly", "no",
                        "--maxmemory-policy", "noeviction",
                        "--protected-mode", "no",
                        "--logfile", str(node_dir / "redis.log"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )  # fmt: skip
        for port in ports:
            _wait_until(lambda port=port: _answers(port), START_TIMEOUT_S, f"redis :{port} up")
        created = subprocess.run(
            [cli, "--cluster", "create"]
            + [f"127.0.0.1:{port}" for port in ports]
            + ["--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert created.returncode == 0, created.stdout + created.stderr
        for port in ports:
            _wait_until(lambda port=port: _cluster_ok(port), START_TIMEOUT_S, "cluster_state:ok")
        yield LocalCluster(ports=ports)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


async def _completed(runtime: Any, queue: QueueName) -> int:
    counts = await runtime.deps.producer.queues[queue].getJobCounts("completed")
    return int(counts["completed"])


def _slots_by_queue(cluster: LocalCluster, prefix: str) -> dict[QueueName, dict[int, int]]:
    """For each queue: {slot: number of keys} over every master of the cluster."""
    client = cluster.client()
    try:
        result: dict[QueueName, dict[int, int]] = {}
        for queue in ALL_QUEUES:
            slots: dict[int, int] = {}
            for node in client.get_primaries():  # type: ignore[no-untyped-call]
                for key in client.scan_iter(
                    match=f"{prefix}:{{{queue.value}}}:*", target_nodes=node
                ):
                    # The server computes the slot (CLUSTER KEYSLOT), not the client.
                    slot = int(client.execute_command("CLUSTER KEYSLOT", key))  # type: ignore[no-untyped-call]
                    slots[slot] = slots.get(slot, 0) + 1
            result[queue] = slots
        return result
    finally:
        client.close()


async def test_worker_processes_all_four_queues_on_a_three_master_cluster(
    redis_cluster: LocalCluster, sqlite_url: str, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    write_local_run(
        runs,
        owner="acme",
        repo="clustered",
        run_id=4242,
        jobs={"ubuntu": [FIXTURES / "junit" / "pytest" / "junit.fail.xml"]},
    )
    prefix = "fgcluster"
    settings = make_settings(
        redis_url=f"redis://127.0.0.1:{redis_cluster.ports[0]}",
        database_url=sqlite_url,
        prefix=prefix,
        data_dir=tmp_path,
        REDIS_CLUSTER_ENABLED="true",
        REDIS_CLUSTER_NODES=redis_cluster.seeds(2),
    )
    repository = RepositoryRef(owner="acme", repo="clustered", installation_id=1)
    async with runtime_for(settings, runs_root=runs) as rt:
        producer = rt.deps.producer
        assert {q.name for q in producer.queues.values()} == {f"{{{q.value}}}" for q in ALL_QUEUES}
        ingest = await producer.ingest(
            RunsIngestPayload(
                workflow_run_id=4242, repository=repository, metadata=RunMetadata(run_attempt=1)
            )
        )
        duplicate = await producer.ingest(
            RunsIngestPayload(
                workflow_run_id=4242, repository=repository, metadata=RunMetadata(run_attempt=1)
            )
        )
        assert duplicate.deduplicated
        assert duplicate.job_id == ingest.job_id
        recompute = await producer.recompute(RecomputePayload(repository=repository))
        polled = await producer.poll(PollingPayload())
        # Polling runs from a job scheduler in production: upsert one on the cluster too.
        await producer.schedule(
            QueueName.POLLING, "poll-all", 3_600_000, PollingPayload(), priority=Priority.LOW
        )

        async with running_workers(rt) as runners:

            async def all_done() -> bool:
                counts = {q: await _completed(rt, q) for q in ALL_QUEUES}
                return (
                    counts[QueueName.RUNS_INGEST] >= 1
                    and counts[QueueName.RUNS_ANALYZE] >= 1
                    and counts[QueueName.TESTS_RECOMPUTE] >= 1
                    and counts[QueueName.POLLING] >= 2
                )

            await wait_for(all_done, timeout_s=30)
            # Idle past BullMQ's longest blocking wait (10 s) on the cluster client: the
            # workers must neither reconnect-loop nor miss the next job (notes/bullmq.md D1).
            await asyncio.sleep(IDLE_S)
            assert all(r.worker.running for r in runners)
            started = time.monotonic()
            await producer.recompute(RecomputePayload(repository=repository), dedup_id="after-idle")

            async def second_recompute() -> bool:
                return await _completed(rt, QueueName.TESTS_RECOMPUTE) >= 2

            await wait_for(second_recompute, timeout_s=10)
            assert time.monotonic() - started < 3.0

        ingested = await Job.fromId(producer.queues[QueueName.RUNS_INGEST], ingest.job_id)
        assert ingested is not None
        assert ingested.returnvalue["created"] is True
        assert ingested.returnvalue["cases"] > 0
        analysis = await Job.fromId(
            producer.queues[QueueName.RUNS_ANALYZE], ingested.returnvalue["analysisJobId"]
        )
        assert analysis is not None
        assert await analysis.isCompleted()
        recomputed = await Job.fromId(producer.queues[QueueName.TESTS_RECOMPUTE], recompute.job_id)
        assert recomputed is not None
        assert await recomputed.isCompleted()
        poll_job = await Job.fromId(producer.queues[QueueName.POLLING], polled.job_id)
        assert poll_job is not None
        assert "skipped" in poll_job.returnvalue
        for queue in ALL_QUEUES:
            failed = await producer.queues[queue].getJobCounts("failed")
            assert failed["failed"] == 0, queue

        # Health reports the cluster and its masters; the sampler fills the queue gauges.
        transport = httpx.ASGITransport(app=create_app(rt.state))
        async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
            health = (await client.get("/health")).json()
            ready = await client.get("/health/ready")
        assert ready.status_code == 200, ready.text
        assert health["checks"]["redis"]["status"] == "healthy", health
        assert health["checks"]["redis"]["details"]["cluster"] is True
        # Two seeds configured, three masters discovered.
        assert health["checks"]["redis"]["details"]["nodes"] == MASTERS
        assert health["checks"]["queues"]["status"] == "healthy", health
        await sample_queues_once(rt)
        metrics = rt.deps.metrics
        for queue in ALL_QUEUES:
            completed = metrics.queue_size.labels(queue.value, "completed")._value.get()
            assert completed >= 1, queue

        # Webhook delivery dedup (SET NX) works on the cluster client.
        assert await rt.state.redis.set("fgcluster-delivery:1", "1", nx=True, ex=60)
        assert not await rt.state.redis.set("fgcluster-delivery:1", "1", nx=True, ex=60)
        await rt.state.redis.delete("fgcluster-delivery:1")

    # Every key of a queue sits in one slot: multi-key Lua scripts never cross slots.
    slots = _slots_by_queue(redis_cluster, prefix)
    for queue, by_slot in slots.items():
        assert len(by_slot) == 1, (queue, by_slot)
        assert sum(by_slot.values()) >= 3, (queue, by_slot)  # id counter, meta, jobs, sets, ...
    # Four queues, four tags: they spread over the cluster rather than share one slot.
    assert len({next(iter(s)) for s in slots.values()}) == len(ALL_QUEUES)
