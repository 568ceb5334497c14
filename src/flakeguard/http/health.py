"""`/health`, `/health/live`, `/health/ready` and `/metrics`.

- live: the process and its event loop answer (this handler ran) — no dependency checks,
  so a database outage never makes Kubernetes restart healthy workers.
- ready: database and Redis answer within 2 s and we are not shutting down; else 503.
- health: the spec's JSON with a check per dependency, queue totals and memory.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import psutil
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from flakeguard import __version__
from flakeguard.adapters.db.runs import ping as db_ping
from flakeguard.adapters.queue.names import ALL_QUEUES
from flakeguard.http.state import AppState

CHECK_TIMEOUT_S = 2.0
router = APIRouter(tags=["health"])


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.flakeguard
    return state


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def _timed(check: Callable[[], Awaitable[Any]]) -> tuple[bool, int, str | None, Any]:
    started = time.perf_counter()
    try:
        value = await asyncio.wait_for(check(), timeout=CHECK_TIMEOUT_S)
    except TimeoutError:
        return False, int((time.perf_counter() - started) * 1000), "timed out", None
    except Exception as error:  # noqa: BLE001  # any failure of a dependency = unhealthy, reported
        return False, int((time.perf_counter() - started) * 1000), type(error).__name__, None
    return True, int((time.perf_counter() - started) * 1000), None, value


async def _queue_totals(state: AppState) -> dict[str, int]:
    totals = {"totalWaiting": 0, "totalActive": 0, "totalFailed": 0, "totalDelayed": 0}
    for name in ALL_QUEUES:
        counts = await state.deps.producer.queues[name].getJobCounts(
            "waiting", "prioritized", "active", "failed", "delayed"
        )
        totals["totalWaiting"] += int(counts.get("waiting", 0)) + int(counts.get("prioritized", 0))
        totals["totalActive"] += int(counts.get("active", 0))
        totals["totalFailed"] += int(counts.get("failed", 0))
        totals["totalDelayed"] += int(counts.get("delayed", 0))
    return totals


def _redis_nodes(state: AppState) -> int:
    """Nodes the cluster client discovered (masters and replicas), else the configured count.

    A RedisCluster learns the topology on its first command, so call this after the ping.
    """
    get_nodes = getattr(state.redis, "get_nodes", None)
    if state.deps.settings.redis_cluster_enabled and callable(get_nodes):
        return len(get_nodes()) or state.redis_nodes
    return state.redis_nodes


@router.get("/health/live")
async def live(request: Request) -> dict[str, Any]:
    return {"status": "alive", "uptime": _state(request).uptime_ms}


@router.get("/health/ready")
async def ready(request: Request) -> JSONResponse:
    state = _state(request)
    db_ok, _, db_err, _ = await _timed(lambda: db_ping(state.deps.engine))
    redis_ok, _, redis_err, _ = await _timed(state.redis.ping)
    is_ready = db_ok and redis_ok and not state.shutting_down
    state.deps.metrics.health.set(1 if is_ready else 0)
    body = {
        "status": "ready" if is_ready else "not_ready",
        "checks": {
            "database": "up" if db_ok else f"down ({db_err})",
            "redis": "up" if redis_ok else f"down ({redis_err})",
            "shuttingDown": state.shutting_down,
        },
    }
    return JSONResponse(body, status_code=200 if is_ready else 503)


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    state = _state(request)
    checked = _now_iso()
    db_ok, db_ms, db_err, _ = await _timed(lambda: db_ping(state.deps.engine))
    redis_ok, redis_ms, redis_err, _ = await _timed(state.redis.ping)
    queues_ok, queues_ms, queues_err, totals = await _timed(lambda: _queue_totals(state))
    memory = psutil.Process().memory_info()
    checks: dict[str, Any] = {
        "database": {
            "status": "healthy" if db_ok else "unhealthy",
            "responseTime": db_ms,
            "lastChecked": checked,
            "details": {"dialect": state.deps.engine.dialect.name},
        },
        "redis": {
            "status": "healthy" if redis_ok else "unhealthy",
            "responseTime": redis_ms,
            "lastChecked": checked,
            "details": {
                "cluster": state.deps.settings.redis_cluster_enabled,
                "nodes": _redis_nodes(state),
                "embedded": state.deps.settings.embedded_redis,
            },
        },
        "queues": {
            "status": "healthy" if queues_ok else "unhealthy",
            "responseTime": queues_ms,
            "lastChecked": checked,
            "details": totals if totals is not None else {"error": queues_err},
        },
        "memory": {
            "status": "healthy",
            "details": {"rss": memory.rss, "vms": memory.vms},
        },
    }
    for name, error in (("database", db_err), ("redis", redis_err)):
        if error:
            checks[name]["error"] = error
    all_ok = db_ok and redis_ok and queues_ok
    status = "healthy" if all_ok and not state.shutting_down else "unhealthy"
    if all_ok and state.shutting_down:
        status = "shutting_down"
    state.deps.metrics.health.set(1 if status == "healthy" else 0)
    body = {
        "status": status,
        "timestamp": checked,
        "uptime": state.uptime_ms,
        "version": __version__,
        "environment": state.deps.settings.environment,
        "worker": state.deps.settings.worker_name,
        "checks": checks,
    }
    return JSONResponse(body, status_code=200 if status == "healthy" else 503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    state = _state(request)
    state.deps.metrics.sample_process()
    return Response(generate_latest(state.deps.metrics.registry), media_type=CONTENT_TYPE_LATEST)
