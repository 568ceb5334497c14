"""Every response body the emulator serves, and every webhook payload it builds, validates
against GitHub's own OpenAPI description (tests/fixtures/github/openapi, Draft 2020-12 after
the README's conversion: `nullable` → a "null" type, `#/components/schemas/` → `#/$defs/`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from flakeguard.emulator import Emulator, run_emulator

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "github"
SCENARIO = FIXTURES / "basic"
REPO = "/repos/acme/widgets"


def _convert(node: Any) -> Any:
    if isinstance(node, list):
        return [_convert(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _convert(value) for key, value in node.items()}
    ref = out.get("$ref")
    if isinstance(ref, str):
        out["$ref"] = ref.replace("#/components/schemas/", "#/$defs/")
    if out.pop("nullable", False) is True:
        if isinstance(out.get("type"), str) and "enum" not in out:
            out["type"] = [out["type"], "null"]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


@cache
def _rest() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "openapi" / "rest-subset.json").read_text())
    return data


@cache
def _webhooks() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "openapi" / "webhooks-subset.json").read_text())
    return data


@cache
def _defs(kind: str) -> dict[str, Any]:
    spec = _rest() if kind == "rest" else _webhooks()
    defs: dict[str, Any] = _convert(spec["components"]["schemas"])
    Draft202012Validator.check_schema({"$defs": defs})
    return defs


def _validator(kind: str, schema: dict[str, Any]) -> Draft202012Validator:
    full = {"$defs": _defs(kind), **_convert(schema)}
    return Draft202012Validator(full, format_checker=FormatChecker())


def _response_schema(path: str, method: str, status: int) -> dict[str, Any]:
    spec = _rest()
    response = spec["paths"][path][method]["responses"][str(status)]
    ref = response.get("$ref")
    if ref is not None:
        response = spec["components"]["responses"][ref.rsplit("/", 1)[1]]
    schema: dict[str, Any] = response["content"]["application/json"]["schema"]
    return schema


def assert_valid(path: str, method: str, status: int, body: Any) -> None:
    validator = _validator("rest", _response_schema(path, method, status))
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]


def assert_valid_webhook(name: str, payload: Any) -> None:
    spec = _webhooks()
    schema = spec["webhooks"][name]["post"]["requestBody"]["content"]["application/json"]["schema"]
    validator = _validator("webhooks", schema)
    errors = sorted(validator.iter_errors(payload), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with run_emulator(SCENARIO) as emulator:
        yield emulator


def _jwt(emu: Emulator) -> str:
    import time

    now = int(time.time()) - 60
    claims = {"iat": now, "exp": now + 600, "iss": emu.app_id}
    return jwt.encode(claims, emu.private_key_pem, algorithm="RS256")


@pytest.fixture
async def http(emu: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=emu.api_url) as client:
        app_headers = {"Authorization": f"Bearer {_jwt(emu)}"}
        created = await client.post("/app/installations/101/access_tokens", headers=app_headers)
        assert created.status_code == 201
        assert_valid(
            "/app/installations/{installation_id}/access_tokens", "post", 201, created.json()
        )
        client.headers["Authorization"] = f"Bearer {created.json()['token']}"
        client.headers["X-App-JWT"] = app_headers["Authorization"]  # read back by app-route tests
        yield client


def _app_headers(http: httpx.AsyncClient) -> dict[str, str]:
    return {"Authorization": http.headers["X-App-JWT"]}


async def test_app_endpoints_validate(http: httpx.AsyncClient) -> None:
    headers = _app_headers(http)
    cases = [
        ("/app", "/app"),
        ("/app/installations", "/app/installations"),
        ("/app/installations/101", "/app/installations/{installation_id}"),
        (f"{REPO}/installation", "/repos/{owner}/{repo}/installation"),
    ]
    for url, template in cases:
        response = await http.get(url, headers=headers)
        assert response.status_code == 200, url
        assert_valid(template, "get", 200, response.json())


async def test_installation_endpoints_validate(http: httpx.AsyncClient) -> None:
    response = await http.get("/installation/repositories")
    assert response.status_code == 200
    assert_valid("/installation/repositories", "get", 200, response.json())
    assert response.json()["total_count"] == 2
    limits = await http.get("/rate_limit")
    assert_valid("/rate_limit", "get", 200, limits.json())


async def test_actions_endpoints_validate(http: httpx.AsyncClient, emu: Emulator) -> None:
    runs = await http.get(f"{REPO}/actions/runs", params={"per_page": 2})
    assert runs.status_code == 200
    assert_valid("/repos/{owner}/{repo}/actions/runs", "get", 200, runs.json())
    assert len(runs.json()["workflow_runs"]) == 2

    run = await http.get(f"{REPO}/actions/runs/9002")
    assert_valid("/repos/{owner}/{repo}/actions/runs/{run_id}", "get", 200, run.json())
    assert run.json()["pull_requests"][0]["number"] == 17

    attempt = await http.get(f"{REPO}/actions/runs/9001/attempts/1")
    template = "/repos/{owner}/{repo}/actions/runs/{run_id}/attempts/{attempt_number}"
    assert_valid(template, "get", 200, attempt.json())
    assert attempt.json()["run_attempt"] == 1

    artifacts = await http.get(f"{REPO}/actions/runs/9002/artifacts")
    assert_valid(
        "/repos/{owner}/{repo}/actions/runs/{run_id}/artifacts", "get", 200, artifacts.json()
    )
    artifact_id = artifacts.json()["artifacts"][0]["id"]
    one = await http.get(f"{REPO}/actions/artifacts/{artifact_id}")
    assert_valid("/repos/{owner}/{repo}/actions/artifacts/{artifact_id}", "get", 200, one.json())

    expired_id = emu.artifact_ids("acme/widgets", 9003)[0]
    gone = await http.get(f"{REPO}/actions/artifacts/{expired_id}/zip")
    assert gone.status_code == 410
    template = "/repos/{owner}/{repo}/actions/artifacts/{artifact_id}/{archive_format}"
    assert_valid(template, "get", 410, gone.json())

    missing = await http.get(f"{REPO}/actions/runs/424242")
    assert missing.status_code == 404
    assert_valid("/app/installations/{installation_id}", "get", 404, missing.json())


async def test_check_run_endpoints_validate(http: httpx.AsyncClient) -> None:
    sha = "2" * 40
    body = {
        "name": "FlakeGuard",
        "head_sha": sha,
        "status": "completed",
        "conclusion": "neutral",
        "output": {
            "title": "2 flaky tests",
            "summary": "summary",
            "text": "details",
            "annotations": [
                {
                    "path": "tests/test_a.py",
                    "start_line": 3,
                    "end_line": 3,
                    "annotation_level": "warning",
                    "message": "flaky",
                    "title": "test_a",
                }
            ],
        },
        "actions": [{"label": "Quarantine", "description": "Quarantine it", "identifier": "q1"}],
    }
    created = await http.post(f"{REPO}/check-runs", json=body)
    assert created.status_code == 201
    assert_valid("/repos/{owner}/{repo}/check-runs", "post", 201, created.json())
    check_run_id = created.json()["id"]

    patch = {"output": {"title": "t", "summary": "s2"}}
    updated = await http.patch(f"{REPO}/check-runs/{check_run_id}", json=patch)
    assert_valid("/repos/{owner}/{repo}/check-runs/{check_run_id}", "patch", 200, updated.json())
    fetched = await http.get(f"{REPO}/check-runs/{check_run_id}")
    assert_valid("/repos/{owner}/{repo}/check-runs/{check_run_id}", "get", 200, fetched.json())
    assert fetched.json()["output"]["summary"] == "s2"

    notes = await http.get(f"{REPO}/check-runs/{check_run_id}/annotations")
    template = "/repos/{owner}/{repo}/check-runs/{check_run_id}/annotations"
    assert_valid(template, "get", 200, notes.json())
    assert len(notes.json()) == 1

    listed = await http.get(f"{REPO}/commits/{sha}/check-runs", params={"check_name": "FlakeGuard"})
    assert_valid("/repos/{owner}/{repo}/commits/{ref}/check-runs", "get", 200, listed.json())
    assert [c["id"] for c in listed.json()["check_runs"]] == [check_run_id]

    invalid = await http.post(f"{REPO}/check-runs", json={**body, "output": {"title": "t"}})
    assert invalid.status_code == 422
    assert_valid("/repos/{owner}/{repo}/check-runs", "post", 201, created.json())


async def test_webhook_payload_builders_validate(emu: Emulator, http: httpx.AsyncClient) -> None:
    for action, name in (
        ("completed", "workflow-run-completed"),
        ("in_progress", "workflow-run-in-progress"),
        ("requested", "workflow-run-requested"),
    ):
        assert_valid_webhook(name, emu.workflow_run_event("acme/widgets", 9002, action=action))
    assert_valid_webhook(
        "workflow-run-completed", emu.workflow_run_event("acme/widgets", 9001, attempt=2)
    )
    assert_valid_webhook("installation-created", emu.installation_event(101))
    assert_valid_webhook("installation-deleted", emu.installation_event(101, action="deleted"))
    assert_valid_webhook(
        "installation-repositories-added",
        emu.installation_repositories_event(101, added=["acme/gadgets"]),
    )
    assert_valid_webhook(
        "installation-repositories-removed",
        emu.installation_repositories_event(101, removed=["acme/gadgets"]),
    )
    assert_valid_webhook("ping", emu.ping_event("http://127.0.0.1:1/webhooks/github"))

    created = await http.post(
        f"{REPO}/check-runs",
        json={"name": "FlakeGuard", "head_sha": "1" * 40, "conclusion": "failure",
              "output": {"title": "t", "summary": "s"}},
    )  # fmt: skip
    event = emu.check_run_requested_action_event(created.json()["id"], "quarantine")
    assert_valid_webhook("check-run-requested-action", event)
