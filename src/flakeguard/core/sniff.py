"""Content sniffing: does the head of a file look like a JUnit XML report?

Reports are selected by content, not by name (a JUnit file called `results.txt` is a report;
`TestResult.xml` written by NUnit is not). The decision reads only the first few KiB of a file:
it skips a byte-order mark, the XML declaration, comments, processing instructions, a DOCTYPE
and whitespace, then looks at the name of the root element.

A DOCTYPE before the root is skipped, not judged: `<!DOCTYPE x><testsuites>` sniffs as JUnit and
the hardened parser then rejects the DOCTYPE with a clear per-file problem. That keeps one place
(the parser) in charge of what is unsafe, and the user learns why the file was refused instead of
seeing it silently ignored.

Pure: bytes in, a value out; no I/O.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from enum import StrEnum

JUNIT_ROOTS: frozenset[str] = frozenset({"testsuites", "testsuite"})
"""Root element names of JUnit XML (compared on the local name, so a prefix is allowed)."""

_XML_SPACE = " \t\r\n"
_NAME_END = _XML_SPACE + "/>"
_MAX_ROOT_NAME_CHARS = 256
"""A root name longer than this is not a JUnit root; stop scanning instead of reading on."""


class HeadKind(StrEnum):
    """What the head of a file shows."""

    JUNIT = "junit"
    """The root element is `<testsuites>` or `<testsuite>`."""
    OTHER_ROOT = "other_root"
    """XML whose root element is something else (NUnit `<test-results>`, TRX `<TestRun>` …)."""
    NOT_XML = "not_xml"
    """Empty, plain text, binary, or markup that cannot start an XML document."""
    UNDECIDED = "undecided"
    """The head ended inside the prolog (a long comment, PI or DOCTYPE) before the root."""


@dataclass(frozen=True, slots=True)
class HeadSniff:
    """The outcome of sniffing: the kind and, when one was seen, the root element's name."""

    kind: HeadKind
    root: str | None = None


def looks_like_junit(head: bytes) -> bool:
    """True when the root element found in `head` is `<testsuites>` or `<testsuite>`.

    >>> looks_like_junit(b'<?xml version="1.0"?>\\n<!-- hi --><testsuites/>')
    True
    >>> looks_like_junit(b'<?xml version="1.0"?><test-results/>')
    False
    """
    return sniff_head(head).kind is HeadKind.JUNIT


def sniff_head(head: bytes) -> HeadSniff:
    """Classify the first bytes of a file (callers pass ~4 KiB; less may give UNDECIDED).

    Encodings: UTF-8 (with or without BOM), UTF-16 and UTF-32 with a BOM, UTF-16 without a BOM
    (recognised by `<` next to a NUL byte), and any ASCII-compatible single-byte encoding (the
    markup we look at is ASCII). A NUL byte in an ASCII-compatible head means binary: NOT_XML.
    Leading whitespace is tolerated (the parser will judge it).

    >>> sniff_head(b'<?xml version="1.0"?><assemblies>')
    HeadSniff(kind=<HeadKind.OTHER_ROOT: 'other_root'>, root='assemblies')
    >>> sniff_head(b"PK\\x03\\x04").kind
    <HeadKind.NOT_XML: 'not_xml'>
    """
    text = _decode_head(head)
    if text is None:
        return HeadSniff(HeadKind.NOT_XML)
    return _scan_prolog(text)


def _decode_head(head: bytes) -> str | None:
    """Decode enough of the head to read its markup; None when it is binary."""
    # UTF-32 BOMs first: the UTF-32-LE BOM starts with the UTF-16-LE one.
    boms = (
        (codecs.BOM_UTF32_BE, "utf-32-be"),
        (codecs.BOM_UTF32_LE, "utf-32-le"),
        (codecs.BOM_UTF8, "utf-8"),
        (codecs.BOM_UTF16_BE, "utf-16-be"),
        (codecs.BOM_UTF16_LE, "utf-16-le"),
    )
    for bom, encoding in boms:
        if head.startswith(bom):
            return head[len(bom) :].decode(encoding, errors="replace")
    if head[:2] == b"<\x00":
        return head.decode("utf-16-le", errors="replace")
    if head[:2] == b"\x00<":
        return head.decode("utf-16-be", errors="replace")
    if b"\x00" in head:
        return None
    # Replacement characters only ever land in text we skip or in a name we then reject;
    # a multi-byte character cut at the end of the head is the common case.
    return head.decode("utf-8", errors="replace")


def _scan_prolog(text: str) -> HeadSniff:
    """Walk the prolog of `text` up to the root element's name."""
    pos = 0
    end = len(text)
    while True:
        while pos < end and text[pos] in _XML_SPACE:
            pos += 1
        if pos >= end:
            # Nothing but prolog (or nothing at all) so far; the caller knows whether the
            # head was the whole file.
            return HeadSniff(HeadKind.UNDECIDED if text.strip() else HeadKind.NOT_XML)
        if text[pos] != "<":
            return HeadSniff(HeadKind.NOT_XML)
        if text.startswith("<?", pos):
            close = text.find("?>", pos + 2)
            if close < 0:
                return HeadSniff(HeadKind.UNDECIDED)
            pos = close + 2
        elif text.startswith("<!--", pos):
            close = text.find("-->", pos + 4)
            if close < 0:
                return HeadSniff(HeadKind.UNDECIDED)
            pos = close + 3
        elif text[pos : pos + 9].upper() == "<!DOCTYPE":
            after = _skip_doctype(text, pos + 9)
            if after is None:
                return HeadSniff(HeadKind.UNDECIDED)
            pos = after
        elif text.startswith("<!", pos):
            # `<!ENTITY` or `<![CDATA[` outside a DOCTYPE cannot start a document.
            return HeadSniff(HeadKind.NOT_XML)
        else:
            return _read_root(text, pos + 1)


def _skip_doctype(text: str, pos: int) -> int | None:
    """Index just past the DOCTYPE that starts before `pos`, or None if it is not closed.

    Quoted literals and the internal subset (`[...]`, including comments in it) may contain `>`.
    """
    in_subset = False
    quote: str | None = None
    end = len(text)
    while pos < end:
        char = text[pos]
        if quote is not None:
            if char == quote:
                quote = None
        elif in_subset and text.startswith("<!--", pos):
            close = text.find("-->", pos + 4)
            if close < 0:
                return None
            pos = close + 2
        elif char in "\"'":
            quote = char
        elif char == "[":
            in_subset = True
        elif char == "]":
            in_subset = False
        elif char == ">" and not in_subset:
            return pos + 1
        pos += 1
    return None


def _read_root(text: str, pos: int) -> HeadSniff:
    """Read the root element's name starting at `pos` (just after `<`)."""
    if pos >= len(text):
        return HeadSniff(HeadKind.UNDECIDED)
    first = text[pos]
    if not (first.isalpha() or first in "_:"):
        return HeadSniff(HeadKind.NOT_XML)
    stop = pos
    limit = min(len(text), pos + _MAX_ROOT_NAME_CHARS)
    while stop < limit and text[stop] not in _NAME_END:
        stop += 1
    if stop >= len(text):
        return HeadSniff(HeadKind.UNDECIDED)
    name = text[pos:stop]
    if stop == limit and stop < len(text) and text[stop] not in _NAME_END:
        return HeadSniff(HeadKind.OTHER_ROOT, name)
    local_name = name.rpartition(":")[2]
    kind = HeadKind.JUNIT if local_name in JUNIT_ROOTS else HeadKind.OTHER_ROOT
    return HeadSniff(kind, name)
