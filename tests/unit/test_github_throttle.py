"""octokit-like retry decisions and the client-side throttle (pure; fake clock and sleep)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from flakeguard.adapters.github.throttle import (
    RateLimitState,
    RetryPlan,
    RetryReason,
    Throttle,
    backoff_s,
    parse_rate_limit,
    plan_retry,
)
from flakeguard.errors import GitHubRateLimited

NOW = 1_800_000_000.0
SECONDARY = "You have exceeded a secondary rate limit. Please wait a few minutes."


def plan(
    status: int, headers: dict[str, str] | None = None, message: str = "", retry: int = 0
) -> RetryPlan | None:
    return plan_retry(
        status, headers or {}, message, retry_count=retry, now_epoch_s=NOW, retry_base_s=1.0
    )


def test_backoff_is_octokit_quadratic() -> None:
    assert [backoff_s(n, 1.0) for n in range(3)] == [1.0, 4.0, 9.0]
    assert backoff_s(1, 0.5) == 2.0


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_backs_off(status: int) -> None:
    assert plan(status, retry=1) == RetryPlan(4.0, RetryReason.SERVER_ERROR)


@pytest.mark.parametrize("status", [400, 401, 404, 410, 422, 451])
def test_client_errors_are_never_retried(status: int) -> None:
    assert plan(status, {"retry-after": "1"}) is None


def test_plain_403_is_not_retried_but_429_is() -> None:
    assert plan(403, {"x-ratelimit-remaining": "12"}, "Resource not accessible") is None
    assert plan(429) == RetryPlan(1.0, RetryReason.TOO_MANY_REQUESTS)


def test_retry_after_wins() -> None:
    assert plan(429, {"retry-after": "7"}) == RetryPlan(7.0, RetryReason.RETRY_AFTER)
    assert plan(403, {"retry-after": "7", "x-ratelimit-remaining": "0"}) == RetryPlan(
        7.0, RetryReason.RETRY_AFTER
    )


def test_secondary_limit_message_without_headers_waits_a_minute_then_longer() -> None:
    assert plan(403, {}, SECONDARY) == RetryPlan(60.0, RetryReason.SECONDARY_LIMIT)
    assert plan(403, {}, SECONDARY, retry=2) == RetryPlan(240.0, RetryReason.SECONDARY_LIMIT)
    assert plan(429, {"retry-after": "30"}, SECONDARY) == RetryPlan(
        30.0, RetryReason.SECONDARY_LIMIT
    )


def test_exhausted_primary_waits_until_reset_plus_one_second() -> None:
    headers = {
        "x-ratelimit-limit": "5000",
        "x-ratelimit-remaining": "0",
        "x-ratelimit-reset": str(int(NOW) + 30),
    }
    assert plan(403, headers, "API rate limit exceeded") == RetryPlan(
        31.0, RetryReason.PRIMARY_EXHAUSTED
    )
    past = {**headers, "x-ratelimit-reset": str(int(NOW) - 5)}
    assert plan(403, past) == RetryPlan(1.0, RetryReason.PRIMARY_EXHAUSTED)


def test_parse_rate_limit() -> None:
    headers = {
        "x-ratelimit-limit": "5000",
        "x-ratelimit-remaining": "4990",
        "x-ratelimit-used": "10",
        "x-ratelimit-reset": "1800000600",
        "x-ratelimit-resource": "core",
    }
    assert parse_rate_limit(headers) == RateLimitState("core", 5000, 4990, 10, 1_800_000_600)
    assert parse_rate_limit({"x-ratelimit-limit": "x"}) is None


@dataclass
class FakeTime:
    now_s: float = NOW
    slept_s: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now_s

    async def sleep(self, seconds: float) -> None:
        self.slept_s.append(seconds)
        self.now_s += seconds


def make_throttle(clock: FakeTime, **overrides: float) -> Throttle:
    return Throttle(
        max_concurrency=int(overrides.get("max_concurrency", 10)),
        write_spacing_s=overrides.get("write_spacing_s", 1.0),
        max_inline_wait_s=overrides.get("max_inline_wait_s", 10.0),
        clock=clock,
        sleep=clock.sleep,
        monotonic=clock,
    )


async def test_blocked_installation_waits_inline_or_raises() -> None:
    clock = FakeTime()
    throttle = make_throttle(clock)
    throttle.block(1, 4.0)
    async with throttle.slot(1, is_write=False, is_auth=False):
        pass
    assert clock.slept_s == [4.0]
    throttle.block(1, 60.0)
    with pytest.raises(GitHubRateLimited) as caught:
        async with throttle.slot(1, is_write=False, is_auth=False):
            pass
    assert caught.value.retry_after_s == pytest.approx(60.0)
    async with throttle.slot(2, is_write=False, is_auth=False):  # other installations go on
        pass
    assert clock.slept_s == [4.0]


async def test_writes_are_serial_and_spaced_per_installation() -> None:
    clock = FakeTime()
    throttle = make_throttle(clock, write_spacing_s=1.0)
    for installation_id in (1, 1, 2, 1):
        async with throttle.slot(installation_id, is_write=True, is_auth=False):
            pass
    # Installation 1's 2nd and 3rd writes each wait 1 s; installation 2's write does not wait.
    assert clock.slept_s == [1.0, 1.0]
    clock.now_s += 5.0  # long after the last write: no wait
    async with throttle.slot(1, is_write=True, is_auth=False):
        pass
    assert clock.slept_s == [1.0, 1.0]


async def test_global_concurrency_is_capped() -> None:
    throttle = make_throttle(FakeTime(), max_concurrency=2)
    in_flight = 0
    peak = 0
    release = asyncio.Event()

    async def request() -> None:
        nonlocal in_flight, peak
        async with throttle.slot(None, is_write=False, is_auth=False):
            in_flight += 1
            peak = max(peak, in_flight)
            await release.wait()
            in_flight -= 1

    tasks = [asyncio.create_task(request()) for _ in range(5)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert in_flight == 2
    release.set()
    await asyncio.gather(*tasks)
    assert peak == 2
