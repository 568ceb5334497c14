"""`flakeguard queues ...` and `flakeguard enqueue ...` against the real Redis (issue 7 item 4).

The commands run through the real `flakeguard` typer app with the environment a shell would
give them; failed jobs are made by a real worker between commands.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from flakeguard.cli import app
from flakeguard.settings import load_settings
from tests.integration.test_queue_admin import fail_jobs
from tests.support import runtime_for

pytestmark = pytest.mark.integration


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch,
    queue_prefix: str,
    redis_url: str,
    sqlite_url: str,
    tmp_path: Path,
) -> dict[str, str]:
    values = {
        "REDIS_URL": redis_url,
        "QUEUE_PREFIX": queue_prefix,
        "DATABASE_URL": sqlite_url,
        "FLAKEGUARD_DATA_DIR": str(tmp_path),
        "POLLING_ENABLED": "false",
        "LOG_LEVEL": "warn",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def ok_json(*args: str) -> Any:
    result = cli(*args, "--json")
    assert result.exit_code == 0, (args, result.stdout, result.stderr)
    return json.loads(result.stdout)


def make_failed_jobs(env: dict[str, str], run_ids: range) -> list[str]:
    async def go() -> list[str]:
        async with runtime_for(load_settings(env)) as rt:
            return await fail_jobs(rt, run_ids)

    return asyncio.run(go())


def test_enqueue_commands_validate_deduplicate_and_show_in_stats(env: dict[str, str]) -> None:
    ingest = ("enqueue", "ingest", "--repo", "acme/project", "--run-id", "5", "--priority", "high")
    first = ok_json(*ingest)
    assert first == {"queue": "runs-ingest", "job_id": first["job_id"], "deduplicated": False}
    again = cli(*ingest)
    assert again.exit_code == 0
    assert f"already pending: runs-ingest job {first['job_id']}" in again.stdout
    analyze = ok_json("enqueue", "analyze", "--repo", "acme/project", "--run-id", "5")
    assert analyze["queue"] == "runs-analyze"
    recompute = ok_json(
        "enqueue", "recompute", "--repo", "acme/project", "--scope", "test_pattern",
        "--pattern", "test_login*", "--pattern", "test_cart*", "--lookback-days", "7",
        "--batch-size", "100",
    )  # fmt: skip
    assert recompute["queue"] == "tests-recompute"

    stats = {row["queue"]: row for row in ok_json("queues", "stats")}
    assert [stats[q]["waiting"] for q in ("runs-ingest", "runs-analyze", "tests-recompute")] == [
        1,
        1,
        1,
    ]
    job = ok_json("queues", "job", "runs:ingest", first["job_id"])
    assert job["data"]["priority"] == "high"
    assert job["priority"] == 2
    recompute_job = ok_json("queues", "job", "tests:recompute", recompute["job_id"])
    assert recompute_job["data"]["recomputeScope"] == {
        "type": "test_pattern",
        "patterns": ["test_login*", "test_cart*"],
        "lookbackDays": 7,
    }
    assert recompute_job["data"]["options"]["batchSize"] == 100
    table = cli("queues", "stats")
    assert table.exit_code == 0
    assert "tests-recompute" in table.stdout
    assert "waiting" in table.stdout


def test_invalid_arguments_exit_2_with_one_line(env: dict[str, str]) -> None:
    bad_repo = cli("enqueue", "ingest", "--repo", "not-a-repo", "--run-id", "5")
    assert bad_repo.exit_code == 2
    assert "invalid job: repo" in bad_repo.stderr
    no_pattern = cli("enqueue", "recompute", "--repo", "acme/p", "--scope", "class_pattern")
    assert no_pattern.exit_code == 2
    assert "needs at least one pattern" in no_pattern.stderr
    unknown = cli("queues", "failed", "runs:egest")
    assert unknown.exit_code == 2
    assert "known: runs-ingest, runs-analyze, tests-recompute, polling" in unknown.stderr
    assert ok_json("queues", "stats", "runs-ingest") == [
        {
            "queue": "runs-ingest",
            "waiting": 0,
            "active": 0,
            "completed": 0,
            "failed": 0,
            "delayed": 0,
            "paused": False,
        }
    ]


def test_failed_retry_delete_retry_failed_pause_resume_clean_and_retention(
    env: dict[str, str],
) -> None:
    ids = make_failed_jobs(env, range(1, 6))
    page = ok_json("queues", "failed", "runs:ingest", "--limit", "2")
    assert page["total"] == 5
    assert len(page["jobs"]) == 2
    assert page["jobs"][0]["error_category"] == "poisoned_input"
    assert page["jobs"][0]["failed_reason"].startswith("[poisoned_input] run ")
    table = cli("queues", "failed", "runs%3Aingest")
    assert table.exit_code == 0
    assert "failed jobs 1-5 of 5" in table.stdout
    assert "poisoned_input" in table.stdout

    retried = cli("queues", "retry", "runs:ingest", ids[0])
    assert retried.exit_code == 0, retried.stderr
    assert f"retried runs-ingest job {ids[0]}: now prioritized" in retried.stdout
    refused = cli("queues", "retry", "runs:ingest", ids[0])
    assert refused.exit_code == 1
    assert "is prioritized, not failed" in refused.stderr
    missing = cli("queues", "retry", "runs:ingest", "999999")
    assert missing.exit_code == 1
    assert "not found" in missing.stderr

    assert ok_json("queues", "delete", "runs-ingest", ids[1])["deleted"] is True
    assert ok_json("queues", "retry-failed", "runs:ingest") == {
        "queue": "runs-ingest",
        "retried": 3,
    }
    assert ok_json("queues", "pause", "runs:ingest")["paused"] is True
    assert ok_json("queues", "stats", "runs-ingest")[0]["paused"] is True
    resumed = cli("queues", "resume", "runs:ingest")
    assert resumed.exit_code == 0
    assert "resumed runs-ingest (4 waiting)" in resumed.stdout

    # The four waiting jobs fail again beside three new ones.
    more = make_failed_jobs(env, range(10, 13))
    assert ok_json("queues", "stats", "runs-ingest")[0]["failed"] == 7
    cleaned = ok_json(
        "queues", "clean", "runs:ingest", "--state", "failed", "--grace-s", "0", "--limit", "2"
    )
    assert len(cleaned["removed"]) == 2
    assert set(cleaned["removed"]) <= {ids[0], *ids[2:], *more}
    retention = ok_json("queues", "retention", "runs-ingest")
    # Nothing is 14 days old and 5 failures are under REMOVE_ON_FAIL (50): all are kept.
    assert retention == [{"queue": "runs-ingest", "removed_by_age": 0, "removed_by_count": 0}]
    assert ok_json("queues", "stats", "runs-ingest")[0]["failed"] == 5


def test_unreachable_redis_is_one_clear_line_and_exit_1(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2@127.0.0.1:1/0")
    result = cli("queues", "stats")
    assert result.exit_code == 1
    assert result.stderr.startswith("flakeguard: cannot reach Redis")
    assert "hunter2" not in result.stderr
    assert result.stdout == ""
