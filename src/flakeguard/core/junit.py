"""JUnit XML → `CaseResult`: a streaming, hardened, pure parser.

Input is a binary stream (a file, a ZIP member behind a byte-budget wrapper, a `BytesIO`);
this module opens nothing, reads no clock and never raises for bad input: a file that is not
XML, not JUnit, hostile, truncated or unreadable ends the iteration with a `ReportProblem`
whose reason never quotes the file's content.

Parsing (notes/junit.md §3, §5)
    `lxml.etree.iterparse(resolve_entities=False, no_network=True, load_dtd=False,
    huge_tree=False, recover=False)`, only "end" events of `testsuites`/`testsuite`/`testcase`
    (a suite is entered when its first testcase or its own end arrives: its start tag is
    parsed by then). A testcase with children is cleared at once; finished siblings are
    deleted in one slice every 64 testcases, so memory is bounded by a few dozen childless
    elements, one testcase, and the current suite's buffer. Before that, a probe parses the
    prolog (at most `ParseLimits.max_prolog_bytes`) to see the root element: any DOCTYPE
    (hence any ENTITY) is rejected, and a root other than `<testsuites>`/`<testsuite>` (NUnit,
    xUnit.net, checkstyle…) is "not JUnit" before the body is read. libxml2's default limits
    (depth 256, text node 10 MB, name 50,000 chars) and amplification guard stay on. When
    `_junit_speedups` is built, its compiled loop reads the testcases instead of the loop
    here, by the same rules (see that module); `SPEEDUPS` says whether it is.

Identity (stable across runs: no times, timestamps, machine hostnames or attempt numbers)
    suite       the names of the enclosing `<testsuite>` elements, outermost first, joined with
                " / " (the `<testsuites>` wrapper is a report, not a suite, and is left out).
                Each name is stripped, loses a CI workspace prefix (below) and xmlrunner's
                ``-YYYYMMDDhhmmss`` suffix. Playwright (root `<testsuites id="" name="">`) puts
                the project in the suite's ``hostname``: it is appended as `` [project]``;
                every other tool's ``hostname`` is a machine name and is ignored.
    class_name  ``classname`` (else PHPUnit's ``class``) as written, stripped. What it means
                differs per tool (pytest module path, jest "describe title", mocha title, Go
                package) but it is stable for one tool, which is all identity needs.
    name        ``name``, stripped.
    file        the testcase's ``file``, else the nearest enclosing suite's ``file``, else the
                ``file`` of a Cypress/mocha top-level "Root Suite" seen earlier in the report.
                Normalised: ``\\`` → ``/``, a leading ``./`` dropped, and a CI workspace prefix
                (``/home/runner/work/<repo>/<repo>/``, ``/__w/…/…/``, ``D:/a/…/…/``,
                ``/Users/runner/work/…/…/``) removed so the same test on Linux, macOS,
                Windows and container runners keeps one key. Empty → None.

Attempts and retries (notes §2.3)
    Repeated `<testcase>` elements with the same (class_name, name, file) inside the same
    innermost suite are one `CaseResult`; each occurrence is an attempt in document order.
    Surefire/Failsafe/Gradle/Marathon/nextest children add attempts: ``flakyFailure``/
    ``flakyError`` are failed attempts *before* the main result, ``rerunFailure``/
    ``rerunError`` failing reruns *after* it. The final outcome is the last attempt.
    pytest-rerunfailures ≥ 16.6.1 writes a failed attempt as an *empty* testcase: in a pytest
    report (root named "pytest tests" or suite named "pytest") every non-final occurrence that
    looks passed is a FAILED attempt without details. Example: pytest writes
    ``<testcase name="t"/><testcase name="t"/>`` for "failed, then passed on rerun" →
    attempts (FAILED, PASSED), `is_flaky_in_report` True. gotestsum ``--rerun-fails`` writes
    the failures first and the passing rerun last, so "last occurrence" is right for it too.

Outcome of one element
    the first ``failure``/``error`` child decides (FAILED/ERROR, its ``type`` and ``message``),
    else ``skipped`` → SKIPPED, else CTest/Bazel ``status`` (``fail`` → FAILED, ``notrun``/
    ``disabled`` → SKIPPED), else PASSED. node:test's ``failure=`` attribute is ignored (its
    ``<failure>`` child carries the same). Message = the ``message`` attribute, else the
    first non-blank text line, cut to `ParseLimits.max_message_chars`. Duration: see
    `parse_duration_s`. Signature: see `failure_signature`.

Properties
    The testcase's own ``<properties>`` (pytest ``record_property``, Playwright annotations,
    CTest labels) and the environment keys of enclosing suites (`ENV_PROPERTY_NAMES`, e.g.
    AGP ``device``/``flavor``) plus ``playwright.project``; bounded in count and length.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import chain, islice
from operator import itemgetter
from typing import IO, Any, Final, cast

from lxml import etree

from flakeguard.core.models import FAILING, Attempt, CaseResult, Outcome, ReportProblem

_scan_cases: Callable[..., tuple[Any, int, bool]] | None
_drain_cases: Callable[..., tuple[list[CaseResult], int]] | None
_fast_signature: Callable[..., str] | None
try:
    # Compiled at install when a C compiler is present (setup.py); without it, the same
    # results come from the pure-Python loop below, ~1.4x slower on big reports.
    from flakeguard.core._junit_speedups import drain_cases, scan_cases
    from flakeguard.core._junit_speedups import failure_signature as fast_signature
    from flakeguard.core._junit_speedups import new_buffer as _new_buffer
except ImportError:  # pragma: no cover - depends on the install, not on the input
    _scan_cases = _drain_cases = _fast_signature = None
else:
    _scan_cases, _drain_cases, _fast_signature = scan_cases, drain_cases, fast_signature

SPEEDUPS: Final = _scan_cases is not None
"""Whether the compiled hot loop (`_junit_speedups`) is installed."""

__all__ = [
    "ENV_PROPERTY_NAMES",
    "SPEEDUPS",
    "ParseLimits",
    "ProblemKind",
    "ReportReader",
    "ReportStats",
    "failure_signature",
    "normalise_file",
    "parse_bytes",
    "parse_duration_s",
]


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Bounds on what one report may cost; defaults suit CI artifacts."""

    max_message_chars: int = 4096
    """Trimmed message bound (the full text is not kept)."""
    max_stack_chars_hashed: int = 65536
    """How much of a stack trace feeds the signature hash."""
    max_stack_lines_hashed: int = 12
    """How many non-blank stack lines (the first frames) feed the signature hash."""
    max_buffered_attempts: int = 10_000
    """Attempts held for one suite before it is flushed early (a retry after the flush
    starts a new `CaseResult`); bounds memory for giant suites."""
    max_prolog_bytes: int = 1 << 20
    """The root element must start within this many bytes (comments, PIs, BOM)."""
    max_properties_per_case: int = 32
    max_property_chars: int = 512
    """Bound on each property name and value."""
    read_chunk_bytes: int = 64 * 1024
    """Read size of the prolog probe."""


DEFAULT_LIMITS: Final = ParseLimits()


class ProblemKind(StrEnum):
    """Why a report could not be (fully) used; the first words of `ReportProblem.reason`."""

    READ_FAILED = "reading the file failed"
    NOT_XML = "not XML"
    NOT_JUNIT = "not a JUnit report"
    DOCTYPE = "DOCTYPE not allowed"
    MALFORMED = "malformed XML"
    TRUNCATED = "truncated XML"
    LIMIT = "XML parser limit exceeded"


@dataclass(frozen=True, slots=True)
class ReportStats:
    """Counts over the yielded `CaseResult`s (never the suite attributes, which lie).

    Counted per suite as it is flushed: read them after the iteration ends.
    """

    cases: int = 0
    attempts: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    flaky: int = 0
    """Cases with a failing attempt and a final pass."""


ENV_PROPERTY_NAMES: Final[frozenset[str]] = frozenset({"device", "flavor", "project", "go.version"})
"""Suite-level properties copied to each case: they describe where the test ran (AGP
`device`/`flavor`/`project`, go-junit-report `go.version`). JVM dumps are not copied."""

PLAYWRIGHT_PROJECT_PROPERTY: Final = "playwright.project"

_SUITE_TAGS: Final = frozenset({"testsuites", "testsuite"})
_PYTEST_ROOT_NAME: Final = "pytest tests"
_PYTEST_SUITE_NAME: Final = "pytest"
_MOCHA_ROOT_SUITE: Final = "Root Suite"
_SUITE_SEPARATOR: Final = " / "
_MAX_DURATION_S: Final = 1e7
_CACHE_ENTRIES: Final = 4096
# Bound once for the per-failure code: on Python 3.11 `Outcome.ERROR` calls the enum
# type's `__getattr__` (~1 µs), and `hashlib.blake2b` is one more lookup.
_ERROR: Final = Outcome.ERROR
_SKIPPED: Final = Outcome.SKIPPED
_blake2b: Final = hashlib.blake2b

_FAIL_KIND: Final[dict[str, Outcome]] = {"failure": Outcome.FAILED, "error": Outcome.ERROR}
_FLAKY_KIND: Final[dict[str, Outcome]] = {
    "flakyFailure": Outcome.FAILED,
    "flakyError": Outcome.ERROR,
}
_RERUN_KIND: Final[dict[str, Outcome]] = {
    "rerunFailure": Outcome.FAILED,
    "rerunError": Outcome.ERROR,
}
_STATUS_OUTCOME: Final[dict[str, Outcome]] = {
    "fail": Outcome.FAILED,
    "failed": Outcome.FAILED,
    "failure": Outcome.FAILED,
    "error": Outcome.ERROR,
    "notrun": Outcome.SKIPPED,
    "disabled": Outcome.SKIPPED,
    "skipped": Outcome.SKIPPED,
}

_WORKSPACE_RE: Final = re.compile(
    r"(?:/home/runner/work|/Users/runner/work|/__w|[A-Za-z]:/a)/[^/\s]+/[^/\s]+/"
)
_SHOWABLE_NAME_RE: Final = re.compile(r"(?:\{[\w:/.#-]{1,100}\})?[A-Za-z_][\w.:-]{0,63}")
_XMLRUNNER_SUFFIX_RE: Final = re.compile(r"-\d{14}$")
_THOUSANDS_RE: Final = re.compile(r"[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?")
_DECIMAL_COMMA_RE: Final = re.compile(r"\d+,\d+")

_HEX_MASK: Final = re.compile(r"0x[0-9a-fA-F]+")
# Volatile parts of failure text, masked before hashing. Each regex runs only when a cheap
# substring test says it can match (a regex scan costs ~10 µs per stack), and digits are
# dropped with one `bytes.translate`.
_MASKS: Final[tuple[tuple[tuple[str, ...], re.Pattern[str], str], ...]] = (
    (
        ("runner/work/", "/__w/", ":/a/", ":\\a\\"),
        re.compile(
            r"(?:/home/runner/work|/Users/runner/work|/__w|[A-Za-z]:/a)/[^/\s]+/[^/\s]+/"
            r"|[A-Za-z]:\\a\\[^\\\s]+\\[^\\\s]+\\"
        ),
        "",
    ),
    (
        # Recognised in failure text to mask it; nothing here creates temp files.
        ("/tmp/", "/var/folders/", "/private/var/", "pytest-of-", "\\Temp\\", "/Temp/"),  # noqa: S108
        re.compile(r"(?:/tmp/|/var/folders/|/private/var/|pytest-of-|[/\\]Temp[/\\])[^\s'\"<>)]*"),
        "<tmp>",
    ),
    (("0x",), _HEX_MASK, "0x"),
    (
        ("-",),
        re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"),
        "<uuid>",
    ),
)
_DIGITS: Final = b"0123456789"


def parse_duration_s(text: str | None) -> float | None:
    """Seconds from a JUnit ``time`` attribute, or None when it cannot be trusted.

    Accepts plain decimals, thousands separators (Surefire 2.22–3.1 over 1000 s) and a
    decimal comma (old Surefire, xUnit.net). A comma group starting with a non-zero digit is
    read as thousands, so the ambiguous ``"1,234"`` is 1234 s. Negative, NaN, infinite or
    > 1e7 s (115 days) → None.

    >>> parse_duration_s("2,120.532"), parse_duration_s("0,025"), parse_duration_s("-345345")
    (2120.532, 0.025, None)
    """
    if text is None:
        return None
    try:
        seconds = float(text)
    except ValueError:
        stripped = text.strip()
        if _THOUSANDS_RE.fullmatch(stripped):
            seconds = float(stripped.replace(",", ""))
        elif _DECIMAL_COMMA_RE.fullmatch(stripped):
            seconds = float(stripped.replace(",", "."))
        else:
            return None
    if math.isfinite(seconds) and 0.0 <= seconds <= _MAX_DURATION_S:
        return seconds
    return None


def normalise_file(path: str | None) -> str | None:
    """A test file path in one form for every runner OS.

    >>> normalise_file(r"D:\\a\\shop\\shop\\src\\cart.spec.js"), normalise_file("./spec/a_spec.rb")
    ('src/cart.spec.js', 'spec/a_spec.rb')
    """
    if path is None:
        return None
    cleaned = path.strip().replace("\\", "/")
    cleaned = _WORKSPACE_RE.sub("", cleaned, count=1)
    while cleaned.startswith("./"):
        cleaned = cleaned[2:]
    return cleaned or None


def _masked_bytes(text: str) -> bytes:
    # Every hint except "0x" holds "/", "\\" or "-", and no mask creates one of those: when
    # none is present only the "0x" mask can apply (3 scans instead of 13, e.g. Java stacks).
    if "/" in text or "\\" in text or "-" in text:
        for hints, pattern, replacement in _MASKS:
            for hint in hints:
                if hint in text:
                    text = pattern.sub(replacement, text)
                    break
    elif "0x" in text:
        text = _HEX_MASK.sub("0x", text)
    return text.encode("utf-8", "surrogatepass").translate(None, _DIGITS)


def failure_signature(
    kind: str,
    failure_type: str | None,
    message: str | None,
    stack: str | None,
    limits: ParseLimits = DEFAULT_LIMITS,
) -> str:
    """Stable hash of one failure: same failure mode → same signature across runs.

    Hashes (blake2b, 16 bytes) `kind` ("failure" or "error"), the type, the message and the
    first `limits.max_stack_lines_hashed` non-blank lines of the first
    `limits.max_stack_chars_hashed` characters of the stack, after masking volatile parts:
    CI workspace prefixes and temp paths (``/tmp/…``, ``pytest-of-…``) go, ``0x…``
    addresses and UUIDs become placeholders, lines are stripped (runs of blanks in the
    message become one space), and every digit is dropped. Dropping digits removes
    timestamps, durations, ports, random values and line numbers at once: one failure mode
    keeps one signature across runs and small edits ("expected 3 but was 4" and "expected 1
    but was 0" at a moved line are one signature).

    >>> a = failure_signature("failure", "E", "obj at 0x7f3a took 1.25s", "at f(a.py:12)")
    >>> a == failure_signature("failure", "E", "obj at 0x55aa took 3.5s", "at f(a.py:14)")
    True
    >>> a == failure_signature("error", "E", "obj at 0x7f3a took 1.25s", "at f(a.py:12)")
    False
    """
    lines = [kind, failure_type or "", " ".join((message or "").split())]
    if stack:
        # The first non-blank stripped lines, iterated in C (~1 µs less per failure).
        head = stack[: limits.max_stack_chars_hashed].splitlines()
        lines.extend(islice(filter(None, map(str.strip, head)), limits.max_stack_lines_hashed))
    raw = _masked_bytes("\n".join(lines))
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def _trim(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    return text[: max_chars - 1] + "…"


def _first_line(text: str | None) -> str | None:
    if not text:
        return None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped:
            return stripped
    return None


def _suite_part(name: str | None) -> str:
    if not name:
        return ""
    cleaned = name.strip().replace("\\", "/")
    # Each regex runs only where it can match (the two scans cost ~2.5 µs per suite).
    if "/" in cleaned:
        cleaned = _WORKSPACE_RE.sub("", cleaned, count=1)
    if len(cleaned) > 14 and cleaned[-15] == "-":
        cleaned = _XMLRUNNER_SUFFIX_RE.sub("", cleaned)
    return cleaned


class _StreamReadFailedError(Exception):
    """Raised through lxml when the wrapped stream's own read fails."""


class _RootReachedError(Exception):
    """Stops the prolog probe at the root element's start tag."""


class _GuardedStream:
    """Reads the caller's stream, remembering any failure of the stream itself.

    lxml re-raises whatever `read` raised; recording it here tells a stream failure (a size
    cap of the ZIP wrapper, an OSError) apart from bad XML and from our own bugs.
    """

    __slots__ = ("_prefix", "_raw", "failure")

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._prefix = b""
        self.failure: BaseException | None = None

    def replay(self, prefix: bytes) -> None:
        """Serve `prefix` again before the rest of the stream (the probe consumed it)."""
        self._prefix = prefix

    def read(self, size: int = -1) -> bytes:
        if self._prefix:
            if size < 0 or size >= len(self._prefix):
                data, self._prefix = self._prefix, b""
            else:
                data, self._prefix = self._prefix[:size], self._prefix[size:]
            return data
        try:
            data = self._raw.read(size)
        except MemoryError:
            raise
        # The stream is foreign (ZIP member, HTTP body, file): whatever its read raises is, by
        # this module's contract, a per-file problem, never a crash of the whole run.
        except Exception as exc:
            self.failure = exc
            raise _StreamReadFailedError from exc
        return data


class _Probe:
    """lxml parser target that records the DOCTYPE and stops at the root start tag."""

    def __init__(self) -> None:
        self.has_doctype = False
        self.root_tag: str | None = None
        self.root_attrs: dict[str, str] = {}

    def doctype(self, name: str | None, public_id: str | None, system_url: str | None) -> None:
        self.has_doctype = True

    def start(self, tag: str | bytes, attrib: dict[str | bytes, str | bytes]) -> None:
        self.root_tag = str(tag)
        self.root_attrs = {str(k): str(v) for k, v in attrib.items()}
        raise _RootReachedError

    def end(self, tag: str | bytes) -> None:
        """Unused: the probe stops at the first start tag."""

    def data(self, data: str | bytes) -> None:
        """Unused: prolog text carries nothing we need."""

    def comment(self, text: str | bytes) -> None:
        """Unused: comments before the root are allowed and ignored."""

    def close(self) -> None:
        """Unused: the probe is abandoned after the root start tag."""


_ERROR_NAMES: Final[dict[int, str]] = {
    code: name for name, code in vars(etree.ErrorTypes).items() if isinstance(code, int)
}
_TRUNCATION_ERRORS: Final = frozenset(
    {"ERR_TAG_NOT_FINISHED", "ERR_DOCUMENT_EMPTY", "ERR_LTSLASH_REQUIRED", "ERR_GT_REQUIRED"}
)


def _syntax_problem(exc: etree.XMLSyntaxError) -> tuple[ProblemKind, str]:
    """Kind and detail of a libxml2 error, without its message (which may quote content)."""
    code = int(getattr(exc, "code", 0))  # set by lxml, missing from lxml-stubs
    name = _ERROR_NAMES.get(code, f"error {code}")
    line = exc.lineno
    msg = exc.msg or ""
    if name == "ERR_RESOURCE_LIMIT" or "limit" in msg.lower() or "too long" in msg.lower():
        if "depth" in msg.lower():
            detail = "elements nested deeper than 256 levels"
        elif "text node" in msg.lower():
            detail = "a text node over 10,000,000 bytes"
        elif "name" in msg.lower():
            detail = "a name over 50,000 characters"
        elif "amplification" in msg.lower():
            detail = "entity amplification"
        else:
            detail = "a value over the parser's size limit"
        return ProblemKind.LIMIT, f"{detail} (line {line})"
    if name in _TRUNCATION_ERRORS or (line == 0 and name == "ERR_INTERNAL_ERROR"):
        return ProblemKind.TRUNCATED, f"the document ends early ({name}, line {line})"
    if name in ("ERR_DOCUMENT_END", "ERR_EXTRA_CONTENT"):
        return ProblemKind.MALFORMED, f"content after the root element (line {line})"
    if name in ("ERR_INVALID_ENCODING", "ERR_INVALID_CHAR", "ERR_UNKNOWN_ENCODING"):
        return ProblemKind.MALFORMED, f"invalid bytes for the document's encoding (line {line})"
    if "entity" in name.lower():
        return ProblemKind.MALFORMED, f"an entity reference ({name}, line {line})"
    return ProblemKind.MALFORMED, f"{name} at line {line}"


_CaseKey = tuple[str | None, str | None, str | None]
"""(classname, name, file) as written: the merge key inside one suite."""

_Buffer = dict[_CaseKey, "Attempt | list[Attempt]"]
"""A suite's attempts per test: one `Attempt` (the common case) or a list in document order."""

_Pick = Callable[[Sequence[object]], _CaseKey]
_NO_PICK: Final[_Pick] = cast(_Pick, itemgetter(-1, -1, -1))


def _case_layout(keys: Sequence[object]) -> tuple[_Pick, int, bool]:
    """How to read a testcase with attributes `keys` (in document order).

    Returns a picker of the merge key (classname or else class, name, file) from the
    element's ``values()`` with a None appended (a missing attribute picks that None), the
    index of ``time`` in the same list, and whether the layout has no ``status`` attribute.
    Testcases of one report nearly always share one layout, so this runs a few times per
    file instead of five `get` calls per testcase.
    """

    def index(attribute: str) -> int:
        return keys.index(attribute) if attribute in keys else -1

    class_index = index("classname")
    if class_index < 0:
        class_index = index("class")
    pick = cast(_Pick, itemgetter(class_index, index("name"), index("file")))
    return pick, index("time"), "status" not in keys


def _appended(previous: Attempt | list[Attempt], attempt: Attempt) -> list[Attempt]:
    if isinstance(previous, list):
        previous.append(attempt)
        return previous
    return [previous, attempt]


_CASE_FIELDS: Final = ("suite", "class_name", "name", "file", "attempts", "properties")
if CaseResult._fields != _CASE_FIELDS:  # pragma: no cover
    raise ImportError(
        "core.models.CaseResult changed: update _CASE_FIELDS, ReportReader._drain_cases"
        " and _junit_speedups.drain_cases"
    )
if Attempt._fields != ("outcome", "duration_s", "failure_type", "message", "signature"):
    raise ImportError(
        "core.models.Attempt changed: update the `_new_tuple(Attempt, ...)` calls"
    )  # pragma: no cover
_new_tuple: Final = tuple.__new__
_CLEAR_EVERY: Final = 64
"""Testcases between two deletions of a suite's finished children."""


def _enclosing_suite(node: etree._Element | None) -> etree._Element:
    """`node` itself or its nearest `<testsuite>`/`<testsuites>` ancestor."""
    while node is not None and node.tag not in _SUITE_TAGS:
        node = node.getparent()
    if node is None:
        raise AssertionError("unreachable: the probe saw a suite root")
    return node


class _Frame:
    """An open suite: its identity context and its buffered attempts per test."""

    __slots__ = (
        "buffer",
        "case_properties",
        "elem",
        "env",
        "env_ready",
        "file",
        "hides_failed_attempts",
        "path",
        "project",
    )

    def __init__(
        self,
        elem: etree._Element,
        path: str,
        file: str | None,
        project: str | None,
        env: tuple[tuple[str, str], ...],
        hides_failed_attempts: bool,
    ) -> None:
        self.elem = elem
        self.path = path
        self.file = file
        self.project = project
        self.env = env
        self.env_ready = False
        self.hides_failed_attempts = hides_failed_attempts
        self.buffer: _Buffer = {}
        self.case_properties: dict[_CaseKey, tuple[tuple[str, str], ...]] = {}


class ReportReader:
    """Streams `CaseResult` objects out of one JUnit XML byte stream.

    Iterate once; cases come out suite by suite (a suite's repeated testcases are merged, so
    a suite is yielded when it closes, or earlier when `max_buffered_attempts` is reached).
    After iteration, `problem` says why the file was not (fully) usable and `stats` counts
    what was yielded. Bad input never raises; bugs and MemoryError do. `speedups=False`
    runs the pure-Python loop even where the compiled one is installed (same results).

    >>> xml = b'<testsuite name="s"><testcase name="t"/></testsuite>'
    >>> reader = ReportReader(io.BytesIO(xml), "r.xml")
    >>> [c.name for c in reader], reader.problem
    (['t'], None)
    """

    def __init__(
        self,
        stream: IO[bytes],
        source: str,
        limits: ParseLimits = DEFAULT_LIMITS,
        *,
        speedups: bool = True,
    ) -> None:
        self._stream = _GuardedStream(stream)
        self._speedups = speedups
        self._python_signature = functools.partial(failure_signature, limits=limits)
        self._source = source
        self._limits = limits
        self._problem: ReportProblem | None = None
        self._problem_kind: ProblemKind | None = None
        self._started = False
        self._yielded = 0
        self._attempts = 0
        self._counts: dict[Outcome, int] = dict.fromkeys(Outcome, 0)
        self._flaky = 0
        self._passed_cache: dict[str | None, Attempt] = {}
        self._suite_size = 0  # distinct cases of the last suite drained: the next one's guess
        self._file_cache: dict[str, str | None] = {}
        self._default_file: str | None = None
        self._is_pytest = False
        self._is_playwright = False

    @property
    def problem(self) -> ReportProblem | None:
        """Why the file was not (fully) used; None if fine. Valid after iteration ends."""
        return self._problem

    @property
    def problem_kind(self) -> ProblemKind | None:
        return self._problem_kind

    @property
    def stats(self) -> ReportStats:
        counts = self._counts
        return ReportStats(
            cases=self._yielded,
            attempts=self._attempts,
            passed=counts[Outcome.PASSED],
            failed=counts[Outcome.FAILED],
            errors=counts[Outcome.ERROR],
            skipped=counts[Outcome.SKIPPED],
            flaky=self._flaky,
        )

    # -- driving ---------------------------------------------------------------------------

    def __iter__(self) -> Iterator[CaseResult]:
        if self._started:
            raise RuntimeError("a ReportReader can be iterated only once")
        self._started = True
        # Cases travel in per-suite lists: stepping from one case to the next is then C code
        # (`chain`), not a resumption of three nested generator frames.
        return chain.from_iterable(self._suites())

    def _suites(self) -> Iterator[list[CaseResult]]:
        root = self._probe_root()
        if root is None:
            return
        root_tag, root_attrs = root
        self._is_pytest = root_attrs.get("name") == _PYTEST_ROOT_NAME
        self._is_playwright = (
            root_tag == "testsuites" and root_attrs.get("id") == "" and root_attrs.get("name") == ""
        )
        yield from self._parse_body()

    def _fail(self, kind: ProblemKind, detail: str) -> None:
        reason = f"{kind.value}: {detail}" if detail else kind.value
        self._problem_kind = kind
        self._problem = ReportProblem(source=self._source, reason=reason, partial=self._yielded > 0)

    def _read_failure_detail(self) -> str:
        exc = self._stream.failure
        if exc is None:
            return "unknown stream error"
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    def _probe_root(self) -> tuple[str, dict[str, str]] | None:
        """Read the prolog until the root start tag; check DOCTYPE and root name."""
        probe = _Probe()
        # The recipe of notes/junit.md §5, spelled out at both parser constructions.
        parser = etree.XMLParser(
            target=probe,
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            huge_tree=False,
            recover=False,
        )
        seen: list[bytes] = []
        seen_bytes = 0
        limits = self._limits
        try:
            while True:
                chunk = self._stream.read(limits.read_chunk_bytes)
                if not chunk:
                    parser.close()
                    self._fail(ProblemKind.NOT_XML, "no root element")
                    return None
                seen.append(chunk)
                seen_bytes += len(chunk)
                parser.feed(chunk)
                if probe.has_doctype:
                    break
                if seen_bytes > limits.max_prolog_bytes:
                    self._fail(
                        ProblemKind.NOT_XML,
                        f"no root element in the first {limits.max_prolog_bytes} bytes",
                    )
                    return None
        except _RootReachedError:
            pass
        except _StreamReadFailedError:
            self._fail(ProblemKind.READ_FAILED, self._read_failure_detail())
            return None
        except etree.XMLSyntaxError as exc:
            if not probe.has_doctype:
                kind, detail = _syntax_problem(exc)
                # Before the root element nothing is "truncated" or "malformed": it is no XML.
                self._fail(
                    ProblemKind.LIMIT if kind is ProblemKind.LIMIT else ProblemKind.NOT_XML, detail
                )
                return None
        if probe.has_doctype:
            self._fail(
                ProblemKind.DOCTYPE,
                "the document declares a DTD (JUnit never needs one; entities are refused)",
            )
            return None
        tag = probe.root_tag or ""
        if tag not in _SUITE_TAGS:
            # A root name is markup, not text or entity content; shown only in a plain shape.
            shown = tag if _SHOWABLE_NAME_RE.fullmatch(tag) else "unexpected name"
            self._fail(
                ProblemKind.NOT_JUNIT,
                f"root element <{shown}>, expected <testsuites> or <testsuite>",
            )
            return None
        self._stream.replay(b"".join(seen))
        return tag, probe.root_attrs

    def _parse_body(self) -> Iterator[list[CaseResult]]:
        # The recipe of notes/junit.md §5 (see _probe_root for the prolog). Only "end" events:
        # a suite's start tag (its attributes) is already parsed when its first testcase ends,
        # so suites are entered then (`_enter`), and the parser hands Python one event per
        # testcase instead of two.
        events = etree.iterparse(
            self._stream,
            events=("end",),
            tag=("testsuites", "testsuite", "testcase"),
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            huge_tree=False,
            recover=False,
        )
        max_buffered = self._limits.max_buffered_attempts
        passed_cache = self._passed_cache
        stack: list[_Frame] = []
        frame: _Frame | None = None
        cases_parent: etree._Element | None = None  # parent element of the last testcase
        buffer: _Buffer = {}
        buffered = 0  # attempts in `buffer`; a frame that becomes current has an empty one
        check_at = min(_CLEAR_EVERY, max_buffered)
        layout_keys: list[str] | None = None
        pick = _NO_PICK
        time_index = -1
        plain = False
        scan = _scan_cases if self._speedups else None
        elem: Any  # lxml-stubs lack `clear(keep_tail=)` and type `values()` as a Sequence
        try:
            while True:
                if scan is not None and cases_parent is not None and frame is not None:
                    # Compiled: consume this suite's testcases as the branch below does.
                    elem, added, counted = scan(
                        events,
                        cases_parent,
                        buffer,
                        passed_cache,
                        self._passed_attempt,
                        self._failure,
                        self._skip,
                        Outcome.FAILED,
                        Outcome.ERROR,
                        check_at - buffered,
                    )
                    buffered += added
                    if elem is None:
                        break
                else:
                    step = next(events, None)
                    if step is None:
                        break
                    elem = step[1]
                    counted = False
                if counted:
                    parent = cases_parent
                elif elem.tag == "testcase":
                    # Hot path: one iteration per testcase of the report.
                    parent = elem.getparent()
                    if parent is not cases_parent or frame is None:
                        suite_elem = _enclosing_suite(parent)
                        if frame is None or frame.elem is not suite_elem:
                            yield from self._enter(stack, suite_elem)
                            frame = stack[-1]
                            buffer = frame.buffer
                            if scan is not None and not buffer:
                                # Room for as many cases as the last suite had: growing
                                # from empty costs more than the cases' own dict work.
                                frame.buffer = buffer = _new_buffer(self._suite_size)
                            buffered = 0
                            check_at = min(_CLEAR_EVERY, max_buffered)
                            self._ensure_env(frame)
                        cases_parent = parent
                    keys = elem.keys()
                    if keys != layout_keys:
                        layout_keys = keys
                        pick, time_index, plain = _case_layout(keys)
                    values = elem.values()
                    values.append(None)  # a list at run time; None = a missing attribute
                    key = pick(values)
                    if plain and not len(elem):
                        time_text = values[time_index]
                        attempt = passed_cache.get(time_text)
                        if attempt is None:
                            attempt = self._passed_attempt(time_text)
                        previous = buffer.get(key)
                        if previous is None:
                            buffer[key] = attempt
                        else:
                            buffer[key] = _appended(previous, attempt)
                        buffered += 1
                    else:
                        buffered += self._add_rich_case(elem, frame, key)
                        # Children (output, stack traces) can be large: free them now.
                        elem.clear(keep_tail=False)
                else:
                    # A suite (or the root) ended.
                    if frame is None or frame.elem is not elem:
                        # No testcase of its own so far (empty, or only nested suites).
                        yield from self._enter(stack, elem)
                    closed = stack.pop()
                    if closed.buffer:
                        yield self._drain(closed)
                    if closed.path == _MOCHA_ROOT_SUITE and self._default_file is None:
                        self._default_file = closed.file
                    frame = stack[-1] if stack else None
                    buffer = frame.buffer if frame is not None else {}
                    buffered = 0
                    check_at = min(_CLEAR_EVERY, max_buffered)
                    cases_parent = None
                    elem.clear(keep_tail=False)
                    parent = elem.getparent()
                    if parent is not None:
                        del parent[: parent.index(elem)]
                    continue
                if buffered >= check_at:
                    # Earlier siblings are done with: delete them in one C call every
                    # `_CLEAR_EVERY` cases (a childless testcase costs ~100 bytes).
                    if parent is not None:
                        del parent[: parent.index(elem)]
                    if buffered >= max_buffered and frame is not None:
                        yield self._drain(frame)
                        buffer = frame.buffer
                        buffered = 0
                    check_at = min(buffered + _CLEAR_EVERY, max_buffered)
        except _StreamReadFailedError:
            self._fail(ProblemKind.READ_FAILED, self._read_failure_detail())
        except etree.XMLSyntaxError as exc:
            self._fail(*_syntax_problem(exc))
        if self._problem is not None:
            # Keep what was read completely; the caller decides, `partial` tells it.
            pending = [open_frame for open_frame in stack if open_frame.buffer]
            if pending:
                self._problem = ReportProblem(
                    source=self._source, reason=self._problem.reason, partial=True
                )
            for open_frame in pending:
                yield self._drain(open_frame)

    def _enter(self, stack: list[_Frame], suite_elem: etree._Element) -> Iterator[list[CaseResult]]:
        """Open frames down to `suite_elem` (the open suites are always a prefix of its
        ancestors); yield the cases an outer suite buffered before a nested suite begins, so
        only one suite is ever buffered. An outer suite's properties are read first, before
        the nested suite's end deletes them."""
        chain: list[etree._Element] = []
        node: etree._Element | None = suite_elem
        while node is not None:
            if node.tag in _SUITE_TAGS:
                chain.append(node)
            node = node.getparent()
        chain.reverse()
        depth = len(stack)
        if chain[:depth] != [open_frame.elem for open_frame in stack]:
            raise AssertionError("unreachable: an open suite is not an ancestor")
        for opened in chain[depth:]:
            outer = stack[-1] if stack else None
            if outer is not None:
                self._ensure_env(outer)
                if outer.buffer:
                    yield self._drain(outer)
            stack.append(self._open_frame(opened, outer))

    # -- suites ----------------------------------------------------------------------------

    def _open_frame(self, elem: etree._Element, parent: _Frame | None) -> _Frame:
        if elem.tag == "testsuites":
            if parent is None:
                return _Frame(elem, "", None, None, (), self._is_pytest)
            return _Frame(
                elem,
                parent.path,
                parent.file,
                parent.project,
                parent.env,
                parent.hides_failed_attempts,
            )
        name = elem.get("name")
        part = _suite_part(name)
        path = part if parent is None or not parent.path else parent.path + _SUITE_SEPARATOR + part
        raw_file = elem.get("file")
        file = self._normalise_file(raw_file) if raw_file else None
        if file is None and parent is not None:
            file = parent.file
        project = parent.project if parent is not None else None
        if self._is_playwright:
            hostname = (elem.get("hostname") or "").strip()
            if hostname:
                project = hostname
                path = f"{path} [{project}]"
        env = parent.env if parent is not None else ()
        hides = (
            self._is_pytest
            or (name or "").strip() == _PYTEST_SUITE_NAME
            or (parent is not None and parent.hides_failed_attempts)
        )
        return _Frame(elem, path, file, project, env, hides)

    def _ensure_env(self, frame: _Frame) -> None:
        """Read the suite's own environment properties (they precede its children)."""
        if frame.env_ready:
            return
        frame.env_ready = True
        found = dict(frame.env)
        for props in frame.elem.iterchildren("properties"):
            for prop in props.iterchildren("property"):
                key = prop.get("name")
                value = prop.get("value")
                if key in ENV_PROPERTY_NAMES and value is not None:
                    found[key] = value[: self._limits.max_property_chars]
        if frame.project is not None:
            found[PLAYWRIGHT_PROJECT_PROPERTY] = frame.project
        frame.env = tuple(sorted(found.items()))

    def _drain(self, frame: _Frame) -> list[CaseResult]:
        """The suite's buffered cases as `CaseResult`s (counted); empties the buffer."""
        buffer = frame.buffer
        case_properties = frame.case_properties
        self._suite_size = len(buffer)
        frame.buffer = {}
        frame.case_properties = {}
        default_file = frame.file if frame.file is not None else self._default_file

        def merged(attempts: list[Attempt]) -> tuple[Attempt, ...]:
            return self._merged(attempts, frame.hides_failed_attempts)

        if self._speedups and _drain_cases is not None:
            cases, attempts_seen = _drain_cases(
                buffer,
                case_properties,
                frame.path,
                default_file,
                frame.env,
                self._counts,
                self._normalise_file,
                merged,
                CaseResult,
            )
        else:
            cases, attempts_seen = self._drain_cases(
                buffer, case_properties, frame.path, default_file, frame.env, merged
            )
        self._yielded += len(cases)
        self._attempts += attempts_seen
        return cases

    def _drain_cases(
        self,
        buffer: _Buffer,
        case_properties: dict[_CaseKey, tuple[tuple[str, str], ...]],
        suite: str,
        default_file: str | None,
        env: tuple[tuple[str, str], ...],
        merged: Callable[[list[Attempt]], tuple[Attempt, ...]],
    ) -> tuple[list[CaseResult], int]:
        """Pure-Python `_junit_speedups.drain_cases` (the second-hottest loop of the parser)."""
        counts = self._counts
        normalise_file = self._normalise_file
        new_tuple = _new_tuple
        cases: list[CaseResult] = []
        append = cases.append
        attempts_seen = 0
        for key, value in buffer.items():
            class_name, name, raw_file = key
            if isinstance(value, list):
                attempts = merged(value)
                attempts_seen += len(attempts)
            else:
                counts[value.outcome] += 1
                attempts = (value,)
                attempts_seen += 1
            # `CaseResult(...)` minus the Python-level `__new__` of a named tuple: one C call;
            # `_CASE_FIELDS` pins the field order.
            append(
                new_tuple(
                    CaseResult,
                    (
                        suite,
                        class_name.strip() if class_name else "",
                        name.strip() if name else "",
                        normalise_file(raw_file) if raw_file else default_file,
                        attempts,
                        case_properties.get(key, env) if case_properties else env,
                    ),
                )
            )
        return cases, attempts_seen

    def _merged(self, attempts: list[Attempt], hides: bool) -> tuple[Attempt, ...]:
        """A repeated test's attempts in order (counted by its final outcome)."""
        if hides:
            attempts = [_as_hidden_failure(a) for a in attempts[:-1]] + attempts[-1:]
        final = attempts[-1].outcome
        self._counts[final] += 1
        if final is Outcome.PASSED and any(a.outcome in FAILING for a in attempts):
            self._flaky += 1
        return tuple(attempts)

    # -- cases -----------------------------------------------------------------------------

    def _normalise_file(self, raw: str) -> str | None:
        cache = self._file_cache
        try:
            return cache[raw]
        except KeyError:
            pass
        if len(cache) >= _CACHE_ENTRIES:
            cache.clear()
        cache[raw] = result = normalise_file(raw)
        return result

    def _passed_attempt(self, time_text: str | None) -> Attempt:
        cache = self._passed_cache
        attempt = cache.get(time_text)
        if attempt is None:
            if len(cache) >= _CACHE_ENTRIES:
                cache.clear()
            # Attempts are immutable: one shared object per distinct `time` string saves an
            # allocation per passing case, the bulk of every report.
            attempt = _new_tuple(
                Attempt, (Outcome.PASSED, parse_duration_s(time_text), None, None, None)
            )
            cache[time_text] = attempt
        return attempt

    def _add_rich_case(self, elem: etree._Element, frame: _Frame, key: _CaseKey) -> int:
        """Buffer a testcase with children or a status; return how many attempts it adds."""
        before, main, after, has_properties = self._attempts_of(elem)
        buffer = frame.buffer
        previous = buffer.get(key)
        if previous is None:
            if has_properties:
                props = self._case_properties(elem, frame.env)
                if props is not frame.env:
                    frame.case_properties[key] = props
            buffer[key] = [*before, main, *after] if before or after else main
        else:
            attempts = previous if isinstance(previous, list) else [previous]
            attempts.extend(before)
            attempts.append(main)
            attempts.extend(after)
            buffer[key] = attempts
        return 1 + len(before) + len(after)

    def _attempts_of(
        self, elem: etree._Element
    ) -> tuple[list[Attempt], Attempt, list[Attempt], bool]:
        """(attempts before, main attempt, attempts after, has a <properties> child)."""
        has_properties = False
        before: list[Attempt] = []
        after: list[Attempt] = []
        main_el: etree._Element | None = None
        main_kind: Outcome | None = None
        skipped_el: etree._Element | None = None
        for child in elem:
            tag: object = child.tag  # a function for comments and PIs
            if tag in _FAIL_KIND:
                if main_el is None:
                    main_el, main_kind = child, _FAIL_KIND[tag]
            elif tag == "skipped":
                if skipped_el is None:
                    skipped_el = child
            elif tag in _FLAKY_KIND:
                before.append(self._failed_attempt(child, _FLAKY_KIND[tag], nested_stack=True))
            elif tag in _RERUN_KIND:
                after.append(self._failed_attempt(child, _RERUN_KIND[tag], nested_stack=True))
            elif tag == "properties":
                has_properties = True
        time_text = elem.get("time")
        if main_el is not None and main_kind is not None:
            main = self._failed_attempt(main_el, main_kind, nested_stack=False, time_text=time_text)
        elif skipped_el is not None:
            main = self._skip(
                time_text, skipped_el.get("type"), skipped_el.get("message"), skipped_el.text
            )
        else:
            status = elem.get("status")
            outcome = _STATUS_OUTCOME.get(status.strip().lower()) if status else None
            if outcome is None:
                main = self._passed_attempt(time_text)
            else:
                main = _new_tuple(Attempt, (outcome, parse_duration_s(time_text), None, None, None))
        return before, main, after, has_properties

    def _failed_attempt(
        self,
        el: etree._Element,
        outcome: Outcome,
        *,
        nested_stack: bool,
        time_text: str | None = None,
    ) -> Attempt:
        stack = el.text
        if nested_stack:
            # Surefire's flaky*/rerun* elements keep the trace in a <stackTrace> child.
            for child in el.iterchildren("stackTrace"):
                stack = child.text
                break
            if time_text is None:
                time_text = el.get("time")
        return self._failure(outcome, time_text, el.get("type"), el.get("message"), stack)

    def _failure(
        self,
        outcome: Outcome,
        time_text: str | None,
        type_attr: str | None,
        message_attr: str | None,
        stack: str | None,
    ) -> Attempt:
        """A failed attempt from what its element holds (also called by the compiled loop)."""
        limits = self._limits
        failure_type = (type_attr or "").strip() or None
        message = (message_attr or "").strip() or _first_line(stack)
        kind = "error" if outcome is _ERROR else "failure"
        signature = self._signature(kind, failure_type, message, stack)
        return _new_tuple(
            Attempt,
            (
                outcome,
                parse_duration_s(time_text),
                failure_type,
                _trim(message, limits.max_message_chars) if message else None,
                signature,
            ),
        )

    def _signature(
        self, kind: str, failure_type: str | None, message: str | None, stack: str | None
    ) -> str:
        """`failure_signature` under this reader's limits, computed in C where it can be."""
        limits = self._limits
        if self._speedups and _fast_signature is not None:
            return _fast_signature(
                kind,
                failure_type,
                message,
                stack,
                limits.max_stack_chars_hashed,
                limits.max_stack_lines_hashed,
                self._python_signature,
                _masked_bytes,
                _blake2b,
            )
        return failure_signature(kind, failure_type, message, stack, limits)

    def _skip(
        self,
        time_text: str | None,
        type_attr: str | None,
        message_attr: str | None,
        text: str | None,
    ) -> Attempt:
        """A skipped attempt from its `<skipped>` element (also called by the compiled loop)."""
        message = message_attr or _first_line(text)
        return _new_tuple(
            Attempt,
            (
                _SKIPPED,
                parse_duration_s(time_text),
                type_attr or None,
                _trim(message.strip(), self._limits.max_message_chars) if message else None,
                None,
            ),
        )

    def _case_properties(
        self, elem: etree._Element, env: tuple[tuple[str, str], ...]
    ) -> tuple[tuple[str, str], ...]:
        limits = self._limits
        found: list[tuple[str, str]] = []
        for props in elem.iterchildren("properties"):
            for prop in props.iterchildren("property"):
                if len(found) >= limits.max_properties_per_case:
                    break
                key = prop.get("name")
                if not key:
                    continue
                value = prop.get("value")
                if value is None:
                    value = prop.text or ""
                found.append((key[: limits.max_property_chars], value[: limits.max_property_chars]))
        if not found:
            return env
        return env + tuple(found)


def _as_hidden_failure(attempt: Attempt) -> Attempt:
    """pytest-rerunfailures writes a failed, rerun attempt as an empty (passing) testcase."""
    if attempt.outcome is not Outcome.PASSED:
        return attempt
    return Attempt(outcome=Outcome.FAILED, duration_s=attempt.duration_s)


def parse_bytes(
    data: bytes, source: str, limits: ParseLimits = DEFAULT_LIMITS
) -> tuple[list[CaseResult], ReportProblem | None]:
    """Parse a whole report held in memory: (cases, problem or None).

    >>> cases, problem = parse_bytes(b"<testsuites><testcase name='t'/></testsuites>", "r.xml")
    >>> (cases[0].name, cases[0].outcome.value, problem)
    ('t', 'passed', None)
    """
    reader = ReportReader(io.BytesIO(data), source, limits)
    cases = list(reader)
    return cases, reader.problem
