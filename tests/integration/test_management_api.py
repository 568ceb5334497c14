"""The `/queues` management API (issue 7 item 1) over a real runtime on the real Redis.

Every route, its authentication policy (http/auth.py), the spec's `runs:ingest` spelling, a
retry that really reprocesses a job, and a bounded property-based run (hypothesis requests
generated from `app.openapi()`) that must never see a 5xx or an undocumented status.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flakeguard.adapters.queue.names import QueueName
from flakeguard.bootstrap import Runtime
from flakeguard.http.app import create_app
from flakeguard.http.auth import DISABLED_DETAIL
from tests.integration.test_queue_admin import (
    ScriptedHandler,
    count,
    fail_jobs,
    ingest_worker,
)
from tests.support import make_settings, runtime_for, wait_for

pytestmark = pytest.mark.integration

TOKEN = "s3cret-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
INGEST_BODY: dict[str, Any] = {
    "workflowRunId": 12345,
    "repository": {"owner": "acme", "repo": "project", "installationId": 67890},
    "priority": "high",
}
GUARDED: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/queues/runs-ingest/failed", None),
    ("GET", "/queues/runs-ingest/jobs/1", None),
    ("POST", "/queues/runs-ingest/retry/1", None),
    ("POST", "/queues/runs-ingest/retry-failed", None),
    ("POST", "/queues/runs-ingest/pause", None),
    ("POST", "/queues/runs-ingest/resume", None),
    ("DELETE", "/queues/runs-ingest/failed/1", None),
    ("POST", "/queues/runs-ingest/clean", {"state": "failed"}),
    ("POST", "/queues/runs-ingest/jobs", INGEST_BODY),
]


@asynccontextmanager
async def api(
    queue_prefix: str, redis_url: str, sqlite_url: str, tmp_path: Path, *, token: str | None
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    extra = {"ADMIN_API_TOKEN": token} if token is not None else {}
    config = make_settings(
        redis_url=redis_url,
        database_url=sqlite_url,
        prefix=queue_prefix,
        data_dir=tmp_path,
        **extra,
    )
    async with (
        runtime_for(config) as rt,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(create_app(rt.state)), base_url="http://api"
        ) as client,
    ):
        yield rt, client


async def test_changes_and_job_contents_need_the_token_counts_and_health_do_not(
    queue_prefix: str, redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    async with api(queue_prefix, redis_url, sqlite_url, tmp_path, token=TOKEN) as (rt, client):
        for method, path, body in GUARDED:
            missing = await client.request(method, path, json=body)
            assert missing.status_code == 401, (method, path)
            assert missing.headers["www-authenticate"] == "Bearer"
            basic = await client.request(
                method, path, json=body, headers={"Authorization": f"Basic {TOKEN}"}
            )
            assert basic.status_code == 401, (method, path)
            wrong = await client.request(
                method, path, json=body, headers={"Authorization": "Bearer not-the-token"}
            )
            assert wrong.status_code == 403, (method, path)
            assert TOKEN not in wrong.text
        # Nothing happened without the token.
        assert (await client.get("/queues/runs-ingest/stats")).json()["paused"] is False
        assert await count(rt, "prioritized") == 0
        for open_path in ("/queues", "/queues/runs-ingest/stats", "/health/live", "/metrics"):
            assert (await client.get(open_path)).status_code == 200, open_path


async def test_without_admin_token_configured_the_api_is_disabled_not_open(
    queue_prefix: str, redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    async with api(queue_prefix, redis_url, sqlite_url, tmp_path, token=None) as (rt, client):
        for method, path, body in GUARDED:
            for headers in ({}, AUTH, {"Authorization": "Bearer "}):
                response = await client.request(method, path, json=body, headers=headers)
                assert response.status_code == 403, (method, path, headers)
                assert response.json() == {"detail": DISABLED_DETAIL}
        assert (await client.get("/queues/runs-ingest/stats")).json()["paused"] is False
        assert await count(rt, "prioritized") == 0
        assert (await client.get("/queues")).status_code == 200


async def test_every_spelling_of_a_queue_name_works_and_unknown_names_are_404(
    queue_prefix: str, redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    async with api(queue_prefix, redis_url, sqlite_url, tmp_path, token=TOKEN) as (_, client):
        for spelling in (
            "runs-ingest",
            "runs:ingest",
            "runs%3Aingest",
            "runs%3aingest",
            "RUNS_INGEST",
        ):
            response = await client.get(f"/queues/{spelling}/stats")
            assert response.status_code == 200, spelling
            assert response.json()["queue"] == "runs-ingest"
        created = await client.post("/queues/runs:ingest/jobs", json=INGEST_BODY, headers=AUTH)
        assert created.status_code == 201
        job_id = created.json()["job_id"]
        for spelling in ("runs:ingest", "runs%3Aingest"):
            job = await client.get(f"/queues/{spelling}/jobs/{job_id}", headers=AUTH)
            assert job.status_code == 200
            assert job.json()["data"]["workflowRunId"] == 12345
        unknown = await client.get("/queues/runs:egest/stats")
        assert unknown.status_code == 404
        assert "runs-ingest, runs-analyze, tests-recompute, polling" in unknown.json()["detail"]
        listed = await client.get("/queues")
        assert [q["queue"] for q in listed.json()] == [q.value for q in QueueName]


async def test_enqueue_validates_the_queue_payload_and_reports_deduplication(
    queue_prefix: str, redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    async with api(queue_prefix, redis_url, sqlite_url, tmp_path, token=TOKEN) as (_, client):
        first = await client.post("/queues/runs-ingest/jobs", json=INGEST_BODY, headers=AUTH)
        again = await client.post("/queues/runs-ingest/jobs", json=INGEST_BODY, headers=AUTH)
        assert first.status_code == again.status_code == 201
        assert first.json()["deduplicated"] is False
        assert again.json() == {**first.json(), "deduplicated": True}
        job = (
            await client.get(f"/queues/runs-ingest/jobs/{first.json()['job_id']}", headers=AUTH)
        ).json()
        assert (job["state"], job["priority"], job["name"]) == ("prioritized", 2, "process-run")

        bad = await client.post(
            "/queues/runs-ingest/jobs",
            json={"workflowRunId": "nope", "repository": {"owner": "a b", "repo": "x"}},
            headers=AUTH,
        )
        assert bad.status_code == 422
        locations = {tuple(e["loc"]) for e in bad.json()["detail"]}
        assert ("body", "workflowRunId") in locations
        assert ("body", "repository", "owner") in locations
        not_object = await client.post("/queues/runs-ingest/jobs", json=[1, 2], headers=AUTH)
        assert not_object.status_code == 422
        scope = await client.post(
            "/queues/tests:recompute/jobs",
            json={
                "repository": {"owner": "acme", "repo": "p"},
                "recomputeScope": {"type": "test_pattern"},
            },
            headers=AUTH,
        )
        assert scope.status_code == 422
        assert "needs at least one pattern" in scope.text

        for queue, body in (
            ("runs:analyze", {"workflowRunId": 1, "repository": {"owner": "acme", "repo": "p"}}),
            ("tests:recompute", {"repository": {"owner": "acme", "repo": "p"}}),
            ("polling", {}),
        ):
            created = await client.post(f"/queues/{queue}/jobs", json=body, headers=AUTH)
            assert created.status_code == 201, (queue, created.text)
            assert created.json()["queue"] == queue.replace(":", "-")
        stats = {q["queue"]: q["waiting"] for q in (await client.get("/queues")).json()}
        assert stats == {"runs-ingest": 1, "runs-analyze": 1, "tests-recompute": 1, "polling": 1}


async def test_retry_through_the_api_really_reprocesses_the_failed_job(
    queue_prefix: str, redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    async with api(queue_prefix, redis_url, sqlite_url, tmp_path, token=TOKEN) as (rt, client):
        handler = ScriptedHandler(failures=1)
        created = await client.post("/queues/runs:ingest/jobs", json=INGEST_BODY, headers=AUTH)
        job_id = created.json()["job_id"]

        async def state_is(state: str) -> bool:
            job = await client.get(f"/queues/runs:ingest/jobs/{job_id}", headers=AUTH)
            return bool(job.json()["state"] == state)

        async with ingest_worker(rt, handler):
            await wait_for(lambda: state_is("failed"))
            failed = (await client.get("/queues/runs:ingest/failed", headers=AUTH)).json()
            assert failed["total"] == 1
            assert failed["jobs"][0]["job_id"] == job_id
            assert failed["jobs"][0]["error_category"] == "poisoned_input"
            assert failed["jobs"][0]["stacktrace"]
            retried = await client.post(f"/queues/runs:ingest/retry/{job_id}", headers=AUTH)
            assert retried.status_code == 200
            assert retried.json()["attempts_made"] == 0
            await wait_for(lambda: state_is("completed"))
        assert handler.calls[job_id] == 2
        done = (await client.get(f"/queues/runs%3Aingest/jobs/{job_id}", headers=AUTH)).json()
        assert done["return_value"] == {"run": 12345}
        assert done["failed_reason"] is None
        again = await client.post(f"/queues/runs:ingest/retry/{job_id}", headers=AUTH)
        assert again.status_code == 409
        assert "completed, not failed" in again.json()["detail"]
        missing = await client.post("/queues/runs:ingest/retry/99999", headers=AUTH)
        assert missing.status_code == 404


async def test_failed_paging_delete_retry_failed_pause_resume_and_clean(
    queue_prefix: str, redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    async with api(queue_prefix, redis_url, sqlite_url, tmp_path, token=TOKEN) as (rt, client):
        ids = await fail_jobs(rt, range(1, 6))
        pages = [
            (await client.get(f"/queues/runs-ingest/failed?start={s}&limit=2", headers=AUTH)).json()
            for s in (0, 2, 4)
        ]
        assert [len(p["jobs"]) for p in pages] == [2, 2, 1]
        assert {p["total"] for p in pages} == {5}
        assert sorted(j["job_id"] for p in pages for j in p["jobs"]) == sorted(ids)
        for query in ("limit=501", "limit=0", "start=-1", "limit=ten"):
            paged = await client.get(f"/queues/runs-ingest/failed?{query}", headers=AUTH)
            assert paged.status_code == 422, query

        deleted = await client.delete(f"/queues/runs-ingest/failed/{ids[0]}", headers=AUTH)
        assert deleted.json() == {"queue": "runs-ingest", "job_id": ids[0], "deleted": True}
        gone = await client.delete(f"/queues/runs-ingest/failed/{ids[0]}", headers=AUTH)
        assert gone.status_code == 404

        cleaned = await client.post(
            "/queues/runs-ingest/clean",
            json={"state": "failed", "grace_s": 0, "limit": 1},
            headers=AUTH,
        )
        assert cleaned.json()["removed"] == 1
        for body in (
            {"state": "active"},
            {"state": "failed", "limit": 0},
            {"state": "failed", "x": 1},
        ):
            rejected = await client.post("/queues/runs-ingest/clean", json=body, headers=AUTH)
            assert rejected.status_code == 422, body

        paused = await client.post("/queues/runs:ingest/pause", headers=AUTH)
        assert paused.json()["paused"] is True
        assert (await client.get("/queues/runs-ingest/stats")).json()["paused"] is True
        retried = await client.post("/queues/runs:ingest/retry-failed", headers=AUTH)
        assert retried.json() == {"queue": "runs-ingest", "retried": 3}
        stats = (await client.get("/queues/runs-ingest/stats")).json()
        assert (stats["failed"], stats["waiting"], stats["paused"]) == (0, 3, True)
        # Paused: a running worker takes nothing until resume.
        handler = ScriptedHandler(failures=0)
        async with ingest_worker(rt, handler):
            assert await count(rt, "completed") == 0
            resumed = await client.post("/queues/runs:ingest/resume", headers=AUTH)
            assert resumed.json()["paused"] is False

            async def all_done() -> bool:
                return await count(rt, "completed") == 3

            await wait_for(all_done)
        assert len(handler.calls) == 3


# -- property-based: generated requests never get a 5xx --------------------------------

_SEGMENT = st.text(
    st.characters(codec="utf-8", exclude_characters="/"), min_size=1, max_size=40
).filter(lambda s: s not in (".", ".."))
_KNOWN_SPELLINGS = st.sampled_from(
    ["runs-ingest", "runs:ingest", "runs%3Aingest", "tests_recompute", "{polling}", "RUNS-ANALYZE"]
)
_QUEUE_NAMES = st.one_of(_KNOWN_SPELLINGS, _SEGMENT)
_JOB_IDS = st.one_of(
    st.sampled_from(["1", "2", "3", "meta", "events", "id", "1:logs", "wait", "failed", "marker"]),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    _SEGMENT,
    st.text(st.characters(codec="ascii", exclude_characters="/"), min_size=250, max_size=300),
)
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
_REPOSITORY = st.fixed_dictionaries(
    {
        "owner": st.one_of(st.just("acme"), st.text(max_size=45)),
        "repo": st.one_of(st.just("p"), st.text(max_size=5)),
    },
    optional={"installationId": st.one_of(st.integers(min_value=-5, max_value=2**70), _JSON)},
)
_VALID_JOB_BODIES = st.fixed_dictionaries(
    {
        "workflowRunId": st.integers(min_value=1, max_value=2**40),
        "repository": st.just({"owner": "acme", "repo": "p"}),
    },
    optional={"priority": st.sampled_from(["critical", "high", "normal", "low"])},
)
_JOB_BODIES = st.one_of(
    _VALID_JOB_BODIES,
    _JSON,
    st.fixed_dictionaries(
        {"repository": _REPOSITORY},
        optional={
            "workflowRunId": st.one_of(st.integers(min_value=-5, max_value=2**70), _JSON),
            "priority": st.one_of(st.sampled_from(["critical", "high", "normal", "low"]), _JSON),
            "metadata": st.one_of(
                st.fixed_dictionaries(
                    {}, optional={"runAttempt": st.integers(), "headSha": st.text(max_size=70)}
                ),
                _JSON,
            ),
            "recomputeScope": st.one_of(
                st.fixed_dictionaries(
                    {
                        "type": st.sampled_from(
                            ["all", "test_pattern", "class_pattern", "specific_tests", "x"]
                        )
                    },
                    optional={
                        "patterns": st.lists(st.text(max_size=10), max_size=3),
                        "lookbackDays": st.integers(),
                    },
                ),
                _JSON,
            ),
            "options": st.one_of(
                st.fixed_dictionaries({}, optional={"batchSize": st.integers()}), _JSON
            ),
        },
    ),
)
_CLEAN_BODIES = st.one_of(
    _JSON,
    st.fixed_dictionaries(
        {"state": st.one_of(st.sampled_from(["completed", "failed"]), st.text(max_size=10))},
        optional={
            "grace_s": st.one_of(
                st.integers(min_value=-(2**70), max_value=2**70),
                st.floats(allow_nan=False, allow_infinity=False),
                st.text(max_size=5),
            ),
            "limit": st.one_of(
                st.integers(min_value=-(2**70), max_value=2**70), st.text(max_size=5)
            ),
        },
    ),
)
_BOUNDARIES = st.sampled_from(["0", "-1", "1", "500", "501", str(2**31), str(2**63), str(2**70)])
_WIDE_INTS = st.integers(min_value=-(2**70), max_value=2**70).map(str)
_START = st.one_of(_BOUNDARIES, _WIDE_INTS, st.text(max_size=10), st.none())
# Mostly valid limits, so the start values reach the handler instead of a 422.
_LIMIT = st.one_of(
    st.none(), st.integers(1, 500).map(str), st.none(), _BOUNDARIES, st.text(max_size=5)
)
_HEADERS = st.sampled_from(
    [AUTH, AUTH, AUTH, {}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer"}]
)


def _operations(openapi: dict[str, Any]) -> list[tuple[str, str, set[str]]]:
    return [
        (method.upper(), path, set(operation["responses"]) | {"422"})
        for path, item in openapi["paths"].items()
        if path.startswith("/queues")
        for method, operation in item.items()
    ]


@dataclass(frozen=True, slots=True)
class Probe:
    """Where generated requests vary: at the door (names, tokens) or inside the handlers."""

    names: st.SearchStrategy[str]
    headers: st.SearchStrategy[dict[str, str]]
    max_examples: int


AT_THE_DOOR = Probe(names=_QUEUE_NAMES, headers=_HEADERS, max_examples=20)
INSIDE = Probe(names=_KNOWN_SPELLINGS, headers=st.just(AUTH), max_examples=50)


def _probe(
    runner: asyncio.Runner,
    client: httpx.AsyncClient,
    operation: tuple[str, str, set[str]],
    probe: Probe,
    seen_statuses: set[int],
) -> None:
    """Send generated requests to one operation; none may be a 5xx or undocumented."""
    method, template, documented = operation

    @settings(max_examples=probe.max_examples, derandomize=True, deadline=None, database=None)
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        path = template.format(
            name=quote(data.draw(probe.names), safe=":%{}"),
            job_id=quote(data.draw(_JOB_IDS), safe=":"),
        )
        params = {}
        if template.endswith("/failed") and method == "GET":
            drawn = {"start": data.draw(_START), "limit": data.draw(_LIMIT)}
            params = {k: v for k, v in drawn.items() if v is not None}
        body: Any = None
        if template.endswith("/jobs") and method == "POST":
            body = data.draw(_JOB_BODIES)
        elif template.endswith("/clean"):
            body = data.draw(_CLEAN_BODIES)
        headers = data.draw(probe.headers)
        response = runner.run(
            client.request(method, path, params=params, json=body, headers=headers)
        )
        assert response.status_code < 500, (method, path, params, body, response.text)
        assert str(response.status_code) in documented, (method, path, response.text)
        seen_statuses.add(response.status_code)

    check()


def test_generated_requests_never_get_a_5xx_or_an_undocumented_status(
    queue_prefix: str, redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    """Hypothesis-generated requests for every operation of /openapi.json (20 at the door,
    50 past it with a known queue and the token), derandomized: the same requests every
    run, against the real Redis."""
    with asyncio.Runner() as runner:
        stack = AsyncExitStack()
        rt, client = runner.run(
            stack.enter_async_context(
                api(queue_prefix, redis_url, sqlite_url, tmp_path, token=TOKEN)
            )
        )
        try:
            runner.run(fail_jobs(rt, range(1, 3)))  # failed jobs "1" and "2" to act on
            operations = _operations(create_app(rt.state).openapi())
            assert len(operations) == 11
            seen_statuses: set[int] = set()
            for operation in operations:
                for probe in (AT_THE_DOOR, INSIDE):
                    _probe(runner, client, operation, probe, seen_statuses)
            # The run reached past validation into the handlers, not only 4xx at the door.
            assert {200, 201, 401, 403, 404, 409, 422} <= seen_statuses
        finally:
            runner.run(stack.aclose())
