"""The README's run command: a worker on embedded defaults, ready fast, SIGTERM exits 0."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_embedded_worker_becomes_ready_and_stops_on_sigterm(tmp_path: Path) -> None:
    health, metrics = _free_port(), _free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "DATABASE_URL") and not k.startswith(("GITHUB_", "POLLING_"))
    }
    env.update(
        {
            "HEALTH_CHECK_PORT": str(health),
            "METRICS_PORT": str(metrics),
            "HTTP_HOST": "127.0.0.1",
            "FLAKEGUARD_DATA_DIR": str(tmp_path / "data"),
        }
    )
    log = (tmp_path / "worker.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "flakeguard", "worker"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        started = time.monotonic()
        ready = False
        while time.monotonic() - started < 30 and proc.poll() is None:
            try:
                if (
                    httpx.get(f"http://127.0.0.1:{health}/health/ready", timeout=1).status_code
                    == 200
                ):
                    ready = True
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        assert ready, (tmp_path / "worker.log").read_text()[-2000:]
        body = httpx.get(f"http://127.0.0.1:{health}/health", timeout=5).json()
        assert body["status"] == "healthy"
        assert body["checks"]["redis"]["details"]["embedded"] is True
        assert body["checks"]["database"]["details"]["dialect"] == "sqlite"
        scraped = httpx.get(f"http://127.0.0.1:{metrics}/metrics", timeout=5).text
        assert "flakeguard_worker_memory_usage_bytes" in scraped
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        lines = (tmp_path / "worker.log").read_text()
        assert '"msg":"worker.stopped"' in lines
        # The bundled Redis went away with the worker.
        assert not any(
            "redis-server" in p and str(tmp_path) in p
            for p in subprocess.run(
                ["ps", "-eo", "args"], capture_output=True, text=True
            ).stdout.splitlines()
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
