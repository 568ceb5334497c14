"""GitHub webhook deliveries: signature verification and typed parsing. Pure: no I/O.

- `verify_signature(secret, body, header)`: HMAC-SHA256 of the exact body bytes, compared in
  constant time with the `X-Hub-Signature-256` value (`sha256=<hex>`). The legacy sha1
  `X-Hub-Signature` is not accepted.
- `parse_webhook(event, body)` → one of `WorkflowRunCompleted`, `CheckRunAction`,
  `InstallationChanged`, `Ping`, `Ignored`. A body that is not JSON or lacks a needed field raises
  `WebhookPayloadError` (permanent) whose message names the field, never the body's content.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flakeguard.adapters.github.client import RepoCoords
from flakeguard.errors import ErrorCategory, PermanentJobError

SIGNATURE_PREFIX = "sha256="


class WebhookPayloadError(PermanentJobError):
    """The delivery cannot be understood; re-delivering the same bytes cannot help."""

    category = ErrorCategory.VALIDATION


def signature_for(secret: str, body: bytes) -> str:
    """The `X-Hub-Signature-256` value GitHub sends for `body`."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    """True when `header` is `sha256=` + the HMAC-SHA256 of `body` with `secret`.

    Constant time over the digest. Example (GitHub's test vector): secret
    "It's a Secret to Everybody", body b"Hello, World!" →
    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17".
    """
    if not secret or header is None or not header.startswith(SIGNATURE_PREFIX):
        return False
    expected = signature_for(secret, body)
    return hmac.compare_digest(expected.encode("ascii"), header.strip().encode("ascii", "replace"))


@dataclass(frozen=True, slots=True)
class WorkflowRunCompleted:
    repo: RepoCoords
    repository_id: int
    run_id: int
    run_attempt: int
    head_sha: str
    head_branch: str | None
    event: str
    conclusion: str | None
    pull_request_numbers: tuple[int, ...]
    workflow_name: str | None
    workflow_id: int
    created_at: datetime
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class CheckRunAction:
    """A button of our check run was pressed (`check_run` `requested_action`)."""

    repo: RepoCoords
    check_run_id: int
    head_sha: str
    identifier: str
    installation_id: int


@dataclass(frozen=True, slots=True)
class RepoRef:
    owner: str
    name: str
    id: int


@dataclass(frozen=True, slots=True)
class InstallationChanged:
    """`installation` (created/deleted/...) or `installation_repositories` (added/removed)."""

    installation_id: int
    action: str
    repositories_added: tuple[RepoRef, ...]
    repositories_removed: tuple[RepoRef, ...]
    account_login: str | None


@dataclass(frozen=True, slots=True)
class Ping:
    hook_id: int | None
    zen: str | None


@dataclass(frozen=True, slots=True)
class Ignored:
    reason: str


WebhookEvent = WorkflowRunCompleted | CheckRunAction | InstallationChanged | Ping | Ignored


def _get(data: Mapping[str, Any], path: str, kind: type, *, nullable: bool = False) -> Any:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise WebhookPayloadError(f"webhook payload lacks {path!r}")
        node = node[part]
    if node is None and nullable:
        return None
    if not isinstance(node, kind) or (kind is int and isinstance(node, bool)):
        raise WebhookPayloadError(f"webhook payload field {path!r} is not {kind.__name__}")
    return node


def _time(data: Mapping[str, Any], path: str, *, nullable: bool = False) -> datetime | None:
    raw = _get(data, path, str, nullable=nullable)
    if raw is None:
        return None
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        raise WebhookPayloadError(f"webhook payload field {path!r} is not a date-time") from None


def _repo(data: Mapping[str, Any]) -> RepoCoords:
    full_name: str = _get(data, "repository.full_name", str)
    owner, sep, name = full_name.partition("/")
    if not sep or not owner or not name:
        raise WebhookPayloadError("webhook payload field 'repository.full_name' is not owner/name")
    return RepoCoords(owner, name, _get(data, "installation.id", int))


def _repo_refs(items: Any, path: str) -> tuple[RepoRef, ...]:
    if items is None:
        return ()
    if not isinstance(items, list):
        raise WebhookPayloadError(f"webhook payload field {path!r} is not a list")
    refs = []
    for item in items:
        full_name = _get(item, "full_name", str)
        owner, _, name = full_name.partition("/")
        refs.append(RepoRef(owner, name, _get(item, "id", int)))
    return tuple(refs)


def _workflow_run(data: Mapping[str, Any]) -> WebhookEvent:
    action = _get(data, "action", str)
    if action != "completed":
        return Ignored(f"workflow_run {action}")
    run = _get(data, "workflow_run", Mapping)
    prs = _get(run, "pull_requests", list)
    created_at = _time(run, "created_at")
    if created_at is None:  # unreachable: a non-nullable field cannot be None here
        raise WebhookPayloadError("webhook payload lacks 'workflow_run.created_at'")
    return WorkflowRunCompleted(
        repo=_repo(data),
        repository_id=_get(data, "repository.id", int),
        run_id=_get(run, "id", int),
        run_attempt=_get(run, "run_attempt", int),
        head_sha=_get(run, "head_sha", str),
        head_branch=_get(run, "head_branch", str, nullable=True),
        event=_get(run, "event", str),
        conclusion=_get(run, "conclusion", str, nullable=True),
        pull_request_numbers=tuple(_get(pr, "number", int) for pr in prs),
        workflow_name=_get(run, "name", str, nullable=True),
        workflow_id=_get(run, "workflow_id", int),
        created_at=created_at,
        updated_at=_time(run, "updated_at", nullable=True),
    )


def _check_run(data: Mapping[str, Any]) -> WebhookEvent:
    action = _get(data, "action", str)
    if action != "requested_action":
        return Ignored(f"check_run {action}")
    repo = _repo(data)
    return CheckRunAction(
        repo=repo,
        check_run_id=_get(data, "check_run.id", int),
        head_sha=_get(data, "check_run.head_sha", str),
        identifier=_get(data, "requested_action.identifier", str),
        installation_id=repo.installation_id,
    )


def _installation(data: Mapping[str, Any]) -> WebhookEvent:
    account = _get(data, "installation.account", Mapping, nullable=True) or {}
    login = account.get("login") or account.get("slug")
    return InstallationChanged(
        installation_id=_get(data, "installation.id", int),
        action=_get(data, "action", str),
        repositories_added=_repo_refs(data.get("repositories"), "repositories"),
        repositories_removed=(),
        account_login=login if isinstance(login, str) else None,
    )


def _installation_repositories(data: Mapping[str, Any]) -> WebhookEvent:
    account = _get(data, "installation.account", Mapping, nullable=True) or {}
    login = account.get("login") or account.get("slug")
    return InstallationChanged(
        installation_id=_get(data, "installation.id", int),
        action=_get(data, "action", str),
        repositories_added=_repo_refs(data.get("repositories_added"), "repositories_added"),
        repositories_removed=_repo_refs(data.get("repositories_removed"), "repositories_removed"),
        account_login=login if isinstance(login, str) else None,
    )


def _ping(data: Mapping[str, Any]) -> WebhookEvent:
    hook_id = data.get("hook_id")
    zen = data.get("zen")
    return Ping(
        hook_id=hook_id if isinstance(hook_id, int) else None,
        zen=zen if isinstance(zen, str) else None,
    )


_PARSERS = {
    "workflow_run": _workflow_run,
    "check_run": _check_run,
    "installation": _installation,
    "installation_repositories": _installation_repositories,
    "ping": _ping,
}


def parse_webhook(event: str, body: bytes) -> WebhookEvent:
    """The typed event of one delivery (`event` is the `X-GitHub-Event` header).

    Unknown events and actions we do not act on give `Ignored(reason)`; a body that is not a
    JSON object, or lacks a field we need, raises `WebhookPayloadError`.
    """
    parser = _PARSERS.get(event)
    if parser is None:
        return Ignored(f"event {event[:64]!r} is not handled")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise WebhookPayloadError(f"{event} webhook body is not valid JSON") from None
    if not isinstance(data, dict):
        raise WebhookPayloadError(f"{event} webhook body is not a JSON object")
    return parser(data)
