"""The emulator's GitHub rules, checked over raw HTTP: App JWT and token auth, the blob host,
rate-limit headers and ETags, pagination, keep-alive bodies, scenarios, webhook delivery and the
standalone `main()`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import jwt
import pytest

from flakeguard.adapters.github.webhooks import (
    WorkflowRunCompleted,
    parse_webhook,
    verify_signature,
)
from flakeguard.emulator import Emulator, ScenarioError, load_scenario, run_emulator

SCENARIO = Path(__file__).resolve().parents[1] / "fixtures" / "github" / "basic"
REPO = "/repos/acme/widgets"


@dataclass
class Clock:
    now_s: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def emu(clock: Clock) -> AsyncIterator[Emulator]:
    async with run_emulator(SCENARIO, clock=clock) as emulator:
        yield emulator


@pytest.fixture
async def http(emu: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=emu.api_url) as client:
        yield client


def app_jwt(emu: Emulator, clock: Clock, *, iat_offset_s: int = -60, lifetime_s: int = 600,
            iss: str | None = None, algorithm: str = "RS256") -> str:  # fmt: skip
    issued_at = int(clock()) + iat_offset_s
    claims = {"iat": issued_at, "exp": issued_at + lifetime_s, "iss": iss or emu.app_id}
    key = emu.private_key_pem if algorithm == "RS256" else "shared-secret-of-32-bytes-or-more!!"
    return jwt.encode(claims, key, algorithm=algorithm)


async def token(http: httpx.AsyncClient, emu: Emulator, clock: Clock) -> str:
    response = await http.post(
        "/app/installations/101/access_tokens",
        headers={"Authorization": f"Bearer {app_jwt(emu, clock)}"},
        json={},
    )
    assert response.status_code == 201
    value: str = response.json()["token"]
    return value


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


# ---- App JWT ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lifetime_s": 601}, "'Expiration time' claim ('exp') is too far in the future"),
        ({"iat_offset_s": 120}, "'Issued at' claim ('iat') must be an Integer"),
        ({"iat_offset_s": -700}, "'Expiration time' claim ('exp') must be a numeric value"),
        ({"iss": "999"}, "'Issuer' claim ('iss')"),
        ({"algorithm": "HS256"}, "A JSON web token could not be decoded"),
    ],
)
async def test_jwt_rules(
    http: httpx.AsyncClient, emu: Emulator, clock: Clock, kwargs: dict[str, object], message: str
) -> None:
    response = await http.get("/app", headers=bearer(app_jwt(emu, clock, **kwargs)))  # type: ignore[arg-type]
    assert response.status_code == 401
    assert message in response.json()["message"]


async def test_jwt_accepts_client_id_and_skew(
    http: httpx.AsyncClient, emu: Emulator, clock: Clock
) -> None:
    client_id = emu.state.app.client_id
    for value in (
        app_jwt(emu, clock, iss=client_id),
        app_jwt(emu, clock, iat_offset_s=30, lifetime_s=500),
    ):
        assert (await http.get("/app", headers=bearer(value))).status_code == 200


async def test_credentials_are_route_specific(
    http: httpx.AsyncClient, emu: Emulator, clock: Clock
) -> None:
    installation_token = await token(http, emu, clock)
    assert installation_token.startswith("ghs_")
    on_app = await http.get("/app", headers=bearer(installation_token))
    assert on_app.status_code == 401
    jwt_on_repo = await http.get(f"{REPO}/actions/runs", headers=bearer(app_jwt(emu, clock)))
    assert jwt_on_repo.status_code == 403
    anonymous = await http.get(f"{REPO}/actions/runs")
    assert anonymous.status_code == 401
    other_installation = await http.get(
        "/repos/octo-org/site/actions/runs", headers=bearer(installation_token)
    )
    assert other_installation.status_code == 404


async def test_tokens_expire_after_an_hour_and_can_be_revoked(
    http: httpx.AsyncClient, emu: Emulator, clock: Clock
) -> None:
    first, second = await token(http, emu, clock), await token(http, emu, clock)
    lengths = {len(t) for t in emu.state.tokens}
    assert lengths  # variable length: do not assume 40 characters
    assert (await http.get("/installation/repositories", headers=bearer(first))).status_code == 200
    revoke = await http.delete("/installation/token", headers=bearer(first))
    assert revoke.status_code == 204
    revoked = await http.get("/installation/repositories", headers=bearer(first))
    assert (revoked.status_code, revoked.json()["message"]) == (401, "Bad credentials")
    clock.now_s += 3600
    expired = await http.get("/installation/repositories", headers=bearer(second))
    assert expired.status_code == 401


# ---- blob host -------------------------------------------------------------------------------


async def test_blob_host_rejects_authorization_and_expired_urls(
    http: httpx.AsyncClient, emu: Emulator, clock: Clock
) -> None:
    headers = bearer(await token(http, emu, clock))
    artifact_id = emu.artifact_ids("acme/widgets", 9002)[0]
    redirect = await http.get(f"{REPO}/actions/artifacts/{artifact_id}/zip", headers=headers)
    assert redirect.status_code == 302
    location = redirect.headers["location"]
    assert location.startswith(emu.blob_url)
    assert httpx.URL(location).host != httpx.URL(emu.api_url).host
    async with httpx.AsyncClient() as blob:
        with_auth = await blob.get(location, headers=headers)
        assert with_auth.status_code == 400
        assert b"InvalidAuthenticationInfo" in with_auth.content
        ok = await blob.get(location)
        assert ok.status_code == 200
        assert ok.content[:2] == b"PK"
        forged = await blob.get(location.replace("sig=", "sig=0"))
        assert forged.status_code == 403
        clock.now_s += 61  # signed URLs last one minute
        late = await blob.get(location)
        assert late.status_code == 403
        assert b"AuthenticationFailed" in late.content
    assert [r.has_authorization for r in emu.blob_requests()] == [True, False, False, False]


# ---- rate limits, ETags, versions ----------------------------------------------------------------


async def test_rate_limit_headers_everywhere_and_free_304(
    http: httpx.AsyncClient, emu: Emulator, clock: Clock
) -> None:
    headers = bearer(await token(http, emu, clock))
    first = await http.get(f"{REPO}/actions/runs", headers=headers)
    remaining = int(first.headers["x-ratelimit-remaining"])
    assert first.headers["cache-control"] == "private, max-age=60, s-maxage=60"
    conditional = {**headers, "If-None-Match": first.headers["etag"]}
    not_modified = await http.get(f"{REPO}/actions/runs", headers=conditional)
    assert not_modified.status_code == 304
    assert int(not_modified.headers["x-ratelimit-remaining"]) == remaining
    missing = await http.get(f"{REPO}/actions/runs/1", headers=headers)
    assert missing.status_code == 404
    assert int(missing.headers["x-ratelimit-remaining"]) == remaining - 1
    unauthorised = await http.get("/installation/repositories")
    assert unauthorised.status_code == 401
    assert "x-ratelimit-limit" in unauthorised.headers
    for response in (first, not_modified, missing):
        assert {"x-ratelimit-limit", "x-ratelimit-used", "x-ratelimit-reset"} <= set(
            response.headers
        )


async def test_api_versions(http: httpx.AsyncClient, emu: Emulator, clock: Clock) -> None:
    headers = bearer(await token(http, emu, clock))
    default = await http.get("/rate_limit", headers=headers)
    assert default.headers["x-github-api-version-selected"] == "2022-11-28"
    assert "rate" in default.json()
    newer = await http.get("/rate_limit", headers={**headers, "X-GitHub-Api-Version": "2026-03-10"})
    assert "rate" not in newer.json()
    unknown = await http.get(
        "/rate_limit", headers={**headers, "X-GitHub-Api-Version": "1999-01-01"}
    )
    assert unknown.status_code == 400


async def test_primary_budget_exhaustion_until_reset(
    http: httpx.AsyncClient, emu: Emulator, clock: Clock
) -> None:
    headers = bearer(await token(http, emu, clock))
    emu.set_rate_limit(101, limit=5000, remaining=1, reset_in_s=30)
    assert (await http.get(f"{REPO}/actions/runs", headers=headers)).status_code == 200
    blocked = await http.get(f"{REPO}/actions/runs", headers=headers)
    assert blocked.status_code == 403
    assert blocked.json()["message"] == "API rate limit exceeded for installation ID 101."
    assert blocked.headers["x-ratelimit-remaining"] == "0"
    clock.now_s += 31
    assert (await http.get(f"{REPO}/actions/runs", headers=headers)).status_code == 200


# ---- pagination ------------------------------------------------------------------------------


async def test_per_page_is_clamped_and_links_are_absolute(
    http: httpx.AsyncClient, emu: Emulator, clock: Clock
) -> None:
    headers = bearer(await token(http, emu, clock))
    start = datetime(2026, 4, 1, tzinfo=UTC)
    for n in range(150):
        emu.add_run("acme/gadgets", 100_000 + n, created_at=start + timedelta(minutes=n))
    first = await http.get(
        "/repos/acme/gadgets/actions/runs", headers=headers, params={"per_page": 500}
    )
    body = first.json()
    assert len(body["workflow_runs"]) == 100
    assert body["total_count"] == 151
    links = first.links
    assert links["next"]["url"].startswith(f"{emu.api_url}/repositories/5002/actions/runs?")
    assert "per_page=100" in links["next"]["url"]
    assert "page=2" in links["last"]["url"]
    second = await http.get(links["next"]["url"], headers=headers)
    assert len(second.json()["workflow_runs"]) == 51
    assert "next" not in second.links
    assert second.links["prev"]["url"].endswith("page=1")
    runs = body["workflow_runs"] + second.json()["workflow_runs"]
    assert len({r["id"] for r in runs}) == 151
    single = await http.get(f"{REPO}/actions/runs/9002/artifacts", headers=headers)
    assert "link" not in single.headers


async def test_keep_alive_post_bodies_are_consumed(
    http: httpx.AsyncClient, emu: Emulator, clock: Clock
) -> None:
    app_headers = bearer(app_jwt(emu, clock))
    for _ in range(3):
        posted = await http.post(
            "/app/installations/101/access_tokens", headers=app_headers, content=b"{}"
        )
        assert posted.status_code == 201
        assert (await http.get("/app", headers=app_headers)).status_code == 200


async def test_check_run_rules(http: httpx.AsyncClient, emu: Emulator, clock: Clock) -> None:
    headers = bearer(await token(http, emu, clock))
    base = {"name": "FG", "head_sha": "1" * 40, "output": {"title": "t", "summary": "s"}}
    cases = [
        ({**base, "status": "completed"}, "No conclusion"),
        ({**base, "output": {"title": "t", "summary": "x" * 65_536}}, "Only 65535 characters"),
        ({**base, "actions": [{"label": "l" * 21, "description": "d", "identifier": "i"}]},
         "at most 20"),
        ({**base, "output": {"title": "t", "summary": "s", "annotations": [
            {"path": "a", "start_line": 1, "end_line": 1, "annotation_level": "notice",
             "message": "m"}] * 51}}, "50 annotations"),
    ]  # fmt: skip
    for body, message in cases:
        response = await http.post(f"{REPO}/check-runs", headers=headers, json=body)
        assert response.status_code == 422, message
        assert message in response.json()["message"]
    completed = await http.post(
        f"{REPO}/check-runs", headers=headers, json={**base, "conclusion": "success"}
    )
    assert completed.json()["status"] == "completed"
    stale = await http.patch(
        f"{REPO}/check-runs/{completed.json()['id']}", headers=headers, json={"conclusion": "stale"}
    )
    assert stale.status_code == 422


# ---- scenarios -------------------------------------------------------------------------------


def test_scenario_loads_and_zips_folders_once() -> None:
    scenario = load_scenario(SCENARIO)
    assert [r.full_name for r in scenario.repos] == [
        "acme/widgets",
        "acme/gadgets",
        "octo-org/site",
    ]
    assert len(scenario.runs) == 6
    attempts = [(r.id, r.attempt) for r in scenario.runs if r.id == 9001]
    assert attempts == [(9001, 1), (9001, 2)]
    templates = scenario.artifact_templates
    assert set(templates) == {
        "artifacts/junit-pytest",
        "artifacts/junit-jest",
        "artifacts/surefire-reports.zip",
        "artifacts/junit-jest/jest-junit.xml",
    }
    assert all(data[:2] == b"PK" for data in templates.values())


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"installations": [{"id": 1}]}', "'account' is required"),
        ('{"installations": [{"id": 1, "account": "a"}], "repos": [{"full_name": "a/b", '
         '"installation_id": 2}]}', "unknown installation_id 2"),
        ('{"installations": [{"id": 1, "account": "a"}], "repos": [{"full_name": "a/b", '
         '"installation_id": 1}], "runs": [{"repo": "a/b", "id": 1, "head_sha": "x", '
         '"artifacts": [{"file": "missing.zip"}]}]}', "does not exist"),
        ('{"installations": [{"id": 1, "account": "a"}], "repos": [{"full_name": "a/b", '
         '"installation_id": 1}], "runs": [{"repo": "a/b", "id": 1, "head_sha": "x", '
         '"artifacts": [{"file": "../../etc/passwd"}]}]}', "outside the scenario"),
    ],
)  # fmt: skip
def test_scenario_errors_say_where(tmp_path: Path, manifest: str, message: str) -> None:
    (tmp_path / "scenario.json").write_text(manifest)
    with pytest.raises(ScenarioError, match=message):
        load_scenario(tmp_path)


# ---- webhook delivery --------------------------------------------------------------------------


async def test_deliver_webhook_signs_the_exact_bytes(emu: Emulator) -> None:
    received: list[httpx.Request] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        received.append(request)
        ok = verify_signature("s3cret", request.content, request.headers.get("x-hub-signature-256"))
        return httpx.Response(202 if ok else 401)

    payload = emu.workflow_run_event("acme/widgets", 9002)
    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as client:
        first = await emu.deliver_webhook("http://hook.test/github", "workflow_run", payload,
                                          "s3cret", client=client)  # fmt: skip
        again = await emu.deliver_webhook("http://hook.test/github", "workflow_run", payload,
                                          "s3cret", first.delivery_id, client=client)  # fmt: skip
        wrong = await emu.deliver_webhook("http://hook.test/github", "workflow_run", payload,
                                          "other", client=client)  # fmt: skip
    assert (first.status_code, again.status_code, wrong.status_code) == (202, 202, 401)
    assert again.delivery_id == first.delivery_id
    headers = received[0].headers
    assert headers["x-github-event"] == "workflow_run"
    assert headers["x-github-hook-installation-target-type"] == "integration"
    assert headers["user-agent"].startswith("GitHub-Hookshot/")
    event = parse_webhook("workflow_run", received[0].content)
    assert isinstance(event, WorkflowRunCompleted)
    assert (event.run_id, event.pull_request_numbers) == (9002, (17,))


# ---- standalone ------------------------------------------------------------------------------


def test_main_serves_until_sigterm(tmp_path: Path) -> None:
    scenario_dir = tmp_path / "scenario"
    shutil.copytree(SCENARIO, scenario_dir)
    code = "import sys; from pathlib import Path; from flakeguard.emulator import main; " \
           "main(0, Path(sys.argv[1]))"  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(scenario_dir)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        banner = json.loads(process.stdout.readline())
        assert banner["event"] == "emulator.started"
        key_file = Path(banner["private_key_file"])
        assert key_file.is_file()
        assert key_file.stat().st_mode & 0o077 == 0
        now = int(time.time()) - 60
        app_token = jwt.encode({"iat": now, "exp": now + 600, "iss": banner["app_id"]},
                               key_file.read_text(), algorithm="RS256")  # fmt: skip
        with httpx.Client(base_url=banner["api_url"]) as client:
            response = client.get("/app/installations", headers=bearer(app_token))
        assert [i["id"] for i in response.json()] == [101, 202]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
