"""Webhook signature verification and typed parsing (pure; payloads from the emulator builders)."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest

from flakeguard.adapters.github.client import RepoCoords
from flakeguard.adapters.github.webhooks import (
    CheckRunAction,
    Ignored,
    InstallationChanged,
    Ping,
    RepoRef,
    WebhookPayloadError,
    WorkflowRunCompleted,
    parse_webhook,
    signature_for,
    verify_signature,
)
from flakeguard.emulator import payloads
from flakeguard.emulator.scenario import AppSpec, InstallationSpec, RepoSpec, RunSpec
from flakeguard.emulator.state import CheckRunRecord
from flakeguard.errors import PermanentJobError

API = "https://api.github.com"
APP = AppSpec()
INSTALLATION = InstallationSpec(101, "acme")
REPO = RepoSpec(5001, "acme", "widgets", 101)
OTHER = RepoSpec(5002, "acme", "gadgets", 101)
OWNER = payloads.user("acme", 1000, API, kind="Organization")
RUN = RunSpec(
    id=9002,
    repo_id=REPO.id,
    head_sha="2" * 40,
    attempt=3,
    head_branch="feature/x",
    event="pull_request",
    conclusion="failure",
    created_at=datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
    pr_numbers=(17, 18),
    workflow_name="Tests",
    workflow_id=77,
)


def _bytes(payload: dict[str, object]) -> bytes:
    return json.dumps(payload).encode()


# ---- signatures ------------------------------------------------------------------------------


def test_github_test_vector() -> None:
    secret, body = "It's a Secret to Everybody", b"Hello, World!"
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert signature_for(secret, body) == expected
    assert verify_signature(secret, body, expected)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha256=",
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e18",
        "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        "sha1="
        + hmac.new(b"It's a Secret to Everybody", b"Hello, World!", hashlib.sha1).hexdigest(),
        "sha256=ünïcode",
    ],
)
def test_bad_missing_or_sha1_signatures_are_rejected(header: str | None) -> None:
    assert not verify_signature("It's a Secret to Everybody", b"Hello, World!", header)


def test_signature_covers_exact_bytes_and_secret() -> None:
    header = signature_for("s3cret", b'{"a": 1}')
    assert not verify_signature("s3cret", b'{"a":1}', header)  # same JSON, other bytes
    assert not verify_signature("other", b'{"a": 1}', header)
    assert not verify_signature("", b'{"a": 1}', signature_for("", b'{"a": 1}'))


# ---- parsing ---------------------------------------------------------------------------------


def test_workflow_run_completed_is_typed() -> None:
    body = _bytes(payloads.workflow_run_event(RUN, REPO, OWNER, API))
    event = parse_webhook("workflow_run", body)
    assert event == WorkflowRunCompleted(
        repo=RepoCoords("acme", "widgets", 101),
        repository_id=5001,
        run_id=9002,
        run_attempt=3,
        head_sha="2" * 40,
        head_branch="feature/x",
        event="pull_request",
        conclusion="failure",
        pull_request_numbers=(17, 18),
        workflow_name="Tests",
        workflow_id=77,
        created_at=datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
        updated_at=datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
    )


@pytest.mark.parametrize("action", ["requested", "in_progress"])
def test_unfinished_workflow_runs_are_ignored(action: str) -> None:
    body = _bytes(payloads.workflow_run_event(RUN, REPO, OWNER, API, action=action))
    assert parse_webhook("workflow_run", body) == Ignored(f"workflow_run {action}")


def test_check_run_requested_action() -> None:
    app_json = payloads.integration(APP, API)
    record = CheckRunRecord(
        id=77, repo_id=REPO.id, name="FlakeGuard", head_sha="1" * 40, status="completed",
        conclusion="failure", title="t", summary="s", text=None, annotations=(), actions=(),
        started_at=datetime(2026, 3, 1, tzinfo=UTC), completed_at=None, external_id=None,
        details_url=None, check_suite_id=5,
    )  # fmt: skip
    check_run = payloads.check_run(record, REPO, app_json, API)
    body = payloads.check_run_requested_action_event(
        check_run, REPO, OWNER, API, identifier="quarantine", head_branch="main"
    )
    event = parse_webhook("check_run", _bytes(body))
    assert event == CheckRunAction(
        repo=RepoCoords("acme", "widgets", 101),
        check_run_id=77,
        head_sha="1" * 40,
        identifier="quarantine",
        installation_id=101,
    )
    rerequested = {**body, "action": "rerequested"}
    assert parse_webhook("check_run", _bytes(rerequested)) == Ignored("check_run rerequested")


def test_installation_events() -> None:
    created = payloads.installation_event(APP, INSTALLATION, [REPO, OTHER], API)
    event = parse_webhook("installation", _bytes(created))
    assert isinstance(event, InstallationChanged)
    assert (event.installation_id, event.action, event.account_login) == (101, "created", "acme")
    assert event.repositories_added == (
        RepoRef("acme", "widgets", 5001),
        RepoRef("acme", "gadgets", 5002),
    )
    removed = payloads.installation_repositories_event(APP, INSTALLATION, API, removed=[OTHER])
    changed = parse_webhook("installation_repositories", _bytes(removed))
    assert isinstance(changed, InstallationChanged)
    assert changed.action == "removed"
    assert changed.repositories_added == ()
    assert changed.repositories_removed == (RepoRef("acme", "gadgets", 5002),)


def test_ping_and_unknown_events() -> None:
    ping = parse_webhook("ping", _bytes(payloads.ping_event(APP, 42, "http://x/hook")))
    assert ping == Ping(hook_id=42, zen="Keep it logically awesome.")
    assert parse_webhook("push", b"not even json") == Ignored("event 'push' is not handled")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"action": "completed"}', "'workflow_run'"),
    ],
)
def test_invalid_payloads_raise_a_permanent_error(body: bytes, reason: str) -> None:
    with pytest.raises(WebhookPayloadError, match=reason) as caught:
        parse_webhook("workflow_run", body)
    assert isinstance(caught.value, PermanentJobError)


def test_missing_field_error_names_the_field_not_the_content() -> None:
    payload = payloads.workflow_run_event(RUN, REPO, OWNER, API)
    del payload["installation"]
    payload["workflow_run"]["head_sha"] = "SECRET-LOOKING-VALUE"
    with pytest.raises(WebhookPayloadError) as caught:
        parse_webhook("workflow_run", _bytes(payload))
    assert "installation.id" in str(caught.value)
    assert "SECRET-LOOKING-VALUE" not in str(caught.value)
    payload = payloads.workflow_run_event(RUN, REPO, OWNER, API)
    payload["workflow_run"]["run_attempt"] = "3"
    with pytest.raises(WebhookPayloadError, match="'run_attempt' is not int"):
        parse_webhook("workflow_run", _bytes(payload))
