"""The core vocabulary: outcomes, parsed test cases, executions, scores.

Pure data only (frozen dataclasses, named tuples and enums). Every other layer speaks these types:
the JUnit parser produces `CaseResult`, storage turns them into `Execution` rows, the
scorer reads `ExecutionRecord` histories and produces `FlakeScore`.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple


class Outcome(StrEnum):
    """Result of one attempt of one test case."""

    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"
    SKIPPED = "skipped"


FAILING: frozenset[Outcome] = frozenset({Outcome.FAILED, Outcome.ERROR})
"""Outcomes that count as a failure of the test (assertion failure or error)."""

RAN: frozenset[Outcome] = frozenset({Outcome.PASSED, Outcome.FAILED, Outcome.ERROR})
"""Outcomes of a test that actually executed (skipped runs carry no evidence)."""


class Verdict(StrEnum):
    """What the scorer concludes about a test in a scope (its "class" in the CLI JSON)."""

    FLAKY = "flaky"
    BROKEN = "broken"
    SUSPECTED = "suspected"
    HEALTHY = "healthy"


class Priority(StrEnum):
    """Job priority names of the spec; BullMQ numbers live in the queue adapter."""

    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class Attempt(NamedTuple):
    """One attempt of a test inside one report (retries produce several).

    A named tuple for the same reason as `CaseResult`: the parser makes one per distinct
    passing duration and one per failure, and `tuple.__new__` is ~1 µs cheaper per object
    than a frozen dataclass's `__init__`.
    """

    outcome: Outcome
    duration_s: float | None = None
    failure_type: str | None = None
    message: str | None = None
    signature: str | None = None
    """Stable hash of the normalised failure (type + message + stack), None when passed."""


class CaseResult(NamedTuple):
    """One test case of one JUnit report, with every attempt the report shows.

    `attempts` is in document order and its last element is the final result: Surefire's
    `<flakyFailure>` children come before the passing main element; pytest-rerunfailures'
    repeated `<testcase>` elements are merged into one `CaseResult` here.

    A named tuple rather than a frozen dataclass because the parser makes one per test case
    of every report: `tuple.__new__` builds it in one C call (~0.3 µs per case less than a
    slots dataclass, bench/parse.py). It is immutable and compares by value like the other
    types here; unlike them it also equals a plain tuple of the same fields.
    """

    suite: str
    class_name: str
    name: str
    file: str | None
    attempts: tuple[Attempt, ...]
    properties: tuple[tuple[str, str], ...] = ()

    @property
    def final(self) -> Attempt:
        return self.attempts[-1]

    @property
    def outcome(self) -> Outcome:
        return self.final.outcome

    @property
    def is_flaky_in_report(self) -> bool:
        """Failed at least once and finally passed: retry evidence of flakiness."""
        return self.final.outcome is Outcome.PASSED and any(
            a.outcome in FAILING for a in self.attempts[:-1]
        )

    @property
    def test_key(self) -> str:
        return test_key(self.suite, self.class_name, self.name, self.file)


@functools.lru_cache(maxsize=32_768)
def test_key(suite: str, class_name: str, name: str, file: str | None) -> str:
    """Stable identity of a test inside a repository: a hash of its normalised parts.

    Remembered for the 32,768 tests hashed last (~13 MB at most): the same tests come back
    in every run of a repository, and a hit costs ~0.3 µs against ~1.0 µs to hash.

    >>> test_key("s", "c", "n", None) == test_key("s", "c", "n", None)
    True
    """
    raw = "\x1f".join((suite, class_name, name, file or ""))
    return hashlib.blake2b(raw.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


test_key.__test__ = False  # type: ignore[attr-defined]  # not a pytest test function


@dataclass(frozen=True, slots=True)
class ReportProblem:
    """Why one file of a run could not be (fully) used. A value, not an exception."""

    source: str
    reason: str
    partial: bool = False
    """True when the cases read before the problem were kept."""


@dataclass(frozen=True, slots=True)
class RunRef:
    """Identity and context of one attempt of one CI run."""

    repo: str  # "owner/name"
    run_id: int
    attempt: int
    head_sha: str
    branch: str | None
    event: str | None = None
    workflow: str | None = None
    pr_number: int | None = None
    started_at: datetime | None = None
    conclusion: str | None = None


class ExecutionRecord(NamedTuple):
    """One attempt of one test in one run, as the scorer sees history.

    A NamedTuple, not a dataclass: histories hold millions of these and a tuple is built in
    C (a frozen dataclass pays 13 `object.__setattr__` calls per record).
    """

    test_key: str
    env_key: str
    run_id: int
    run_attempt: int
    retry_index: int
    is_final: bool
    sha: str
    branch: str | None
    is_default_branch: bool
    outcome: Outcome
    at: datetime
    signature: str | None = None
    upload_failed_share: float = 0.0
    """Share of failing tests in the report this execution came from (infra-outage filter)."""


@dataclass(frozen=True, slots=True)
class Components:
    """The spec's four score components, each in [0, 1]."""

    failure_rate: float
    inconsistency: float
    recency: float
    branch_diversity: float


@dataclass(frozen=True, slots=True)
class FlakeScore:
    """The scorer's output for one test in one environment scope."""

    test_key: str
    scope: str
    score: float
    components: Components
    verdict: Verdict
    confidence: str
    reason: str
    runs: int
    failures: int
    evidence: dict[str, float] = field(default_factory=dict)
