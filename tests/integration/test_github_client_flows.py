"""GitHubClient against the running emulator: auth, pagination, ETags, downloads, faults,
check-run limits. Time is a shared fake clock: waits are recorded, not slept, and the
emulator sees time move by exactly what the client waited."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flakeguard.adapters.github.client import (
    TRUNCATION_MARKER,
    CheckRunBody,
    CheckRunConclusion,
    GitHubClient,
    GitHubConfig,
    RepoCoords,
)
from flakeguard.core.reporting import Action, Annotation, AnnotationLevel
from flakeguard.emulator import Emulator, FaultKind, FaultTarget, run_emulator, zip_members
from flakeguard.errors import (
    ArtifactExpired,
    GitHubClientError,
    GitHubRateLimited,
    GitHubServerError,
    PermanentJobError,
    TransientJobError,
)

SCENARIO = Path(__file__).resolve().parents[1] / "fixtures" / "github" / "basic"
WIDGETS = RepoCoords("acme", "widgets", 101)
ARTIFACTS = r"/actions/runs/\d+/artifacts$"


@dataclass
class FakeTime:
    """A clock both sides read; `sleep` advances it instead of waiting."""

    now_s: float = field(default_factory=time.time)
    slept_s: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now_s

    async def sleep(self, seconds: float) -> None:
        self.slept_s.append(seconds)
        self.now_s += seconds


@dataclass
class RecordingObserver:
    responses: list[tuple[str, int]] = field(default_factory=list)
    rate_limits: list[tuple[int | None, int]] = field(default_factory=list)

    def on_response(self, endpoint: str, status: int, duration_s: float) -> None:
        assert duration_s >= 0
        self.responses.append((endpoint, status))

    def on_rate_limit(
        self, installation_id: int | None, resource: str, remaining: int, limit: int,
        reset_epoch_s: int,
    ) -> None:  # fmt: skip
        self.rate_limits.append((installation_id, remaining))


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime()


@pytest.fixture
async def emu(clock: FakeTime) -> AsyncIterator[Emulator]:
    async with run_emulator(SCENARIO, clock=clock) as emulator:
        yield emulator


def make_client(
    emu: Emulator, clock: FakeTime, observer: RecordingObserver | None = None, **overrides: float
) -> GitHubClient:
    settings: dict[str, float] = {"write_spacing_s": 0.0, "retry_base_s": 1.0, **overrides}
    config = GitHubConfig(
        app_id=emu.app_id,
        private_key_pem=emu.private_key_pem,
        api_url=emu.api_url,
        write_spacing_s=settings["write_spacing_s"],
        retry_base_s=settings["retry_base_s"],
        max_inline_wait_s=settings.get("max_inline_wait_s", 10.0),
        request_timeout_s=settings.get("request_timeout_s", 30.0),
    )
    return GitHubClient(config, observer=observer, clock=clock, sleep=clock.sleep)


def paths(emu: Emulator, suffix: str) -> list[int]:
    return [r.status for r in emu.api_requests() if r.path.endswith(suffix)]


# ---- discovery, pagination, ETags ------------------------------------------------------------


async def test_discovery_and_link_pagination(emu: Emulator, clock: FakeTime) -> None:
    async with make_client(emu, clock) as gh:
        installations = await gh.list_installations()
        repos = await gh.list_installation_repositories(101)
        page = await gh.list_workflow_runs(WIDGETS, per_page=1)
    assert [i.id for i in installations] == [101, 202]
    assert {(r.owner, r.name, r.default_branch) for r in repos} == {
        ("acme", "widgets", "main"),
        ("acme", "gadgets", "develop"),
    }
    # Newest first, one per page, three pages followed through absolute Link URLs.
    assert [(r.id, r.run_attempt) for r in page.runs] == [(9003, 1), (9002, 1), (9001, 2)]
    listing = [r for r in emu.api_requests() if r.path.endswith("/actions/runs")]
    assert [r.path for r in listing] == [
        "/repos/acme/widgets/actions/runs",
        "/repositories/5001/actions/runs",
        "/repositories/5001/actions/runs",
    ]
    assert "status=completed" in listing[2].query
    pr_run = page.runs[1]
    assert pr_run.pull_request_numbers == (17,)
    assert pr_run.name == "Tests"
    assert pr_run.repository_full_name == "acme/widgets"
    assert pr_run.head_branch == "feature/x"


async def test_max_pages_and_created_since(emu: Emulator, clock: FakeTime) -> None:
    async with make_client(emu, clock) as gh:
        first_only = await gh.list_workflow_runs(WIDGETS, per_page=1, max_pages=1)
        recent = await gh.list_workflow_runs(
            WIDGETS, created_since=datetime(2026, 3, 2, tzinfo=UTC)
        )
    assert [r.id for r in first_only.runs] == [9003]
    assert {r.id for r in recent.runs} == {9002, 9003}


async def test_etag_304_is_free_and_reports_not_modified(emu: Emulator, clock: FakeTime) -> None:
    async with make_client(emu, clock) as gh:
        first = await gh.list_workflow_runs(WIDGETS)
        remaining_before = gh.rate_limit_snapshot()[101].remaining
        again = await gh.list_workflow_runs(WIDGETS, etag=first.etag)
        remaining_after = gh.rate_limit_snapshot()[101].remaining
        emu.add_run("acme/widgets", 9004, created_at=datetime(2026, 3, 9, tzinfo=UTC))
        changed = await gh.list_workflow_runs(WIDGETS, etag=first.etag)
    assert first.etag is not None
    assert not first.not_modified
    assert again.not_modified
    assert again.runs == []
    assert again.etag == first.etag
    assert remaining_after == remaining_before  # a 304 does not use the budget
    assert not changed.not_modified
    assert changed.runs[0].id == 9004
    assert changed.etag != first.etag


async def test_get_run_and_attempt(emu: Emulator, clock: FakeTime) -> None:
    async with make_client(emu, clock) as gh:
        latest = await gh.get_workflow_run(WIDGETS, 9001)
        first = await gh.get_workflow_run(WIDGETS, 9001, attempt=1)
        with pytest.raises(GitHubClientError) as missing:
            await gh.get_workflow_run(WIDGETS, 1)
    assert (latest.run_attempt, latest.conclusion) == (2, "success")
    assert (first.run_attempt, first.conclusion) == (1, "failure")
    assert missing.value.status == 404


# ---- tokens ----------------------------------------------------------------------------------


async def test_token_cached_then_refreshed_before_expiry(emu: Emulator, clock: FakeTime) -> None:
    async with make_client(emu, clock) as gh:
        await gh.list_run_artifacts(WIDGETS, 9002)
        await gh.list_run_artifacts(WIDGETS, 9002)
        assert len(paths(emu, "/access_tokens")) == 1
        clock.now_s += 54 * 60  # 6 minutes left: still used
        await gh.list_run_artifacts(WIDGETS, 9002)
        assert len(paths(emu, "/access_tokens")) == 1
        clock.now_s += 2 * 60  # 4 minutes left: refreshed before use
        await gh.list_run_artifacts(WIDGETS, 9002)
    assert paths(emu, "/access_tokens") == [201, 201]
    assert 401 not in [r.status for r in emu.api_requests()]


async def test_expired_or_revoked_token_is_replaced_once(emu: Emulator, clock: FakeTime) -> None:
    async with make_client(emu, clock) as gh:
        await gh.list_run_artifacts(WIDGETS, 9002)
        clock.now_s += 60
        assert emu.expire_tokens() == 1
        artifacts = await gh.list_run_artifacts(WIDGETS, 9002)
    assert len(artifacts) == 2
    assert paths(emu, "/artifacts") == [200, 401, 200]
    assert paths(emu, "/access_tokens") == [201, 201]


async def test_replication_delay_401_is_retried(emu: Emulator, clock: FakeTime) -> None:
    emu.token_replication_delay_s = 1.5
    async with make_client(emu, clock) as gh:
        artifacts = await gh.list_run_artifacts(WIDGETS, 9002)
    assert len(artifacts) == 2
    assert paths(emu, "/artifacts") == [401, 401, 200]
    assert clock.slept_s == [1.0, 2.0]


async def test_unknown_installation_is_a_client_error(emu: Emulator, clock: FakeTime) -> None:
    async with make_client(emu, clock) as gh:
        with pytest.raises(GitHubClientError) as caught:
            await gh.list_installation_repositories(999)
    assert caught.value.status == 404


# ---- downloads -------------------------------------------------------------------------------


async def test_download_follows_302_without_authorization(emu: Emulator, clock: FakeTime) -> None:
    async with make_client(emu, clock) as gh:
        artifacts = await gh.list_run_artifacts(WIDGETS, 9002)
        surefire = next(a for a in artifacts if a.name == "surefire")
        sink = io.BytesIO()
        written = await gh.download_artifact(WIDGETS, surefire.id, sink, max_bytes=1 << 20)
    expected = (SCENARIO / "artifacts" / "surefire-reports.zip").read_bytes()
    assert written == surefire.size_in_bytes == len(expected)
    assert sink.getvalue() == expected
    blob = emu.blob_requests()
    assert len(blob) == 1
    assert blob[0].status == 200
    assert not blob[0].has_authorization
    api_host = emu.api_requests()[0].host
    assert blob[0].host != api_host  # another origin
    redirect = [r for r in emu.api_requests() if r.path.endswith("/zip")]
    assert [(r.status, r.has_authorization) for r in redirect] == [(302, True)]


async def test_expired_artifact_raises_artifact_expired(emu: Emulator, clock: FakeTime) -> None:
    expired_id = emu.artifact_ids("acme/widgets", 9003)[0]
    async with make_client(emu, clock) as gh:
        listed = await gh.list_run_artifacts(WIDGETS, 9003)
        with pytest.raises(ArtifactExpired):
            await gh.download_artifact(WIDGETS, expired_id, io.BytesIO(), max_bytes=1 << 20)
    assert listed[0].expired
    assert paths(emu, "/zip") == [410]  # never retried
    assert emu.blob_requests() == []


async def test_max_bytes_exceeded_is_permanent(emu: Emulator, clock: FakeTime) -> None:
    artifact_id = emu.artifact_ids("acme/widgets", 9002)[0]
    async with make_client(emu, clock) as gh:
        with pytest.raises(PermanentJobError, match="byte budget"):
            await gh.download_artifact(WIDGETS, artifact_id, io.BytesIO(), max_bytes=100)


async def test_slow_blob_is_awaited(emu: Emulator, clock: FakeTime) -> None:
    artifact_id = emu.artifact_ids("acme/widgets", 9002)[0]
    emu.faults.add_fault(".*", FaultKind.SLOW, target=FaultTarget.BLOB, delay_s=0.3)
    started = time.perf_counter()
    async with make_client(emu, clock) as gh:
        sink = io.BytesIO()
        written = await gh.download_artifact(WIDGETS, artifact_id, sink, max_bytes=1 << 20)
    assert time.perf_counter() - started >= 0.3
    assert written == len(sink.getvalue()) > 0


async def test_blob_stalling_past_timeout_is_transient(emu: Emulator, clock: FakeTime) -> None:
    emu.add_artifact_template("big", zip_members({"junit.xml": b"<testsuite/>" * 50_000}))
    emu.add_run("acme/widgets", 9010, artifacts=[("big", "big")])
    artifact_id = emu.artifact_ids("acme/widgets", 9010)[0]
    emu.faults.add_fault(".*", FaultKind.SLOW, target=FaultTarget.BLOB, delay_s=1.0, count=None)
    async with make_client(emu, clock, request_timeout_s=0.2, retry_base_s=0.01) as gh:
        with pytest.raises(TransientJobError, match="blob download failed"):
            await gh.download_artifact(WIDGETS, artifact_id, io.BytesIO(), max_bytes=1 << 22)
    assert len(emu.blob_requests()) == 4  # the first try and max_retries more, then the queue


async def test_blob_stalling_once_mid_body_is_downloaded_again_from_the_start(
    emu: Emulator, clock: FakeTime
) -> None:
    """The first half of the blob arrives, then nothing past the read timeout: the retry
    starts the file over, so the sink holds the blob once, whole."""
    blob = zip_members({f"r{i}.xml": (b"<testsuite name='%d'/>" % i) * 2_000 for i in range(8)})
    emu.add_artifact_template("stall", blob)
    emu.add_run("acme/widgets", 9011, artifacts=[("stall", "stall")])
    artifact_id = emu.artifact_ids("acme/widgets", 9011)[0]
    emu.faults.add_fault(".*", FaultKind.SLOW, target=FaultTarget.BLOB, delay_s=1.0, count=1)
    sink = io.BytesIO(b"kept")  # what the sink held before stays
    sink.seek(0, io.SEEK_END)
    async with make_client(emu, clock, request_timeout_s=0.2, retry_base_s=0.01) as gh:
        written = await gh.download_artifact(WIDGETS, artifact_id, sink, max_bytes=1 << 22)
    assert written == len(blob)
    assert sink.getvalue() == b"kept" + blob
    assert [r.status for r in emu.blob_requests()] == [200, 200]


async def test_blob_5xx_is_retried(emu: Emulator, clock: FakeTime) -> None:
    artifact_id = emu.artifact_ids("acme/widgets", 9002)[0]
    emu.faults.add_fault(".*", FaultKind.SERVER_ERROR, target=FaultTarget.BLOB, count=2)
    async with make_client(emu, clock) as gh:
        written = await gh.download_artifact(WIDGETS, artifact_id, io.BytesIO(), max_bytes=1 << 20)
    assert written > 0
    assert [r.status for r in emu.blob_requests()] == [503, 503, 200]
    assert clock.slept_s == [1.0, 4.0]


async def test_expired_blob_url_is_requested_again(emu: Emulator, clock: FakeTime) -> None:
    artifact_id = emu.artifact_ids("acme/widgets", 9002)[0]
    emu.faults.add_fault(".*", FaultKind.BAD_CREDENTIALS, target=FaultTarget.BLOB)
    async with make_client(emu, clock) as gh:
        written = await gh.download_artifact(WIDGETS, artifact_id, io.BytesIO(), max_bytes=1 << 20)
    assert written > 0
    assert paths(emu, "/zip") == [302, 302]
    assert [r.status for r in emu.blob_requests()] == [403, 200]


# ---- faults: 5xx, 429, secondary and primary limits --------------------------------------------


async def test_5xx_burst_is_retried_with_backoff(emu: Emulator, clock: FakeTime) -> None:
    emu.faults.add_fault(ARTIFACTS, FaultKind.SERVER_ERROR, count=3)
    async with make_client(emu, clock) as gh:
        artifacts = await gh.list_run_artifacts(WIDGETS, 9002)
    assert len(artifacts) == 2
    assert paths(emu, "/artifacts") == [502, 502, 502, 200]
    assert clock.slept_s == [1.0, 4.0, 9.0]


async def test_5xx_beyond_retries_is_server_error(emu: Emulator, clock: FakeTime) -> None:
    emu.faults.add_fault(ARTIFACTS, FaultKind.SERVER_ERROR, count=None, status=503)
    async with make_client(emu, clock, retry_base_s=0.01) as gh:
        with pytest.raises(GitHubServerError):
            await gh.list_run_artifacts(WIDGETS, 9002)
    assert paths(emu, "/artifacts") == [503] * 4


async def test_429_retry_after_is_honoured(emu: Emulator, clock: FakeTime) -> None:
    emu.faults.add_fault(ARTIFACTS, FaultKind.RETRY_AFTER, retry_after_s=3)
    async with make_client(emu, clock) as gh:
        artifacts = await gh.list_run_artifacts(WIDGETS, 9002)
    assert len(artifacts) == 2
    assert paths(emu, "/artifacts") == [429, 200]
    assert clock.slept_s == [pytest.approx(3.0)]


async def test_long_retry_after_is_handed_to_the_queue(emu: Emulator, clock: FakeTime) -> None:
    emu.faults.add_fault(ARTIFACTS, FaultKind.RETRY_AFTER, status=403, retry_after_s=120)
    async with make_client(emu, clock) as gh:
        with pytest.raises(GitHubRateLimited) as caught:
            await gh.list_run_artifacts(WIDGETS, 9002)
        with pytest.raises(GitHubRateLimited):  # the installation stays blocked: no request
            await gh.list_run_artifacts(WIDGETS, 9002)
    assert caught.value.retry_after_s == pytest.approx(120.0)
    assert paths(emu, "/artifacts") == [403]
    assert clock.slept_s == []


async def test_secondary_limit_without_headers_waits_a_minute(
    emu: Emulator, clock: FakeTime
) -> None:
    emu.faults.add_fault(ARTIFACTS, FaultKind.SECONDARY_LIMIT)
    async with make_client(emu, clock, max_inline_wait_s=300.0) as gh:
        artifacts = await gh.list_run_artifacts(WIDGETS, 9002)
    assert len(artifacts) == 2
    assert paths(emu, "/artifacts") == [403, 200]
    assert clock.slept_s == [pytest.approx(60.0)]


async def test_secondary_limit_beyond_inline_wait_raises(emu: Emulator, clock: FakeTime) -> None:
    emu.faults.add_fault(ARTIFACTS, FaultKind.SECONDARY_LIMIT)
    async with make_client(emu, clock) as gh:
        with pytest.raises(GitHubRateLimited) as caught:
            await gh.list_run_artifacts(WIDGETS, 9002)
    assert caught.value.retry_after_s == pytest.approx(60.0)


async def test_exhausted_primary_limit_waits_until_reset(emu: Emulator, clock: FakeTime) -> None:
    emu.faults.add_fault(ARTIFACTS, FaultKind.PRIMARY_EXHAUSTED, reset_in_s=5)
    observer = RecordingObserver()
    async with make_client(emu, clock, observer) as gh:
        artifacts = await gh.list_run_artifacts(WIDGETS, 9002)
        remaining = gh.rate_limit_snapshot()[101].remaining
    assert len(artifacts) == 2
    assert paths(emu, "/artifacts") == [403, 200]
    assert len(clock.slept_s) == 1
    assert clock.slept_s[0] >= 5.0
    assert (101, 0) in observer.rate_limits
    assert remaining > 4000  # a new window after the reset
    assert ("GET /repos/{owner}/{repo}/actions/runs/{run_id}/artifacts", 403) in observer.responses


async def test_exhausted_primary_limit_long_reset_is_deferred(
    emu: Emulator, clock: FakeTime
) -> None:
    emu.faults.add_fault(ARTIFACTS, FaultKind.PRIMARY_EXHAUSTED, reset_in_s=1800)
    async with make_client(emu, clock) as gh:
        with pytest.raises(GitHubRateLimited) as caught:
            await gh.list_run_artifacts(WIDGETS, 9002)
        other = RepoCoords("octo-org", "site", 202)
        assert len(await gh.list_run_artifacts(other, 9201)) == 1  # other installations go on
    assert 1800 <= caught.value.retry_after_s <= 1802


async def test_non_rate_limit_403_is_not_retried(emu: Emulator, clock: FakeTime) -> None:
    async with make_client(emu, clock) as gh:
        with pytest.raises(GitHubClientError) as caught:
            await gh.list_run_artifacts(RepoCoords("octo-org", "site", 101), 9201)
    assert caught.value.status == 404  # another installation's repository is invisible
    assert clock.slept_s == []


# ---- check runs ------------------------------------------------------------------------------


def _annotations(count: int) -> list[Annotation]:
    return [
        Annotation(f"tests/test_{i}.py", i + 1, i + 1, AnnotationLevel.WARNING, f"flaky {i}")
        for i in range(count)
    ]


async def test_check_run_limits_are_enforced(emu: Emulator, clock: FakeTime) -> None:
    body = CheckRunBody(
        name="FlakeGuard",
        head_sha="2" * 40,
        conclusion=CheckRunConclusion.NEUTRAL,
        title="3 flaky tests",
        summary="s" * 70_000,
        text="t" * 100_000,
        annotations=_annotations(120),
        actions=[Action("Quarantine all flaky tests now", "x" * 60, "quarantine")],
    )
    async with make_client(emu, clock) as gh:
        check_run_id = await gh.create_check_run(WIDGETS, body)
        found = await gh.find_check_run(WIDGETS, "2" * 40, "FlakeGuard")
        absent = await gh.find_check_run(WIDGETS, "2" * 40, "Other")
    stored = emu.check_runs
    assert found == check_run_id
    assert absent is None
    assert len(stored) == 1
    record = stored[0]
    assert record.writes == 3  # POST with 50 + two PATCHes with 50 and 20
    assert len(record.annotations) == 120
    assert record.summary is not None
    assert len(record.summary) == 65_535
    assert record.summary.endswith(TRUNCATION_MARKER)
    assert record.text is not None
    assert len(record.text) == 65_535
    assert record.conclusion == "neutral"
    assert len(record.actions[0]["label"]) <= 20
    assert len(record.actions[0]["description"]) <= 40


async def test_update_check_run_and_write_spacing(emu: Emulator, clock: FakeTime) -> None:
    async with make_client(emu, clock, write_spacing_s=0.5) as gh:
        check_run_id = await gh.create_check_run(
            WIDGETS,
            CheckRunBody(name="FlakeGuard", head_sha="1" * 40,
                         conclusion=CheckRunConclusion.SUCCESS, title="ok", summary="first"),
        )  # fmt: skip
        await gh.update_check_run(
            WIDGETS,
            check_run_id,
            CheckRunBody(name="FlakeGuard", head_sha="1" * 40,
                         conclusion=CheckRunConclusion.FAILURE, title="bad", summary="second",
                         annotations=_annotations(60)),
        )  # fmt: skip
    record = emu.check_runs[0]
    assert (record.conclusion, record.summary, len(record.annotations)) == ("failure", "second", 60)
    assert record.writes == 3
    # Writes to one installation are spaced: each write after the first waited first.
    assert len([s for s in clock.slept_s if s > 0]) == 2


def test_check_run_body_rejects_what_github_would() -> None:
    with pytest.raises(ValueError, match="identifier"):
        Action("Label", "Description", "x" * 21)
    with pytest.raises(ValueError, match="at most 3"):
        CheckRunBody(
            name="n", head_sha="s", conclusion=CheckRunConclusion.SUCCESS,
            actions=[Action("a", "b", f"id{i}") for i in range(4)],
        )  # fmt: skip


# ---- secrets ---------------------------------------------------------------------------------


async def test_tokens_never_appear_in_logs_or_errors(
    emu: Emulator,
    clock: FakeTime,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    emu.faults.add_fault(ARTIFACTS, FaultKind.SERVER_ERROR, count=None)
    messages = []
    async with make_client(emu, clock, retry_base_s=0.01) as gh:
        await gh.list_workflow_runs(WIDGETS)
        for call in (
            gh.list_run_artifacts(WIDGETS, 9002),
            gh.get_workflow_run(WIDGETS, 1),
            gh.download_artifact(WIDGETS, 1, io.BytesIO(), max_bytes=10),
        ):
            with pytest.raises((GitHubServerError, GitHubClientError)) as caught:
                await call
            messages += [str(caught.value), repr(caught.value)]
        messages.append(repr(gh))
        jwt_value = gh._jwt.jwt()
    tokens = list(emu.state.tokens)
    assert tokens, "the flow minted a token"
    captured = capsys.readouterr()
    haystack = "\n".join([caplog.text, captured.out, captured.err, *messages])
    for secret in [*tokens, jwt_value, emu.private_key_pem.splitlines()[1]]:
        assert secret not in haystack
    config = GitHubConfig(app_id="1", private_key_pem=emu.private_key_pem)
    assert "PRIVATE" not in repr(config)
