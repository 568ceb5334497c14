"""The `flakeguard worker` process: the four queue workers plus the HTTP server.

Runs until SIGTERM/SIGINT, then shuts down gracefully: readiness goes 503, workers stop
taking jobs and finish in-flight ones within the shutdown timeout, connections close, and
the process exits 0. It sits above `http` and `bootstrap` (it serves the one and uses the
other), which is why it is not part of the composition root.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

import structlog
import uvicorn

from flakeguard.bootstrap import (
    Runtime,
    build_runners,
    open_runtime,
    sample_queues,
)
from flakeguard.gc_tuning import tune_garbage_collector
from flakeguard.http.app import create_app, create_metrics_app
from flakeguard.processors.discovery import install_polling_schedule
from flakeguard.settings import Settings

log = structlog.get_logger("flakeguard.worker")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the worker owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


def http_servers(runtime: Runtime) -> list[_Server]:
    s = runtime.deps.settings
    servers = [
        _Server(
            uvicorn.Config(
                create_app(runtime.state),
                host=s.http_host,
                port=s.health_check_port,
                log_config=None,
                access_log=False,
                lifespan="off",
            )
        )
    ]
    if s.metrics_enabled and s.metrics_port not in (0, s.health_check_port):
        servers.append(
            _Server(
                uvicorn.Config(
                    create_metrics_app(runtime.state),
                    host=s.http_host,
                    port=s.metrics_port,
                    log_config=None,
                    access_log=False,
                    lifespan="off",
                )
            )
        )
    return servers


async def run_worker(settings: Settings) -> None:
    """The `flakeguard worker` process: returns after a graceful shutdown."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with open_runtime(settings) as runtime:
        runners = build_runners(runtime)
        for runner in runners:
            await runner.start()
        servers = http_servers(runtime)
        server_tasks = [asyncio.create_task(server.serve()) for server in servers]
        sampler = asyncio.create_task(sample_queues(runtime, stop))
        if settings.polling_enabled and runtime.deps.github is not None:
            await install_polling_schedule(runtime.deps)
        tune_garbage_collector()
        log.info(
            "worker.started",
            queues=[r.name for r in runners],
            concurrency=settings.worker_concurrency,
            port=settings.health_check_port,
            environment=settings.environment,
        )
        await stop.wait()
        log.info("worker.stopping", timeout_s=settings.shutdown_timeout_s)
        runtime.state.shutting_down = True
        runtime.deps.metrics.health.set(0)
        results = await asyncio.gather(
            *(r.close(settings.shutdown_timeout_s) for r in runners), return_exceptions=True
        )
        unfinished = [r.name for r, ok in zip(runners, results, strict=True) if ok is not True]
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*server_tasks, return_exceptions=True)
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        log.info("worker.stopped", unfinished_queues=unfinished)
