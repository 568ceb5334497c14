"""What the HTTP layer needs from the running process, in one object."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from flakeguard.deps import Deps


@dataclass(slots=True)
class AppState:
    deps: Deps
    redis: aioredis.Redis | Any
    """A client for our own commands (health, webhook dedup); a RedisCluster on Cluster."""
    redis_nodes: int = 1
    started_monotonic: float = field(default_factory=time.monotonic)
    shutting_down: bool = False
    workers_running: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def uptime_ms(self) -> int:
        return int((time.monotonic() - self.started_monotonic) * 1000)
