"""Suite structure the corpus rarely shows: wrappers, empty nested suites, early flushes,
giant single suites. The parser enters suites lazily (on "end" events only), so each of
these shapes is pinned here."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import pytest

from flakeguard.core.junit import ParseLimits, ReportReader, parse_bytes
from flakeguard.core.models import Outcome

# Every test here runs on both parser loops (tests/unit/conftest.py).
pytestmark = pytest.mark.usefixtures("parser_implementation")


def _rows(xml: bytes, limits: ParseLimits | None = None) -> list[tuple[str, str, list[str]]]:
    reader = ReportReader(io.BytesIO(xml), "r.xml", limits or ParseLimits())
    rows = [(c.suite, c.name, [a.outcome.value for a in c.attempts]) for c in reader]
    assert reader.problem is None
    return rows


def test_testcases_inside_a_wrapper_element_belong_to_the_enclosing_suite() -> None:
    xml = (
        b'<testsuite name="s"><group><testcase name="a"/><testcase name="b"/></group>'
        b'<testcase name="c"/></testsuite>'
    )
    assert _rows(xml) == [
        ("s", "a", ["passed"]),
        ("s", "b", ["passed"]),
        ("s", "c", ["passed"]),
    ]


def test_an_empty_nested_suite_splits_the_outer_suite_like_a_full_one() -> None:
    # The outer suite's cases before a nested suite are yielded before it begins; a test
    # repeated on both sides of it is therefore two results, whether or not it has cases.
    for inner in (
        b'<testsuite name="in"/>',
        b'<testsuite name="in"><testcase name="x"/></testsuite>',
    ):
        xml = (
            b'<testsuites><testsuite name="out"><testcase name="t"/>'
            + inner
            + b'<testcase name="t"><failure message="m"/></testcase></testsuite></testsuites>'
        )
        rows = _rows(xml)
        assert rows[0] == ("out", "t", ["passed"])
        assert rows[-1] == ("out", "t", ["failed"])
        assert rows[1:-1] == ([("out / in", "x", ["passed"])] if b"x" in inner else [])


def test_outer_suite_properties_reach_cases_after_a_nested_suite() -> None:
    xml = (
        b'<testsuite name="out"><properties><property name="device" value="pixel"/></properties>'
        b'<testsuite name="in"><testcase name="a"/></testsuite><testcase name="b"/></testsuite>'
    )
    cases, problem = parse_bytes(xml, "r.xml")
    assert problem is None
    assert [(c.suite, c.name, c.properties) for c in cases] == [
        ("out / in", "a", (("device", "pixel"),)),
        ("out", "b", (("device", "pixel"),)),
    ]


def test_a_suite_over_the_buffer_bound_is_flushed_early_and_loses_nothing() -> None:
    cases = "".join(f'<testcase name="t{i}" time="0.{i}"/>' for i in range(10))
    retried = '<testcase name="t1"><failure message="m"/></testcase>'
    xml = f'<testsuite name="s">{cases}{retried}</testsuite>'.encode()
    rows = _rows(xml, ParseLimits(max_buffered_attempts=3))
    assert [name for _, name, _ in rows] == [f"t{i}" for i in range(10)] + ["t1"]
    # t1 was flushed before its retry arrived: the retry starts a new result (documented).
    assert rows[1] == ("s", "t1", ["passed"])
    assert rows[-1] == ("s", "t1", ["failed"])
    unbounded = _rows(xml)
    assert ("s", "t1", ["passed", "failed"]) in unbounded
    assert len(unbounded) == 10


def test_repeats_across_the_periodic_sibling_cleanup_still_merge() -> None:
    # 200 distinct cases then a rerun of the first: the cleanup every 64 cases deletes
    # finished elements, not the buffered attempts.
    first = '<testcase name="t0"><failure message="m"/></testcase>'
    others = "".join(f'<testcase name="t{i}"/>' for i in range(1, 200))
    xml = f'<testsuite name="s">{first}{others}<testcase name="t0"/></testsuite>'.encode()
    rows = _rows(xml)
    assert len(rows) == 200
    assert rows[0] == ("s", "t0", ["failed", "passed"])


def _parse_in_subprocess(implementation: str, suite: str, cases: str) -> tuple[int, bool, int]:
    """(cases, no problem, peak RSS growth in MB) of parsing, streamed in a fresh
    interpreter, one `<testsuite name=suite>` whose testcases are the byte chunks that the
    generator expression `cases` yields."""
    code = (
        textwrap.dedent(
            """
        import io, itertools, resource, sys
        from flakeguard.core.junit import ReportReader

        class Gen(io.RawIOBase):
            def __init__(self):
                self.parts = itertools.chain(
                    [b'<testsuites><testsuite name="SUITE">'],
                    CASES,
                    [b"</testsuite></testsuites>"],
                )
                self.rest = b""
            def readable(self):
                return True
            def readinto(self, b):
                while not self.rest:
                    try:
                        self.rest = next(self.parts)
                    except StopIteration:
                        return 0
                n = min(len(b), len(self.rest))
                b[:n] = self.rest[:n]
                self.rest = self.rest[n:]
                return n

        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        speedups = sys.argv[1] == "compiled"
        reader = ReportReader(io.BufferedReader(Gen()), "big.xml", speedups=speedups)
        count = sum(1 for _ in reader)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(count, reader.problem is None, (after - before) // 1024)
        """
        )
        .replace("SUITE", suite)
        .replace("CASES", cases)
    )
    out = subprocess.run(
        [sys.executable, "-c", code, implementation],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return int(out[0]), out[1] == "True", int(out[2])


def test_one_giant_suite_streams_in_bounded_memory(parser_implementation: str) -> None:
    # pytest writes every case into one <testsuite>: 400k cases (~40 MB) must not be held.
    cases = """(
        b"".join(
            b'<testcase classname="tests.test_mod" name="test_%d" time="0.01"/>' % (i * 1000 + j)
            for j in range(1000)
        )
        for i in range(400)
    )"""
    count, ok, grown_mb = _parse_in_subprocess(parser_implementation, "pytest", cases)
    assert (count, ok) == (400_000, True)
    # The default buffer bound (10,000 attempts) plus lxml's working set; holding the tree
    # would take several hundred MB.
    assert grown_mb < 60, grown_mb


def test_big_outputs_are_freed_case_by_case(parser_implementation: str) -> None:
    # Finished siblings are deleted every 64 testcases; a testcase's own children (output,
    # stack traces; up to 10 MB per text node) must go as soon as it is read, or 64 of them
    # are held at once (~130 MB here).
    cases = """(
        b'<testcase name="t%d"><system-out>' % i
        + b"x" * (2 << 20)
        + b"</system-out><failure message='m'>at a</failure></testcase>"
        for i in range(70)
    )"""
    count, ok, grown_mb = _parse_in_subprocess(parser_implementation, "s", cases)
    assert (count, ok) == (70, True)
    assert grown_mb < 50, grown_mb


def test_outcome_of_a_status_only_case_in_a_long_suite() -> None:
    body = "".join(f'<testcase name="t{i}"/>' for i in range(100))
    xml = f'<testsuite name="s">{body}<testcase name="z" status="notrun"/></testsuite>'.encode()
    cases, _ = parse_bytes(xml, "r.xml")
    assert cases[-1].outcome is Outcome.SKIPPED
    assert len(cases) == 101
