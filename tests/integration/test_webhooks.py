"""`POST /webhooks/github` against a real runtime (Redis + PostgreSQL), through ASGI."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from flakeguard.adapters.github.webhooks import signature_for
from flakeguard.adapters.queue.names import QueueName
from flakeguard.bootstrap import Runtime
from flakeguard.emulator.payloads import ping_event, user, workflow_run_event
from flakeguard.emulator.scenario import AppSpec, RepoSpec, RunSpec
from flakeguard.http.app import create_app
from tests.support import make_settings, runtime_for

pytestmark = pytest.mark.integration
SECRET = "It's a Secret to Everybody"
API = "https://api.github.com"
REPO = RepoSpec(id=101, owner="acme", name="shop", installation_id=55)


@pytest.fixture
async def runtime(
    queue_prefix: str, redis_url: str, pg_url: str, tmp_path: Path
) -> AsyncIterator[Runtime]:
    settings = make_settings(
        redis_url=redis_url,
        database_url=pg_url,
        prefix=queue_prefix,
        data_dir=tmp_path,
        GITHUB_WEBHOOK_SECRET=SECRET,
        WEBHOOK_MAX_BODY_BYTES="200000",
    )
    async with runtime_for(settings, runs_root=tmp_path) as rt:
        yield rt


def _client(runtime: Runtime) -> httpx.AsyncClient:
    app = create_app(runtime.state)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://worker")


def _headers(body: bytes, event: str, delivery: str, secret: str = SECRET) -> dict[str, str]:
    return {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": signature_for(secret, body),
        "Content-Type": "application/json",
    }


def _run_event(run_id: int = 9001, attempt: int = 1) -> bytes:
    run = RunSpec(id=run_id, repo_id=REPO.id, head_sha="c" * 40, attempt=attempt)
    payload = workflow_run_event(run, REPO, user("acme", 7, API, kind="Organization"), API)
    return json.dumps(payload).encode()


async def _pending(runtime: Runtime, queue: QueueName) -> list[Any]:
    return list(await runtime.deps.producer.queues[queue].getJobs(["prioritized", "waiting"]))


async def test_workflow_run_completed_enqueues_ingest_once_per_delivery(runtime: Runtime) -> None:
    body = _run_event()
    async with _client(runtime) as client:
        first = await client.post(
            "/webhooks/github", content=body, headers=_headers(body, "workflow_run", "d-1")
        )
        replay = await client.post(
            "/webhooks/github", content=body, headers=_headers(body, "workflow_run", "d-1")
        )
        # The same run delivered again under a new delivery id (e.g. polling also saw it)
        # is deduplicated by the job's dedup key.
        again = await client.post(
            "/webhooks/github", content=body, headers=_headers(body, "workflow_run", "d-2")
        )
    assert first.status_code == 202
    assert first.json()["status"] == "enqueued"
    assert replay.status_code == 200
    assert replay.json()["status"] == "duplicate"
    assert again.json()["deduplicated"] is True
    jobs = await _pending(runtime, QueueName.RUNS_INGEST)
    assert len(jobs) == 1
    data = jobs[0].data
    assert data["workflowRunId"] == 9001
    assert data["repository"] == {"owner": "acme", "repo": "shop", "installationId": 55}
    assert data["metadata"]["headSha"] == "c" * 40
    assert data["priority"] == "high"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"X-Hub-Signature-256": "sha256=" + "0" * 64}, 401),
        ({"X-Hub-Signature-256": ""}, 401),
        ({"X-Hub-Signature": "sha1=abc"}, 401),
    ],
)
async def test_bad_or_missing_signatures_are_rejected(
    runtime: Runtime, headers: dict[str, str], status: int
) -> None:
    body = _run_event()
    sent = _headers(body, "workflow_run", "d-bad")
    sent.pop("X-Hub-Signature-256")
    sent.update(headers)
    async with _client(runtime) as client:
        response = await client.post("/webhooks/github", content=body, headers=sent)
    assert response.status_code == status
    assert await _pending(runtime, QueueName.RUNS_INGEST) == []


async def test_signature_with_another_secret_is_rejected(runtime: Runtime) -> None:
    body = _run_event()
    async with _client(runtime) as client:
        response = await client.post(
            "/webhooks/github",
            content=body,
            headers=_headers(body, "workflow_run", "d-x", secret="wrong"),
        )
    assert response.status_code == 401
    assert SECRET not in response.text


async def test_oversized_body_is_413_before_any_work(runtime: Runtime) -> None:
    body = b"{" + b" " * 250_000 + b"}"
    async with _client(runtime) as client:
        response = await client.post(
            "/webhooks/github", content=body, headers=_headers(body, "workflow_run", "big")
        )
    assert response.status_code == 413


async def test_signed_garbage_is_400_and_the_delivery_can_be_redelivered(runtime: Runtime) -> None:
    body = b'{"action": "completed", "workflow_run": 5}'
    async with _client(runtime) as client:
        first = await client.post(
            "/webhooks/github", content=body, headers=_headers(body, "workflow_run", "g-1")
        )
        good = _run_event(9002)
        redelivered = await client.post(
            "/webhooks/github", content=good, headers=_headers(good, "workflow_run", "g-1")
        )
    assert first.status_code == 400
    assert "workflow_run" in first.json()["error"]
    assert redelivered.status_code == 202


async def test_ping_and_ignored_events(runtime: Runtime) -> None:
    ping = json.dumps(ping_event(AppSpec(), 42, "http://worker/webhooks/github")).encode()
    requested = json.dumps(
        workflow_run_event(
            RunSpec(id=1, repo_id=REPO.id, head_sha="d" * 40),
            REPO,
            user("acme", 7, API, kind="Organization"),
            API,
            action="requested",
        )
    ).encode()
    async with _client(runtime) as client:
        pong = await client.post(
            "/webhooks/github", content=ping, headers=_headers(ping, "ping", "p-1")
        )
        ignored = await client.post(
            "/webhooks/github",
            content=requested,
            headers=_headers(requested, "workflow_run", "p-2"),
        )
    assert pong.status_code == 200
    assert pong.json()["status"] == "pong"
    assert ignored.status_code == 200
    assert ignored.json()["status"] == "ignored"
    assert await _pending(runtime, QueueName.RUNS_INGEST) == []


async def test_webhooks_are_disabled_without_a_secret(
    queue_prefix: str, redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    settings = make_settings(
        redis_url=redis_url, database_url=sqlite_url, prefix=queue_prefix, data_dir=tmp_path
    )
    body = _run_event()
    async with runtime_for(settings) as rt, _client(rt) as client:
        response = await client.post(
            "/webhooks/github", content=body, headers=_headers(body, "workflow_run", "n-1")
        )
    assert response.status_code == 503
