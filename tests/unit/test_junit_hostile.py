"""Hostile and broken inputs: each ends as a clear problem, leaks nothing, stays small.

Inputs are generated here (nothing big on disk). Each big or dangerous input is parsed in a
fresh subprocess so its peak RSS (ru_maxrss) is its own and can be asserted < 200 MB.
"""

from __future__ import annotations

import io
import json
import resource
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

from flakeguard.core.junit import ProblemKind, ReportReader, parse_bytes
from flakeguard.core.models import Outcome

# Every test here runs on both parser loops (tests/unit/conftest.py).
pytestmark = pytest.mark.usefixtures("parser_implementation")

MAX_PEAK_RSS_MB = 200
SECRET = "FLAKEGUARD-SECRET-7d1e0c"  # planted in a local file; must never come out


class ChunkStream(io.RawIOBase):
    """A read-only byte stream produced piece by piece (100 MB never sits in memory)."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            try:
                self._pending = next(self._pieces)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def _repeat(piece: bytes, total_bytes: int) -> Iterator[bytes]:
    sent = 0
    while sent < total_bytes:
        yield piece
        sent += len(piece)


def _streamed(pieces: Iterator[bytes]) -> IO[bytes]:
    return io.BufferedReader(ChunkStream(pieces))


def _huge_text_node() -> IO[bytes]:
    head = b'<testsuites><testsuite name="s"><testcase name="t"><system-out>'
    return _streamed(iter([head, *_repeat(b"A" * (1 << 20), 100 << 20)]))


def _deep_nesting() -> IO[bytes]:
    return _streamed(iter([b"<testsuites>", *_repeat(b'<testsuite name="x">' * 1000, 100_000)]))


def _huge_attribute() -> IO[bytes]:
    return _streamed(
        iter([b'<testsuites><testsuite name="', *_repeat(b"n" * (1 << 20), 20 << 20), b'"/>'])
    )


def _long_name() -> IO[bytes]:
    return _streamed(iter([b"<testsuites><", b"t" * 100_000, b"/></testsuites>"]))


def _billion_laughs() -> IO[bytes]:
    lines = ['<?xml version="1.0"?>', "<!DOCTYPE testsuites [", ' <!ENTITY lol "lol">']
    for level in range(1, 10):
        prev = f"&lol{level - 1};" if level > 1 else "&lol;"
        lines.append(f' <!ENTITY lol{level} "{prev * 10}">')
    lines.append("]>")
    lines.append('<testsuites><testsuite name="&lol9;"><testcase name="&lol9;"/></testsuite>')
    lines.append("</testsuites>")
    return io.BytesIO("\n".join(lines).encode())


def _quadratic_blowup() -> IO[bytes]:
    entity = "x" * 50_000
    refs = "&a;" * 50_000
    doc = (
        f'<?xml version="1.0"?><!DOCTYPE testsuites [<!ENTITY a "{entity}">]>'
        f'<testsuites><testsuite name="s"><testcase name="t"><failure message="m">{refs}'
        "</failure></testcase></testsuite></testsuites>"
    )
    return io.BytesIO(doc.encode())


def _huge_leading_comment() -> IO[bytes]:
    # Defeats a 4 KB "peek for DOCTYPE": the probe must still refuse to go on forever.
    return _streamed(
        iter(
            [
                b"<!--",
                *_repeat(b"-" * 4095 + b" ", 2 << 20),
                b'--><!DOCTYPE testsuites SYSTEM "http://127.0.0.1:9/x.dtd"><testsuites/>',
            ]
        )
    )


HUGE_INPUTS: dict[str, tuple[Callable[[], IO[bytes]], ProblemKind, str]] = {
    "text_node_100mb": (_huge_text_node, ProblemKind.LIMIT, "text node"),
    "depth_100k": (_deep_nesting, ProblemKind.LIMIT, "nested deeper"),
    "attribute_20mb": (_huge_attribute, ProblemKind.LIMIT, "size limit"),
    "name_100k": (_long_name, ProblemKind.LIMIT, "name"),
    "billion_laughs": (_billion_laughs, ProblemKind.DOCTYPE, "DTD"),
    "quadratic_blowup": (_quadratic_blowup, ProblemKind.DOCTYPE, "DTD"),
    "leading_comment_2mb": (_huge_leading_comment, ProblemKind.NOT_XML, "no root element"),
}


def _own_peak_rss_mb() -> float:
    """This process's peak RSS since its exec (`VmHWM`).

    Not `getrusage().ru_maxrss`: Linux keeps that across execve, so a child forked from a
    large pytest process would report the parent's peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def child_main(name: str) -> None:
    """Runs in the subprocess: parse one huge input, print the outcome and peak RSS."""
    factory = HUGE_INPUTS[name][0]
    reader = ReportReader(factory(), name)
    cases = list(reader)
    problem = reader.problem
    print(
        json.dumps(
            {
                "cases": len(cases),
                "kind": str(reader.problem_kind) if reader.problem_kind else None,
                "reason": problem.reason if problem else None,
                "partial": problem.partial if problem else None,
                "peak_rss_mb": _own_peak_rss_mb(),
            }
        )
    )


def _run_child(name: str) -> dict[str, object]:
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('hostile', {str(Path(__file__))!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "module.child_main(sys.argv[1])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, name], check=True, capture_output=True, text=True, timeout=60
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("name", sorted(HUGE_INPUTS))
def test_huge_or_amplifying_input_is_a_bounded_problem(name: str) -> None:
    _, kind, phrase = HUGE_INPUTS[name]
    result = _run_child(name)
    assert result["kind"] == str(kind)
    assert isinstance(result["reason"], str)
    assert phrase in result["reason"]
    assert result["cases"] == 0
    assert isinstance(result["peak_rss_mb"], float)
    assert result["peak_rss_mb"] < MAX_PEAK_RSS_MB
    assert "lol" not in result["reason"]
    assert "AAAA" not in result["reason"]


# -- XXE: the planted file content must not appear anywhere ----------------------------------


def _all_text(cases: list[object], reason: str | None) -> str:
    return repr(cases) + (reason or "")


@pytest.mark.parametrize(
    "template",
    [
        # entity in text, in an attribute, and as a parameter entity
        '<!DOCTYPE testsuites [<!ENTITY xxe SYSTEM "{url}">]>'
        '<testsuites><testsuite name="s"><testcase name="t"><failure message="m">&xxe;'
        "</failure></testcase></testsuite></testsuites>",
        '<!DOCTYPE testsuites [<!ENTITY xxe SYSTEM "{url}">]>'
        '<testsuites><testsuite name="&xxe;"><testcase name="t"/></testsuite></testsuites>',
        '<!DOCTYPE testsuites [<!ENTITY % p SYSTEM "{url}"> %p;]><testsuites/>',
        '<!DOCTYPE testsuites SYSTEM "{url}"><testsuites><testcase name="t"/></testsuites>',
    ],
)
def test_xxe_with_a_local_file_never_leaks(tmp_path: Path, template: str) -> None:
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(SECRET, encoding="utf-8")
    doc = '<?xml version="1.0"?>' + template.format(url=secret_file.as_uri())
    cases, problem = parse_bytes(doc.encode(), "xxe.xml")
    assert problem is not None
    assert problem.reason.startswith(ProblemKind.DOCTYPE.value)
    assert cases == []
    assert SECRET not in _all_text(list(cases), problem.reason)
    assert str(secret_file) not in problem.reason


def test_external_dtd_over_http_is_refused_before_any_fetch() -> None:
    doc = b'<!DOCTYPE testsuites SYSTEM "http://127.0.0.1:9/evil.dtd"><testsuites/>'
    cases, problem = parse_bytes(doc, "dtd.xml")
    assert cases == []
    assert problem is not None
    assert problem.reason.startswith(ProblemKind.DOCTYPE.value)
    assert "127.0.0.1" not in problem.reason


def test_undeclared_entity_without_doctype_is_malformed_and_not_echoed() -> None:
    doc = b'<testsuites><testsuite name="s"><testcase name="t">&secretname;</testcase>'
    cases, problem = parse_bytes(doc + b"</testsuite></testsuites>", "e.xml")
    assert cases == []
    assert problem is not None
    assert "secretname" not in problem.reason


# -- broken documents -------------------------------------------------------------------------


def _suite(cases: int, name: str = "s") -> bytes:
    body = "".join(f'<testcase classname="c" name="t{i}" time="0.1"/>' for i in range(cases))
    return f'<testsuite name="{name}">{body}</testsuite>'.encode()


def test_truncated_file_keeps_complete_cases_and_is_partial() -> None:
    full = b"<testsuites>" + _suite(10, "a") + _suite(10, "b") + b"</testsuites>"
    cut = full[: full.index(b'name="t5"', full.index(b'name="b"'))]
    cases, problem = parse_bytes(cut, "cut.xml")
    assert problem is not None
    assert problem.reason.startswith(ProblemKind.TRUNCATED.value)
    assert problem.partial
    assert [c.name for c in cases] == [f"t{i}" for i in range(10)] + [f"t{i}" for i in range(5)]


def test_truncated_before_any_case_is_not_partial() -> None:
    cases, problem = parse_bytes(b'<testsuites><testsuite name="s"><testca', "cut.xml")
    assert cases == []
    assert problem is not None
    assert not problem.partial


def test_invalid_utf8_is_malformed_without_echoing_bytes() -> None:
    doc = b'<testsuites><testsuite name="s"><testcase name="ok"/><testcase name="b\xff\xfeX"/>'
    cases, problem = parse_bytes(doc + b"</testsuite></testsuites>", "bad.xml")
    assert problem is not None
    assert problem.reason.startswith(ProblemKind.MALFORMED.value)
    assert "encoding" in problem.reason
    assert "0xFF" not in problem.reason.upper()
    assert "bX" not in problem.reason
    assert [c.name for c in cases] in ([], ["ok"])


def test_two_roots_keep_the_first_and_flag_the_rest() -> None:
    doc = b"<testsuites>" + _suite(2) + b"</testsuites><testsuites>" + _suite(2, "x") + b"</tes"
    cases, problem = parse_bytes(doc + b"tsuites>", "two.xml")
    assert problem is not None
    assert problem.reason.startswith(ProblemKind.MALFORMED.value)
    assert "after the root" in problem.reason
    assert problem.partial
    assert [c.suite for c in cases] == ["s", "s"]


def test_mismatched_tag_names_are_not_echoed() -> None:
    doc = b'<testsuites><testsuite name="s"><SeCrEtTaG></testsuite></testsuites>'
    cases, problem = parse_bytes(doc, "m.xml")
    assert cases == []
    assert problem is not None
    assert "SeCrEtTaG" not in problem.reason


@pytest.mark.parametrize(
    "doc",
    [
        b'<test-results total="1"><test-suite name="x"/></test-results>',
        b"<assemblies><assembly name='a.dll'/></assemblies>",
        b'<checkstyle version="8"><file name="a.java"/></checkstyle>',
        b'<coverage line-rate="0.5"><packages/></coverage>',
        b'<TestRun xmlns="http://microsoft.com/schemas/VisualStudio/TeamTest/2010"/>',
        b'<testsuites xmlns="urn:not-junit"><testsuite name="s"/></testsuites>',
        b'<testcase name="lonely"/>',
    ],
)
def test_non_junit_roots_are_not_junit(doc: bytes) -> None:
    cases, problem = parse_bytes(doc, "other.xml")
    assert cases == []
    assert problem is not None
    assert problem.reason.startswith(ProblemKind.NOT_JUNIT.value)


@pytest.mark.parametrize("doc", [b"", b"   \n", b"FAIL: everything\n", b"\x00\x01\x02", b"{}"])
def test_empty_or_not_xml(doc: bytes) -> None:
    cases, problem = parse_bytes(doc, "x.xml")
    assert cases == []
    assert problem is not None
    assert problem.reason.startswith(ProblemKind.NOT_XML.value)


def test_utf16_and_latin1_documents_parse() -> None:
    text = '<testsuites><testsuite name="s"><testcase name="é ü"/></testsuite></testsuites>'
    utf16, problem16 = parse_bytes(text.encode("utf-16"), "u16.xml")
    latin = b'<?xml version="1.0" encoding="ISO-8859-1"?>' + text.encode("latin-1")
    latin1, problem1 = parse_bytes(latin, "l1.xml")
    assert problem16 is None
    assert problem1 is None
    assert [c.name for c in utf16] == [c.name for c in latin1] == ["é ü"]


# -- the stream itself fails ------------------------------------------------------------------


class MemberTooLargeError(OSError):
    """What a ZIP member wrapper raises past its byte budget."""


class FailingStream(io.RawIOBase):
    def __init__(self, data: bytes, fail_after_bytes: int, error: Exception) -> None:
        self._data = data
        self._pos = 0
        self._fail_after = fail_after_bytes
        self._error = error

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._pos >= self._fail_after:
            raise self._error
        size = min(len(buffer), self._fail_after - self._pos, len(self._data) - self._pos)
        buffer[:size] = self._data[self._pos : self._pos + size]
        self._pos += size
        return size


def test_stream_error_mid_file_is_a_partial_read_problem() -> None:
    doc = b"<testsuites>" + _suite(5000) + b"</testsuites>"
    error = MemberTooLargeError("member junit.xml exceeds 262144 bytes")
    stream = FailingStream(doc, 150_000, error)
    reader = ReportReader(io.BufferedReader(stream), "run/junit.xml")
    cases = list(reader)
    assert reader.problem is not None
    assert reader.problem_kind is ProblemKind.READ_FAILED
    assert "MemberTooLargeError: member junit.xml exceeds 262144 bytes" in reader.problem.reason
    assert reader.problem.partial
    assert 0 < len(cases) < 5000
    assert all(c.outcome is Outcome.PASSED for c in cases)


def test_stream_error_at_first_read_is_a_problem_without_cases() -> None:
    stream = FailingStream(b"<testsuites/>", 0, OSError("connection reset"))
    reader = ReportReader(io.BufferedReader(stream), "a.xml")
    assert list(reader) == []
    assert reader.problem is not None
    assert reader.problem.reason == "reading the file failed: OSError: connection reset"
    assert not reader.problem.partial


def test_a_reader_is_single_use() -> None:
    reader = ReportReader(io.BytesIO(b"<testsuites/>"), "a.xml")
    assert list(reader) == []
    with pytest.raises(RuntimeError, match="only once"):
        list(reader)
