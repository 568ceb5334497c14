"""ZIP artifacts: hostile archives give clear problems, good members are still read, flat memory.

Every archive is built inside the test (raw bytes patched where zipfile would refuse to write the
lie), so the repository holds no binary fixtures.
"""

from __future__ import annotations

import io
import stat
import struct
import tempfile
import tracemalloc
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pytest

from flakeguard.adapters.artifacts import (
    END_TAIL_BYTES,
    ArtifactBudgets,
    ArtifactReadError,
    CentralDirectorySummary,
    EntrySpan,
    ReportSource,
    Skip,
    SkipReason,
    ZipEntryFacts,
    display_name,
    find_overlap,
    iter_zip_reports,
    judge_central_directory,
    judge_head,
    judge_refusal_of_all,
    judge_zip_entry,
    read_end_records,
)
from flakeguard.core.models import ReportProblem

MIB = 2**20
GIB = 2**30
PEAK_MEMORY_LIMIT_BYTES = 200 * MIB

JUNIT = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<testsuites><testsuite name="s">'
    b'<testcase classname="c" name="t" time="0.1"/></testsuite></testsuites>\n'
)
NUNIT = b'<?xml version="1.0"?>\n<test-results total="1"><test-suite name="x"/></test-results>'


# --- building archives -------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    name: str
    data: bytes = JUNIT
    compress_type: int = zipfile.ZIP_DEFLATED
    external_attr: int = 0


def zip_bytes(*members: Member) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Duplicate name", UserWarning)
        with zipfile.ZipFile(buffer, "w") as zf:
            for member in members:
                info = zipfile.ZipInfo(member.name, date_time=(2024, 1, 1, 0, 0, 0))
                info.compress_type = member.compress_type
                info.external_attr = member.external_attr
                zf.writestr(info, member.data)
    return buffer.getvalue()


@dataclass(frozen=True)
class CentralEntry:
    position: int
    """Offset of the central-directory record in the archive."""
    name: bytes
    local_offset: int


_CENTRAL = struct.Struct("<4s6H3L5H2L")


def central_entries(data: bytes) -> list[CentralEntry]:
    eocd = data.rfind(b"PK\x05\x06")
    cd_offset = struct.unpack_from("<L", data, eocd + 16)[0]
    entries = []
    position = cd_offset
    while data[position : position + 4] == b"PK\x01\x02":
        fields = _CENTRAL.unpack_from(data, position)
        name_length, extra_length, comment_length = fields[10], fields[11], fields[12]
        name = data[position + 46 : position + 46 + name_length]
        entries.append(CentralEntry(position, name, fields[16]))
        position += 46 + name_length + extra_length + comment_length
    return entries


# Field offsets inside the records (APPNOTE 4.3.7 and 4.3.12).
CENTRAL_FIELDS = {"flags": (8, "H"), "method": (10, "H"), "csize": (20, "L"), "usize": (24, "L"),
                  "external_attr": (38, "L"), "local_offset": (42, "L")}  # fmt: skip
LOCAL_FIELDS = {"flags": (6, "H"), "method": (8, "H"), "csize": (18, "L"), "usize": (22, "L")}


def patch(data: bytes, name: str, **values: int) -> bytes:
    """Rewrite fields of member `name` in both its central and local headers."""
    out = bytearray(data)
    for entry in central_entries(data):
        if entry.name != name.encode():
            continue
        for field_name, value in values.items():
            offset, fmt = CENTRAL_FIELDS[field_name]
            struct.pack_into("<" + fmt, out, entry.position + offset, value)
            if field_name in LOCAL_FIELDS:
                offset, fmt = LOCAL_FIELDS[field_name]
                struct.pack_into("<" + fmt, out, entry.local_offset + offset, value)
        return bytes(out)
    raise KeyError(name)


def write_bomb(path: Path, name: str, filler_mib: int, prefix: bytes = b"") -> int:
    """A ZIP of one deflated member, `prefix` + `filler_mib` MiB of spaces; returns its size.

    Written in ~1 MiB per GiB without compressing a GiB: after a full flush the compressor's
    output for the same input block repeats exactly, so one compressed block is written N times.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    filler = b" " * MIB
    block = compressor.compress(filler) + compressor.flush(zlib.Z_FULL_FLUSH)
    assert compressor.compress(filler) + compressor.flush(zlib.Z_FULL_FLUSH) == block
    tail = compressor.flush(zlib.Z_FINISH)
    blocks = filler_mib
    uncompressed_bytes = len(prefix) + blocks * MIB
    crc = zlib.crc32(prefix)
    for _ in range(blocks):
        crc = zlib.crc32(filler, crc)
    compressed_bytes = len(head) + blocks * len(block) + len(tail)
    encoded = name.encode()
    local = struct.pack(
        "<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0x21, crc, compressed_bytes,
        uncompressed_bytes, len(encoded), 0,
    )  # fmt: skip
    central = struct.pack(
        "<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0x21, crc, compressed_bytes,
        uncompressed_bytes, len(encoded), 0, 0, 0, 0, 0, 0,
    )  # fmt: skip
    with path.open("wb") as handle:
        handle.write(local + encoded + head)
        for _ in range(blocks):
            handle.write(block)
        handle.write(tail)
        cd_offset = handle.tell()
        handle.write(central + encoded)
        cd_size = handle.tell() - cd_offset
        handle.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, cd_size, cd_offset, 0))
    return uncompressed_bytes


def append_members(archive: Path, *members: Member) -> None:
    with zipfile.ZipFile(archive, "a") as zf:
        for member in members:
            info = zipfile.ZipInfo(member.name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = member.compress_type
            zf.writestr(info, member.data)


# --- reading results ---------------------------------------------------------------------------


def read_all(
    data: bytes, budgets: ArtifactBudgets | None = None
) -> list[ReportSource | ReportProblem]:
    archive = io.BytesIO(data)
    if budgets is None:
        return list(iter_zip_reports(archive, "a.zip"))
    return list(iter_zip_reports(archive, "a.zip", budgets))


def sources(items: Sequence[ReportSource | ReportProblem]) -> list[str]:
    return [item.name for item in items if isinstance(item, ReportSource)]


def problems(items: Sequence[ReportSource | ReportProblem]) -> dict[str, str]:
    return {item.source: item.reason for item in items if isinstance(item, ReportProblem)}


def content_of(source: ReportSource, chunk_bytes: int = 64 * 1024) -> bytes:
    with source.open() as stream:
        return b"".join(iter(lambda: stream.read(chunk_bytes), b""))


def collect(stream: BinaryIO, into: list[bytes], chunk_bytes: int = 8192) -> None:
    while chunk := stream.read(chunk_bytes):
        into.append(chunk)


def drain(stream: BinaryIO, chunk_bytes: int = MIB) -> int:
    total = 0
    while chunk := stream.read(chunk_bytes):
        total += len(chunk)
    return total


class TracedMemory:
    """Peak bytes allocated through Python (zlib and bz2 buffers included) since `reset`."""

    def reset(self) -> None:
        tracemalloc.reset_peak()

    def peak_bytes(self) -> int:
        return tracemalloc.get_traced_memory()[1]


@pytest.fixture
def traced_memory() -> Iterator[TracedMemory]:
    tracemalloc.start()
    try:
        yield TracedMemory()
    finally:
        tracemalloc.stop()


# --- selection ---------------------------------------------------------------------------------


def test_members_are_selected_by_content_and_skips_are_explained_only_when_useful() -> None:
    html = b"<!DOCTYPE html><html></html>"
    data = zip_bytes(
        Member("reports/"),
        Member("reports/TEST-a.xml"),
        Member("reports/results.txt", JUNIT.replace(b'name="t"', b'name="u"')),
        Member("reports/TestResult.xml", NUNIT),
        Member("reports/windows.junit.xml", b"Error: expect(received).toBe(expected)\n"),
        Member("reports/empty.xml", b""),
        Member("reports/index.html", html),
        Member("reports/run.log", b"PASS everything\n"),
        Member("reports/screenshot.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"),
        Member("reports/stored.xml", JUNIT, compress_type=zipfile.ZIP_STORED),
        Member("reports/bz.xml", JUNIT, compress_type=zipfile.ZIP_BZIP2),
    )
    items = read_all(data)
    assert sources(items) == [
        "a.zip!reports/TEST-a.xml",
        "a.zip!reports/results.txt",
        "a.zip!reports/stored.xml",
        "a.zip!reports/bz.xml",
    ]
    assert problems(items) == {
        "a.zip!reports/TestResult.xml": "not a JUnit report (root <test-results>)",
        "a.zip!reports/windows.junit.xml": "not an XML document",
        "a.zip!reports/empty.xml": "empty file",
    }
    by_name = {item.name: item for item in items if isinstance(item, ReportSource)}
    assert content_of(by_name["a.zip!reports/TEST-a.xml"]) == JUNIT
    assert b'name="u"' in content_of(by_name["a.zip!reports/results.txt"])
    assert content_of(by_name["a.zip!reports/bz.xml"]) == JUNIT
    assert by_name["a.zip!reports/TEST-a.xml"].size_bytes == len(JUNIT)


def test_a_source_can_be_opened_again_and_after_iteration() -> None:
    archive = io.BytesIO(zip_bytes(Member("a.xml"), Member("b.xml")))
    found = [item for item in iter_zip_reports(archive, "r.zip") if isinstance(item, ReportSource)]
    assert [content_of(source) for source in found] == [JUNIT, JUNIT]
    assert content_of(found[0], chunk_bytes=7) == JUNIT


def test_opening_a_source_after_its_archive_is_closed_is_a_clear_error() -> None:
    archive = io.BytesIO(zip_bytes(Member("a.xml")))
    (source,) = list(iter_zip_reports(archive, "r.zip"))
    assert isinstance(source, ReportSource)
    archive.close()
    with pytest.raises(ArtifactReadError, match="archive is closed"), source.open():
        pass


def test_a_long_leading_comment_is_reported_on_xml_names_only() -> None:
    padded = b"<!--" + b"x" * 5000 + b"-->" + JUNIT
    items = read_all(zip_bytes(Member("padded.xml", padded), Member("padded.txt", padded)))
    assert items == [
        ReportProblem("a.zip!padded.xml", "no root element in the first 4096 bytes"),
    ]
    roomy = ArtifactBudgets(sniff_bytes=8192)
    assert sources(read_all(zip_bytes(Member("padded.xml", padded)), roomy)) == ["a.zip!padded.xml"]


# --- hostile archives --------------------------------------------------------------------------


def test_a_one_gib_bomb_is_refused_from_its_header_and_the_good_member_is_read(
    tmp_path: Path, traced_memory: TracedMemory
) -> None:
    archive_path = tmp_path / "bomb.zip"
    bomb_bytes = write_bomb(archive_path, "bomb.xml", 1024, prefix=b"<testsuites>")
    assert bomb_bytes > GIB
    append_members(archive_path, Member("good.xml"))
    assert archive_path.stat().st_size < 2 * MIB
    traced_memory.reset()

    with archive_path.open("rb") as archive:
        items = list(iter_zip_reports(archive, "bomb.zip"))
        assert problems(items) == {
            "bomb.zip!bomb.xml": f"declared size {bomb_bytes} bytes exceeds the member limit "
            f"{256 * MIB} bytes"
        }
        (good,) = [item for item in items if isinstance(item, ReportSource)]
        assert content_of(good) == JUNIT

        # Past the member limit, the ratio rule still stops it (1 GiB from ~1 MiB).
        roomy = ArtifactBudgets(max_member_bytes=4 * GIB)
        reason = problems(list(iter_zip_reports(archive, "bomb.zip", roomy)))["bomb.zip!bomb.xml"]
        assert reason.startswith("compression ratio ")
        assert reason.endswith(":1 exceeds the limit 200:1 (possible zip bomb)")

    assert traced_memory.peak_bytes() < PEAK_MEMORY_LIMIT_BYTES


def test_reading_a_one_gib_member_streams_in_flat_memory(
    tmp_path: Path, traced_memory: TracedMemory
) -> None:
    archive_path = tmp_path / "bomb.zip"
    bomb_bytes = write_bomb(archive_path, "big.xml", 1024, prefix=b"<testsuites>")
    no_limits = ArtifactBudgets(max_member_bytes=4 * GIB, max_ratio=1e9, max_total_bytes=4 * GIB)
    traced_memory.reset()
    with archive_path.open("rb") as archive:
        (source,) = list(iter_zip_reports(archive, "bomb.zip", no_limits))
        assert isinstance(source, ReportSource)
        with source.open() as stream:
            assert drain(stream) == bomb_bytes
    assert traced_memory.peak_bytes() < PEAK_MEMORY_LIMIT_BYTES


def test_the_declared_total_of_selected_reports_is_bounded() -> None:
    data = zip_bytes(Member("a.xml"), Member("b.xml"), Member("notes.txt", b"x" * 5000))
    budget = ArtifactBudgets(max_total_bytes=len(JUNIT) * 2 - 1)
    assert read_all(data, budget) == [
        ReportProblem(
            "a.zip",
            f"declared uncompressed total {len(JUNIT) * 2} bytes of the selected reports "
            f"exceeds the limit {len(JUNIT) * 2 - 1} bytes",
        )
    ]
    # Non-report members only cost a sniff; they do not count against the total.
    assert sources(read_all(data, ArtifactBudgets(max_total_bytes=len(JUNIT) * 2))) == [
        "a.zip!a.xml",
        "a.zip!b.xml",
    ]


def lying_archive(actual_bytes: int, declared_bytes: int) -> bytes:
    """`liar.xml` holds `actual_bytes` of a JUnit-looking document but declares `declared_bytes`."""
    body = b"<testsuites>" + b" " * (actual_bytes - len(b"<testsuites>"))
    data = zip_bytes(Member("before.xml"), Member("liar.xml", body), Member("after.xml"))
    return patch(data, "liar.xml", usize=declared_bytes)


def test_a_small_lying_size_is_caught_while_sniffing(traced_memory: TracedMemory) -> None:
    data = lying_archive(100 * MIB, declared_bytes=1000)
    traced_memory.reset()
    items = read_all(data)
    assert sources(items) == ["a.zip!before.xml", "a.zip!after.xml"]
    assert problems(items) == {
        "a.zip!liar.xml": "member data does not match its declared size or CRC-32 "
        "(lying size or corruption)"
    }
    assert traced_memory.peak_bytes() < PEAK_MEMORY_LIMIT_BYTES


def test_a_large_lying_size_stops_the_stream_at_the_declared_size(
    traced_memory: TracedMemory,
) -> None:
    declared_bytes = 100_000
    data = lying_archive(100 * MIB, declared_bytes=declared_bytes)
    traced_memory.reset()
    items = read_all(data)
    (liar,) = [item for item in items if isinstance(item, ReportSource) and "liar" in item.name]
    assert liar.size_bytes == declared_bytes
    delivered: list[bytes] = []
    with liar.open() as stream, pytest.raises(OSError, match="lying size") as caught:
        collect(stream, into=delivered)
    assert isinstance(caught.value, ArtifactReadError)
    assert sum(map(len, delivered)) <= declared_bytes
    assert "\x00" not in str(caught.value)
    assert traced_memory.peak_bytes() < PEAK_MEMORY_LIMIT_BYTES


def test_corrupt_member_data_is_a_member_problem() -> None:
    data = bytearray(zip_bytes(Member("good.xml"), Member("bad.xml", JUNIT * 50)))
    bad = next(entry for entry in central_entries(bytes(data)) if entry.name == b"bad.xml")
    data_start = bad.local_offset + 30 + len(b"bad.xml")
    data[data_start : data_start + 8] = b"\xff" * 8
    items = read_all(bytes(data))
    assert sources(items) == ["a.zip!good.xml"]
    assert problems(items)["a.zip!bad.xml"] in {
        "corrupt compressed data",
        "member data does not match its declared size or CRC-32 (lying size or corruption)",
    }


def test_two_directory_entries_pointing_at_the_same_data_are_refused() -> None:
    data = zip_bytes(Member("a.xml"), Member("b.xml"))
    first = central_entries(data)[0]
    # The second entry now claims the first one's bytes: each name inflates the same data.
    data = patch(data, "b.xml", local_offset=first.local_offset)
    assert read_all(data) == [
        ReportProblem(
            "a.zip",
            "overlapping entries: 'a.xml' and 'b.xml' point at the same data (possible zip bomb)",
        )
    ]


def test_an_entry_whose_data_runs_into_the_next_one_is_refused() -> None:
    data = zip_bytes(Member("a.xml"), Member("b.xml"), Member("c.xml"))
    entries = central_entries(data)
    span = entries[1].local_offset - entries[0].local_offset
    data = patch(data, "a.xml", csize=span)
    assert read_all(data) == [
        ReportProblem("a.zip", "overlapping entries: 'a.xml' runs into 'b.xml' (possible zip bomb)")
    ]


def test_an_entry_whose_data_runs_into_the_central_directory_is_refused() -> None:
    data = zip_bytes(Member("a.xml"))
    data = patch(data, "a.xml", csize=len(data))
    assert read_all(data) == [
        ReportProblem(
            "a.zip",
            "overlapping entries: 'a.xml' runs into the central directory (possible zip bomb)",
        )
    ]


def test_an_overlap_bomb_is_refused_before_anything_is_inflated(
    traced_memory: TracedMemory,
) -> None:
    """Fifield-style: many directory entries share one highly compressed kernel."""
    kernel = zip_bytes(Member("k.xml", b"<testsuites>" + bytes(50 * MIB)))
    entries = central_entries(kernel)
    directory_start = entries[0].position
    record = kernel[directory_start : kernel.rfind(b"PK\x05\x06")]
    copies = 200
    # Each copy gets a distinct name of the same length, so the records keep their size.
    directory = b"".join(
        record.replace(b"k.xml", f"{index:05}".encode()) for index in range(copies)
    )
    end = struct.pack(
        "<4s4H2LH", b"PK\x05\x06", 0, 0, copies, copies, len(directory), directory_start, 0
    )
    bomb = kernel[:directory_start] + directory + end
    with zipfile.ZipFile(io.BytesIO(bomb)) as zf:
        # What Python 3.11.7 itself would happily inflate: 200 × 50 MiB.
        assert sum(info.file_size for info in zf.infolist()) == copies * (50 * MIB + 12)
    traced_memory.reset()
    (problem,) = read_all(bomb)
    assert isinstance(problem, ReportProblem)
    assert problem.source == "a.zip"
    assert problem.reason.endswith("point at the same data (possible zip bomb)")
    assert traced_memory.peak_bytes() < 10 * MIB


def test_nested_archives_are_never_opened() -> None:
    inner = zip_bytes(Member("TEST-inner.xml"))
    data = zip_bytes(
        Member("good.xml"),
        Member("bundle.zip", inner),
        Member("disguised.xml", inner),
        Member("disguised.txt", inner),
        Member("libs/app.jar", inner),
        Member("logs.tar.gz", b"\x1f\x8b\x08\x00"),
        Member("TEST-x.xml.gz", b"\x1f\x8b\x08\x00"),
    )
    items = read_all(data)
    assert sources(items) == ["a.zip!good.xml"]
    assert problems(items) == {
        "a.zip!bundle.zip": "nested zip archive, not opened",
        "a.zip!disguised.xml": "nested zip archive, not opened",
    }


def test_zip_slip_and_odd_names_are_only_displayed_escaped(tmp_path: Path) -> None:
    long_name = "d/" + "x" * 4000 + ".xml"
    names = [
        "../../../../../../tmp/evil/TEST-a.xml",
        "/etc/TEST-b.xml",
        "C:/Windows/TEST-c.xml",
        "..\\..\\TEST-d.xml",
        "ok/../../TEST-e.xml",
        "\x1b[31mTEST-f.xml",
        "TEST-\u202egmx.xml",
        "TEST-\u200bh.xml",
        long_name,
    ]
    data = zip_bytes(*(Member(name) for name in names))
    before = sorted(tmp_path.rglob("*"))
    items = read_all(data)
    assert all(isinstance(item, ReportSource) for item in items)
    shown = sources(items)
    assert shown[:5] == [f"a.zip!{name}" for name in names[:5]]
    assert shown[5] == "a.zip!\\x1b[31mTEST-f.xml"
    assert shown[6] == "a.zip!TEST-\\u202egmx.xml"
    assert shown[7] == "a.zip!TEST-\\u200bh.xml"
    assert len(shown[8]) == len("a.zip!") + 300
    assert shown[8].endswith("…")
    assert [content_of(item) for item in items if isinstance(item, ReportSource)] == [JUNIT] * 9
    assert sorted(tmp_path.rglob("*")) == before
    assert not Path("/tmp/evil/TEST-a.xml").exists()


def test_a_nul_in_a_member_name_is_cut_like_zipfile_does() -> None:
    data = zip_bytes(Member("aXb.xml"))
    data = data.replace(b"aXb.xml", b"a\x00b.xml")
    items = read_all(data)
    assert sources(items) == ["a.zip!a"]


def test_symlinks_are_skipped_and_reported() -> None:
    link = (stat.S_IFLNK | 0o777) << 16
    data = zip_bytes(
        Member("junit.xml", b"/etc/passwd", external_attr=link),
        Member("results", b"/etc", external_attr=link),
        Member("good.xml"),
    )
    items = read_all(data)
    assert sources(items) == ["a.zip!good.xml"]
    assert problems(items) == {
        "a.zip!junit.xml": "symbolic link, not followed",
        "a.zip!results": "symbolic link, not followed",
    }


def test_duplicate_names_are_both_read_under_distinct_names() -> None:
    second = JUNIT.replace(b'name="t"', b'name="second"')
    data = zip_bytes(Member("TEST-x.xml"), Member("TEST-x.xml", second))
    items = read_all(data)
    assert sources(items) == ["a.zip!TEST-x.xml", "a.zip!TEST-x.xml (entry 2)"]
    assert [content_of(item) for item in items if isinstance(item, ReportSource)] == [
        JUNIT,
        second,
    ]


@pytest.fixture(scope="module")
def hundred_thousand_entries() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for index in range(100_000):
            zf.writestr(f"f{index}.txt", b"")
    return buffer.getvalue()


def test_too_many_entries_are_refused_from_the_end_record(hundred_thousand_entries: bytes) -> None:
    assert read_all(hundred_thousand_entries) == [
        ReportProblem("a.zip", "too many entries: 100000 (limit 20000)")
    ]


def test_too_many_entries_are_refused_even_when_the_end_record_lies(
    hundred_thousand_entries: bytes,
) -> None:
    data = bytearray(hundred_thousand_entries)
    eocd = data.rfind(b"PK\x05\x06")
    struct.pack_into("<2H", data, eocd + 8, 10, 10)
    assert read_all(bytes(data)) == [
        ReportProblem("a.zip", "too many entries: 100000 (limit 20000)")
    ]


def test_an_oversized_central_directory_is_refused_before_zipfile_reads_it() -> None:
    data = zip_bytes(Member("a.xml"))
    directory_bytes = len(data) - central_entries(data)[0].position - 22
    small = ArtifactBudgets(max_central_directory_bytes=directory_bytes - 1)
    assert read_all(data, small) == [
        ReportProblem(
            "a.zip",
            f"central directory of {directory_bytes} bytes exceeds the limit "
            f"{directory_bytes - 1} bytes",
        )
    ]


def test_an_encrypted_member_is_skipped_and_the_rest_is_read() -> None:
    data = zip_bytes(Member("secret.xml"), Member("good.xml"))
    data = patch(data, "secret.xml", flags=0x1)
    items = read_all(data)
    assert sources(items) == ["a.zip!good.xml"]
    assert problems(items) == {"a.zip!secret.xml": "encrypted member, not read"}


def test_an_encrypted_archive_is_one_problem() -> None:
    data = zip_bytes(Member("dir/"), Member("dir/a.xml"), Member("dir/b.txt", b"x"))
    for name in ("dir/a.xml", "dir/b.txt"):
        data = patch(data, name, flags=0x1)
    assert read_all(data) == [
        ReportProblem(
            "a.zip", "encrypted archive: none of its 2 files can be read without a password"
        )
    ]


def test_a_deflate64_archive_is_one_problem() -> None:
    data = zip_bytes(Member("a.xml"), Member("b.xml"))
    for name in ("a.xml", "b.xml"):
        data = patch(data, name, method=9)
    assert read_all(data) == [
        ReportProblem(
            "a.zip", "unsupported compression method 9 (deflate64) in all 2 files of the archive"
        )
    ]


def test_an_lzma_member_is_refused_and_the_rest_is_read() -> None:
    data = zip_bytes(Member("a.xml", compress_type=zipfile.ZIP_LZMA), Member("b.xml"))
    items = read_all(data)
    assert sources(items) == ["a.zip!b.xml"]
    assert problems(items) == {"a.zip!a.xml": "unsupported compression method 14 (lzma)"}


def test_strong_encryption_flags_are_a_member_problem_not_a_crash() -> None:
    data = zip_bytes(Member("a.xml"), Member("b.xml"))
    data = patch(data, "a.xml", flags=0x40)
    items = read_all(data)
    assert sources(items) == ["a.zip!b.xml"]
    assert problems(items) == {"a.zip!a.xml": "unsupported ZIP member feature"}


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not a zip at all",
        JUNIT,
        bytes(range(256)) * 100,
        zip_bytes(Member("a.xml"), Member("b.xml"))[:150],
        zip_bytes(Member("a.xml"), Member("b.xml"))[:-10],
    ],
    ids=["empty", "text", "xml", "binary", "cut-in-data", "cut-in-end-record"],
)
def test_not_a_zip_or_truncated_is_one_archive_problem(data: bytes) -> None:
    assert read_all(data) == [
        ReportProblem(
            "a.zip", "not a ZIP archive, or truncated (no end-of-central-directory record)"
        )
    ]


def test_a_damaged_central_directory_is_one_archive_problem() -> None:
    data = bytearray(zip_bytes(Member("a.xml")))
    data[central_entries(bytes(data))[0].position] = ord("X")
    (problem,) = read_all(bytes(data))
    assert isinstance(problem, ReportProblem)
    assert problem.source == "a.zip"
    assert problem.reason.startswith("not a readable ZIP archive (")


def test_a_bad_local_header_is_a_member_problem() -> None:
    data = bytearray(zip_bytes(Member("a.xml"), Member("b.xml")))
    data[central_entries(bytes(data))[0].local_offset] = ord("X")
    items = read_all(bytes(data))
    assert sources(items) == ["a.zip!b.xml"]
    assert problems(items) == {"a.zip!a.xml": "corrupt ZIP member header"}


def test_an_archive_over_the_size_limit_is_refused() -> None:
    data = zip_bytes(Member("a.xml"))
    assert read_all(data, ArtifactBudgets(max_archive_bytes=len(data) - 1)) == [
        ReportProblem(
            "a.zip", f"archive size {len(data)} bytes exceeds the limit {len(data) - 1} bytes"
        )
    ]


def test_the_archive_name_is_escaped_too() -> None:
    (problem,) = list(iter_zip_reports(io.BytesIO(b""), "evil\x1b]0;x\x07.zip"))
    assert isinstance(problem, ReportProblem)
    assert problem.source == "evil\\x1b]0;x\\x07.zip"


# --- pure decisions ----------------------------------------------------------------------------


def facts(**overrides: object) -> ZipEntryFacts:
    values: dict[str, object] = {
        "name": "a.xml", "is_dir": False, "is_symlink": False, "is_encrypted": False,
        "compress_type": zipfile.ZIP_DEFLATED, "file_size": 1000, "compress_size": 100,
    }  # fmt: skip
    values.update(overrides)
    return ZipEntryFacts(**values)  # type: ignore[arg-type]


def test_the_ratio_rule_allows_the_slack_then_the_ratio() -> None:
    budgets = ArtifactBudgets()
    # 5 KiB compressed may declare up to 200 × 5 KiB + 1 MiB.
    limit = 200 * 5 * 1024 + MIB
    assert judge_zip_entry(facts(compress_size=5 * 1024, file_size=limit), budgets) is None
    skip = judge_zip_entry(facts(compress_size=5 * 1024, file_size=limit + 1), budgets)
    assert skip is not None
    assert skip.reason is SkipReason.RATIO
    assert judge_zip_entry(facts(compress_size=0, file_size=MIB), budgets) is None


def test_entry_checks_come_in_a_fixed_order() -> None:
    budgets = ArtifactBudgets()
    everything_wrong = facts(
        name="x.zip", is_symlink=True, is_encrypted=True, compress_type=9, file_size=GIB
    )
    skip = judge_zip_entry(everything_wrong, budgets)
    assert skip == Skip(SkipReason.SYMLINK, "symbolic link, not followed")
    assert judge_zip_entry(facts(name="d/", is_dir=True), budgets) == Skip(
        SkipReason.DIRECTORY, "directory"
    )


def test_recorded_skips_depend_on_the_name_only_for_content_reasons() -> None:
    assert Skip(SkipReason.SYMLINK, "").is_recorded(report_like=False)
    assert Skip(SkipReason.RATIO, "").is_recorded(report_like=False)
    assert not Skip(SkipReason.NOT_XML, "").is_recorded(report_like=False)
    assert Skip(SkipReason.NOT_XML, "").is_recorded(report_like=True)
    assert not Skip(SkipReason.DIRECTORY, "").is_recorded(report_like=True)


def test_judge_head_on_its_own() -> None:
    assert judge_head(JUNIT, is_complete=True, sniff_bytes=4096, nested=True) is None
    assert judge_head(b"PK\x03\x04", is_complete=False, sniff_bytes=4096, nested=False) == Skip(
        SkipReason.NESTED_ARCHIVE, "zip archive, not opened"
    )
    tar_head = bytes(257) + b"ustar\x0000"
    skip = judge_head(tar_head, is_complete=True, sniff_bytes=4096, nested=True)
    assert skip == Skip(SkipReason.NESTED_ARCHIVE, "nested tar archive, not opened")
    weird_root = b"<a\xe2\x80\xaeevil>"
    skip = judge_head(weird_root, is_complete=True, sniff_bytes=4096, nested=True)
    assert skip == Skip(SkipReason.NOT_JUNIT, "not a JUnit report (root <a\\u202eevil>)")


def test_overlap_checks_on_spans() -> None:
    fine = [EntrySpan(0, "a", 0, 100), EntrySpan(1, "b", 116, 200), EntrySpan(2, "c", 200, 300)]
    assert find_overlap(fine, central_directory_offset=300) is None
    # Directory order does not matter, header order does.
    assert find_overlap(list(reversed(fine)), central_directory_offset=300) is None
    assert find_overlap([], central_directory_offset=0) is None
    overlapping = [*fine[:2], EntrySpan(2, "c", 199, 300)]
    assert find_overlap(overlapping, 300) == (
        "overlapping entries: 'b' runs into 'c' (possible zip bomb)"
    )


def test_end_records_classic_and_zip64() -> None:
    classic = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 3, 3, 150, 1000, 0)
    assert read_end_records(b"junk" + classic) == CentralDirectorySummary(3, 150)
    zip64_record = struct.pack(
        "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, 70_000, 70_000, 3_500_000, 1000
    )
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, 1000 + 3_500_000, 1)
    marker = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    assert read_end_records(zip64_record + locator + marker) == CentralDirectorySummary(
        70_000, 3_500_000
    )
    assert read_end_records(b"PK\x05\x06 too short") is None
    assert END_TAIL_BYTES > 0xFFFF


def test_central_directory_budget_messages() -> None:
    budgets = ArtifactBudgets(max_entries=10, max_central_directory_bytes=1000)
    assert judge_central_directory(CentralDirectorySummary(10, 1000), budgets) is None
    assert judge_central_directory(CentralDirectorySummary(11, 10), budgets) == (
        "too many entries: 11 (limit 10)"
    )


def test_refusal_of_all_needs_one_shared_reason_and_nothing_selected() -> None:
    encrypted = Skip(SkipReason.ENCRYPTED, "encrypted member, not read")
    symlink = Skip(SkipReason.SYMLINK, "symbolic link, not followed")
    assert judge_refusal_of_all([encrypted, encrypted], selected_count=1) is None
    assert judge_refusal_of_all([encrypted, symlink], selected_count=0) is None
    assert judge_refusal_of_all([], selected_count=0) is None


def test_display_name_keeps_ordinary_unicode() -> None:
    assert display_name("résumé/测试/TEST-ü.xml") == "résumé/测试/TEST-ü.xml"
    assert display_name("a\tb\nc") == "a\\x09b\\x0ac"
    assert display_name("x" * 10, max_chars=5) == "xxxx…"


@pytest.mark.parametrize("max_in_memory_bytes", [0, 10 * MIB], ids=["on-disk", "in-memory"])
def test_a_spooled_download_is_read_in_place(max_in_memory_bytes: int) -> None:
    data = zip_bytes(Member("a.xml"), Member("b.txt", b"log"))
    with tempfile.SpooledTemporaryFile(max_size=max_in_memory_bytes) as spool:
        spool.write(data)
        items = list(iter_zip_reports(spool, "download.zip"))
        assert sources(items) == ["download.zip!a.xml"]
        (source,) = items
        assert isinstance(source, ReportSource)
        assert content_of(source) == JUNIT
