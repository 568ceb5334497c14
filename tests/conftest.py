"""Shared fixtures: real Redis and PostgreSQL on this machine, isolated per test.

Each test gets its own BullMQ key prefix (keys deleted afterwards) and, when it asks for
PostgreSQL, its own database (dropped afterwards). Under CI=true a missing service fails
the test; elsewhere it skips with the reason.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
PG_DSN = os.environ.get("FLAKEGUARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT / "tests" / "fixtures"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    if _reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port} (start it with scripts/services.sh)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def queue_prefix() -> Iterator[str]:
    """A unique BullMQ prefix; every key under it is deleted after the test."""
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    prefix = f"fgtest-{uuid.uuid4().hex[:10]}"
    yield prefix
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


@pytest.fixture
def redis_url() -> str:
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test (dropped afterwards)."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    name = f"fgtest_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'flakeguard.db'}"
