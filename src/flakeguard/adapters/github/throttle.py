"""octokit-like throttling and retry decisions for the GitHub client.

Anchored on `@octokit/plugin-throttling@11` and `@octokit/plugin-retry@8` (notes/github.md §3.4):

- Concurrency: at most `max_concurrency` requests in flight per client (octokit's `global`
  group), token creation one at a time (`auth` group), writes (non-GET/HEAD) one at a time per
  installation and at least `write_spacing_s` apart (`write` group, minTime 1000 ms; per
  installation because GitHub's content-creation limits are per installation).
- Every response's `x-ratelimit-*` headers update a per-installation `RateLimitState`.
- `plan_retry` is the pure decision for one failed response:
  * 403/429 whose message says "secondary rate": `retry-after` if sent, else 60 s, doubling
    with each retry (60, 120, 240 s);
  * 403/429 with `retry-after`: that many seconds;
  * 403/429 with `x-ratelimit-remaining: 0`: until `x-ratelimit-reset` + 1 s (rounded up);
  * 429 without any hint, and 5xx: `(n + 1)² × retry_base_s` for retry number n (1, 4, 9 s);
  * anything else (400, 401, non-rate 403, 404, 410, 422, ...): no retry.
- An installation told to wait is blocked until then: its next requests wait inline when the wait
  is at most `max_inline_wait_s`, otherwise `GitHubRateLimited(retry_after_s=...)` is raised so
  the queue re-delays the job instead of a worker slot sleeping.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum

from flakeguard.errors import GitHubRateLimited

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]

SECONDARY_FALLBACK_WAIT_S = 60.0
"""octokit's `fallbackSecondaryRateRetryAfter`; GitHub's docs: "wait for at least one minute"."""

PRIMARY_RESET_PADDING_S = 1.0
"""octokit waits until `x-ratelimit-reset` plus one second."""


class RetryReason(StrEnum):
    SERVER_ERROR = "server_error"
    RETRY_AFTER = "retry_after"
    PRIMARY_EXHAUSTED = "primary_exhausted"
    SECONDARY_LIMIT = "secondary_limit"
    TOO_MANY_REQUESTS = "too_many_requests"


RATE_LIMIT_REASONS: frozenset[RetryReason] = frozenset(
    {
        RetryReason.RETRY_AFTER,
        RetryReason.PRIMARY_EXHAUSTED,
        RetryReason.SECONDARY_LIMIT,
        RetryReason.TOO_MANY_REQUESTS,
    }
)
"""Reasons that mean "GitHub asked us to slow down" (as opposed to a server fault)."""


@dataclass(frozen=True, slots=True)
class RetryPlan:
    """Wait `wait_s`, then send the request again."""

    wait_s: float
    reason: RetryReason

    @property
    def is_rate_limit(self) -> bool:
        return self.reason in RATE_LIMIT_REASONS


@dataclass(frozen=True, slots=True)
class RateLimitState:
    """The last `x-ratelimit-*` figures GitHub sent for one installation (or the app, key None)."""

    resource: str
    limit: int
    remaining: int
    used: int
    reset_epoch_s: int


def parse_rate_limit(headers: Mapping[str, str]) -> RateLimitState | None:
    """The rate-limit figures of one response, or None when the headers are missing/invalid.

    >>> parse_rate_limit({"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "4999",
    ...     "x-ratelimit-used": "1", "x-ratelimit-reset": "1700000000"}).remaining
    4999
    """
    try:
        limit = int(headers["x-ratelimit-limit"])
        remaining = int(headers["x-ratelimit-remaining"])
        reset_epoch_s = int(headers["x-ratelimit-reset"])
    except (KeyError, ValueError):
        return None
    try:
        used = int(headers.get("x-ratelimit-used", limit - remaining))
    except ValueError:
        used = limit - remaining
    resource = headers.get("x-ratelimit-resource", "core")
    return RateLimitState(resource, limit, remaining, used, reset_epoch_s)


def _retry_after_s(headers: Mapping[str, str]) -> float | None:
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None  # the HTTP-date form is never sent by api.github.com
    return max(0.0, value)


def backoff_s(retry_count: int, retry_base_s: float) -> float:
    """plugin-retry's delay: `(retry_count + 1)² × base` → 1, 4, 9 s for base 1 s."""
    return float((retry_count + 1) ** 2) * retry_base_s


def plan_retry(
    status: int,
    headers: Mapping[str, str],
    message: str,
    *,
    retry_count: int,
    now_epoch_s: float,
    retry_base_s: float,
) -> RetryPlan | None:
    """What to do after a failed response (see the module docstring); None means do not retry.

    `retry_count` is how many retries of this request were already made (0 for the first failure).
    Example: a 403 "You have exceeded a secondary rate limit" without `retry-after`, first retry
    → `RetryPlan(60.0, SECONDARY_LIMIT)`; second → 120 s.
    """
    if status in (403, 429):
        retry_after = _retry_after_s(headers)
        if "secondary rate" in message.lower():
            if retry_after is not None:
                return RetryPlan(retry_after, RetryReason.SECONDARY_LIMIT)
            return RetryPlan(
                SECONDARY_FALLBACK_WAIT_S * (2**retry_count), RetryReason.SECONDARY_LIMIT
            )
        if retry_after is not None:
            return RetryPlan(retry_after, RetryReason.RETRY_AFTER)
        state = parse_rate_limit(headers)
        if state is not None and state.remaining == 0:
            wait_s = math.ceil(
                max(0.0, state.reset_epoch_s - now_epoch_s) + PRIMARY_RESET_PADDING_S
            )
            return RetryPlan(float(wait_s), RetryReason.PRIMARY_EXHAUSTED)
        if status == 429:
            return RetryPlan(backoff_s(retry_count, retry_base_s), RetryReason.TOO_MANY_REQUESTS)
        return None
    if status >= 500:
        return RetryPlan(backoff_s(retry_count, retry_base_s), RetryReason.SERVER_ERROR)
    return None


class Throttle:
    """Concurrency, write spacing and rate-limit blocking for one client (see module docstring)."""

    def __init__(
        self,
        *,
        max_concurrency: int,
        write_spacing_s: float,
        max_inline_wait_s: float,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        monotonic: Clock = time.monotonic,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self._global = asyncio.Semaphore(max_concurrency)
        self._auth = asyncio.Lock()
        self._write_locks: dict[int | None, asyncio.Lock] = {}
        self._last_write_at: dict[int | None, float] = {}
        self._blocked_until_epoch_s: dict[int | None, float] = {}
        self._states: dict[int | None, RateLimitState] = {}
        self._write_spacing_s = write_spacing_s
        self._max_inline_wait_s = max_inline_wait_s
        self._clock = clock
        self._sleep = sleep
        self._monotonic = monotonic

    @property
    def max_inline_wait_s(self) -> float:
        return self._max_inline_wait_s

    async def sleep(self, seconds: float) -> None:
        await self._sleep(seconds)

    def now_epoch_s(self) -> float:
        return self._clock()

    def record(self, installation_id: int | None, state: RateLimitState) -> None:
        self._states[installation_id] = state

    def snapshot(self) -> dict[int | None, RateLimitState]:
        return dict(self._states)

    def block(self, installation_id: int | None, wait_s: float) -> None:
        """Hold back every request of this installation for `wait_s` (what GitHub asked)."""
        until = self._clock() + wait_s
        if until > self._blocked_until_epoch_s.get(installation_id, 0.0):
            self._blocked_until_epoch_s[installation_id] = until

    def blocked_for_s(self, installation_id: int | None) -> float:
        until = self._blocked_until_epoch_s.get(installation_id)
        if until is None:
            return 0.0
        remaining = until - self._clock()
        if remaining <= 0:
            del self._blocked_until_epoch_s[installation_id]
            return 0.0
        return remaining

    async def wait_until_allowed(self, installation_id: int | None) -> None:
        """Sleep out a short block; raise `GitHubRateLimited` for one longer than the inline cap."""
        wait_s = self.blocked_for_s(installation_id)
        if wait_s <= 0:
            return
        if wait_s > self._max_inline_wait_s:
            raise GitHubRateLimited(
                f"GitHub asked installation {installation_id} to wait {wait_s:.1f} s",
                retry_after_s=wait_s,
            )
        await self._sleep(wait_s)

    @asynccontextmanager
    async def slot(
        self, installation_id: int | None, *, is_write: bool, is_auth: bool
    ) -> AsyncIterator[None]:
        """Hold a global slot (and the auth or per-installation write lane) for one request."""
        await self.wait_until_allowed(installation_id)
        if is_auth:
            async with self._auth, self._global:
                yield
            return
        if not is_write:
            async with self._global:
                yield
            return
        lock = self._write_locks.setdefault(installation_id, asyncio.Lock())
        async with lock:
            last = self._last_write_at.get(installation_id)
            if last is not None:
                gap_s = self._write_spacing_s - (self._monotonic() - last)
                if gap_s > 0:
                    await self._sleep(gap_s)
            try:
                async with self._global:
                    yield
            finally:
                self._last_write_at[installation_id] = self._monotonic()
