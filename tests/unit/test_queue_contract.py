from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from flakeguard.adapters.queue.names import (
    PRIORITY_NUMBERS,
    QueueName,
    UnknownQueueError,
    parse_queue_name,
    redis_queue_name,
)
from flakeguard.adapters.queue.payloads import (
    RecomputePayload,
    RunsAnalyzePayload,
    RunsIngestPayload,
)
from flakeguard.adapters.queue.runner import RetryPolicy, backoff_delay_ms, classify
from flakeguard.core.models import Priority
from flakeguard.errors import ErrorCategory, GitHubRateLimited, PermanentJobError

SPEC_INGEST = {
    "workflowRunId": 12345,
    "repository": {"owner": "acme", "repo": "project", "installationId": 67890},
    "priority": "high",
    "metadata": {
        "runStatus": "completed",
        "conclusion": "failure",
        "headSha": "abc1234",
        "headBranch": "main",
    },
}


@pytest.mark.parametrize(
    "raw", ["runs:ingest", "runs-ingest", "runs%3Aingest", "{runs-ingest}", "RUNS_INGEST"]
)
def test_every_spelling_of_a_queue_name(raw: str) -> None:
    assert parse_queue_name(raw) is QueueName.RUNS_INGEST


def test_unknown_queue_is_rejected_with_the_known_names() -> None:
    with pytest.raises(UnknownQueueError, match="known: runs-ingest"):
        parse_queue_name("runs:explode")


def test_cluster_names_are_hash_tagged() -> None:
    assert redis_queue_name(QueueName.POLLING, cluster=True) == "{polling}"
    assert redis_queue_name(QueueName.POLLING, cluster=False) == "polling"


def test_priorities_are_never_zero() -> None:
    assert sorted(PRIORITY_NUMBERS.values()) == [1, 2, 3, 4]
    assert PRIORITY_NUMBERS[Priority.CRITICAL] < PRIORITY_NUMBERS[Priority.LOW]


def test_spec_camelcase_payload_validates_and_round_trips() -> None:
    payload = RunsIngestPayload.model_validate(SPEC_INGEST)
    assert payload.workflow_run_id == 12345
    assert payload.repository.installation_id == 67890
    assert payload.priority is Priority.HIGH
    assert payload.metadata.head_branch == "main"
    assert payload.metadata.run_attempt == 1
    assert payload.dedup_key() == "ingest:acme/project:12345:1"
    assert RunsIngestPayload.model_validate(payload.to_job_data()) == payload
    assert payload.to_job_data()["workflowRunId"] == 12345


@pytest.mark.parametrize(
    "bad",
    [
        {**SPEC_INGEST, "workflowRunId": 0},
        {**SPEC_INGEST, "repository": {"owner": "-bad", "repo": "x"}},
        {**SPEC_INGEST, "repository": {"owner": "a", "repo": "../etc"}},
        {**SPEC_INGEST, "priority": "urgent"},
        {**SPEC_INGEST, "metadata": {"headBranch": "main\x00"}},
        {**SPEC_INGEST, "metadata": {"headSha": "not hex"}},
    ],
)
def test_hostile_payloads_are_rejected(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        RunsIngestPayload.model_validate(bad)


def test_analyze_and_recompute_payloads() -> None:
    analyze = RunsAnalyzePayload.model_validate(
        {
            "workflowRunId": 5,
            "repository": {"owner": "a", "repo": "b", "installationId": 1},
            "forceRecompute": True,
            "analysisConfig": {"lookbackDays": 14, "minRunsThreshold": 5},
        }
    )
    assert analyze.analysis_config.lookback_days == 14
    assert analyze.force_recompute
    scope = {"type": "class_pattern", "patterns": ["tests.api.*"], "lookbackDays": 7}
    recompute = RecomputePayload.model_validate(
        {
            "repository": {"owner": "a", "repo": "b"},
            "recomputeScope": scope,
            "options": {"batchSize": 50},
        }
    )
    assert recompute.options.batch_size == 50
    assert recompute.dedup_key().startswith("recompute:a/b:")
    with pytest.raises(ValidationError, match="needs at least one pattern"):
        RecomputePayload.model_validate(
            {"repository": {"owner": "a", "repo": "b"}, "recomputeScope": {"type": "test_pattern"}}
        )


def test_backoff_grows_is_jittered_and_capped() -> None:
    policy = RetryPolicy(base_delay_ms=5000, max_delay_ms=30000, multiplier=2, jitter=0.2)
    exact = [backoff_delay_ms(n, policy, lambda a, b: 1.0) for n in range(1, 6)]
    assert exact == [5000, 10000, 20000, 30000, 30000]
    low = [backoff_delay_ms(n, policy, lambda a, b: a) for n in range(1, 5)]
    high = [backoff_delay_ms(n, policy, lambda a, b: b) for n in range(1, 5)]
    assert low == [4000, 8000, 16000, 24000]
    assert high == [6000, 12000, 24000, 30000]
    rng = random.Random(7)
    samples = {backoff_delay_ms(1, policy, rng.uniform) for _ in range(50)}
    assert len(samples) > 10  # jitter really spreads retries
    assert all(4000 <= s <= 6000 for s in samples)


def test_error_classification() -> None:
    import redis.exceptions

    assert classify(PermanentJobError("x")) is ErrorCategory.VALIDATION
    assert classify(GitHubRateLimited("x", retry_after_s=3)) is ErrorCategory.RATE_LIMIT
    assert classify(redis.exceptions.ConnectionError("down")) is ErrorCategory.REDIS
    assert classify(MemoryError()) is ErrorCategory.SYSTEM
    assert classify(OSError(28, "No space left on device")) is ErrorCategory.SYSTEM
    assert classify(ConnectionRefusedError()) is ErrorCategory.NETWORK
    assert classify(ValueError("parse")) is ErrorCategory.PROCESSING


def test_outages_are_told_apart_from_bad_queries() -> None:
    import redis.exceptions
    from sqlalchemy import exc as sa_exc

    from flakeguard.adapters.queue.runner import is_outage

    assert is_outage(redis.exceptions.ConnectionError("down"))
    assert is_outage(sa_exc.OperationalError("SELECT 1", {}, OSError("refused")))
    assert is_outage(sa_exc.DBAPIError("SELECT 1", {}, Exception("x"), connection_invalidated=True))
    wrapped = RuntimeError("while storing")
    wrapped.__cause__ = ConnectionRefusedError()
    assert is_outage(wrapped)
    assert not is_outage(sa_exc.IntegrityError("INSERT", {}, Exception("duplicate key")))
    assert not is_outage(ValueError("bad data"))
