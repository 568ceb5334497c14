"""The compiled parser loop (`_junit_speedups`) gives exactly what the pure-Python loop gives.

Every other JUnit test runs on both loops already (`parser_implementation`); this module
compares them directly on the shapes where a C reading of attributes could drift from lxml's:
attribute precedence and namespaces, entities and non-ASCII values, whitespace, repeats that
share one cached attempt, children that are not elements, and every flush boundary. A
hypothesis test shuffles those shapes into random reports.
"""

from __future__ import annotations

import html
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flakeguard.core import junit
from flakeguard.core.junit import ParseLimits, ReportReader, ReportStats
from flakeguard.core.models import CaseResult, ReportProblem
from tests.conftest import IN_CI


@pytest.fixture(autouse=True)
def _compiled_loop_is_built() -> None:
    if not junit.SPEEDUPS:
        message = "flakeguard.core._junit_speedups is not built (no C compiler at install?)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


_Result = tuple[list[CaseResult], ReportProblem | None, ReportStats]


def _both(xml: bytes, limits: ParseLimits = junit.DEFAULT_LIMITS) -> tuple[_Result, _Result]:
    results: list[_Result] = []
    for speedups in (True, False):
        reader = ReportReader(io.BytesIO(xml), "r.xml", limits, speedups=speedups)
        cases = list(reader)
        results.append((cases, reader.problem, reader.stats))
    return results[0], results[1]


CASES = [
    '<testcase classname="C" name="plain" time="0.5"/>',
    '<testcase class="A" classname="B" name="both class attributes"/>',
    '<testcase class="A" name="class only" time="1"/>',
    '<testcase name="no class" file="./spec/a_spec.rb"/>',
    '<testcase xmlns:x="urn:x" x:classname="N" classname="C" name="namespaced attribute"/>',
    '<x:testcase xmlns:x="urn:x" classname="C" name="namespaced element"/>',
    '<testcase classname="C" name="status" status="notrun"/>',
    '<testcase classname="C" name="status run" status="run" time="2"/>',
    '<testcase classname="" name="" file="" time=""/>',
    '<testcase classname="C" name="a &amp; b &#x1F600; &lt;&quot;"/>',
    '<testcase classname="\u00e9" name="accent"/>',
    '<testcase classname="\u00c3\u00a9" name="accent"/>',
    '<testcase classname="  padded  " name="\tpadded\n" time=" 3 "/>',
    '<testcase classname="C" name="   "/>',
    '<testcase classname="C" name="comment"><!-- no result --></testcase>',
    '<testcase classname="C" name="pi"><?pi x?></testcase>',
    '<testcase classname="C" name="text">some text</testcase>',
    '<testcase classname="C" name="repeat" time="1"/>',
    '<testcase classname="C" name="repeat" time="1"><failure message="boom">at x</failure>'
    "</testcase>",
    '<testcase classname="C" name="skipped"><skipped/></testcase>',
    '<testcase classname="C" name="locale" time="1,234.5"/>',
    '<testcase classname="C" name="bad time" time="soon"/>',
    '<testcase classname="com.acme.Long" name="surefire"><flakyFailure message="f" type="E">'
    "<stackTrace>at a</stackTrace></flakyFailure></testcase>",
    '<testcase classname="C" name="output only" time="4"><system-out>log</system-out></testcase>',
    '<testcase classname="C" name="failure wins"><skipped/><failure type=" T ">at a\n at b'
    "</failure><error>x</error></testcase>",
    '<testcase classname="C" name="error first"><error message="e" type="E"/><failure/></testcase>',
    '<testcase classname="C" name="namespaced failure" xmlns:x="urn:x"><x:failure/></testcase>',
    '<testcase classname="C" name="skipped text"><skipped type="T">\n\n  why\nmore</skipped>'
    "</testcase>",
    '<testcase classname="C" name="cdata"><failure><![CDATA[first <line>\nat x]]></failure>'
    "<system-err>e</system-err></testcase>",
    '<testcase classname="C" name="split text"><failure>before<!-- c -->after</failure></testcase>',
    '<testcase classname="C" name="properties"><properties><property name="k" value="v"/>'
    "</properties></testcase>",
    '<testcase classname="C" name="rerun"><failure message="m"/><rerunFailure message="r">'
    "<stackTrace>at r</stackTrace></rerunFailure></testcase>",
    '<testcase classname="C" name="repeat" time="1"><skipped message="s"/></testcase>',
]


def _suite(name: str, body: list[str]) -> str:
    return f'<testsuite name="{name}">{"".join(body)}</testsuite>'


@pytest.mark.parametrize("case", CASES)
def test_each_shape_alone_and_repeated(case: str) -> None:
    xml = f"<testsuites>{_suite('s', [case, case, CASES[0], case])}</testsuites>".encode()
    compiled, pure = _both(xml)
    assert compiled == pure


def test_a_non_ascii_classname_is_never_mistaken_for_its_utf8_bytes() -> None:
    # "\u00c3\u00a9" ("Ã©") has the code points of the UTF-8 bytes of "\u00e9" ("é"): a
    # byte-wise reuse of the previous classname would wrongly keep "Ã©" for the second case.
    body = [CASES[0], CASES[11], CASES[10], CASES[11], CASES[0]]
    compiled, pure = _both(f"<testsuites>{_suite('s', body)}</testsuites>".encode())
    assert compiled == pure
    assert [case.class_name for case in compiled[0]] == ["C", "\u00c3\u00a9", "\u00e9"]


@pytest.mark.parametrize("max_buffered", [1, 2, 63, 64, 65, 129, 10_000])
def test_every_flush_boundary(max_buffered: int) -> None:
    body = [f'<testcase classname="C" name="t{i % 70}" time="0.{i % 3}"/>' for i in range(300)]
    body[150] = CASES[18]
    xml = f"<testsuites>{_suite('s', body)}</testsuites>".encode()
    limits = ParseLimits(max_buffered_attempts=max_buffered)
    compiled, pure = _both(xml, limits)
    assert compiled == pure


def test_cases_outside_a_plain_suite_parent() -> None:
    xml = (
        b"<testsuites>"
        b'<testcase name="under the root"/>'
        b'<testsuite name="outer"><testcase name="a"/>'
        b'<group><testcase name="in a wrapper"/><testcase name="in a wrapper 2"/></group>'
        b'<testsuite name="inner"><testcase name="b"/><testcase name="c"/></testsuite>'
        b'<testcase name="after inner"/><testcase name="after inner 2"/></testsuite>'
        b"</testsuites>"
    )
    compiled, pure = _both(xml)
    assert compiled == pure


def test_truncated_report_keeps_the_same_partial_cases() -> None:
    body = [f'<testcase classname="C" name="t{i}"/>' for i in range(100)]
    xml = f"<testsuites>{_suite('s', body)}</testsuites>".encode()[:-700]
    compiled, pure = _both(xml)
    assert compiled == pure
    assert compiled[1] is not None  # the problem is reported on both


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    st.lists(st.lists(st.sampled_from(CASES), max_size=40), min_size=1, max_size=4),
    st.sampled_from([1, 3, 64, 10_000]),
)
def test_random_reports_of_these_shapes(suites: list[list[str]], max_buffered: int) -> None:
    xml = "<testsuites>{}</testsuites>".format(
        "".join(_suite(f"s{i}", body) for i, body in enumerate(suites))
    ).encode()
    compiled, pure = _both(xml, ParseLimits(max_buffered_attempts=max_buffered))
    assert compiled == pure


# Text pieces: whitespace `str.strip` removes, digits, the masks' hints and what they mask
# (workspace and temp paths, a UUID, an address), Latin-1 and wider characters, a lone
# surrogate. Stacks are lines of pieces joined by every line break `str.splitlines` knows.
_PIECES = [
    *"ab Z\u00e9 0123456789/\\-x\t\x1f\xa0",
    "\u3000",
    "\U0001f600",
    "0x7f",
    "at f(A.java:12)",
    "123e4567-e89b-12d3-a456-426614174000",
    "/tmp/pytest-of-x/t0 ",
    "/home/runner/work/shop/shop/src/a.py",
    "D:\\a\\shop\\shop\\src",
    "\ud800",
]
_BREAKS = ["\n", "\r\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\n\n"]
_LINE = st.lists(st.sampled_from(_PIECES) | st.text(max_size=2), max_size=8).map("".join)
_LATIN1_LINE = st.lists(
    st.sampled_from([p for p in _PIECES if max(map(ord, p)) < 256]), max_size=8
).map("".join)


@st.composite
def _stack(draw: st.DrawFn, line: st.SearchStrategy[str]) -> str:
    lines = draw(st.lists(line, max_size=20))
    breaks = draw(st.lists(st.sampled_from(_BREAKS), min_size=len(lines), max_size=len(lines)))
    return "".join(text + brk for text, brk in zip(lines, breaks, strict=True))


def _compiled_signature(
    kind: str,
    failure_type: str | None,
    message: str | None,
    stack: str | None,
    limits: ParseLimits,
) -> str:
    """The signature a reader with the compiled loop computes for a failure."""
    reader = ReportReader(io.BytesIO(b""), "r.xml", limits, speedups=True)
    return reader._signature(kind, failure_type, message, stack)


@settings(max_examples=600, deadline=None, derandomize=True)
@given(
    st.sampled_from(["failure", "error"]),
    st.none() | _LINE,
    st.none() | _LINE,
    st.none() | _stack(_LATIN1_LINE) | _stack(_LINE),
    st.sampled_from([0, 1, 7, 40, 65536]),
    st.integers(0, 14),
)
def test_compiled_failure_signature_is_the_same_digest(
    kind: str,
    failure_type: str | None,
    message: str | None,
    stack: str | None,
    max_chars: int,
    max_lines: int,
) -> None:
    limits = ParseLimits(max_stack_chars_hashed=max_chars, max_stack_lines_hashed=max_lines)
    expected = junit.failure_signature(kind, failure_type, message, stack, limits)
    assert _compiled_signature(kind, failure_type, message, stack, limits) == expected


@pytest.mark.parametrize(
    "message",
    [
        "a b c",
        "a  b",
        " a",
        "a ",
        "a\tb",
        "a\nb",
        "a\xa0b",
        "a \x1f b",
        "\u00e9  \u00e9",
        "a\u3000b",
        "",
        "  ",
        None,
    ],
)
@pytest.mark.parametrize("stack", [None, "at f(A.java:12)", "at f(/src/a.py:12)"])
def test_compiled_signature_spaces_the_message_as_junit_does(
    message: str | None, stack: str | None
) -> None:
    """Runs of whitespace in a message count as one space (the C shortcut skips the
    split only when the message is already single-spaced)."""
    limits = junit.DEFAULT_LIMITS
    compiled = _compiled_signature("failure", "E", message, stack, limits)
    assert compiled == junit.failure_signature("failure", "E", message, stack, limits)


_TIMES = [
    "",
    "0",
    "0.5",
    "1.25",
    "1.234567",  # 8 bytes: looked up by its bytes
    "1.2345678",  # 9 bytes, the same first 8: by its text
    "1234.5678",
    " 1 ",
    "1&#46;5",
    "1&amp;2",
    "\u00e9",
    "\u00e9\u00e9\u00e9\u00e9\u00e9",
    "1,5",
    "1e3",
    "nan",
    "-1",
    "0x1",
]


@pytest.mark.parametrize("time_text", [*_TIMES, None])
def test_passing_attempts_by_time_bytes(time_text: str | None) -> None:
    """The compiled loop finds passing attempts by the raw bytes of ``time`` (up to 8 of
    them, in one table for the process): every value still gets its own duration."""
    time_attr = "" if time_text is None else f' time="{time_text}"'
    body = [f'<testcase classname="C" name="t{i}"{time_attr}/>' for i in range(3)]
    xml = f"<testsuites>{_suite('s', body)}</testsuites>".encode()
    compiled, pure = _both(xml)
    assert compiled == pure
    expected = junit.parse_duration_s(None if time_text is None else html.unescape(time_text))
    assert [case.attempts[0].duration_s for case in compiled[0]] == [expected] * 3


def test_many_distinct_times_share_the_table_without_mixing_them_up() -> None:
    # 20,000 distinct values in an 8,192-slot table: slots are refilled again and again.
    times = [f"{i / 1000:.3f}" for i in range(20_000)] * 2
    body = [f'<testcase classname="C" name="t{i}" time="{t}"/>' for i, t in enumerate(times)]
    xml = f"<testsuites>{_suite('s', body)}</testsuites>".encode()
    compiled, pure = _both(xml)
    assert compiled == pure
    assert [case.attempts[0].duration_s for case in compiled[0]] == [float(t) for t in times]


def test_a_time_longer_than_8_bytes_is_not_taken_for_its_first_8() -> None:
    body = [f'<testcase classname="C" name="t{i}" time="{t}"/>' for i, t in enumerate(_TIMES)]
    xml = f"<testsuites>{_suite('s', body)}</testsuites>".encode()
    compiled, pure = _both(xml)
    assert compiled == pure
    assert [c.attempts[0].duration_s for c in compiled[0]][4:6] == [1.234567, 1.2345678]
