"""`/metrics` after real jobs (issue 7 item 3 acceptance), and the names the deploy files use.

The integration test runs real ingest + analyze jobs on a local run, one permanently failing
job and one job that fails once and is retried, drives GitHub calls through a `GitHubClient`
against the emulator with the runtime's metrics as observer, samples the queues once, then
scrapes `/metrics` through the app and checks every metric of `deploy/metrics.txt` with sane
values. The other tests need no services: the registry's names equal `deploy/metrics.txt`,
and the dashboards and alert rules only use series the registry exposes.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from flakeguard.adapters.db.engine import migrate
from flakeguard.adapters.github.client import GitHubClient, GitHubConfig
from flakeguard.adapters.local_source import LocalRunSource
from flakeguard.adapters.queue.names import ALL_QUEUES, QueueName
from flakeguard.adapters.queue.payloads import RepositoryRef, RunsIngestPayload
from flakeguard.adapters.sources import RunReports
from flakeguard.bootstrap import QUEUE_STATES, Runtime, open_runtime, sample_queues_once
from flakeguard.emulator import run_emulator
from flakeguard.errors import TransientJobError
from flakeguard.http.app import create_app
from flakeguard.observability import Metrics
from flakeguard.settings import Settings
from tests.conftest import FIXTURES, REPO_ROOT
from tests.support import make_settings, running_workers, wait_for, write_local_run
from tests.unit.test_deploy import promql_metric_names

DEPLOY = REPO_ROOT / "deploy"
SCENARIO = FIXTURES / "github" / "basic"
JUNIT = FIXTURES / "junit"

NOT_IN_SPEC = frozenset(
    {"flakeguard_worker_test_results_ingested_total", "flakeguard_worker_analysis_passes_total"}
)
"""Registry series beyond the spec's list (deploy/metrics.txt keeps exactly the spec's 16)."""
PROMETHEUS_SERIES = frozenset({"up"})
"""Series Prometheus adds to every target itself."""

FLIP_RUNS = (101, 102)
FLIP_REPORT = """<?xml version="1.0" encoding="utf-8"?>
<testsuite name="metrics" tests="2" failures="0" errors="0">
  <testcase classname="tests.test_flips" name="test_flips" file="tests/test_flips.py"
            time="0.2">{outcome}</testcase>
  <testcase classname="tests.test_flips" name="test_steady" file="tests/test_flips.py"
            time="0.1"/>
</testsuite>
"""
Samples = dict[str, list[tuple[dict[str, str], float]]]


# ---- the registry ----------------------------------------------------------------------------


def registry_families() -> dict[str, str]:
    """Exposed family name -> type, read from a fresh `Metrics()` registry's collectors.

    Counters are exposed as `<name>_total`; histograms keep their base name here.
    """
    families: dict[str, str] = {}
    for family in Metrics().registry.collect():
        name = family.name + "_total" if family.type == "counter" else family.name
        families[name] = family.type
    return families


def registry_series() -> frozenset[str]:
    """Every series name a scrape can contain (histograms as _bucket/_sum/_count)."""
    names: set[str] = set()
    for name, kind in registry_families().items():
        if kind == "histogram":
            names.update(name + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(name)
    return frozenset(names)


def spec_metrics() -> list[str]:
    lines = (DEPLOY / "metrics.txt").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip()]


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard_queries(path: Path) -> list[str]:
    """Panel targets and `label_values(metric, label)` variable queries of one dashboard."""
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    exprs = [
        str(target["expr"])
        for panel in _panels(dashboard.get("panels", []))
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if isinstance(query, str) and query.startswith("label_values("):
            exprs.append(query.removeprefix("label_values(").split(",")[0].strip(" )"))
    return exprs


def alert_exprs() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text(encoding="utf-8"))
    return [str(rule["expr"]) for group in rules["groups"] for rule in group["rules"]]


def test_deploy_metrics_txt_equals_the_registry() -> None:
    assert set(spec_metrics()) == set(registry_families()) - NOT_IN_SPEC


def test_registry_types_match_the_spec_suffixes() -> None:
    families = registry_families()
    for name, kind in families.items():
        assert (kind == "counter") == name.endswith("_total"), name
    histograms = {n for n, k in families.items() if k == "histogram"}
    assert histograms == {
        "flakeguard_worker_job_processing_duration_seconds",
        "flakeguard_worker_github_api_duration_seconds",
        "flakeguard_worker_flakiness_score",
    }


@pytest.mark.parametrize(
    "dashboard", sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")), ids=lambda p: p.name
)
def test_dashboard_queries_use_only_registry_series(dashboard: Path) -> None:
    exprs = dashboard_queries(dashboard)
    assert exprs, f"{dashboard.name} has no queries"
    used = {name for expr in exprs for name in promql_metric_names(expr)}
    assert used, dashboard.name
    unknown = used - registry_series() - PROMETHEUS_SERIES
    assert not unknown, f"{dashboard.name} queries series the worker never exposes: {unknown}"


def test_alert_rules_use_only_registry_series() -> None:
    used = {name for expr in alert_exprs() for name in promql_metric_names(expr)}
    assert used
    unknown = used - registry_series() - PROMETHEUS_SERIES
    assert not unknown, f"alerts.yml queries series the worker never exposes: {unknown}"


QUEUE_GAUGES = re.compile(r"\bflakeguard_worker_(?:queue_size|dlq_size)\b")
_AGGREGATORS = frozenset(
    {"sum", "min", "max", "avg", "count", "group", "stddev", "stdvar", "topk", "bottomk"}
)
_PER_REPLICA_SAFE = frozenset({"min", "max", "avg", "group", "topk", "bottomk"})
_WORD_BEFORE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*$")


def _matching_open(expr: str, close: int) -> int:
    depth = 0
    for i in range(close, -1, -1):
        if expr[i] == ")":
            depth += 1
        elif expr[i] == "(":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f"unbalanced parentheses in {expr!r}")


def enclosing_calls(expr: str, position: int) -> list[str]:
    """Functions and aggregations around `position`, innermost first ("" for bare brackets).

    `sum by (queue) (max by (queue, state) (m))` gives `["max", "sum"]` at `m`.
    """
    calls: list[str] = []
    depth = 0
    i = position - 1
    while i >= 0:
        char = expr[i]
        if char == ")":
            depth += 1
        elif char == "(" and depth > 0:
            depth -= 1
        elif char == "(":
            head = expr[:i].rstrip()
            if head.endswith(")"):  # `agg by (labels) (` : skip the grouping clause
                head = head[: _matching_open(head, len(head) - 1)].rstrip()
                head = re.sub(r"\b(?:by|without)$", "", head).rstrip()
            match = _WORD_BEFORE.search(head)
            calls.append(match.group(1) if match else "")
            i = match.start() if match else i
        i -= 1
    return calls


def queue_gauges_summed_per_replica(expr: str) -> list[str]:
    """Uses of queue_size/dlq_size whose first aggregation adds replicas up (sum, count)."""
    bad = []
    for match in QUEUE_GAUGES.finditer(expr):
        aggregations = [c for c in enclosing_calls(expr, match.start()) if c in _AGGREGATORS]
        if aggregations and aggregations[0] not in _PER_REPLICA_SAFE:
            bad.append(f"{aggregations[0]}(... {match.group(0)} ...)")
    return bad


def all_deploy_queries() -> list[tuple[str, str]]:
    queries = [
        (path.name, expr)
        for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
        for expr in dashboard_queries(path)
    ]
    queries += [("alerts.yml", expr) for expr in alert_exprs()]
    adapter = yaml.safe_load(
        (DEPLOY / "k8s" / "prometheus-adapter" / "values.yaml").read_text(encoding="utf-8")
    )
    for rule in adapter["rules"]["external"]:
        queries.append(("prometheus-adapter", str(rule["metricsQuery"])))
    return queries


def test_queue_gauge_checker_flags_a_plain_sum_over_replicas() -> None:
    assert queue_gauges_summed_per_replica("sum(flakeguard_worker_queue_size)")
    assert queue_gauges_summed_per_replica("sum by (queue) (rate(flakeguard_worker_dlq_size[5m]))")
    assert not queue_gauges_summed_per_replica(
        'sum by (queue) (max by (queue, state) (flakeguard_worker_queue_size{state="waiting"}))'
    )
    assert not queue_gauges_summed_per_replica(
        "max by (queue) (delta(flakeguard_worker_dlq_size[30m])) > 10"
    )
    assert not queue_gauges_summed_per_replica("flakeguard_worker_queue_size")


def test_deploy_queries_never_sum_queue_gauges_across_replicas() -> None:
    """Every replica reports the same queue gauges: take max/avg over instances, then sum."""
    queries = all_deploy_queries()
    assert any(QUEUE_GAUGES.search(expr) for _, expr in queries)
    bad = {
        (where, expr): found
        for where, expr in queries
        if (found := queue_gauges_summed_per_replica(expr))
    }
    assert not bad, bad


# ---- /metrics after real jobs ----------------------------------------------------------------


class FailsOnceSource:
    """A `RunSource` fake: the first open of `run_id` fails transiently, then it delegates."""

    def __init__(self, inner: LocalRunSource, run_id: int) -> None:
        self._inner = inner
        self._run_id = run_id
        self.failures = 0

    async def open_run(self, payload: RunsIngestPayload) -> RunReports:
        if payload.workflow_run_id == self._run_id and self.failures == 0:
            self.failures += 1
            raise TransientJobError("artifact listing timed out (test)")
        return await self._inner.open_run(payload)


@asynccontextmanager
async def metrics_runtime(settings: Settings, source: FailsOnceSource) -> AsyncIterator[Runtime]:
    async with open_runtime(settings, run_source=source) as runtime:
        await migrate(runtime.deps.engine)
        yield runtime


def scrape(text: str) -> Samples:
    samples: Samples = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name].append((dict(sample.labels), float(sample.value)))
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    matching = [v for lbl, v in samples.get(name, []) if labels.items() <= lbl.items()]
    assert matching, f"no sample {name}{labels}"
    return sum(matching)


async def _counts(runtime: Runtime, queue: QueueName) -> dict[str, int]:
    counts = await runtime.deps.producer.queues[queue].getJobCounts("completed", "failed")
    return {k: int(v) for k, v in counts.items()}


@pytest.mark.integration
async def test_metrics_endpoint_after_real_jobs_exposes_every_spec_metric(
    queue_prefix: str, redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    # One commit run twice: `test_flips` fails, then passes on the same code.
    for index, run_id in enumerate(FLIP_RUNS):
        outcome = "" if index % 2 else '<failure message="boom">trace</failure>'
        report = tmp_path / f"report-{run_id}" / "flips.xml"
        report.parent.mkdir()
        report.write_text(FLIP_REPORT.format(outcome=outcome), encoding="utf-8")
        write_local_run(
            runs,
            owner="acme",
            repo="metrics",
            run_id=run_id,
            jobs={"linux": [report, JUNIT / "pytest" / "junit.fail.xml"]},
        )
    settings = make_settings(
        redis_url=redis_url,
        database_url=sqlite_url,
        prefix=queue_prefix,
        data_dir=tmp_path,
        RETRY_DELAY_MS="100",
        MAX_RETRY_DELAY_MS="200",
    )
    source = FailsOnceSource(LocalRunSource(runs), run_id=102)
    repo = RepositoryRef(owner="acme", repo="metrics", installation_id=1)
    async with metrics_runtime(settings, source) as rt:
        producer = rt.deps.producer
        for run_id in (*FLIP_RUNS, 999):  # 999 has no folder: fails permanently (not found)
            await producer.ingest(RunsIngestPayload(workflow_run_id=run_id, repository=repo))
        async with running_workers(rt, [QueueName.RUNS_INGEST, QueueName.RUNS_ANALYZE]):

            async def settled() -> bool:
                ingest = await _counts(rt, QueueName.RUNS_INGEST)
                analyze = await _counts(rt, QueueName.RUNS_ANALYZE)
                return ingest == {"completed": 2, "failed": 1} and analyze["completed"] == 2

            await wait_for(settled, timeout_s=30)
        assert source.failures == 1

        async with run_emulator(SCENARIO) as emu:
            config = GitHubConfig(
                app_id=emu.app_id, private_key_pem=emu.private_key_pem, api_url=emu.api_url
            )
            async with GitHubClient(config, observer=rt.deps.metrics) as gh:
                installations = await gh.list_installations()
                await gh.list_installation_repositories(installations[0].id)

        previous: dict[str, tuple[float, int]] = {}
        await sample_queues_once(rt, previous)
        await sample_queues_once(rt, previous)  # the second call sets throughput

        transport = httpx.ASGITransport(app=create_app(rt.state))
        async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
            ready = await client.get("/health/ready")
            response = await client.get("/metrics")
    assert ready.status_code == 200, ready.text
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = scrape(response.text)

    # Every name of the spec, counters as _total, histograms as _bucket/_count/_sum.
    histograms = {n for n, k in registry_families().items() if k == "histogram"}
    for metric in spec_metrics():
        wanted = (
            [metric + s for s in ("_bucket", "_count", "_sum")]
            if metric in histograms
            else [metric]
        )
        for name in wanted:
            assert samples.get(name), f"/metrics has no {name}"

    p = "flakeguard_worker_"
    processed = p + "jobs_processed_total"
    assert value(samples, processed, queue="runs-ingest", status="completed") == 2
    assert value(samples, processed, queue="runs-ingest", status="failed") == 1
    assert value(samples, processed, queue="runs-ingest", status="retried") == 1
    assert value(samples, processed, queue="runs-analyze", status="completed") == 2
    # The retried attempt counts under its category; the permanent failure is no retry.
    assert value(samples, p + "job_retries_total", queue="runs-ingest", error_type="network") == 1
    assert value(samples, p + "job_retries_total") == 1
    duration = p + "job_processing_duration_seconds"
    # 2 completed + 1 retried attempt + 1 permanent failure.
    assert value(samples, duration + "_count", queue="runs-ingest") == 4
    assert value(samples, duration + "_sum", queue="runs-ingest") > 0
    assert value(samples, duration + "_sum", queue="runs-analyze") > 0
    assert value(samples, duration + "_bucket", queue="runs-analyze", le="+Inf") == 2
    for queue in (QueueName.RUNS_INGEST, QueueName.RUNS_ANALYZE):
        assert value(samples, p + "jobs_in_progress", queue=queue.value) == 0
    present = {(lbl["queue"], lbl["state"]) for lbl, _ in samples[p + "queue_size"]}
    assert present >= {(q.value, state) for q in ALL_QUEUES for state in QUEUE_STATES}
    for queue in ALL_QUEUES:
        assert value(samples, p + "queue_throughput", queue=queue.value) >= 0
        assert value(samples, p + "dlq_size", queue=queue.value) >= 0
    assert value(samples, p + "queue_size", queue="runs-ingest", state="completed") == 2
    assert value(samples, p + "queue_size", queue="runs-ingest", state="failed") == 1
    assert value(samples, p + "dlq_size", queue="runs-ingest") == 1
    assert value(samples, p + "dlq_size", queue="runs-analyze") == 0
    assert value(samples, p + "queue_size", queue="runs-analyze", state="completed") == 2
    assert value(samples, p + "memory_usage_bytes", type="rss") > 1_000_000
    assert value(samples, p + "cpu_usage_percent") >= 0
    assert value(samples, p + "health") == 1
    tests_analyzed = value(samples, p + "tests_analyzed_total")
    assert tests_analyzed > 0
    assert value(samples, p + "flakiness_score_count") == tests_analyzed
    assert 0 <= value(samples, p + "flakiness_score_sum") <= tests_analyzed
    # Two runs stay below the flaky threshold (min 10 runs): the counter is there, at 0 today.
    assert value(samples, p + "flaky_tests_detected_total") >= 0
    assert value(samples, p + "test_results_ingested_total") > 0
    # Two analyses: a pass each, or one shared pass when they overlapped.
    assert 1 <= value(samples, p + "analysis_passes_total") <= 2
    # GitHub calls went through the runtime's observer.
    calls = p + "github_api_calls_total"
    assert value(samples, calls, endpoint="GET /app/installations", status="200") >= 1
    assert value(samples, calls, endpoint="GET /installation/repositories", status="200") >= 1
    assert value(samples, p + "github_api_duration_seconds_count") == value(samples, calls)
    assert value(samples, p + "github_api_duration_seconds_sum") > 0
    remaining = samples[p + "github_rate_limit_remaining"]
    assert remaining
    assert all(0 <= v <= 15_000 for _, v in remaining)
