"""The compiled parser loop (`_junit_speedups`) gives exactly what the pure-Python loop gives.

Every other JUnit test runs on both loops already (`parser_implementation`); this module
compares them directly on the shapes where a C reading of attributes could drift from lxml's:
attribute precedence and namespaces, entities and non-ASCII values, whitespace, repeats that
share one cached attempt, children that are not elements, and every flush boundary. A
hypothesis test shuffles those shapes into random reports.
"""

from __future__ import annotations

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
