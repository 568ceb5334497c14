"""Types of the compiled hot loop (`_junit_speedups.pyx`)."""

from collections.abc import Callable, Iterator
from typing import Any

from lxml import etree

from flakeguard.core.models import Attempt, CaseResult, Outcome

def new_buffer(entries: int) -> dict[Any, Any]: ...
def scan_cases(
    events: Iterator[tuple[str, etree._Element]],
    cases_parent: etree._Element,
    buffer: dict[tuple[str | None, str | None, str | None], Attempt | list[Attempt]],
    passed_cache: dict[str | None, Attempt],
    passed_attempt: Callable[[str | None], Attempt],
    failure: Callable[[Outcome, str | None, str | None, str | None, str | None], Attempt],
    skip: Callable[[str | None, str | None, str | None, str | None], Attempt],
    failed_outcome: Outcome,
    error_outcome: Outcome,
    budget: int,
) -> tuple[etree._Element | None, int, bool]: ...
def drain_cases(
    buffer: dict[tuple[str | None, str | None, str | None], Attempt | list[Attempt]],
    case_properties: dict[tuple[str | None, str | None, str | None], tuple[tuple[str, str], ...]],
    suite: str,
    default_file: str | None,
    env: tuple[tuple[str, str], ...],
    counts: dict[Outcome, int],
    normalise_file: Callable[[str], str | None],
    merged_attempts: Callable[[list[Attempt]], tuple[Attempt, ...]],
    case_type: type[CaseResult],
) -> tuple[list[CaseResult], int]: ...
def failure_signature(
    kind: str,
    failure_type: str | None,
    message: str | None,
    stack: str | None,
    max_chars: int,
    max_lines: int,
    python_signature: Callable[[str, str | None, str | None, str | None], str],
    masked_bytes: Callable[[str], bytes],
    blake2b: Callable[..., Any],
) -> str: ...
