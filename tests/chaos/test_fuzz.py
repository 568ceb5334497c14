"""Fuzzed webhook bodies and job payloads (hypothesis, derandomized): never a 5xx, never a crash."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from bullmq import Job
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from flakeguard.adapters.github.webhooks import signature_for
from flakeguard.adapters.queue.connection import target_from_url
from flakeguard.adapters.queue.names import QueueName
from flakeguard.adapters.queue.payloads import RunsIngestPayload
from flakeguard.adapters.queue.producer import JobPolicy, JobProducer
from flakeguard.adapters.queue.runner import JobContext, QueueHandler, QueueRunner, WorkerOptions
from flakeguard.http.app import create_app
from flakeguard.observability import Metrics
from tests.support import make_settings, runtime_for, wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(90)]
SECRET = "fuzz-secret"
FUZZ = settings(
    max_examples=3,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],  # each example runs a runtime: no shrinking
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

# JSON carries neither NaN nor infinity: no producer can send them, so none are generated.
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | finite_floats | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
near_run_event = st.fixed_dictionaries(
    {
        "action": st.sampled_from(["completed", "requested", "in_progress", "", "x" * 300]),
        "workflow_run": json_values
        | st.fixed_dictionaries(
            {
                "id": st.integers() | st.text(max_size=10),
                "run_attempt": st.integers() | st.none(),
                "head_sha": st.text(max_size=70),
                "status": st.text(max_size=20),
                "conclusion": st.text(max_size=20) | st.none(),
            }
        ),
        "repository": json_values
        | st.fixed_dictionaries({"full_name": st.text(max_size=60), "name": st.text(max_size=20)}),
        "installation": json_values | st.fixed_dictionaries({"id": st.integers()}),
    }
)
bodies = st.one_of(
    st.binary(max_size=1500),
    json_values.map(lambda v: json.dumps(v).encode()),
    near_run_event.map(lambda v: json.dumps(v).encode()),
)
deliveries = st.tuples(
    bodies,
    st.sampled_from(
        ["workflow_run", "check_run", "installation", "installation_repositories", "ping", "push"]
    )
    | st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=20),
    st.sampled_from(["signed", "unsigned", "wrong"]),
)


@FUZZ
@given(batch=st.lists(deliveries, min_size=40, max_size=40))
def test_fuzzed_webhook_bodies_never_answer_5xx(
    batch: list[tuple[bytes, str, str]],
    queue_prefix: str,
    redis_url: str,
    pg_url: str,
    tmp_path: Path,
) -> None:
    async def go() -> list[int]:
        config = make_settings(
            redis_url=redis_url,
            database_url=pg_url,
            prefix=queue_prefix,
            data_dir=tmp_path,
            GITHUB_WEBHOOK_SECRET=SECRET,
        )
        statuses = []
        async with runtime_for(config, runs_root=tmp_path) as runtime:
            transport = httpx.ASGITransport(app=create_app(runtime.state))
            async with httpx.AsyncClient(transport=transport, base_url="http://w") as client:
                for body, event, signing in batch:
                    headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": uuid.uuid4().hex}
                    if signing == "signed":
                        headers["X-Hub-Signature-256"] = signature_for(SECRET, body)
                    elif signing == "wrong":
                        headers["X-Hub-Signature-256"] = "sha256=" + "0" * 64
                    response = await client.post("/webhooks/github", content=body, headers=headers)
                    statuses.append(response.status_code)
        return statuses

    statuses = asyncio.run(go())
    assert len(statuses) == len(batch)
    assert all(s < 500 for s in statuses), statuses
    for (_, _, signing), status in zip(batch, statuses, strict=True):
        if signing != "signed":
            assert 400 <= status < 500, (signing, status)


job_payloads = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {
            "workflowRunId": st.integers() | st.text(max_size=12) | st.none(),
            "repository": json_values
            | st.fixed_dictionaries(
                {
                    "owner": st.text(max_size=45),
                    "repo": st.text(max_size=20),
                    "installationId": st.integers() | st.none(),
                }
            ),
            "priority": st.sampled_from(["critical", "high", "normal", "low", "urgent", 3]),
            "metadata": json_values
            | st.fixed_dictionaries({"runAttempt": st.integers(), "headSha": st.text(max_size=70)}),
        }
    ),
)


@FUZZ
@given(payloads=st.lists(job_payloads, min_size=30, max_size=30))
def test_fuzzed_job_payloads_fail_as_validation_or_succeed(
    payloads: list[Any], redis_url: str
) -> None:
    prefix = f"fgfuzz-{uuid.uuid4().hex[:10]}"

    async def go() -> tuple[list[str], list[tuple[bool, str | None]]]:
        producer = JobProducer(target_from_url(redis_url), JobPolicy(prefix=prefix))
        handled: list[str] = []

        async def accept(payload: RunsIngestPayload, ctx: JobContext) -> Mapping[str, Any]:
            handled.append(ctx.job_id)
            return {"ok": True}

        runner = QueueRunner(
            target_from_url(redis_url),
            QueueHandler(QueueName.RUNS_INGEST, RunsIngestPayload, accept, concurrency=4),
            WorkerOptions(prefix=prefix),
            Metrics(),
        )
        queue = producer.queues[QueueName.RUNS_INGEST]
        await runner.start()
        try:
            jobs = [await queue.add("process-run", p, {"attempts": 3}) for p in payloads]

            async def settled() -> bool:
                states = [await queue.getJobState(j.id) for j in jobs]
                return all(s in ("completed", "failed") for s in states)

            await wait_for(settled, timeout_s=30)
            outcomes = []
            for job in jobs:
                fresh = await Job.fromId(queue, job.id)
                outcomes.append((await fresh.isCompleted(), fresh.failedReason))
            return handled, outcomes
        finally:
            await runner.close(5)
            client = target_from_url(redis_url).client()
            keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
            if keys:
                await client.delete(*keys)
            await client.aclose()
            await producer.close()

    handled, outcomes = asyncio.run(go())
    for payload, (completed, reason) in zip(payloads, outcomes, strict=True):
        valid = isinstance(payload, dict) and _validates(payload)
        if valid:
            assert completed, reason
        else:
            assert not completed
            assert reason is not None
            assert reason.startswith("[validation]"), reason
    assert len(handled) == sum(1 for c, _ in outcomes if c)


def _validates(payload: dict[str, Any]) -> bool:
    try:
        RunsIngestPayload.model_validate(payload)
    except ValueError:
        return False
    return True
