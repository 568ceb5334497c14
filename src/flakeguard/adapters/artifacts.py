"""Report sources: JUnit files found in ZIP archives, folders and single files, read under budgets.

`iter_zip_reports` reads a ZIP artifact member by member and never extracts anything to disk;
`iter_path_reports` does the same for a path given to `flakeguard import-junit` (an XML file, a
folder searched recursively, or a ZIP recognised by its magic bytes). Both yield, in a
deterministic order, one `ReportSource` per member whose content sniffs as JUnit
(`flakeguard.core.sniff`) and one `ReportProblem` per member or archive that was refused.

Which skipped members produce a problem (so users can see why a file was ignored, without a
problem for every screenshot or log in an artifact):

- always: symbolic links, encrypted members, unsupported compression, members over the size or
  ratio budget, corrupt members — these are decisions users must be able to see;
- when the name says the user meant a report or a bundle of reports (`*.xml`, `*.zip`): not XML,
  XML whose root is not JUnit ("not a JUnit report (root <test-results>)"), empty, no root
  element in the sniffed head, and nested archives;
- never: directories, special files, and other non-report files (`index.html`, `run.log`).

An archive is refused as a whole (one problem, nothing else yielded) when it is over the archive
size, entry count or central-directory budgets, not a ZIP, truncated, has overlapping entries
(CVE-2024-0450: Python 3.11.7's zipfile does not check), when the declared uncompressed sizes of
the selected reports add up past the total budget, or when every file in it is encrypted or uses
an unsupported compression method. The whole archive is judged before its first item is
yielded, so a refused archive never yields half of its reports.

Streams from `ReportSource.open()` are size-capped and count real bytes: reading past a
member's declared size (a lying header) or a file past the member budget raises
`ArtifactReadError`, an `OSError` whose message is safe to show (no file content). Member names
are never used as paths; for display they are escaped (control and bidi characters) and capped.

Lifetime: a `ReportSource` from `iter_zip_reports` can be opened while the caller's archive file
is open; one from `iter_path_reports` while its iterator has not finished (the iterator owns the
archive files it opens).
"""

from __future__ import annotations

import io
import itertools
import os
import stat
import struct
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO

from flakeguard.core.models import ReportProblem
from flakeguard.core.sniff import HeadKind, sniff_head

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = [
    "DEFAULT_BUDGETS",
    "ArtifactBudgets",
    "ArtifactReadError",
    "ReportSource",
    "iter_path_reports",
    "iter_zip_reports",
]


@dataclass(frozen=True, slots=True)
class ArtifactBudgets:
    """Limits for reading untrusted archives (notes/junit.md §5; tune for CI artifacts)."""

    max_archive_bytes: int = 512 * 2**20
    max_entries: int = 20_000
    max_member_bytes: int = 256 * 2**20
    max_total_bytes: int = 2 * 2**30
    """Sum of the declared uncompressed sizes of the reports selected in one archive."""
    max_ratio: float = 200.0
    """Declared uncompressed / compressed size, beyond `ratio_slack_bytes`."""
    sniff_bytes: int = 4096
    ratio_slack_bytes: int = 2**20
    """Small members compress far better than 200:1 (a 100 KiB run of zeros); allow that much."""
    max_central_directory_bytes: int = 64 * 2**20
    """zipfile loads the whole central directory and one object per entry before we can count
    entries: bound it from the end record first (a 512 MiB directory is ~11M entries)."""


DEFAULT_BUDGETS = ArtifactBudgets()


class ArtifactReadError(OSError):
    """Reading a report stream failed or went past its budget; `reason` is safe to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


Opener = Callable[[], AbstractContextManager[BinaryIO]]


@dataclass(frozen=True, slots=True)
class ReportSource:
    """One JUnit report found in an artifact, a folder or a file; opened on demand.

    `name` is for display and stable per input ("test-results.zip!reports/TEST-foo.xml", or a
    file path); `size_bytes` is the declared (ZIP) or listed (file) size.
    """

    name: str
    size_bytes: int | None
    opener: Opener = field(repr=False, compare=False)

    def open(self) -> AbstractContextManager[BinaryIO]:
        """A counting, size-capped binary stream of the report; it streams, never loads it all."""
        return self.opener()


# --- names -------------------------------------------------------------------------------------

_MAX_DISPLAY_CHARS = 300
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
"""Control, format (bidi overrides, zero-width), surrogate, private and unassigned characters."""


def display_name(raw: str, max_chars: int = _MAX_DISPLAY_CHARS) -> str:
    """`raw` made safe to print: unsafe characters escaped, length capped with an ellipsis.

    >>> display_name("../../a\\x1b[31m\\u202eb.xml")
    '../../a\\\\x1b[31m\\\\u202eb.xml'
    """
    parts = []
    for char in raw:
        if unicodedata.category(char) in _UNSAFE_CATEGORIES:
            code = ord(char)
            parts.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            parts.append(char)
    shown = "".join(parts)
    return shown if len(shown) <= max_chars else shown[: max_chars - 1] + "…"


_REPORT_LIKE_SUFFIXES = (".xml", ".zip")
_ARCHIVE_SUFFIXES = (
    ".zip", ".jar", ".war", ".ear", ".apk", ".aar", ".whl", ".nupkg",
    ".gz", ".tgz", ".bz2", ".xz", ".zst", ".7z", ".rar", ".tar",
)  # fmt: skip
_ARCHIVE_MAGIC = (
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),
    (b"PK\x07\x08", "zip"),
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"Rar!\x1a\x07", "rar"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
_TAR_MAGIC_OFFSET = 257


def is_report_like(name: str) -> bool:
    """Whether a name says its owner meant a report or a bundle of reports."""
    return name.lower().endswith(_REPORT_LIKE_SUFFIXES)


def archive_kind_by_name(name: str) -> str | None:
    """The archive extension of `name` ("zip", "tar" …), or None."""
    lowered = name.lower()
    for suffix in _ARCHIVE_SUFFIXES:
        if lowered.endswith(suffix):
            return suffix[1:]
    return None


def archive_kind_by_magic(head: bytes) -> str | None:
    """The archive format the first bytes announce ("zip", "gzip" …), or None."""
    for magic, kind in _ARCHIVE_MAGIC:
        if head.startswith(magic):
            return kind
    if head[_TAR_MAGIC_OFFSET : _TAR_MAGIC_OFFSET + 5] == b"ustar":
        return "tar"
    return None


def is_zip_magic(head: bytes) -> bool:
    return archive_kind_by_magic(head[:4]) == "zip"


# --- per-member decisions (pure) ---------------------------------------------------------------


class SkipReason(StrEnum):
    """Why a member or file is not a report; `ALWAYS_RECORDED` etc. say who hears about it."""

    DIRECTORY = "directory"
    SPECIAL_FILE = "special_file"
    SYMLINK = "symlink"
    ENCRYPTED = "encrypted"
    UNSUPPORTED_COMPRESSION = "unsupported_compression"
    TOO_LARGE = "too_large"
    RATIO = "ratio"
    CORRUPT = "corrupt"
    NESTED_ARCHIVE = "nested_archive"
    EMPTY = "empty"
    NOT_XML = "not_xml"
    NOT_JUNIT = "not_junit"
    NO_ROOT = "no_root"


ALWAYS_RECORDED: frozenset[SkipReason] = frozenset(
    {
        SkipReason.SYMLINK,
        SkipReason.ENCRYPTED,
        SkipReason.UNSUPPORTED_COMPRESSION,
        SkipReason.TOO_LARGE,
        SkipReason.RATIO,
        SkipReason.CORRUPT,
    }
)
RECORDED_WHEN_REPORT_LIKE: frozenset[SkipReason] = frozenset(
    {
        SkipReason.NESTED_ARCHIVE,
        SkipReason.EMPTY,
        SkipReason.NOT_XML,
        SkipReason.NOT_JUNIT,
        SkipReason.NO_ROOT,
    }
)


@dataclass(frozen=True, slots=True)
class Skip:
    """A member that is not read as a report, with a reason safe to show."""

    reason: SkipReason
    detail: str

    def is_recorded(self, report_like: bool) -> bool:
        return self.reason in ALWAYS_RECORDED or (
            report_like and self.reason in RECORDED_WHEN_REPORT_LIKE
        )


@dataclass(frozen=True, slots=True)
class ZipEntryFacts:
    """What the central directory says about one member (all untrusted)."""

    name: str
    is_dir: bool
    is_symlink: bool
    is_encrypted: bool
    compress_type: int
    file_size: int
    compress_size: int

    @classmethod
    def of(cls, info: zipfile.ZipInfo) -> ZipEntryFacts:
        return cls(
            name=info.filename,
            is_dir=info.is_dir(),
            is_symlink=stat.S_ISLNK(info.external_attr >> 16),
            is_encrypted=bool(info.flag_bits & 0x1),
            compress_type=info.compress_type,
            file_size=info.file_size,
            compress_size=info.compress_size,
        )


SUPPORTED_COMPRESSION: frozenset[int] = frozenset(
    {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2}
)
"""LZMA is refused on purpose: its dictionary size is chosen by the archive and allocated up front.
Stored and deflated cover what CI tools and GitHub write."""

_COMPRESSION_NAMES = {
    6: "implode",
    9: "deflate64",
    14: "lzma",
    93: "zstandard",
    95: "xz",
    98: "ppmd",
}


def compression_label(compress_type: int) -> str:
    name = _COMPRESSION_NAMES.get(compress_type)
    return f"method {compress_type} ({name})" if name else f"method {compress_type}"


def judge_zip_entry(entry: ZipEntryFacts, budgets: ArtifactBudgets) -> Skip | None:
    """Decide from the central directory alone whether a member may be opened (None: it may).

    The ratio rule: refuse when `file_size > max_ratio × compress_size + ratio_slack_bytes`;
    e.g. with 200 and 1 MiB, a member of 5 KiB compressed may declare up to 2 MiB.
    """
    if entry.is_symlink:
        return Skip(SkipReason.SYMLINK, "symbolic link, not followed")
    if entry.is_dir:
        return Skip(SkipReason.DIRECTORY, "directory")
    if entry.is_encrypted:
        return Skip(SkipReason.ENCRYPTED, "encrypted member, not read")
    if entry.compress_type not in SUPPORTED_COMPRESSION:
        label = compression_label(entry.compress_type)
        return Skip(SkipReason.UNSUPPORTED_COMPRESSION, f"unsupported compression {label}")
    if entry.file_size > budgets.max_member_bytes:
        return Skip(
            SkipReason.TOO_LARGE,
            f"declared size {entry.file_size} bytes exceeds the member limit "
            f"{budgets.max_member_bytes} bytes",
        )
    if entry.file_size > budgets.max_ratio * entry.compress_size + budgets.ratio_slack_bytes:
        ratio = entry.file_size / max(entry.compress_size, 1)
        return Skip(
            SkipReason.RATIO,
            f"compression ratio {ratio:.0f}:1 exceeds the limit {budgets.max_ratio:.0f}:1 "
            "(possible zip bomb)",
        )
    kind = archive_kind_by_name(entry.name)
    if kind is not None:
        return Skip(SkipReason.NESTED_ARCHIVE, f"nested {kind} archive, not opened")
    return None


def judge_head(head: bytes, *, is_complete: bool, sniff_bytes: int, nested: bool) -> Skip | None:
    """Decide from the first bytes whether a file is a JUnit report (None: it is).

    `is_complete` says the head is the whole file; `nested` that it sits inside an archive
    (a nested archive is never opened; a ZIP file in a folder is read by the caller instead).
    """
    if not head and is_complete:
        return Skip(SkipReason.EMPTY, "empty file")
    kind = archive_kind_by_magic(head)
    if kind is not None:
        where = "nested " if nested else ""
        return Skip(SkipReason.NESTED_ARCHIVE, f"{where}{kind} archive, not opened")
    sniffed = sniff_head(head)
    if sniffed.kind is HeadKind.JUNIT:
        return None
    if sniffed.kind is HeadKind.OTHER_ROOT:
        root = display_name(sniffed.root or "", max_chars=64)
        return Skip(SkipReason.NOT_JUNIT, f"not a JUnit report (root <{root}>)")
    if sniffed.kind is HeadKind.UNDECIDED and not is_complete:
        return Skip(SkipReason.NO_ROOT, f"no root element in the first {sniff_bytes} bytes")
    return Skip(SkipReason.NOT_XML, "not an XML document")


# --- archive-level decisions (pure) ------------------------------------------------------------

_EOCD = struct.Struct("<4s4H2LH")
_EOCD_SIGNATURE = b"PK\x05\x06"
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_ZIP64_EOCD_SIGNATURE = b"PK\x06\x06"
_MAX_COMMENT_BYTES = 0xFFFF
END_TAIL_BYTES = _ZIP64_EOCD.size + _ZIP64_LOCATOR.size + _EOCD.size + _MAX_COMMENT_BYTES
"""Enough of the end of an archive to hold its end records and the longest comment."""


@dataclass(frozen=True, slots=True)
class CentralDirectorySummary:
    entry_count: int
    size_bytes: int


def read_end_records(tail: bytes) -> CentralDirectorySummary | None:
    """Entry count and central-directory size from the last `END_TAIL_BYTES` of an archive.

    None when there is no end-of-central-directory record (not a ZIP, or truncated).
    Zip64 values replace the 16/32-bit ones when the classic record says so.
    """
    at = tail.rfind(_EOCD_SIGNATURE)
    while at >= 0 and len(tail) - at < _EOCD.size:
        at = tail.rfind(_EOCD_SIGNATURE, 0, at)
    if at < 0:
        return None
    fields = _EOCD.unpack_from(tail, at)
    entry_count, size_bytes, offset = fields[4], fields[5], fields[6]
    if entry_count == 0xFFFF or size_bytes == 0xFFFFFFFF or offset == 0xFFFFFFFF:
        locator_at = at - _ZIP64_LOCATOR.size
        record_at = locator_at - _ZIP64_EOCD.size
        if record_at < 0 or tail[locator_at : locator_at + 4] != _ZIP64_LOCATOR_SIGNATURE:
            return CentralDirectorySummary(entry_count, size_bytes)
        record = _ZIP64_EOCD.unpack_from(tail, record_at)
        if record[0] != _ZIP64_EOCD_SIGNATURE:
            return CentralDirectorySummary(entry_count, size_bytes)
        entry_count, size_bytes = record[7], record[8]
    return CentralDirectorySummary(entry_count, size_bytes)


def judge_central_directory(
    summary: CentralDirectorySummary, budgets: ArtifactBudgets
) -> str | None:
    """A reason to refuse the archive from its end record alone, or None."""
    if summary.entry_count > budgets.max_entries:
        return f"too many entries: {summary.entry_count} (limit {budgets.max_entries})"
    if summary.size_bytes > budgets.max_central_directory_bytes:
        return (
            f"central directory of {summary.size_bytes} bytes exceeds the limit "
            f"{budgets.max_central_directory_bytes} bytes"
        )
    return None


@dataclass(frozen=True, slots=True)
class EntrySpan:
    """Where one member's local header starts and its compressed data ends in the archive."""

    index: int
    name: str
    header_offset: int
    data_end: int


def find_overlap(spans: Sequence[EntrySpan], central_directory_offset: int) -> str | None:
    """A reason when two members share bytes, or None (CVE-2024-0450; zipfile 3.11.7 misses it).

    Sorted by header offset, each member's local header plus compressed data must end at or
    before the next member's header (a data descriptor fits in between), and the last one before
    the central directory. Two entries at the same offset are an overlap too: a central
    directory may list the same data under several names (cpython#151307).
    """
    ordered = sorted(spans, key=lambda span: (span.header_offset, span.index))
    for current, following in itertools.pairwise(ordered):
        first, second = _short_name(current.name), _short_name(following.name)
        if current.header_offset == following.header_offset:
            return (
                f"overlapping entries: {first} and {second} point at the same data "
                "(possible zip bomb)"
            )
        if current.data_end > following.header_offset:
            return f"overlapping entries: {first} runs into {second} (possible zip bomb)"
    if ordered and ordered[-1].data_end > central_directory_offset:
        last = _short_name(ordered[-1].name)
        return f"overlapping entries: {last} runs into the central directory (possible zip bomb)"
    return None


def _short_name(name: str) -> str:
    return f"'{display_name(name, max_chars=80)}'"


def judge_refusal_of_all(skips: Sequence[Skip], selected_count: int) -> str | None:
    """One archive-level reason when no file can be read for one shared reason, else None.

    An encrypted archive or one written with deflate64 (Windows Explorer for large files) is
    one problem, not one per member.
    """
    files = [skip for skip in skips if skip.reason is not SkipReason.DIRECTORY]
    if selected_count or not files:
        return None
    reasons = {skip.reason for skip in files}
    if reasons == {SkipReason.ENCRYPTED}:
        return f"encrypted archive: none of its {len(files)} files can be read without a password"
    details = {skip.detail for skip in files}
    if reasons == {SkipReason.UNSUPPORTED_COMPRESSION} and len(details) == 1:
        return f"{details.pop()} in all {len(files)} files of the archive"
    return None


# --- streams -----------------------------------------------------------------------------------

_STREAM_BUFFER_BYTES = 64 * 1024


class _CappedReader(io.RawIOBase):
    """Counts the bytes it hands out and raises once more than `limit_bytes` would pass.

    Decoder and framing errors of the inner stream become `ArtifactReadError` with a fixed,
    content-free message.
    """

    def __init__(self, inner: IO[bytes], limit_bytes: int, over_limit_reason: str) -> None:
        super().__init__()
        self._inner = inner
        self._limit_bytes = limit_bytes
        self._over_limit_reason = over_limit_reason
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        allowance = self._limit_bytes - self.bytes_read
        # Ask for one byte beyond the allowance: getting it proves the source holds more.
        wanted = min(len(view), allowance + 1)
        if wanted <= 0:
            return 0
        data = _read_inner(self._inner, wanted)
        if len(data) > allowance:
            raise ArtifactReadError(self._over_limit_reason)
        view[: len(data)] = data
        self.bytes_read += len(data)
        return len(data)


def _read_inner(inner: IO[bytes], size: int) -> bytes:
    try:
        return inner.read(size)
    except zipfile.BadZipFile as exc:
        raise ArtifactReadError(
            "member data does not match its declared size or CRC-32 (lying size or corruption)"
        ) from exc
    except EOFError as exc:
        raise ArtifactReadError("compressed data ends early (truncated member)") from exc
    except zlib.error as exc:
        raise ArtifactReadError("corrupt compressed data") from exc
    except ValueError as exc:
        raise ArtifactReadError("stream is closed") from exc
    except OSError as exc:
        # bz2 reports corrupt data as OSError; file reads fail the same way.
        raise ArtifactReadError(f"read failed: {exc.strerror or 'corrupt data'}") from exc


def _capped_stream(inner: IO[bytes], limit_bytes: int, over_limit_reason: str) -> BinaryIO:
    return io.BufferedReader(
        _CappedReader(inner, limit_bytes, over_limit_reason), buffer_size=_STREAM_BUFFER_BYTES
    )


@contextmanager
def _open_zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[BinaryIO]:
    try:
        inner = zf.open(info)
    except zipfile.BadZipFile as exc:
        raise ArtifactReadError("corrupt ZIP member header") from exc
    except (NotImplementedError, RuntimeError) as exc:
        # Flags zipfile refuses to handle (strong encryption, compressed patch data).
        raise ArtifactReadError("unsupported ZIP member feature") from exc
    except (ValueError, OSError) as exc:
        raise ArtifactReadError(
            "archive is closed: open a report source while its archive is open"
        ) from exc
    reason = f"member holds more than its declared {info.file_size} bytes (lying size)"
    with inner, _capped_stream(inner, info.file_size, reason) as stream:
        yield stream


@contextmanager
def _open_file(path: Path, limit_bytes: int, *, follow_symlinks: bool) -> Iterator[BinaryIO]:
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        # The listing skipped symlinks; refuse one swapped in since then.
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        raw = os.fdopen(os.open(path, flags), "rb")
    except OSError as exc:
        raise ArtifactReadError(f"cannot open: {exc.strerror or 'error'}") from exc
    reason = f"file grew past the member limit of {limit_bytes} bytes"
    with raw, _capped_stream(raw, limit_bytes, reason) as stream:
        yield stream


def _read_head(opener: Opener, sniff_bytes: int) -> tuple[bytes, bool]:
    """The first `sniff_bytes` of a source and whether that is all of it."""
    with opener() as stream:
        head = stream.read(sniff_bytes + 1)
    return head[:sniff_bytes], len(head) <= sniff_bytes


# --- ZIP archives ------------------------------------------------------------------------------

_LOCAL_HEADER = struct.Struct("<4s5H3L2H")
_LOCAL_HEADER_SIGNATURE = b"PK\x03\x04"


@dataclass(frozen=True, slots=True)
class _OpenedArchive:
    zf: zipfile.ZipFile
    infos: list[zipfile.ZipInfo]
    corrupt_headers: frozenset[int]
    """Indexes of members whose local header is unreadable."""


def iter_zip_reports(
    archive: IO[bytes], archive_name: str, budgets: ArtifactBudgets = DEFAULT_BUDGETS
) -> Iterator[ReportSource | ReportProblem]:
    """Reports and problems of one ZIP archive, in central-directory order.

    `archive` must be seekable (a spooled download or an open file) and stay open while the
    yielded sources are read. Yields a single `ReportProblem` naming `archive_name` when the
    archive is refused (see the module docstring), else one item per selected or recorded
    member, named `"{archive_name}!{member}"`.
    """
    shown_archive = display_name(archive_name)
    opened = _open_archive(archive, shown_archive, budgets)
    if isinstance(opened, ReportProblem):
        yield opened
        return
    yield from _plan_members(opened, shown_archive, budgets)


def _open_archive(
    archive: IO[bytes], shown_archive: str, budgets: ArtifactBudgets
) -> _OpenedArchive | ReportProblem:
    def refuse(reason: str) -> ReportProblem:
        return ReportProblem(source=shown_archive, reason=reason)

    try:
        size_bytes = archive.seek(0, io.SEEK_END)
        if size_bytes > budgets.max_archive_bytes:
            return refuse(
                f"archive size {size_bytes} bytes exceeds the limit "
                f"{budgets.max_archive_bytes} bytes"
            )
        archive.seek(max(0, size_bytes - END_TAIL_BYTES))
        tail = archive.read(END_TAIL_BYTES)
    except OSError as exc:
        return refuse(f"archive cannot be read: {exc.strerror or 'I/O error'}")
    summary = read_end_records(tail)
    if summary is None:
        return refuse("not a ZIP archive, or truncated (no end-of-central-directory record)")
    reason = judge_central_directory(summary, budgets)
    if reason is not None:
        return refuse(reason)
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        return refuse(f"not a readable ZIP archive ({display_name(str(exc), max_chars=120)})")
    except (EOFError, OSError, ValueError) as exc:
        # ValueError covers undecodable UTF-8 names and negative offsets from a crafted directory.
        return refuse(f"not a readable ZIP archive ({type(exc).__name__})")
    infos = zf.infolist()
    if len(infos) > budgets.max_entries:
        # The end record understated the count; zipfile reads the whole directory regardless.
        return refuse(f"too many entries: {len(infos)} (limit {budgets.max_entries})")
    spans, corrupt = _read_spans(archive, infos)
    reason = find_overlap(spans, zf.start_dir)
    if reason is not None:
        return refuse(reason)
    return _OpenedArchive(zf, infos, corrupt)


def _read_spans(
    archive: IO[bytes], infos: Sequence[zipfile.ZipInfo]
) -> tuple[list[EntrySpan], frozenset[int]]:
    """Each member's span from its local header (whose name/extra lengths may differ from the
    central directory's; zipfile uses the local ones to find the data)."""
    spans = []
    corrupt = set()
    for index, info in enumerate(infos):
        header_bytes = b""
        try:
            archive.seek(info.header_offset)
            header_bytes = archive.read(_LOCAL_HEADER.size)
        except (OSError, ValueError):
            header_bytes = b""
        if len(header_bytes) < _LOCAL_HEADER.size or not header_bytes.startswith(
            _LOCAL_HEADER_SIGNATURE
        ):
            corrupt.add(index)
            data_end = info.header_offset + _LOCAL_HEADER.size
        else:
            fields = _LOCAL_HEADER.unpack(header_bytes)
            name_length, extra_length = fields[9], fields[10]
            data_start = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
            data_end = data_start + info.compress_size
        spans.append(EntrySpan(index, info.filename, info.header_offset, data_end))
    return spans, frozenset(corrupt)


def _plan_members(
    opened: _OpenedArchive, shown_archive: str, budgets: ArtifactBudgets
) -> Iterator[ReportSource | ReportProblem]:
    """Judge every member, then yield; the archive-level checks need all the decisions first."""
    items: list[ReportSource | ReportProblem] = []
    skips: list[Skip] = []
    selected_count = 0
    selected_total_bytes = 0
    seen_names: set[str] = set()
    for index, info in enumerate(opened.infos):
        shown = f"{shown_archive}!{display_name(info.filename)}"
        if info.filename in seen_names:
            # Duplicate names are legal in a ZIP and hide data from name-based tools.
            shown = f"{shown} (entry {index + 1})"
        seen_names.add(info.filename)
        report_like = is_report_like(info.filename)
        skip = judge_zip_entry(ZipEntryFacts.of(info), budgets)
        if skip is None and index in opened.corrupt_headers:
            skip = Skip(SkipReason.CORRUPT, "corrupt ZIP member header")
        opener = _zip_member_opener(opened.zf, info)
        if skip is None:
            skip = _judge_by_head(opener, budgets, nested=True)
        if skip is None:
            items.append(ReportSource(shown, info.file_size, opener))
            selected_count += 1
            selected_total_bytes += info.file_size
            continue
        skips.append(skip)
        if skip.is_recorded(report_like):
            items.append(ReportProblem(source=shown, reason=skip.detail))
    refusal = judge_refusal_of_all(skips, selected_count=selected_count)
    if refusal is None and selected_total_bytes > budgets.max_total_bytes:
        refusal = (
            f"declared uncompressed total {selected_total_bytes} bytes of the selected reports "
            f"exceeds the limit {budgets.max_total_bytes} bytes"
        )
    if refusal is not None:
        yield ReportProblem(source=shown_archive, reason=refusal)
        return
    yield from items


def _zip_member_opener(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Opener:
    def opener() -> AbstractContextManager[BinaryIO]:
        return _open_zip_member(zf, info)

    return opener


def _judge_by_head(opener: Opener, budgets: ArtifactBudgets, *, nested: bool) -> Skip | None:
    try:
        head, is_complete = _read_head(opener, budgets.sniff_bytes)
    except ArtifactReadError as exc:
        return Skip(SkipReason.CORRUPT, exc.reason)
    return judge_head(head, is_complete=is_complete, sniff_bytes=budgets.sniff_bytes, nested=nested)


# --- paths -------------------------------------------------------------------------------------


def iter_path_reports(
    path: Path, budgets: ArtifactBudgets = DEFAULT_BUDGETS
) -> Iterator[ReportSource | ReportProblem]:
    """Reports and problems under `path`: an XML file, a folder or a ZIP (by magic bytes).

    A file named explicitly is expected to be a report: any reason to skip it is a problem.
    A folder is searched recursively in name order, symbolic links inside it are not followed
    (each is a problem), and ZIP files in it are read as archives. `path` itself may be a link.
    """
    shown = display_name(str(path))
    try:
        if path.is_dir():
            yield from _iter_folder(path, budgets)
        elif path.is_file():
            yield from _iter_file(path, budgets, explicit=True)
        elif not path.exists():
            yield ReportProblem(source=shown, reason="no such file or folder")
        else:
            yield ReportProblem(source=shown, reason="not a regular file or folder")
    except PermissionError as exc:
        yield ReportProblem(source=shown, reason=f"cannot read: {exc.strerror or 'denied'}")


def _iter_folder(root: Path, budgets: ArtifactBudgets) -> Iterator[ReportSource | ReportProblem]:
    # An explicit stack, not recursion: folder depth is not ours to bound.
    pending = [root]
    while pending:
        folder = pending.pop()
        try:
            with os.scandir(folder) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError as exc:
            reason = f"cannot list folder: {exc.strerror or 'error'}"
            yield ReportProblem(source=display_name(str(folder)), reason=reason)
            continue
        subfolders = []
        for entry in entries:
            path = Path(entry.path)
            if entry.is_symlink():
                yield ReportProblem(
                    source=display_name(entry.path), reason="symbolic link, not followed"
                )
            elif entry.is_dir(follow_symlinks=False):
                subfolders.append(path)
            elif entry.is_file(follow_symlinks=False):
                yield from _iter_file(path, budgets, explicit=False)
        # Depth-first in name order: files of a folder first, then its subfolders.
        pending.extend(reversed(subfolders))


def _iter_file(
    path: Path, budgets: ArtifactBudgets, *, explicit: bool
) -> Iterator[ReportSource | ReportProblem]:
    shown = display_name(str(path))
    report_like = explicit or is_report_like(path.name)
    try:
        size_bytes = path.stat().st_size if explicit else path.lstat().st_size
    except OSError as exc:
        yield ReportProblem(source=shown, reason=f"cannot read: {exc.strerror or 'error'}")
        return
    opener = _file_opener(path, budgets.max_member_bytes, follow_symlinks=explicit)
    # The head is read under its own cap: a ZIP may be larger than the member limit. The
    # buffered reader pulls a whole buffer through the cap, so the cap must cover one.
    head_cap = max(budgets.max_member_bytes, budgets.sniff_bytes + _STREAM_BUFFER_BYTES)
    head_opener = _file_opener(path, head_cap, follow_symlinks=explicit)
    try:
        head, is_complete = _read_head(head_opener, budgets.sniff_bytes)
    except ArtifactReadError as exc:
        yield ReportProblem(source=shown, reason=exc.reason)
        return
    if is_zip_magic(head):
        yield from _iter_zip_file(path, budgets, follow_symlinks=explicit)
        return
    skip: Skip | None
    if size_bytes > budgets.max_member_bytes:
        skip = Skip(
            SkipReason.TOO_LARGE,
            f"size {size_bytes} bytes exceeds the member limit {budgets.max_member_bytes} bytes",
        )
    elif path.name.lower().endswith(".zip"):
        skip = Skip(SkipReason.NOT_XML, "not a ZIP archive")
    else:
        skip = judge_head(
            head, is_complete=is_complete, sniff_bytes=budgets.sniff_bytes, nested=False
        )
    if skip is None:
        yield ReportSource(shown, size_bytes, opener)
    elif skip.is_recorded(report_like):
        yield ReportProblem(source=shown, reason=skip.detail)


def _iter_zip_file(
    path: Path, budgets: ArtifactBudgets, *, follow_symlinks: bool
) -> Iterator[ReportSource | ReportProblem]:
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        archive = os.fdopen(os.open(path, flags), "rb")
    except OSError as exc:
        reason = f"cannot open: {exc.strerror or 'error'}"
        yield ReportProblem(source=display_name(str(path)), reason=reason)
        return
    with archive:
        yield from iter_zip_reports(archive, str(path), budgets)


def _file_opener(path: Path, limit_bytes: int, *, follow_symlinks: bool) -> Opener:
    def opener() -> AbstractContextManager[BinaryIO]:
        return _open_file(path, limit_bytes, follow_symlinks=follow_symlinks)

    return opener
