"""`POST /webhooks/github`: verify, deduplicate, enqueue, answer fast.

Order of checks: webhooks enabled (secret configured, else 503) → body size (413, also
while streaming) → `X-Hub-Signature-256` over the exact bytes, constant time (401) →
`X-GitHub-Delivery` present (400) → delivery not seen before (a redelivery answers 200
"duplicate") → parse (400 with a reason that never echoes the body) → enqueue (202).

The delivery id is claimed in Redis with SET NX for 7 days before enqueuing and released
if enqueuing fails, so GitHub's redelivery of a failed attempt is processed, and two
copies racing each other are processed once.
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select

from flakeguard.adapters.db.repos import set_enabled
from flakeguard.adapters.db.runs import ensure_repository
from flakeguard.adapters.db.tables import RepositoryRow, WorkflowRunRow, table_of
from flakeguard.adapters.github.webhooks import (
    CheckRunAction,
    Ignored,
    InstallationChanged,
    Ping,
    WebhookPayloadError,
    WorkflowRunCompleted,
    parse_webhook,
    verify_signature,
)
from flakeguard.adapters.queue.payloads import (
    ButtonAction,
    RepositoryRef,
    RunMetadata,
    RunsAnalyzePayload,
    RunsIngestPayload,
)
from flakeguard.core.models import Priority
from flakeguard.http.state import AppState
from flakeguard.processors.discovery import schedule_repository

log = structlog.get_logger("flakeguard.webhooks")
router = APIRouter(tags=["webhooks"])
DELIVERY_TTL_S = 7 * 86400


class _BodyTooLargeError(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _BodyTooLargeError
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


def _answer(status_code: int, **body: Any) -> JSONResponse:
    return JSONResponse(body, status_code=status_code)


@router.post("/webhooks/github", status_code=202)
async def github_webhook(request: Request) -> JSONResponse:
    state: AppState = request.app.state.flakeguard
    settings = state.deps.settings
    if settings.github_webhook_secret is None:
        return _answer(503, error="webhooks disabled: set GITHUB_WEBHOOK_SECRET")
    try:
        body = await _read_body(request, settings.webhook_max_body_bytes)
    except _BodyTooLargeError:
        return _answer(413, error=f"body over {settings.webhook_max_body_bytes} bytes")
    secret = settings.github_webhook_secret.get_secret_value()
    if not verify_signature(secret, body, request.headers.get("x-hub-signature-256")):
        log.warning("webhook.bad_signature", delivery=request.headers.get("x-github-delivery"))
        return _answer(401, error="invalid or missing X-Hub-Signature-256")
    delivery = request.headers.get("x-github-delivery", "").strip()
    event = request.headers.get("x-github-event", "").strip()
    if not delivery or len(delivery) > 100 or not event:
        return _answer(400, error="X-GitHub-Delivery and X-GitHub-Event are required")
    key = f"{settings.queue_prefix}:webhook-delivery:{delivery}"
    claimed = await state.redis.set(key, "1", nx=True, ex=DELIVERY_TTL_S)
    if not claimed:
        return _answer(200, status="duplicate", delivery=delivery)
    try:
        parsed = parse_webhook(event, body)
        result = await _dispatch(state, parsed)
    except WebhookPayloadError as error:
        await state.redis.delete(key)
        return _answer(400, error=str(error))
    except Exception:
        # Let GitHub's redelivery try again: the claim must not outlive a failed attempt.
        await state.redis.delete(key)
        raise
    log.info("webhook.accepted", github_event=event, delivery=delivery, **result)
    return _answer(202 if result.get("status") == "enqueued" else 200, delivery=delivery, **result)


async def _dispatch(state: AppState, parsed: Any) -> dict[str, Any]:
    deps = state.deps
    if isinstance(parsed, WorkflowRunCompleted):
        repo = parsed.repo
        enqueued = await deps.producer.ingest(
            RunsIngestPayload(
                workflow_run_id=parsed.run_id,
                repository=RepositoryRef(
                    owner=repo.owner, repo=repo.name, installation_id=repo.installation_id
                ),
                priority=Priority.HIGH,
                metadata=RunMetadata(
                    run_status="completed",
                    conclusion=parsed.conclusion,
                    head_sha=parsed.head_sha,
                    head_branch=parsed.head_branch,
                    run_attempt=parsed.run_attempt,
                    event=parsed.event,
                    pr_number=parsed.pull_request_numbers[0]
                    if parsed.pull_request_numbers
                    else None,
                    workflow_name=parsed.workflow_name,
                    created_at=parsed.created_at,
                ),
            )
        )
        return {
            "status": "enqueued",
            "jobId": enqueued.job_id,
            "deduplicated": enqueued.deduplicated,
        }
    if isinstance(parsed, CheckRunAction):
        return await _button(state, parsed)
    if isinstance(parsed, InstallationChanged):
        now = deps.clock()
        for added in parsed.repositories_added:
            await ensure_repository(
                deps.engine,
                added.owner,
                added.name,
                now=now,
                installation_id=parsed.installation_id,
                github_id=added.id,
            )
            await set_enabled(deps.engine, added.owner, added.name, True, now)
            if deps.settings.polling_enabled:
                await schedule_repository(deps, added.owner, added.name, parsed.installation_id)
        for removed in parsed.repositories_removed:
            await set_enabled(deps.engine, removed.owner, removed.name, False, now)
        return {
            "status": "recorded",
            "added": len(parsed.repositories_added),
            "removed": len(parsed.repositories_removed),
        }
    if isinstance(parsed, Ping):
        return {"status": "pong", "hookId": parsed.hook_id}
    if isinstance(parsed, Ignored):
        return {"status": "ignored", "reason": parsed.reason}
    return {"status": "ignored", "reason": "unhandled event"}


async def _button(state: AppState, action: CheckRunAction) -> dict[str, Any]:
    try:
        button = ButtonAction(action.identifier)
    except ValueError:
        return {"status": "ignored", "reason": f"unknown action {action.identifier[:20]!r}"}
    repos, runs = table_of(RepositoryRow), table_of(WorkflowRunRow)
    async with state.deps.engine.connect() as conn:
        row = (
            await conn.execute(
                select(runs.c.run_id, runs.c.run_attempt)
                .join(repos, repos.c.id == runs.c.repository_id)
                .where(
                    repos.c.owner == action.repo.owner,
                    repos.c.name == action.repo.name,
                    runs.c.head_sha == action.head_sha,
                )
                .order_by(runs.c.started_at.desc(), runs.c.run_attempt.desc())
                .limit(1)
            )
        ).first()
    if row is None:
        return {"status": "ignored", "reason": "no stored run for that commit"}
    enqueued = await state.deps.producer.analyze(
        RunsAnalyzePayload(
            workflow_run_id=row.run_id,
            run_attempt=row.run_attempt,
            repository=RepositoryRef(
                owner=action.repo.owner,
                repo=action.repo.name,
                installation_id=action.installation_id,
            ),
            requested_action=button,
            priority=Priority.CRITICAL,
        )
    )
    return {"status": "enqueued", "jobId": enqueued.job_id, "deduplicated": enqueued.deduplicated}
