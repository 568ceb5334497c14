"""Scriptable failures of the emulated GitHub (and of its blob host).

`emulator.faults.add(Fault(FaultKind.SERVER_ERROR, r"/artifacts$", count=3))` makes the next three
matching requests fail with 502. Faults are checked in the order they were added; each match uses
one of its `count` (None: until removed). Messages are GitHub's own (notes/github.md §3).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from enum import StrEnum


class FaultKind(StrEnum):
    SERVER_ERROR = "server_error"
    """`status` (default 502) with a GitHub-like error body."""
    RETRY_AFTER = "retry_after"
    """`status` (default 429; 403 also allowed) with `retry-after: retry_after_s`."""
    SECONDARY_LIMIT = "secondary_limit"
    """403 "You have exceeded a secondary rate limit"; `retry-after` only if `retry_after_s`."""
    PRIMARY_EXHAUSTED = "primary_exhausted"
    """The caller's primary budget drops to 0 until `reset_in_s` from now: every request of that
    installation answers 403 "API rate limit exceeded" (remaining 0, reset) until then."""
    SLOW = "slow"
    """Wait `delay_s` before answering (on the blob host: in the middle of the body)."""
    GONE = "gone"
    """410 "Artifact has expired" (as for an expired artifact)."""
    BAD_CREDENTIALS = "bad_credentials"
    """401 "Bad credentials" (e.g. a token not yet replicated)."""


class FaultTarget(StrEnum):
    API = "api"
    BLOB = "blob"


@dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind
    path_regex: str = ".*"
    """Searched (`re.search`) in the request path, e.g. r"/actions/runs/\\d+/artifacts$"."""
    count: int | None = 1
    method: str | None = None
    target: FaultTarget = FaultTarget.API
    status: int | None = None
    retry_after_s: float | None = None
    delay_s: float = 0.0
    reset_in_s: float = 60.0


@dataclass(slots=True)
class _Armed:
    fault: Fault
    pattern: re.Pattern[str]
    remaining: int | None
    fired: int = field(default=0)


class FaultBook:
    """The armed faults; thread-safe (tests add faults while the server thread matches them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: list[_Armed] = []

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._armed.append(_Armed(fault, re.compile(fault.path_regex), fault.count))
        return fault

    def add_fault(
        self,
        path_regex: str,
        kind: FaultKind,
        *,
        count: int | None = 1,
        method: str | None = None,
        target: FaultTarget = FaultTarget.API,
        status: int | None = None,
        retry_after_s: float | None = None,
        delay_s: float = 0.0,
        reset_in_s: float = 60.0,
    ) -> Fault:
        """Keyword form of `add(Fault(...))`."""
        return self.add(
            Fault(
                kind, path_regex, count, method, target, status, retry_after_s, delay_s, reset_in_s
            )
        )

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()

    def fired(self, fault: Fault) -> int:
        """How many requests `fault` has answered so far."""
        with self._lock:
            return sum(a.fired for a in self._armed if a.fault is fault)

    def take(self, target: FaultTarget, method: str, path: str) -> Fault | None:
        """The first armed fault matching this request (using one of its count), or None."""
        with self._lock:
            for armed in self._armed:
                fault = armed.fault
                if fault.target is not target or armed.remaining == 0:
                    continue
                if fault.method is not None and fault.method.upper() != method:
                    continue
                if armed.pattern.search(path) is None:
                    continue
                if armed.remaining is not None:
                    armed.remaining -= 1
                armed.fired += 1
                return fault
        return None
