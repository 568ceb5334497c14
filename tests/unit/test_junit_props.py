"""Property tests: generated valid JUnit documents round-trip through the parser.

Derandomized (fixed seed per test) so a run is reproducible.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from flakeguard.core.junit import ReportReader, failure_signature, parse_bytes, parse_duration_s
from flakeguard.core.models import FAILING, CaseResult, Outcome

# Every test here runs on both parser loops (tests/unit/conftest.py).
pytestmark = pytest.mark.usefixtures("parser_implementation")

# Letters, digits, punctuation and symbols (XML-legal, no surrogates or controls), the XML
# specials, a plain space and a few characters outside the BMP.
_TRICKY = st.characters(
    categories=("L", "N", "P", "S"), exclude_characters="\\/"
) | st.sampled_from(list("<&>\"' 😀𝄞𐐷"))


def _label(max_size: int) -> st.SearchStrategy[str]:
    return st.text(_TRICKY, min_size=1, max_size=max_size).filter(
        lambda s: s == s.strip() and s not in ("pytest", "Root Suite")
    )


@dataclass(frozen=True)
class GenAttempt:
    outcome: Outcome
    message: str | None
    time_ms: int


@dataclass(frozen=True)
class GenCase:
    class_name: str
    name: str
    attempts: tuple[GenAttempt, ...]
    encoding: str  # "repeat" | "surefire"


_FAILING_OUTCOMES = st.sampled_from([Outcome.FAILED, Outcome.ERROR])


@st.composite
def _attempt(draw: st.DrawFn, outcome: st.SearchStrategy[Outcome]) -> GenAttempt:
    chosen = draw(outcome)
    message = None if chosen is Outcome.PASSED else draw(st.none() | _label(40))
    return GenAttempt(chosen, message, draw(st.integers(0, 5_000_000)))


@st.composite
def _case(draw: st.DrawFn) -> GenCase:
    encoding = draw(st.sampled_from(["repeat", "surefire"]))
    if encoding == "surefire":
        # flaky*: failures then a pass; rerun*: a failure then failing reruns.
        shape = draw(st.sampled_from(["flaky", "rerun", "single"]))
        retries = draw(st.integers(0, 3))
        if shape == "flaky":
            attempts = [draw(_attempt(_FAILING_OUTCOMES)) for _ in range(retries)]
            attempts.append(draw(_attempt(st.just(Outcome.PASSED))))
        elif shape == "rerun":
            attempts = [draw(_attempt(_FAILING_OUTCOMES)) for _ in range(retries + 1)]
        else:
            attempts = [draw(_attempt(st.sampled_from(list(Outcome))))]
    else:
        count = draw(st.integers(1, 4))
        attempts = [draw(_attempt(st.sampled_from(list(Outcome)))) for _ in range(count)]
    return GenCase(draw(_label(20)), draw(_label(30)), tuple(attempts), encoding)


@st.composite
def _report(draw: st.DrawFn) -> list[tuple[str, list[GenCase]]]:
    suites = draw(
        st.lists(_label(20), min_size=1, max_size=3, unique=True).filter(
            lambda names: all(not n[-15:].lstrip("-").isdigit() for n in names)
        )
    )
    report = []
    for suite in suites:
        cases = draw(
            st.lists(_case(), min_size=0, max_size=5, unique_by=lambda c: (c.class_name, c.name))
        )
        report.append((suite, cases))
    return report


_RESULT_TAG = {Outcome.FAILED: "failure", Outcome.ERROR: "error", Outcome.SKIPPED: "skipped"}
_FLAKY_TAG = {Outcome.FAILED: "flakyFailure", Outcome.ERROR: "flakyError"}
_RERUN_TAG = {Outcome.FAILED: "rerunFailure", Outcome.ERROR: "rerunError"}


def _result(parent: etree._Element, tag: str, attempt: GenAttempt, stack: bool) -> None:
    element = etree.SubElement(parent, tag, type="some.Error")
    if attempt.message is not None:
        element.set("message", attempt.message)
    if stack:
        trace = etree.SubElement(element, "stackTrace")
        trace.text = "some.Error: boom\n\tat a.B.c(B.java:1)"
    else:
        element.text = "some.Error: boom <&> 😀\n\tat a.B.c(B.java:1)"


def _render(report: list[tuple[str, list[GenCase]]]) -> bytes:
    root = etree.Element("testsuites", name="generated")
    for suite_name, cases in report:
        suite = etree.SubElement(root, "testsuite", name=suite_name, hostname="ci-runner-7")
        for case in cases:
            if case.encoding == "repeat":
                for attempt in case.attempts:
                    element = etree.SubElement(
                        suite,
                        "testcase",
                        classname=case.class_name,
                        name=case.name,
                        time=f"{attempt.time_ms / 1000:.3f}",
                    )
                    if attempt.outcome is not Outcome.PASSED:
                        _result(element, _RESULT_TAG[attempt.outcome], attempt, stack=False)
                continue
            *earlier, final = case.attempts
            main = final if final.outcome is Outcome.PASSED else case.attempts[0]
            element = etree.SubElement(
                suite,
                "testcase",
                classname=case.class_name,
                name=case.name,
                time=f"{main.time_ms / 1000:.3f}",
            )
            if final.outcome is Outcome.PASSED:
                for attempt in earlier:
                    _result(element, _FLAKY_TAG[attempt.outcome], attempt, stack=True)
            else:
                _result(element, _RESULT_TAG[main.outcome], main, stack=False)
                for attempt in case.attempts[1:]:
                    _result(element, _RERUN_TAG[attempt.outcome], attempt, stack=True)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _expected_durations(case: GenCase) -> list[float | None]:
    if case.encoding == "repeat":
        return [a.time_ms / 1000 for a in case.attempts]
    # Surefire style: only the main element has a time.
    if case.attempts[-1].outcome is Outcome.PASSED:
        return [None] * (len(case.attempts) - 1) + [case.attempts[-1].time_ms / 1000]
    return [case.attempts[0].time_ms / 1000] + [None] * (len(case.attempts) - 1)


def _expected_messages(case: GenCase) -> list[str | None]:
    """The message attribute, else the first line of the text (or of <stackTrace>)."""
    expected: list[str | None] = []
    main_index = len(case.attempts) - 1 if case.attempts[-1].outcome is Outcome.PASSED else 0
    for index, attempt in enumerate(case.attempts):
        if attempt.outcome is Outcome.PASSED:
            expected.append(None)
        elif attempt.message is not None:
            expected.append(attempt.message)
        elif case.encoding == "repeat" or index == main_index:
            expected.append("some.Error: boom <&> 😀")  # text of a main result element
        else:
            expected.append("some.Error: boom")  # first line of a flaky*/rerun* stackTrace
    return expected


@settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(_report())
def test_generated_documents_round_trip(report: list[tuple[str, list[GenCase]]]) -> None:
    cases, problem = parse_bytes(_render(report), "generated.xml")
    assert problem is None
    expected = [(suite, case) for suite, suite_cases in report for case in suite_cases]
    assert len(cases) == len(expected)
    for parsed, (suite, case) in zip(cases, expected, strict=True):
        assert parsed.suite == suite  # machine hostname is not identity
        assert (parsed.class_name, parsed.name, parsed.file) == (case.class_name, case.name, None)
        assert [a.outcome for a in parsed.attempts] == [a.outcome for a in case.attempts]
        assert [a.message for a in parsed.attempts] == _expected_messages(case)
        assert [a.duration_s for a in parsed.attempts] == _expected_durations(case)
        assert all((a.signature is not None) == (a.outcome in FAILING) for a in parsed.attempts)
        assert parsed.is_flaky_in_report == (
            case.attempts[-1].outcome is Outcome.PASSED
            and any(a.outcome in FAILING for a in case.attempts)
        )


@settings(max_examples=40, deadline=None, derandomize=True)
@given(_report(), st.integers(1, 64))
def test_tiny_reads_give_the_same_result(
    report: list[tuple[str, list[GenCase]]], read_size: int
) -> None:
    data = _render(report)

    class TinyReads(io.RawIOBase):
        def __init__(self) -> None:
            self.pos = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            size = min(read_size, len(buffer), len(data) - self.pos)
            buffer[:size] = data[self.pos : self.pos + size]
            self.pos += size
            return size

    reader = ReportReader(io.BufferedReader(TinyReads(), buffer_size=read_size), "tiny.xml")
    streamed: list[CaseResult] = list(reader)
    whole, problem = parse_bytes(data, "tiny.xml")
    assert reader.problem is None
    assert problem is None
    assert streamed == whole


@settings(derandomize=True)
@given(st.floats(min_value=0, max_value=9_999_999, allow_nan=False))
def test_durations_in_every_locale_format_parse_back(seconds: float) -> None:
    plain = f"{seconds:.3f}"
    grouped = f"{seconds:,.3f}"
    comma = plain.replace(".", ",")
    assert parse_duration_s(plain) == float(plain)
    assert parse_duration_s(grouped) == float(plain)
    # "1,234" is ambiguous and read as thousands, so a decimal comma is only checked where it
    # is unambiguous: integer part 0 or more than three digits.
    integer = plain.split(".")[0]
    if integer == "0" or len(integer) > 3:
        assert parse_duration_s(comma) == float(plain)


@settings(derandomize=True)
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_untrustworthy_durations_are_none(seconds: float) -> None:
    parsed = parse_duration_s(repr(seconds))
    if seconds != seconds or seconds < 0 or seconds > 1e7 or seconds in (float("inf"),):
        assert parsed is None
    else:
        assert parsed == seconds


@settings(derandomize=True)
@given(
    st.integers(0, 2**48),
    st.integers(0, 10_000),
    st.floats(min_value=0, max_value=1e6, allow_nan=False),
)
def test_signature_ignores_addresses_numbers_and_durations(
    address: int, line: int, took_s: float
) -> None:
    message = f"object at {hex(address)} timed out after {took_s:.2f}s"
    stack = f'Traceback:\n  File "/tmp/pytest-of-ci/pytest-{line}/x.py", line {line}\n'
    base = failure_signature(
        "failure",
        "TimeoutError",
        "object at 0x1 timed out after 1.00s",
        stack.replace(str(line), "1"),
    )
    assert failure_signature("failure", "TimeoutError", message, stack) == base
    assert failure_signature("error", "TimeoutError", message, stack) != base
    assert failure_signature("failure", "ValueError", message, stack) != base
