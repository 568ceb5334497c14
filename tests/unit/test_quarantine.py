"""Quarantine rules (notes/flakiness.md §4.4), one test or table row per rule."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from flakeguard.core.models import Components, FlakeScore, Verdict
from flakeguard.core.quarantine import (
    QuarantinePolicy,
    QuarantineState,
    QuarantineStatus,
    clean_runs_at_end,
    decide,
    is_muted,
    manual_add,
    manual_remove,
    release_runs_needed,
    scope_for,
)
from flakeguard.core.scoring import ALL_ENVS
from tests.unit.test_scoring import LINUX, T0, WINDOWS, History

POLICY = QuarantinePolicy()
NOW = T0 + timedelta(days=10)


def score(
    verdict: Verdict,
    *,
    unexplained: float = 5,
    n: float = 100,
    envs: dict[str, float] | None = None,
    last_evidence_days_ago: float | None = 0.0,
) -> FlakeScore:
    evidence: dict[str, float] = {"unexplained": unexplained, "n": n}
    for env, weight in (envs or {LINUX: 4.0}).items():
        evidence[f"env_evidence:{env}"] = weight
    if last_evidence_days_ago is not None:
        evidence["last_evidence_ts"] = (NOW - timedelta(days=last_evidence_days_ago)).timestamp()
    return FlakeScore(
        "k", ALL_ENVS, 0.5, Components(0, 0, 0, 0), verdict, "high", "why", 10, 1, evidence
    )


def active(
    scope: str = ALL_ENVS,
    *,
    manual: bool = False,
    signatures: frozenset[str] = frozenset({"sig-1"}),
) -> QuarantineState:
    return QuarantineState(
        test_key="k",
        scope=scope,
        state=QuarantineStatus.ACTIVE,
        reason="flaky",
        since=T0,
        expires_at=T0 + timedelta(days=30),
        signatures=signatures,
        manual=manual,
    )


@pytest.mark.parametrize(
    ("verdict", "enters"),
    [
        (Verdict.FLAKY, True),
        (Verdict.BROKEN, False),  # never quarantine a real break
        (Verdict.SUSPECTED, False),  # possibly flaky: reported, not muted
        (Verdict.HEALTHY, False),
    ],
)
def test_enter_only_on_flaky(verdict: Verdict, enters: bool) -> None:
    state = decide(None, score(verdict), History().add("P FP").records, now=NOW, policy=POLICY)
    assert (state is not None) is enters
    if state is not None:
        assert state.state is QuarantineStatus.ACTIVE
        assert state.since == NOW
        assert state.expires_at == NOW + timedelta(days=30)
        assert state.signatures == frozenset({"sig-1"})
        assert not state.manual


@pytest.mark.parametrize(
    ("envs", "scope"),
    [
        ({LINUX: 6.0, WINDOWS: 1.0}, LINUX),  # 86 % in linux
        ({LINUX: 4.0, WINDOWS: 1.0}, LINUX),  # exactly 80 %
        ({LINUX: 3.0, WINDOWS: 2.0}, ALL_ENVS),  # 60 %: everywhere
        ({LINUX: 0.0, WINDOWS: 0.0}, ALL_ENVS),  # flaky on the score path, no env points
    ],
)
def test_scope_is_the_env_holding_80_percent_of_the_evidence(
    envs: dict[str, float], scope: str
) -> None:
    assert scope_for(score(Verdict.FLAKY, envs=envs), POLICY) == scope


def test_signatures_at_entry_come_from_the_scope_only() -> None:
    h = History()
    h.commit({LINUX: "FP"}, signature="sig-linux")
    h.commit({WINDOWS: "FP"}, signature="sig-windows")
    state = decide(
        None,
        score(Verdict.FLAKY, envs={LINUX: 8.0, WINDOWS: 1.0}),
        h.records,
        now=NOW,
        policy=POLICY,
    )
    assert state is not None
    assert (state.scope, state.signatures) == (LINUX, frozenset({"sig-linux"}))


@pytest.mark.parametrize(
    ("unexplained", "n", "alpha", "needed"),
    [
        # n = max(10, ceil(ln alpha / ln(1 - p_hat))), p_hat = (U + 1) / (N + 2)
        (29, 98, 0.05, 10),  # p_hat 0.30 -> 9, floor 10
        (9, 98, 0.05, 29),  # p_hat 0.10
        (1, 98, 0.05, 149),  # p_hat 0.02
        (0, 198, 0.05, 598),  # p_hat 0.005
        (9, 98, 0.01, 44),  # the default alpha: ln 0.01 / ln 0.9
    ],
)
def test_release_count_adapts_to_the_failure_rate(
    unexplained: float, n: float, alpha: float, needed: int
) -> None:
    s = score(Verdict.FLAKY, unexplained=unexplained, n=n)
    assert release_runs_needed(s, QuarantinePolicy(alpha=alpha)) == needed
    p_hat = (unexplained + 1) / (n + 2)
    assert needed == max(10, math.ceil(math.log(alpha) / math.log(1 - p_hat)))


def test_release_count_uses_the_scope_counts_and_leaves_out_the_clean_streak() -> None:
    s = score(Verdict.FLAKY, unexplained=9, n=300)
    s.evidence.update({f"env_unexplained:{LINUX}": 9.0, f"env_n:{LINUX}": 98.0})
    lax = QuarantinePolicy(alpha=0.05)
    assert release_runs_needed(s, lax, scope=LINUX) == 29  # linux's own 10 %
    assert release_runs_needed(s, lax) > 29  # the test-wide 3 % needs more
    assert (
        release_runs_needed(score(Verdict.FLAKY, unexplained=9, n=128), lax, clean_attempts=30)
        == 29
    )


def test_released_after_enough_clean_runs_and_not_before() -> None:
    s = score(Verdict.FLAKY, unexplained=29, n=98, last_evidence_days_ago=1)
    outcomes = []
    for k in range(1, 40):
        state = decide(
            active(), s, History().add(" ".join(["P"] * k)).records, now=NOW, policy=POLICY
        )
        assert state is not None
        outcomes.append((k, state))
    first = next(k for k, state in outcomes if state.state is QuarantineStatus.RELEASED)
    # the streak under test is left out of p_hat: 29 + 1 failures over 98 - k + 2 attempts
    assert first == release_runs_needed(s, POLICY, clean_attempts=first)
    assert first - 1 < release_runs_needed(s, POLICY, clean_attempts=first - 1)
    kept = outcomes[first - 2][1]
    assert (kept.state, kept.clean_runs_since) == (QuarantineStatus.ACTIVE, first - 1)
    released = outcomes[first - 1][1]
    assert released.released_at == NOW
    assert f"{first} clean runs in a row" in released.reason


@pytest.mark.parametrize(
    ("pattern", "clean"),
    [
        ("P P P", 3),
        ("P FP P P", 2),  # a failure passed on retry is not clean: the count restarts
        ("P F|P P", 2),  # the re-run attempt 2 is a clean report, attempt 1 ends the streak
        ("P P S", 2),  # skipped runs are neutral
        ("", 0),
    ],
)
def test_clean_runs_count_from_the_end(pattern: str, clean: int) -> None:
    assert clean_runs_at_end(History().add(pattern).records, ALL_ENVS) == clean


def test_clean_runs_ignore_outages_and_other_envs() -> None:
    h = History().add("P P")
    h.add("F", share=0.9)  # outage upload: neutral
    h.add("F", env=WINDOWS)  # another env: outside a linux quarantine
    h.add("P")
    assert clean_runs_at_end(h.records, LINUX) == 3
    assert clean_runs_at_end(h.records, ALL_ENVS) == 1


def test_flaky_turned_broken_is_released() -> None:
    state = decide(
        active(), score(Verdict.BROKEN), History().add("F F F").records, now=NOW, policy=POLICY
    )
    assert state is not None
    assert state.state is QuarantineStatus.RELEASED
    assert "broken" in state.reason


def test_expiry() -> None:
    later = T0 + timedelta(days=30)
    state = decide(active(), score(Verdict.FLAKY), [], now=later, policy=POLICY)
    assert state is not None
    assert state.state is QuarantineStatus.EXPIRED
    assert state.released_at == later


def test_stale_evidence_releases_with_enough_clean_runs() -> None:
    s = score(Verdict.FLAKY, unexplained=0, n=2000, last_evidence_days_ago=31)
    runs = History().add(" ".join(["P"] * 20)).records
    state = decide(active(), s, runs, now=NOW, policy=POLICY)
    assert state is not None
    assert state.state is QuarantineStatus.RELEASED
    assert "no flaky evidence" in state.reason


def test_reentry_needs_evidence_newer_than_the_release() -> None:
    released = QuarantineState(
        "k",
        ALL_ENVS,
        QuarantineStatus.RELEASED,
        "clean",
        T0,
        T0 + timedelta(days=30),
        released_at=NOW - timedelta(days=1),
    )
    old = score(Verdict.FLAKY, last_evidence_days_ago=2)
    assert decide(released, old, [], now=NOW, policy=POLICY) is released
    fresh = score(Verdict.FLAKY, last_evidence_days_ago=0)
    again = decide(released, fresh, [], now=NOW, policy=POLICY)
    assert again is not None
    assert again.state is QuarantineStatus.ACTIVE


def test_manual_quarantine_is_not_released_by_clean_runs_but_expires() -> None:
    state = manual_add("k", LINUX, reason="JIRA-12", now=T0, policy=POLICY)
    s = score(Verdict.HEALTHY, unexplained=0, n=1000, last_evidence_days_ago=None)
    clean = History().add(" ".join(["P"] * 50)).records
    kept = decide(state, s, clean, now=NOW, policy=POLICY)
    assert kept is not None
    assert (kept.state, kept.manual, kept.clean_runs_since) == (QuarantineStatus.ACTIVE, True, 50)
    expired = decide(state, s, clean, now=T0 + timedelta(days=31), policy=POLICY)
    assert expired is not None
    assert expired.state is QuarantineStatus.EXPIRED


def test_manual_remove_then_automatic_reentry_needs_new_evidence() -> None:
    removed = manual_remove(active(), reason="fixed in #42", now=NOW)
    assert (removed.state, removed.released_at, removed.reason) == (
        QuarantineStatus.RELEASED,
        NOW,
        "fixed in #42",
    )
    assert (
        decide(removed, score(Verdict.FLAKY, last_evidence_days_ago=1), [], now=NOW, policy=POLICY)
        is removed
    )


@pytest.mark.parametrize(
    ("state", "signature", "muted"),
    [
        (active(), "sig-1", True),  # a known flaky failure
        (active(), "sig-2", False),  # a new signature is never hidden
        (active(), None, True),  # no signature: nothing says it is new
        (active(signatures=frozenset()), "sig-9", True),  # manual, no signatures known
        (None, "sig-1", False),
        (manual_remove(active(), reason="r", now=NOW), "sig-1", False),  # released
    ],
)
def test_is_muted(state: QuarantineState | None, signature: str | None, muted: bool) -> None:
    assert is_muted(state, signature) is muted


def test_applies_to_scope() -> None:
    assert active(LINUX).applies_to(LINUX)
    assert not active(LINUX).applies_to(WINDOWS)
    assert active(ALL_ENVS).applies_to(WINDOWS)


def test_active_state_keeps_counting() -> None:
    s = score(Verdict.FLAKY, unexplained=1, n=98)
    state = decide(active(), s, History().add("P P FP P").records, now=NOW, policy=POLICY)
    assert state is not None
    assert (state.state, state.clean_runs_since, state.since) == (QuarantineStatus.ACTIVE, 1, T0)


def test_no_entry_when_already_clean_long_enough_to_be_released() -> None:
    """A test fixed weeks ago and analysed for the first time (a backfill) is not
    quarantined: the clean streak a release would demand has already happened."""
    s = score(Verdict.FLAKY, unexplained=29, n=98, last_evidence_days_ago=5)
    needed = release_runs_needed(s, POLICY, clean_attempts=40)
    long_clean = History().add("FP " + " ".join(["P"] * 40)).records
    short_clean = History().add("FP " + " ".join(["P"] * (needed - 2))).records
    assert needed <= 40
    assert decide(None, s, long_clean, now=NOW, policy=POLICY) is None
    entered = decide(None, s, short_clean, now=NOW, policy=POLICY)
    assert entered is not None
    assert entered.state is QuarantineStatus.ACTIVE
