"""`iter_path_reports`: single files, folders searched recursively, ZIPs found by magic bytes."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from flakeguard.adapters.artifacts import (
    ArtifactBudgets,
    ArtifactReadError,
    ReportSource,
    iter_path_reports,
)
from flakeguard.core.models import ReportProblem

JUNIT = b'<?xml version="1.0"?><testsuite name="s"><testcase classname="c" name="t"/></testsuite>'
NUNIT = b'<?xml version="1.0"?><test-results total="1"/>'


def zip_bytes(**members: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def sources(items: Sequence[ReportSource | ReportProblem]) -> list[str]:
    return [item.name for item in items if isinstance(item, ReportSource)]


def problems(items: Sequence[ReportSource | ReportProblem]) -> dict[str, str]:
    return {item.source: item.reason for item in items if isinstance(item, ReportProblem)}


def content_of(source: ReportSource) -> bytes:
    with source.open() as stream:
        return stream.read()


def test_a_single_report_file(tmp_path: Path) -> None:
    report = write(tmp_path / "TEST-a.xml", JUNIT)
    (source,) = list(iter_path_reports(report))
    assert isinstance(source, ReportSource)
    assert source.name == str(report)
    assert source.size_bytes == len(JUNIT)
    assert content_of(source) == JUNIT


def test_a_file_named_explicitly_always_explains_a_refusal(tmp_path: Path) -> None:
    notes = write(tmp_path / "notes.txt", b"just text")
    nunit = write(tmp_path / "TestResult.xml", NUNIT)
    assert list(iter_path_reports(notes)) == [ReportProblem(str(notes), "not an XML document")]
    assert list(iter_path_reports(nunit)) == [
        ReportProblem(str(nunit), "not a JUnit report (root <test-results>)")
    ]


def test_a_missing_path_and_a_special_file_are_problems(tmp_path: Path) -> None:
    missing = tmp_path / "nope.xml"
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert list(iter_path_reports(missing)) == [
        ReportProblem(str(missing), "no such file or folder")
    ]
    assert list(iter_path_reports(fifo)) == [
        ReportProblem(str(fifo), "not a regular file or folder")
    ]


def test_a_zip_is_found_by_magic_bytes_not_by_extension(tmp_path: Path) -> None:
    archive = write(tmp_path / "artifact.bin", zip_bytes(**{"r/TEST-a.xml": JUNIT, "n.xml": NUNIT}))
    items = list(iter_path_reports(archive))
    assert sources(items) == [f"{archive}!r/TEST-a.xml"]
    assert problems(items) == {f"{archive}!n.xml": "not a JUnit report (root <test-results>)"}
    (source,) = [item for item in items if isinstance(item, ReportSource)]
    # The iterator owned the archive file; it is closed now that iteration finished.
    with pytest.raises(ArtifactReadError, match="archive is closed"), source.open():
        pass


def test_zip_sources_can_be_read_while_iterating(tmp_path: Path) -> None:
    archive = write(tmp_path / "a.zip", zip_bytes(**{"one.xml": JUNIT, "two.xml": JUNIT}))
    contents = [
        content_of(item) for item in iter_path_reports(archive) if isinstance(item, ReportSource)
    ]
    assert contents == [JUNIT, JUNIT]


def test_a_folder_is_searched_recursively_in_name_order(tmp_path: Path) -> None:
    root = tmp_path / "results"
    write(root / "b" / "TEST-b2.xml", JUNIT)
    write(root / "b" / "TEST-b1.xml", JUNIT)
    write(root / "a" / "deep" / "er" / "TEST-deep.xml", JUNIT)
    write(root / "TEST-root.xml", JUNIT)
    write(root / "junit-as.txt", JUNIT)
    write(root / "TestResult.xml", NUNIT)
    write(root / "index.html", b"<!DOCTYPE html><html></html>")
    write(root / "run.log", b"all good")
    write(root / "bundle.zip", zip_bytes(**{"TEST-zipped.xml": JUNIT}))
    write(root / "broken.zip", b"not a zip")
    os.mkfifo(root / "pipe.xml")
    (root / "link.xml").symlink_to(root / "TEST-root.xml")
    (root / "linked-dir").symlink_to(root / "a", target_is_directory=True)

    items = list(iter_path_reports(root))

    assert sources(items) == [
        f"{root}/TEST-root.xml",
        f"{root}/bundle.zip!TEST-zipped.xml",
        f"{root}/junit-as.txt",
        f"{root}/a/deep/er/TEST-deep.xml",
        f"{root}/b/TEST-b1.xml",
        f"{root}/b/TEST-b2.xml",
    ]
    assert problems(items) == {
        f"{root}/TestResult.xml": "not a JUnit report (root <test-results>)",
        f"{root}/broken.zip": "not a ZIP archive",
        f"{root}/link.xml": "symbolic link, not followed",
        f"{root}/linked-dir": "symbolic link, not followed",
    }
    assert list(iter_path_reports(root)) == items


def test_a_symlink_given_explicitly_is_followed(tmp_path: Path) -> None:
    target = write(tmp_path / "real.xml", JUNIT)
    link = tmp_path / "link.xml"
    link.symlink_to(target)
    (source,) = list(iter_path_reports(link))
    assert isinstance(source, ReportSource)
    assert content_of(source) == JUNIT


def test_a_file_over_the_member_limit_is_refused(tmp_path: Path) -> None:
    big = write(tmp_path / "big.xml", JUNIT + b" " * 1000)
    budgets = ArtifactBudgets(max_member_bytes=len(JUNIT))
    assert list(iter_path_reports(big, budgets)) == [
        ReportProblem(
            str(big), f"size {len(JUNIT) + 1000} bytes exceeds the member limit {len(JUNIT)} bytes"
        )
    ]


def test_a_file_that_grows_past_the_limit_stops_the_stream(tmp_path: Path) -> None:
    report = write(tmp_path / "growing.xml", JUNIT)
    budgets = ArtifactBudgets(max_member_bytes=len(JUNIT) + 10)
    (source,) = list(iter_path_reports(report, budgets))
    assert isinstance(source, ReportSource)
    with report.open("ab") as handle:
        handle.write(b" " * 100)
    with source.open() as stream, pytest.raises(ArtifactReadError) as caught:
        stream.read()
    assert caught.value.reason == f"file grew past the member limit of {len(JUNIT) + 10} bytes"


def test_a_file_swapped_for_a_symlink_after_listing_is_not_followed(tmp_path: Path) -> None:
    folder = tmp_path / "results"
    report = write(folder / "TEST-a.xml", JUNIT)
    (source,) = list(iter_path_reports(folder))
    assert isinstance(source, ReportSource)
    secret = write(tmp_path / "secret.txt", b"do not read")
    report.unlink()
    report.symlink_to(secret)
    with pytest.raises(ArtifactReadError, match="cannot open"), source.open():
        pass


def test_an_unreadable_subfolder_is_a_problem_and_the_rest_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "r"
    write(root / "ok" / "TEST-a.xml", JUNIT)
    locked = root / "locked"
    write(locked / "TEST-b.xml", JUNIT)
    real_scandir = os.scandir

    def scandir_denying_locked(path: Path) -> AbstractContextManager[Iterator[os.DirEntry[str]]]:
        # chmod 0 does not stop root, which runs these tests in CI containers.
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir_denying_locked)
    items = list(iter_path_reports(root))
    assert sources(items) == [f"{root}/ok/TEST-a.xml"]
    assert problems(items) == {str(locked): "cannot list folder: Permission denied"}


def test_odd_file_names_are_escaped_for_display(tmp_path: Path) -> None:
    report = write(tmp_path / "TEST-\x1b[31m-\u202e.xml", JUNIT)
    (source,) = list(iter_path_reports(tmp_path))
    assert isinstance(source, ReportSource)
    assert source.name == f"{tmp_path}/TEST-\\x1b[31m-\\u202e.xml"
    assert report.exists()
    assert content_of(source) == JUNIT


def test_folder_files_larger_than_the_sniff_window_are_reports(tmp_path: Path) -> None:
    """Regression: the head read must not refuse files bigger than `sniff_bytes`."""
    big = tmp_path / "TEST-big.xml"
    cases = "".join(f'<testcase classname="c" name="t{i}" time="0.1"/>' for i in range(2000))
    big.write_text(f'<?xml version="1.0"?><testsuite name="s">{cases}</testsuite>')
    assert big.stat().st_size > 10 * 4096
    found = list(iter_path_reports(tmp_path))
    assert [type(item).__name__ for item in found] == ["ReportSource"]
    source = found[0]
    assert isinstance(source, ReportSource)
    with source.open() as stream:
        assert len(stream.read()) == big.stat().st_size
