"""Quarantine rules: enter on `flaky`, mute (never skip), adaptive release, expiry, scoping.

Pure: `decide(current, score, history_since_entry, now=..., policy=...)` returns the next state
of one test's quarantine (notes/flakiness.md §4.4):

- **Enter** only when the score's class is `flaky` (never `broken` or `suspected`). After a
  release or expiry a test re-enters only on flaky evidence newer than that end
  (`evidence["last_evidence_ts"]`): the lookback window still holds the old evidence, and
  re-quarantining on it would undo every release at once.
- **Scope**: the env holding >= `scope_env_share` (80 %) of the positive evidence
  (`env_evidence:<env>` in the roll-up's evidence), else `"*"`. Example: linux 6 points,
  windows 1 point -> 6/7 = 86 % -> scope "linux".
- **Release** (hysteresis) after `n` consecutive clean runs in the scope, where
  `n = max(min_release_runs, ceil(ln alpha / ln(1 - p_hat)))`, `p_hat = (U + 1) / (N + 2)`
  (unexplained failures / attempts in the scope, leaving out the clean streak itself): a test
  that fails with rate p_hat would produce that many clean runs in a row with probability
  <= alpha. Example (alpha = 0.05): U = 29, N = 98 -> p_hat = 0.3 -> n = max(10, 9) = 10;
  U = 1, N = 98 -> p_hat = 0.02 -> n = 149 (alpha = 0.01, the default: 13 and 228).
  Also released when the last flaky evidence is older than `stale_evidence_days` and at
  least `stale_min_clean_runs` clean runs followed.
- **flaky -> broken** releases at once: a consistently failing test must fail the check again
  (dart_ci#4), and quarantine never holds broken tests.
- **Expiry**: every quarantine (manual ones too) ends at `expires_at` (default 30 days).
- **Muting**: `is_muted(state, signature)` hides a failure only while active and only when
  its failure signature was known at entry: a new signature is a possible regression.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from flakeguard.core.models import FAILING, RAN, ExecutionRecord, FlakeScore, Verdict
from flakeguard.core.scoring import (
    ALL_ENVS,
    DEFAULT_INFRA_FAILED_SHARE,
    ENV_N_PREFIX,
    ENV_UNEXPLAINED_PREFIX,
    evidence_by_env,
)


class QuarantineStatus(StrEnum):
    """Lifecycle of one quarantine."""

    ACTIVE = "active"
    RELEASED = "released"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class QuarantineState:
    """One test's quarantine in one scope (an env_key, or "*" for every env)."""

    test_key: str
    scope: str
    state: QuarantineStatus
    reason: str
    since: datetime
    expires_at: datetime
    released_at: datetime | None = None
    clean_runs_since: int = 0
    """Consecutive clean runs (reports) in the scope at the end of the history seen."""
    signatures: frozenset[str] = frozenset()
    """Failure signatures known when the test entered; other signatures are never muted."""
    manual: bool = False

    @property
    def is_active(self) -> bool:
        return self.state is QuarantineStatus.ACTIVE

    def applies_to(self, env_key: str) -> bool:
        """True when this quarantine covers executions of `env_key`."""
        return self.scope in (ALL_ENVS, env_key)


@dataclass(frozen=True, slots=True)
class QuarantinePolicy:
    """Every threshold of the quarantine rules (notes/flakiness.md §2.2, §4.4)."""

    expiry_days: int = 30
    """Quarantines end after 30 days so a person looks again (Datadog 30 days; Trunk <= 30)."""
    alpha: float = 0.01
    """Release when (1 - p_hat)^n <= alpha. The notes' 0.05 assumes one look; the rule is checked
    after every run, and a still-flaky test reaches a clean streak of that length about once
    per 1 / (p_hat * alpha) runs (a 1 %-rate test: every ~2,000 runs at 0.05, a month of CI
    here). 0.01 makes that five times rarer for ~1.5x longer releases; on the harness's
    development seeds (1-4, never the reported ones) recall went 0.95 -> 0.99 at precision 1.0."""
    min_release_runs: int = 10
    """Floor of the adaptive release count: one quiet afternoon never releases a test."""
    scope_env_share: float = 0.8
    """Evidence share that scopes a quarantine to one env (notes §4.3)."""
    stale_evidence_days: int = 30
    """No flaky evidence for this long (with enough clean runs) also releases (notes §4.4)."""
    stale_min_clean_runs: int = 20
    """Clean runs needed with the stale-evidence release."""
    infra_failed_share: float = DEFAULT_INFRA_FAILED_SHARE
    """Reports from outage uploads neither count as clean nor reset the clean streak."""


def release_runs_needed(
    score: FlakeScore,
    policy: QuarantinePolicy,
    *,
    scope: str = ALL_ENVS,
    clean_attempts: int = 0,
) -> int:
    """Consecutive clean runs that release a quarantine for this score's failure rate.

    p_hat = (U + 1) / (N - clean_attempts + 2) in `scope` (the env's own counts when the
    roll-up carries them): the clean streak under test is left out of the estimate, otherwise
    every clean run would lower p_hat and raise the bar it is measured against.

    >>> from flakeguard.core.models import Components
    >>> s = FlakeScore("k", "*", 0.5, Components(0, 0, 0, 0), Verdict.FLAKY, "high", "", 0, 0,
    ...                {"unexplained": 1, "n": 98})
    >>> lax, default = QuarantinePolicy(alpha=0.05), QuarantinePolicy()
    >>> release_runs_needed(s, lax), release_runs_needed(s, default)
    (149, 228)
    >>> s.evidence.update(unexplained=29)
    >>> release_runs_needed(s, lax), release_runs_needed(s, default)
    (10, 13)
    """
    evidence = score.evidence
    unexplained = evidence.get("unexplained", 0.0)
    attempts = evidence.get("n", 0.0)
    if scope != ALL_ENVS and ENV_N_PREFIX + scope in evidence:
        unexplained = evidence.get(ENV_UNEXPLAINED_PREFIX + scope, 0.0)
        attempts = evidence[ENV_N_PREFIX + scope]
    p_hat = (unexplained + 1.0) / (max(0.0, attempts - clean_attempts) + 2.0)
    if p_hat >= 1.0:
        return policy.min_release_runs
    adaptive = math.ceil(math.log(policy.alpha) / math.log(1.0 - p_hat))
    return max(policy.min_release_runs, adaptive)


def scope_for(score: FlakeScore, policy: QuarantinePolicy) -> str:
    """The env holding >= scope_env_share of the evidence, else "*".

    >>> from flakeguard.core.models import Components
    >>> s = FlakeScore("k", "*", 0.5, Components(0, 0, 0, 0), Verdict.FLAKY, "high", "", 0, 0,
    ...                {"env_evidence:linux": 6.0, "env_evidence:windows": 1.0})
    >>> scope_for(s, QuarantinePolicy())
    'linux'
    """
    if score.scope != ALL_ENVS:
        return score.scope
    weights = evidence_by_env(score)
    total = sum(weights.values())
    if total <= 0:
        return ALL_ENVS
    env, weight = max(sorted(weights.items()), key=lambda item: item[1])
    return env if weight / total >= policy.scope_env_share else ALL_ENVS


def clean_runs_at_end(
    history: Sequence[ExecutionRecord],
    scope: str,
    *,
    infra_failed_share: float = DEFAULT_INFRA_FAILED_SHARE,
) -> int:
    """Consecutive clean reports at the end of `history` in `scope`, in time order.

    A report (run, attempt, env) is clean when every attempt in it passed; one with a failing
    attempt resets the count. Reports with only skipped attempts, and outage uploads (failed
    share above `infra_failed_share`), are neutral.
    """
    return _clean_streak(history, scope, infra_failed_share)[0]


def _clean_streak(
    history: Sequence[ExecutionRecord], scope: str, infra_failed_share: float
) -> tuple[int, int]:
    """(clean reports, their attempts) at the end of `history` in `scope`."""
    reports: dict[tuple[int, int, str], tuple[datetime, bool, int]] = {}
    for r in history:
        if r.outcome not in RAN or (scope != ALL_ENVS and r.env_key != scope):
            continue
        if r.upload_failed_share > infra_failed_share:
            continue
        key = (r.run_id, r.run_attempt, r.env_key)
        at, failed, attempts = reports.get(key, (r.at, False, 0))
        reports[key] = (min(at, r.at), failed or r.outcome in FAILING, attempts + 1)
    clean = clean_attempts = 0
    for _, failed, attempts in sorted(reports.values(), key=lambda item: item[0], reverse=True):
        if failed:
            break
        clean += 1
        clean_attempts += attempts
    return clean, clean_attempts


def decide(
    current: QuarantineState | None,
    score: FlakeScore,
    history_since_entry: Sequence[ExecutionRecord],
    *,
    now: datetime,
    policy: QuarantinePolicy,
) -> QuarantineState | None:
    """Next quarantine state of `score.test_key` (None: never quarantined, nothing to do).

    `score` is the test's roll-up (or one env's) score. `history_since_entry` is the test's
    history since `current.since`; when there is no active quarantine pass the scored window
    (its failure signatures become the muted set).

    | current            | score / history                               | result              |
    |--------------------|-----------------------------------------------|---------------------|
    | none / ended       | flaky (evidence newer than the end)           | active, scoped      |
    | active             | broken                                        | released            |
    | active             | now >= expires_at                             | expired             |
    | active, automatic  | clean runs >= release_runs_needed             | released            |
    | active, automatic  | evidence older than 30 d and >= 20 clean runs | released            |
    | active             | otherwise                                     | active, count kept  |
    """
    if current is None or not current.is_active:
        return _maybe_enter(current, score, history_since_entry, now=now, policy=policy)
    clean, clean_attempts = _clean_streak(
        history_since_entry, current.scope, policy.infra_failed_share
    )
    if score.verdict is Verdict.BROKEN:
        return _end(current, QuarantineStatus.RELEASED, "now failing consistently: broken", now)
    if now >= current.expires_at:
        return _end(current, QuarantineStatus.EXPIRED, "quarantine expired", now, clean)
    if not current.manual:
        needed = release_runs_needed(
            score, policy, scope=current.scope, clean_attempts=clean_attempts
        )
        if clean >= needed:
            reason = f"{clean} clean runs in a row (needed {needed})"
            return _end(current, QuarantineStatus.RELEASED, reason, now, clean)
        last_ts = score.evidence.get("last_evidence_ts")
        stale_before = now - timedelta(days=policy.stale_evidence_days)
        stale = last_ts is None or datetime.fromtimestamp(last_ts, UTC) < stale_before
        if stale and clean >= policy.stale_min_clean_runs:
            reason = f"no flaky evidence for {policy.stale_evidence_days} days, {clean} clean runs"
            return _end(current, QuarantineStatus.RELEASED, reason, now, clean)
    return replace(current, clean_runs_since=clean)


def manual_add(
    test_key: str,
    scope: str,
    *,
    reason: str,
    now: datetime,
    policy: QuarantinePolicy,
    signatures: frozenset[str] = frozenset(),
) -> QuarantineState:
    """A person quarantines a test; it lasts until removed or expired (no automatic release).

    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> s = manual_add("k", "*", reason="ticket 12", now=t, policy=QuarantinePolicy())
    >>> (s.state.value, s.manual, s.expires_at.day)
    ('active', True, 31)
    """
    return QuarantineState(
        test_key=test_key,
        scope=scope,
        state=QuarantineStatus.ACTIVE,
        reason=reason,
        since=now,
        expires_at=now + timedelta(days=policy.expiry_days),
        signatures=signatures,
        manual=True,
    )


def manual_remove(state: QuarantineState, *, reason: str, now: datetime) -> QuarantineState:
    """A person releases a quarantine (automatic or manual); re-entry needs newer evidence."""
    released = replace(state, state=QuarantineStatus.RELEASED, released_at=now, reason=reason)
    return replace(released, manual=True)


def is_muted(state: QuarantineState | None, failure_signature: str | None) -> bool:
    """True when an active quarantine hides this failure from the check's conclusion.

    A failure whose signature was not seen at entry is a possible regression and is never
    hidden; a failure without a signature, or a quarantine without known signatures (a
    manual one), mutes every failure.

    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> s = manual_add("k", "*", reason="r", now=t, policy=QuarantinePolicy(),
    ...                signatures=frozenset({"sigA"}))
    >>> (is_muted(s, "sigA"), is_muted(s, "sigB"), is_muted(None, "sigA"))
    (True, False, False)
    """
    if state is None or not state.is_active:
        return False
    if failure_signature is None or not state.signatures:
        return True
    return failure_signature in state.signatures


def _maybe_enter(
    current: QuarantineState | None,
    score: FlakeScore,
    history: Sequence[ExecutionRecord],
    *,
    now: datetime,
    policy: QuarantinePolicy,
) -> QuarantineState | None:
    if score.verdict is not Verdict.FLAKY:
        return current
    if current is not None and current.released_at is not None:
        last_ts = score.evidence.get("last_evidence_ts")
        if last_ts is None or datetime.fromtimestamp(last_ts, UTC) <= current.released_at:
            return current
    scope = scope_for(score, policy)
    clean, clean_attempts = _clean_streak(history, scope, policy.infra_failed_share)
    if clean >= release_runs_needed(score, policy, scope=scope, clean_attempts=clean_attempts):
        # Already as clean as a release demands (e.g. fixed weeks ago, first analysed now):
        # entering would only be undone by the next decision. One-shot analysis of a
        # backfill and analysis after every run then agree.
        return current
    signatures = frozenset(
        r.signature
        for r in history
        if r.signature is not None
        and r.outcome in FAILING
        and (scope == ALL_ENVS or r.env_key == scope)
    )
    return QuarantineState(
        test_key=score.test_key,
        scope=scope,
        state=QuarantineStatus.ACTIVE,
        reason=score.reason,
        since=now,
        expires_at=now + timedelta(days=policy.expiry_days),
        clean_runs_since=clean_runs_at_end(
            history, scope, infra_failed_share=policy.infra_failed_share
        ),
        signatures=signatures,
        manual=False,
    )


def _end(
    current: QuarantineState,
    status: QuarantineStatus,
    reason: str,
    now: datetime,
    clean: int | None = None,
) -> QuarantineState:
    return replace(
        current,
        state=status,
        reason=reason,
        released_at=now,
        clean_runs_since=current.clean_runs_since if clean is None else clean,
    )
