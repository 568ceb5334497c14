"""Check-run content: golden markdown, GitHub limits, and the Checks API request schema.

Golden files live in tests/fixtures/reporting/<case>.md; regenerate them after an intended
change with `FLAKEGUARD_UPDATE_GOLDEN=1 pytest tests/unit/test_reporting.py` and review the diff.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from flakeguard.core.models import Verdict
from flakeguard.core.reporting import (
    AnnotationLevel,
    CheckRunOutput,
    Conclusion,
    ReportCounts,
    ReportLimits,
    ReportRow,
    RunReport,
    Section,
    actions_payload,
    annotation_pages,
    output_payload,
    render_check_run,
    section_of,
)

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "reporting"
OPENAPI = (
    Path(__file__).resolve().parents[1] / "fixtures" / "github" / "openapi" / "rest-subset.json"
)
UPDATE = os.environ.get("FLAKEGUARD_UPDATE_GOLDEN") == "1"
SHA = "9f1c2e3d4b5a69788796a5b4c3d2e1f0a9b8c7d6"


def row(
    name: str,
    verdict: Verdict,
    *,
    failed_in_run: bool,
    quarantined: bool = False,
    score: float = 0.0,
    passed: int = 100,
    failed: int = 0,
    file: str | None = "tests/test_api.py",
    line: int | None = None,
    message: str | None = None,
    class_name: str = "tests.test_api",
) -> ReportRow:
    return ReportRow(
        test_key=f"key-{name}",
        name=name,
        class_name=class_name,
        file=file,
        verdict=verdict,
        score=score,
        quarantined=quarantined,
        passed=passed,
        failed=failed,
        failed_in_run=failed_in_run,
        message=message,
        line=line,
    )


MIXED_ROWS = (
    row(
        "test_login_redirect",
        Verdict.HEALTHY,
        failed_in_run=True,
        line=42,
        message="AssertionError: expected 302, got 500\nassert 500 == 302",
    ),
    row(
        "test_upload_retry",
        Verdict.SUSPECTED,
        failed_in_run=True,
        score=0.31,
        passed=57,
        failed=2,
        line=118,
        message="TimeoutError: upload did not finish in 5 s",
    ),
    row(
        "test_cache_eviction",
        Verdict.FLAKY,
        failed_in_run=True,
        quarantined=True,
        score=0.72,
        passed=136,
        failed=4,
        file="tests/test_cache.py",
        line=9,
        class_name="tests.test_cache",
        message="AssertionError: 3 != 4",
    ),
    row(
        "test_metrics_scrape",
        Verdict.FLAKY,
        failed_in_run=False,
        quarantined=True,
        score=0.55,
        passed=410,
        failed=12,
        class_name="tests.test_metrics",
        file=None,
    ),
    row(
        "test_migrations_head",
        Verdict.BROKEN,
        failed_in_run=True,
        score=0.12,
        passed=3,
        failed=9,
        file="tests/test_db.py",
        class_name="tests.test_db",
        message="alembic.util.exc.CommandError: Multiple head revisions",
    ),
    row("test_websocket_ping", Verdict.FLAKY, failed_in_run=False, score=0.48, passed=88, failed=3),
)


def mixed_report() -> RunReport:
    return RunReport(
        repo="acme/shop",
        run_id=9120031,
        attempt=2,
        head_sha=SHA,
        rows=MIXED_ROWS,
        counts=ReportCounts(total=412, passed=404, failed=4, skipped=4),
    )


def green_report() -> RunReport:
    return RunReport("acme/shop", 9120032, 1, SHA, (), ReportCounts(412, 408, 0, 4))


def many_failures_report(k: int) -> RunReport:
    rows = tuple(
        row(
            f"test_case_{i:03d}",
            Verdict.HEALTHY,
            failed_in_run=True,
            file=f"tests/test_mod{i % 7}.py",
            line=i + 1,
            message=f"AssertionError: case {i} failed\n" + "detail line\n" * 20,
        )
        for i in range(k)
    )
    return RunReport("acme/shop", 1, 1, SHA, rows, ReportCounts(k, 0, k, 0))


def render_golden(output: CheckRunOutput) -> str:
    """The whole check-run content as one markdown document (what the golden files hold)."""
    parts = [
        f"<!-- conclusion: {output.conclusion.value} -->",
        f"<!-- title: {output.title} -->",
        "",
        output.summary,
        "",
        "<!-- text -->",
        output.text,
        "",
        "<!-- annotations -->",
    ]
    for a in output.annotations:
        first_line = a.message.splitlines()[0]
        parts.append(
            f"- {a.annotation_level.value} {a.path}:{a.start_line} {a.title} | {first_line}"
        )
    parts.append("<!-- actions -->")
    parts.extend(f"- [{a.label}] {a.identifier}: {a.description}" for a in output.actions)
    return "\n".join(parts) + "\n"


@pytest.mark.parametrize(
    ("case", "report", "limits"),
    [
        ("mixed", mixed_report(), ReportLimits()),
        ("all_green", green_report(), ReportLimits()),
        (
            "truncated",
            many_failures_report(40),
            ReportLimits(max_summary_chars=1500, max_text_chars=1200),
        ),
    ],
)
def test_golden_markdown(case: str, report: RunReport, limits: ReportLimits) -> None:
    actual = render_golden(render_check_run(report, limits))
    path = GOLDEN / f"{case}.md"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
    assert actual == path.read_text(encoding="utf-8")


def test_sections_and_conclusion_of_the_mixed_report() -> None:
    out = render_check_run(mixed_report())
    assert out.conclusion is Conclusion.FAILURE
    assert out.title == "2 new failures, 1 broken on main, 1 known flaky muted"
    sections = {r.name: section_of(r) for r in MIXED_ROWS}
    assert sections == {
        "test_login_redirect": Section.NEW_FAILURES,
        "test_upload_retry": Section.NEW_FAILURES,
        "test_cache_eviction": Section.KNOWN_FLAKY,
        "test_metrics_scrape": Section.KNOWN_FLAKY,
        "test_migrations_head": Section.BROKEN_ON_DEFAULT,
        "test_websocket_ping": Section.POSSIBLY_FLAKY,
    }
    assert "`tests.test_cache::test_cache_eviction` — 2.9% (passed 136, failed 4)" in out.summary
    assert [a.annotation_level for a in out.annotations] == [
        AnnotationLevel.FAILURE,
        AnnotationLevel.FAILURE,
        AnnotationLevel.WARNING,
        AnnotationLevel.NOTICE,
    ]
    assert [a.identifier for a in out.actions] == ["quarantine", "unquarantine"]


@pytest.mark.parametrize(
    ("rows", "conclusion"),
    [
        ((), Conclusion.SUCCESS),
        (
            (row("a", Verdict.FLAKY, failed_in_run=True, quarantined=True),),
            Conclusion.SUCCESS,
        ),  # muted
        (
            (row("a", Verdict.BROKEN, failed_in_run=True),),
            Conclusion.NEUTRAL,
        ),  # not this change's fault
        (
            (row("a", Verdict.FLAKY, failed_in_run=True),),
            Conclusion.FAILURE,
        ),  # not quarantined: blocks
        (
            (row("a", Verdict.SUSPECTED, failed_in_run=False),),
            Conclusion.SUCCESS,
        ),  # passed on retry
    ],
)
def test_conclusion_rules(rows: tuple[ReportRow, ...], conclusion: Conclusion) -> None:
    report = RunReport("o/r", 1, 1, SHA, rows, ReportCounts(10, 10 - len(rows), len(rows), 0))
    assert render_check_run(report).conclusion is conclusion


def test_large_reports_stay_under_the_limits_and_keep_every_annotation() -> None:
    report = many_failures_report(2_000)
    out = render_check_run(report)
    assert len(out.summary) <= 65_535
    assert len(out.text) <= 65_535
    assert out.summary.rstrip().endswith("more")
    assert "... and " in out.text
    assert len(out.annotations) == 2_000
    pages = annotation_pages(out)
    assert [len(p) for p in pages] == [50] * 40
    assert len(out.actions) <= 3


def test_truncation_keeps_every_section_heading() -> None:
    rows = tuple(
        row(f"t{i}", Verdict.HEALTHY, failed_in_run=True, message="x" * 50) for i in range(50)
    )
    rows += tuple(
        row(f"q{i}", Verdict.FLAKY, failed_in_run=False, quarantined=True) for i in range(50)
    )
    report = RunReport("o/r", 1, 1, SHA, rows, ReportCounts(100, 50, 50, 0))
    out = render_check_run(report, ReportLimits(max_summary_chars=1_200))
    assert len(out.summary) <= 1_200
    assert "### New failures (50)" in out.summary
    assert "### Known flaky (quarantined) (50)" in out.summary
    assert out.summary.count("... and ") == 2


def test_rendering_is_deterministic_whatever_the_row_order() -> None:
    rows = list(MIXED_ROWS)
    expected = render_check_run(mixed_report())
    for seed in range(5):
        random.Random(seed).shuffle(rows)
        report = RunReport("acme/shop", 9120031, 2, SHA, tuple(rows), mixed_report().counts)
        assert render_check_run(report) == expected


def test_annotations_need_a_file_and_clip_long_messages() -> None:
    rows = (
        row("nofile", Verdict.HEALTHY, failed_in_run=True, file=None),
        row("long", Verdict.HEALTHY, failed_in_run=True, message="y" * 100_000, line=0),
    )
    out = render_check_run(RunReport("o/r", 1, 1, SHA, rows, ReportCounts(2, 0, 2, 0)))
    assert [a.title for a in out.annotations] == ["tests.test_api::long"]
    assert len(out.annotations[0].message) <= ReportLimits().max_annotation_message_chars
    assert out.annotations[0].start_line == 1


# --- the Checks API request schema ---------------------------------------------------------


def _openapi_to_jsonschema(node: Any) -> Any:
    """OAS 3.0 -> JSON Schema 2020-12: components refs to $defs, `nullable` to a null type."""
    if isinstance(node, list):
        return [_openapi_to_jsonschema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _openapi_to_jsonschema(value) for key, value in node.items() if key != "nullable"}
    ref = out.get("$ref")
    if isinstance(ref, str):
        out["$ref"] = ref.replace("#/components/schemas/", "#/$defs/")
    if node.get("nullable") is True:
        if "type" in out:
            kinds = out["type"] if isinstance(out["type"], list) else [out["type"]]
            out["type"] = [*kinds, "null"]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


def _request_validator(path: str, method: str) -> Draft202012Validator:
    spec = json.loads(OPENAPI.read_text(encoding="utf-8"))
    body = spec["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
    schema = _openapi_to_jsonschema(body)
    schema["$defs"] = _openapi_to_jsonschema(spec.get("components", {}).get("schemas", {}))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


@pytest.mark.parametrize("report", [mixed_report(), green_report(), many_failures_report(120)])
def test_create_and_update_bodies_match_the_checks_api_schema(report: RunReport) -> None:
    if not OPENAPI.exists():
        pytest.fail(f"missing {OPENAPI}")
    create = _request_validator("/repos/{owner}/{repo}/check-runs", "post")
    update = _request_validator("/repos/{owner}/{repo}/check-runs/{check_run_id}", "patch")
    out = render_check_run(report)
    first, *rest = annotation_pages(out)
    body = {
        "name": "FlakeGuard",
        "head_sha": report.head_sha,
        "status": "completed",
        "conclusion": out.conclusion.value,
        "output": output_payload(out, first),
        "actions": actions_payload(out),
    }
    errors = sorted(e.message for e in create.iter_errors(body))
    assert errors == []
    for page in rest:
        patch = {"conclusion": out.conclusion.value, "output": output_payload(out, page)}
        assert sorted(e.message for e in update.iter_errors(patch)) == []
    # the schema catches what the limits guard against
    too_many = dict(body, output=output_payload(out, out.annotations[:51] * 51))
    if len(out.annotations) > 50:
        assert list(create.iter_errors(too_many))
