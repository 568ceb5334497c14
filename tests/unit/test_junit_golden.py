"""Every corpus fixture parses to its reviewed golden JSON; retry evidence asserted by hand."""

from __future__ import annotations

import csv
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest

from flakeguard.core.junit import ProblemKind, ReportReader, parse_bytes
from flakeguard.core.models import CaseResult, Outcome

# Every test here runs on both parser loops (tests/unit/conftest.py).
pytestmark = pytest.mark.usefixtures("parser_implementation")

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "junit"


def _load_renderer() -> Callable[[str], dict[str, object]]:
    spec = importlib.util.spec_from_file_location(
        "junit_regenerate_golden", FIXTURES / "regenerate_golden.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return cast(Callable[[str], dict[str, object]], module.render_report)


render_report = _load_renderer()


def _manifest() -> list[str]:
    with (FIXTURES / "MANIFEST.tsv").open(encoding="utf-8", newline="") as handle:
        return [row["file"] for row in csv.DictReader(handle, delimiter="\t")]


FILES = _manifest()


def _parse(relative: str) -> tuple[list[CaseResult], ReportReader]:
    with (FIXTURES / relative).open("rb") as stream:
        reader = ReportReader(stream, relative)
        return list(reader), reader


def _case(cases: list[CaseResult], name: str, class_name: str | None = None) -> CaseResult:
    found = [c for c in cases if c.name == name and class_name in (None, c.class_name)]
    assert len(found) == 1, [c.name for c in found]
    return found[0]


def _outcomes(case: CaseResult) -> list[Outcome]:
    return [attempt.outcome for attempt in case.attempts]


def test_manifest_lists_every_fixture_once() -> None:
    on_disk = sorted(
        str(path.relative_to(FIXTURES)) for path in FIXTURES.rglob("*.xml") if path.is_file()
    )
    assert sorted(FILES) == on_disk
    assert len(FILES) == 108


@pytest.mark.parametrize("relative", FILES)
def test_fixture_matches_golden(relative: str) -> None:
    golden = json.loads((FIXTURES / f"{relative}.expected.json").read_text(encoding="utf-8"))
    assert render_report(relative) == golden


@pytest.mark.parametrize(
    ("relative", "kind"),
    [
        ("pytest/corrupt-xml.xml", ProblemKind.TRUNCATED),
        ("edge/windows.junit.xml", ProblemKind.NOT_XML),
        ("edge/non-junit.xml", ProblemKind.NOT_JUNIT),
        ("dotnet/NUnit-simple.xml", ProblemKind.NOT_JUNIT),
        ("dotnet/testcase3.xml", ProblemKind.NOT_JUNIT),
        ("security/testXxe-xxe.xml", ProblemKind.DOCTYPE),
        ("security/testXxe-oob.xml", ProblemKind.NOT_XML),
    ],
)
def test_broken_fixtures_give_a_problem(relative: str, kind: ProblemKind) -> None:
    cases, reader = _parse(relative)
    assert reader.problem is not None
    assert reader.problem_kind is kind
    assert reader.problem.reason.startswith(kind.value)
    assert reader.problem.source == relative
    assert reader.problem.partial == bool(cases)


def test_every_other_fixture_parses_without_problem() -> None:
    broken = {
        "pytest/corrupt-xml.xml",
        "edge/windows.junit.xml",
        "edge/non-junit.xml",
        "dotnet/NUnit-simple.xml",
        "dotnet/testcase3.xml",
        "security/testXxe-xxe.xml",
        "security/testXxe-oob.xml",
    }
    problems = {f: r.problem for f in FILES if f not in broken for _, r in [_parse(f)] if r.problem}
    assert problems == {}


def test_truncated_pytest_keeps_the_cases_read_before_the_cut() -> None:
    cases, reader = _parse("pytest/corrupt-xml.xml")
    assert reader.problem is not None
    assert reader.problem.partial
    assert [(c.name, c.outcome) for c in cases] == [
        ("test_check_shape_compatibility", Outcome.PASSED)
    ]


def test_counts_come_from_cases_not_suite_attributes() -> None:
    # The suite says tests="23" (it counts attempts); there are 21 tests.
    cases, reader = _parse("pytest/generated-pytest-rerunfailures.xml")
    assert b'tests="23"' in (FIXTURES / "pytest/generated-pytest-rerunfailures.xml").read_bytes()
    assert reader.stats.cases == len(cases) == 21
    assert reader.stats.attempts == sum(len(c.attempts) for c in cases) == 40


# -- retry evidence -------------------------------------------------------------------------


def test_surefire_acme_flaky_failure_and_flaky_error_before_the_pass() -> None:
    cases, _ = _parse("surefire/TEST-org.acme.FlakyTest.xml")
    flaky = _case(cases, "testFlaky")
    assert _outcomes(flaky) == [
        Outcome.FAILED,
        Outcome.FAILED,
        Outcome.FAILED,
        Outcome.ERROR,
        Outcome.PASSED,
    ]
    assert flaky.is_flaky_in_report
    assert flaky.attempts[0].message == "expected: <1> but was: <0>"
    assert flaky.attempts[0].failure_type == "org.opentest4j.AssertionFailedError"
    assert all(a.signature for a in flaky.attempts[:-1])
    assert flaky.final.duration_s == pytest.approx(0.034)
    stable = _case(cases, "testStable")
    assert _outcomes(stable) == [Outcome.PASSED]
    assert not stable.is_flaky_in_report


def test_surefire_gh237_flaky_test_is_flaky() -> None:
    cases, reader = _parse("surefire/TEST-io.olamy.FlakyTest.xml")
    case = _case(cases, "testApp")
    assert _outcomes(case) == [Outcome.FAILED, Outcome.FAILED, Outcome.PASSED]
    assert [a.message for a in case.attempts[:2]] == ["obvious fail", "try one more time maybe"]
    assert case.is_flaky_in_report
    assert reader.stats.flaky == 1


def test_surefire_gh237_always_failing_test_has_failing_reruns_after_the_main_result() -> None:
    cases, reader = _parse("surefire/TEST-io.olamy.AlwaysFailTest.xml")
    case = _case(cases, "testApp")
    assert _outcomes(case) == [Outcome.FAILED] * 4
    assert case.attempts[0].duration_s == pytest.approx(0.001)  # the main element
    assert all(a.duration_s is None for a in case.attempts[1:])  # reruns carry no time
    # Same failure each time → same signature: reruns are one failure mode.
    assert len({a.signature for a in case.attempts}) == 1
    assert not case.is_flaky_in_report
    assert reader.stats.failed == 1
    assert reader.stats.flaky == 0


@pytest.mark.parametrize(
    "relative", ["android/marathon_junit_report.xml", "surefire/surefire-report.xml"]
)
def test_marathon_and_mikepenz_surefire_flaky_failure(relative: str) -> None:
    cases, _ = _parse(relative)
    (case,) = cases
    assert _outcomes(case) == [Outcome.FAILED, Outcome.PASSED]
    assert case.is_flaky_in_report


def test_gradle_reports_have_no_retries_and_parse_display_names() -> None:
    cases, reader = _parse("gradle/gradle-kotlin-UpdateDeveloperPreferencesViewModelTest.xml")
    assert reader.problem is None
    assert cases
    assert all(len(c.attempts) == 1 for c in cases)
    assert all(c.outcome is Outcome.PASSED for c in cases)


def test_gradle_test_retry_plugin_repeated_testcases_are_attempts() -> None:
    # org.gradle.test-retry writes each execution as its own <testcase> in the class's file.
    xml = b"""<?xml version="1.0" encoding="UTF-8"?>
<testsuite name="com.acme.RetryTest" tests="3" skipped="0" failures="1" errors="0">
  <properties/>
  <testcase name="flaky()" classname="com.acme.RetryTest" time="0.012">
    <failure message="boom" type="java.lang.AssertionError">java.lang.AssertionError: boom
\tat com.acme.RetryTest.flaky(RetryTest.java:12)</failure>
  </testcase>
  <testcase name="flaky()" classname="com.acme.RetryTest" time="0.004"/>
  <testcase name="stable()" classname="com.acme.RetryTest" time="0.001"/>
</testsuite>"""
    cases, problem = parse_bytes(xml, "TEST-com.acme.RetryTest.xml")
    assert problem is None
    flaky = _case(cases, "flaky()")
    assert _outcomes(flaky) == [Outcome.FAILED, Outcome.PASSED]
    assert flaky.is_flaky_in_report
    assert _outcomes(_case(cases, "stable()")) == [Outcome.PASSED]


def test_pytest_rerunfailures_empty_testcases_are_failed_attempts() -> None:
    cases, reader = _parse("pytest/generated-pytest-rerunfailures.xml")
    first = _case(cases, "test_flaky_first_attempt")
    assert _outcomes(first) == [Outcome.FAILED, Outcome.PASSED]
    assert first.is_flaky_in_report
    assert first.attempts[0].message is None  # pytest-rerunfailures loses attempt details
    always = _case(cases, "test_fail_assert")
    assert _outcomes(always) == [Outcome.FAILED] * 3
    setup = _case(cases, "test_setup_error")
    assert _outcomes(setup) == [Outcome.FAILED, Outcome.FAILED, Outcome.ERROR]
    assert _outcomes(_case(cases, "test_pass")) == [Outcome.PASSED]
    assert reader.stats.flaky == 1


def test_pytest_rerunfailures_xunit1_logging_keeps_file_and_flaky() -> None:
    cases, reader = _parse("pytest/generated-pytest-rerunfailures-xunit1-logging.xml")
    first = _case(cases, "test_flaky_first_attempt")
    assert _outcomes(first) == [Outcome.FAILED, Outcome.PASSED]
    assert first.file == "tests/test_sample.py"
    assert reader.stats.flaky == 2  # the coin flip also passed on a rerun in this run


def test_pytest_rerunfailures_before_16_6_1_only_has_the_final_attempt() -> None:
    cases, _ = _parse("pytest/report_flaky.xml")
    assert all(len(c.attempts) == 1 for c in cases)


def test_gotestsum_rerun_fails_writes_failures_first_then_the_pass() -> None:
    cases, reader = _parse("go/generated-gotestsum-junit-relative-rerun.xml")
    assert _outcomes(_case(cases, "TestFlakyFirst")) == [Outcome.FAILED, Outcome.PASSED]
    assert _outcomes(_case(cases, "TestFlakyRandom")) == [
        Outcome.FAILED,
        Outcome.FAILED,
        Outcome.PASSED,
    ]
    assert _outcomes(_case(cases, "TestFail")) == [Outcome.FAILED] * 3
    assert _case(cases, "TestFail").attempts[0].message == "Failed"
    assert reader.stats.flaky == 2
    assert reader.stats.cases == 9
    assert reader.stats.attempts == 18


def test_hand_written_repeated_testcases_merge_by_classname_name_and_file() -> None:
    cases, _ = _parse("edge/flaky_with_classname_file.xml")
    foo = _case(cases, "test_foo", "test_foo.TestFoo")
    assert _outcomes(foo) == [Outcome.FAILED, Outcome.ERROR, Outcome.PASSED]
    assert foo.is_flaky_in_report
    assert foo.file == "test_foo.py"  # GitHub runner workspace /home/runner/work/foo/bar/ removed
    other = _case(cases, "test_foo", "test_bar.TestBar")
    assert _outcomes(other) == [Outcome.PASSED]


# -- identity -------------------------------------------------------------------------------


def test_playwright_project_from_suite_hostname_is_part_of_identity() -> None:
    cases, _ = _parse("playwright/fichap-playwright-junit.xml")
    suites = {c.suite for c in cases}
    assert suites == {
        f"login.spec.js [{p}]" for p in ("Dev", "Test", "chromium", "firefox", "webkit")
    }
    assert len({c.test_key for c in cases}) == len(cases) == 20
    assert ("playwright.project", "webkit") in [
        p for c in cases if c.suite.endswith("[webkit]") for p in c.properties
    ]


def test_machine_hostnames_are_not_identity() -> None:
    cases, _ = _parse("pytest/junit.gloo.standalone.xml")  # hostname="5528853fbe73"
    assert all("5528853fbe73" not in c.suite for c in cases)
    assert all(c.suite == "pytest" for c in cases)


def test_cypress_root_suite_file_applies_to_following_suites() -> None:
    cases, _ = _parse("cypress/junit.xml")
    assert {c.file for c in cases} == {"cypress/e2e/tests.js"}


def test_nested_suites_build_a_path_and_inherit_file() -> None:
    cases, _ = _parse("phpunit/generated-phpunit-junit.xml")
    data = _case(cases, 'testData with data set "diff"')
    assert data.suite == "phpunit/tests / CalcTest / CalcTest::testData"  # workspace removed
    assert data.file == "phpunit/tests/CalcTest.php"


def test_xmlrunner_timestamp_suffix_is_not_identity() -> None:
    cases, _ = _parse("pytest/python-xunit-unittest.xml")  # suite "TestAcme-20251114214921"
    assert {c.suite for c in cases} == {"TestAcme"}


def test_node_test_top_level_cases_have_an_empty_suite() -> None:
    cases, _ = _parse("node-test/generated-node-test-junit.xml")
    assert _case(cases, "top-level pass").suite == ""
    assert _case(cases, "sub fail").suite == "with subtests"


def test_agp_environment_properties_reach_each_case() -> None:
    cases, _ = _parse("android/android-connected-Pixel_3a_API_30.xml")
    props = dict(cases[0].properties)
    assert props["device"] == "Pixel_3a_API_30_x86(AVD) - 11"
    assert props["project"] == "app"


# -- outcomes, messages, times ----------------------------------------------------------------


def test_negative_duration_is_none() -> None:
    cases, _ = _parse("edge/junit-report-bad-duration.xml")
    (case,) = cases
    assert [a.duration_s for a in case.attempts] == [None, 100.0]


def test_ctest_status_disabled_without_child_is_skipped() -> None:
    cases, _ = _parse("ctest/generated-ctest-junit.xml")
    assert _case(cases, "disabled").outcome is Outcome.SKIPPED


def test_failure_text_without_message_uses_its_first_line() -> None:
    cases, _ = _parse("edge/08-failure-noattr-only-innertext.xml")
    (case,) = cases
    assert case.outcome is Outcome.FAILED
    assert case.final.message


def test_entities_are_decoded_in_names_and_messages() -> None:
    cases, _ = _parse("edge/with-xml-entities.xml")
    assert any("&" in c.name or "<" in c.name or '"' in c.name for c in cases)


def test_first_failing_child_decides_outcome_over_skipped() -> None:
    cases, _ = _parse("edge/junit.multiresult.xml")
    assert _case(cases, "test that errors").outcome is Outcome.FAILED
    assert _case(cases, "test that is skipped").outcome is Outcome.SKIPPED
