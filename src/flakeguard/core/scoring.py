"""Flakiness scoring: evidence features, the spec-compatible score, the evidence gate, classes.

Pure: no clock, no I/O. `score_test(test_key, history, now=..., policy=...)` reads one test's
execution history and returns one `FlakeScore` per environment scope (`env_key`: workflow /
job / matrix leg) plus a roll-up with scope `"*"`. The design is notes/flakiness.md §4.

Pipeline (per test):

1. **Window.** Records with `now - lookback_days <= at <= now` whose outcome actually ran
   (`RAN`): skipped attempts carry no evidence and change nothing.
2. **Infra filter.** A record whose upload had a failed share above `infra_failed_share`
   (default 20 %) is an outage, not evidence: it is dropped, and its failures are counted as
   `infra_excluded`. Example: an upload where 180 of 400 tests failed (45 %) mints no flaky
   evidence for any of them. Likewise a failure whose (upload, signature) failed at least
   `infra_cluster_tests` tests (`infra_clusters`, computed across tests by `score_many`).
3. **Cells and chains.** A *cell* is (commit sha, env); a commit *fails* in an env when no
   attempt there passed. Commits of one branch in one env form a *chain* ordered by first
   run time (the default branch is the protected chain).
4. **Evidence counts** per env (notes §4.2):
   - `scc`: commits with both a pass and a failure in the same env (in-run retries, re-run
     attempts, other runs of the sha). Counts commits, not runs. Example: attempt 1 failed,
     re-run attempt 2 passed on sha `abc` on ubuntu -> scc = 1.
   - `repro`: cells with >= 2 failures and no pass (the failure reproduced: a real break).
   - `iso`: failing default-branch commits with a passing commit on both sides, not
     reproduced and not failing in every env. Example: main P F P -> iso = 1.
   - `streaks`: runs of >= 2 consecutive failing default-branch commits; `contig` is the share
     of failing default-branch commits inside streaks. Example: P F F F P -> streaks = 1,
     contig = 1.0.
   - `unexplained`: failing attempts not explained by a reproduction, a streak (on any
     branch), a commit failing in every env that ran it, or a pull-request commit whose base
     (latest default-branch commit before it, same env) failed. `n` = attempts kept.
   - `xpr`: distinct non-default branches with an unexplained failure.
   - `branches_with_evidence`: distinct branches holding a `scc` or `iso` commit.
5. **Spec components** (same names and 0.4/0.3/0.2/0.1 weights as the spec, on cleaned
   evidence)::

       failure_rate     FR = min(1, (unexplained / n) / failure_rate_saturation)
       inconsistency    IC = 1 - exp(-(scc + 0.5 iso + 0.25 max(0, xpr - 1)))
       recency          RC = exp(-(now - last_evidence) / recency_tau_days)   (0 without evidence)
       branch_diversity BD = 1 - exp(-branches_with_evidence / 2)
       score            S  = 0.4 FR + 0.3 IC + 0.2 RC + 0.1 BD   in [0, 1]

   Example: n = 200, unexplained = 4, scc = 2, iso = 1, xpr = 1, last evidence 7 days ago,
   2 branches: FR = 0.1, IC = 1 - e^-2.5 = 0.918, RC = e^-1 = 0.368, BD = 0.632,
   S = 0.04 + 0.275 + 0.074 + 0.063 = 0.452.
6. **Evidence gate** (decides, the score only ranks)::

       broken_like = streaks > 0 and (iso == 0 or contig >= broken_contig_share)
       E = 2 min(scc, 4) + min(iso, 4) + min(3, 0.5 max(0, xpr - 1))
           - (2 min(streaks, 3) if broken_like else 0) - min(repro, 3)

   Example: scc = 1, iso = 1, repro = 0, no streaks -> E = 3 -> flaky.
7. **Class** per env: `broken` when the default branch is failing now (the latest commit fails
   and either the latest >= 2 commits fail or its failure reproduced), unless the env has flaky
   evidence and the failures are mostly isolated (`contig < broken_contig_share`) and the
   streak is shorter than `broken_streak_unconditional` (chance streaks of high-rate flaky
   tests, notes §4.6.9); `flaky` when `E >= flaky_evidence` or (`S >= flaky_score` and
   `E >= flaky_score_evidence`) with at least `min_runs` runs; `suspected` when
   `E >= suspected_evidence`; else `healthy`. The `"*"` roll-up pools the envs' evidence,
   gates it again, and takes the most severe of its own and every env's class
   (broken > flaky > suspected > healthy).
8. **Confidence**: `high` when n >= 50 and scc >= 1; `medium` when n >= 20; else `low`.

`runs` / `failures` count the final result of each report (one run attempt of one env), kept
by the infra filter, not individual retry attempts. The roll-up's evidence dict also carries,
per env, `env_evidence:<env_key>` (positive gate evidence), `env_unexplained:<env_key>` and
`env_n:<env_key>`, so quarantine can scope itself and estimate the env's failure rate.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from flakeguard.core.models import FAILING, RAN, Components, ExecutionRecord, FlakeScore, Verdict

ALL_ENVS = "*"
"""Scope of the roll-up score over every env of a test."""

ENV_EVIDENCE_PREFIX = "env_evidence:"
"""Evidence-dict key prefix: positive gate evidence held by one env (for quarantine scoping)."""
ENV_UNEXPLAINED_PREFIX = "env_unexplained:"
"""Evidence-dict key prefix: one env's unexplained failures (quarantine's release estimate)."""
ENV_N_PREFIX = "env_n:"
"""Evidence-dict key prefix: one env's attempts kept (quarantine's release estimate)."""

DEFAULT_INFRA_FAILED_SHARE = 0.20
"""Uploads with a larger failed share are outages (notes §4.2; Trunk's 80 % lets 30-80 %
outages mint flakes, notes §4.6.4). Shared by scoring and quarantine's clean-run count."""

UploadSignature = tuple[int, int, str, str]
"""(run_id, run_attempt, env_key, failure signature): one failure cause in one upload."""

_SEVERITY: dict[Verdict, int] = {
    Verdict.HEALTHY: 0,
    Verdict.SUSPECTED: 1,
    Verdict.FLAKY: 2,
    Verdict.BROKEN: 3,
}


@dataclass(frozen=True, slots=True)
class ScoringPolicy:
    """Every weight, window and threshold of the scorer (defaults: notes/flakiness.md §4)."""

    lookback_days: int = 30
    """History window. Datadog and Codecov use 30 days; the job payload's lookbackDays wins."""
    min_runs: int = 10
    """Runs (final results) needed before `flaky`: BuildPulse and Trunk quarantine need >= 10
    results (notes §1.1); the job payload's minRunsThreshold wins."""

    weight_failure_rate: float = 0.4
    """Spec weight of the failure-rate component."""
    weight_inconsistency: float = 0.3
    """Spec weight of the inconsistency component."""
    weight_recency: float = 0.2
    """Spec weight of the recency component."""
    weight_branch_diversity: float = 0.1
    """Spec weight of the branch-diversity component."""

    failure_rate_saturation: float = 0.20
    """Unexplained failure rate at which FR saturates: CI-like flaky rates reach 5-40 %
    (notes §2.3), so 20 % already means "very flaky"; lower rates stay distinguishable."""
    inconsistency_iso_weight: float = 0.5
    """An isolated default-branch failure is half a same-commit contradiction (notes §4.3)."""
    inconsistency_xpr_weight: float = 0.25
    """Failures across unrelated PRs are the weakest contradiction (notes §1.3 item 4)."""
    recency_tau_days: float = 7.0
    """Recency time constant (half-life 4.9 days): Trunk's 7 recovery days (notes §1.1)."""
    branch_diversity_scale: float = 2.0
    """BD = 1 - exp(-branches / scale): two branches with evidence give 0.63 (notes §4.3)."""

    infra_failed_share: float = DEFAULT_INFRA_FAILED_SHARE
    """Uploads with a larger failed share are outages, not evidence (see the constant)."""
    infra_cluster_tests: int = 5
    """One failure signature failing this many tests in one upload is an incident, not that
    many flaky tests (notes §4.2 "one failure signature on > K tests", §4.4 co-failure
    clusters); catches outages too small for the share filter."""

    gate_scc_weight: float = 2.0
    """Gate points per same-commit contradiction, the gold-standard signal (notes §1.3)."""
    gate_scc_cap: int = 4
    """Contradictions counted at most: one noisy day must not dominate (tuist 700 %, notes §3)."""
    gate_iso_weight: float = 1.0
    """Gate points per isolated default-branch failure (PyTorch's sandwich rule)."""
    gate_iso_cap: int = 4
    """Isolated failures counted at most."""
    gate_xpr_weight: float = 0.5
    """Gate points per extra PR with an unexplained failure (weak, notes §1.3 item 4)."""
    gate_xpr_cap: float = 3.0
    """Cross-PR points at most."""
    gate_streak_penalty: float = 2.0
    """Points removed per default-branch failing streak when the history looks broken."""
    gate_streak_cap: int = 3
    """Streaks penalised at most."""
    gate_repro_cap: int = 3
    """Reproduced cells penalised at most (one point each)."""

    flaky_evidence: float = 3.0
    """E at which a test is flaky on evidence alone: two contradictions, or one plus an
    isolated failure (notes §4.3)."""
    flaky_score: float = 0.35
    """Score at which weaker evidence (E >= flaky_score_evidence) suffices (notes §4.3)."""
    flaky_score_evidence: float = 1.5
    """Minimum E on the score path."""
    suspected_evidence: float = 1.0
    """E for `suspected` ("possibly flaky"; never quarantined)."""

    broken_contig_share: float = 0.8
    """Share of failing default-branch commits inside streaks that marks a regression rather
    than chance streaks of a flaky test (notes §4.3; dotnet/aspnetcore #67278)."""
    broken_streak_commits: int = 2
    """Latest default-branch commits failing in a row that make a test broken now."""
    broken_streak_unconditional: int = 5
    """A current streak this long is broken even with flaky history: at a 40 % flake rate five
    chance failures in a row happen < 1 % of the time (flaky -> stably failing, dart_ci#4)."""

    high_confidence_n: int = 50
    """Attempts for `high` confidence (with >= 1 contradiction)."""
    medium_confidence_n: int = 20
    """Attempts for `medium` confidence."""


@dataclass(frozen=True, slots=True)
class _Evidence:
    """Evidence counts of one scope (an env, or the pooled roll-up)."""

    scc_shas: frozenset[str]
    repro: int
    iso: int
    streaks: int
    failing_commits: int
    streak_commits: int
    unexplained: int
    n: int
    xpr_branches: frozenset[str]
    evidence_branches: frozenset[str]
    infra_excluded: int
    runs: int
    failures: int
    first_evidence_at: datetime | None
    last_evidence_at: datetime | None
    broken_now: bool
    current_streak: int

    @property
    def contig(self) -> float:
        return self.streak_commits / self.failing_commits if self.failing_commits else 0.0


_Cell = list[int]  # [passed attempts, failed attempts] of one (sha, env)


def score_test(
    test_key: str,
    history: Sequence[ExecutionRecord],
    *,
    now: datetime,
    policy: ScoringPolicy,
    infra: frozenset[UploadSignature] = frozenset(),
) -> list[FlakeScore]:
    """Score one test: one `FlakeScore` per env in the window, then the `"*"` roll-up.

    `infra` holds the incident clusters of `infra_clusters` (failures matching one are
    excluded like outage uploads). Records of other tests are ignored. A test without runs in
    the window yields only a healthy `"*"` score with `runs == 0`.

    >>> from datetime import UTC
    >>> from flakeguard.core.models import Outcome
    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
    >>> def rec(run, sha, outcome, retry=0, final=True):
    ...     return ExecutionRecord("k", "linux", run, 1, retry, final, sha, "main", True,
    ...                            outcome, t0 + timedelta(hours=run))
    >>> hist = [rec(r, f"s{r}", Outcome.PASSED) for r in range(12)]
    >>> hist += [rec(20, "s20", Outcome.FAILED, 0, False), rec(20, "s20", Outcome.PASSED, 1)]
    >>> hist += [rec(21, "s21", Outcome.FAILED, 0, False), rec(21, "s21", Outcome.PASSED, 1)]
    >>> [(s.scope, s.verdict.value) for s in score_test("k", hist, now=t0 + timedelta(days=2),
    ...                                                  policy=ScoringPolicy())]
    [('linux', 'flaky'), ('*', 'flaky')]
    """
    window_start = now - timedelta(days=policy.lookback_days)
    by_env: dict[str, list[ExecutionRecord]] = {}
    infra_by_env: dict[str, int] = {}
    infra_share = policy.infra_failed_share
    for record in history:
        if record.test_key != test_key or record.outcome not in RAN:
            continue
        if record.at < window_start or record.at > now:
            continue
        tainted = record.upload_failed_share > infra_share
        if not tainted and infra and record.signature is not None:
            cause = (record.run_id, record.run_attempt, record.env_key, record.signature)
            tainted = cause in infra
        if tainted:
            if record.outcome in FAILING:
                infra_by_env[record.env_key] = infra_by_env.get(record.env_key, 0) + 1
            continue
        by_env.setdefault(record.env_key, []).append(record)

    env_keys = sorted(set(by_env) | set(infra_by_env))
    all_env_failing = _shas_failing_in_every_env(by_env)
    evidences = {
        env: _env_evidence(by_env.get(env, []), infra_by_env.get(env, 0), all_env_failing, policy)
        for env in env_keys
    }
    scores = [_to_score(test_key, env, ev, now, policy, {}) for env, ev in evidences.items()]
    pooled = _pool(evidences.values())
    rollup = _to_score(test_key, ALL_ENVS, pooled, now, policy, evidences)
    worst = max((s.verdict for s in scores), key=_SEVERITY.__getitem__, default=Verdict.HEALTHY)
    if _SEVERITY[worst] > _SEVERITY[rollup.verdict]:
        rollup = _with_verdict(rollup, worst, scores)
    return [*scores, rollup]


def score_many(
    histories: Mapping[str, Sequence[ExecutionRecord]],
    *,
    now: datetime,
    policy: ScoringPolicy,
) -> list[FlakeScore]:
    """Score every test of `histories` (test_key -> its records), in sorted key order.

    Incident clusters (`infra_clusters`) are found across all the histories first, so pass
    every test of the runs concerned in one call when possible.

    >>> score_many({}, now=datetime(2026, 1, 1), policy=ScoringPolicy())
    []
    """
    infra = infra_clusters(histories, now=now, policy=policy)
    scores: list[FlakeScore] = []
    for key in sorted(histories):
        scores.extend(score_test(key, histories[key], now=now, policy=policy, infra=infra))
    return scores


def infra_clusters(
    histories: Mapping[str, Sequence[ExecutionRecord]],
    *,
    now: datetime,
    policy: ScoringPolicy,
) -> frozenset[UploadSignature]:
    """(upload, signature) pairs that failed >= `infra_cluster_tests` distinct tests.

    Example (K = 5): in run 7 attempt 1 on ubuntu, 12 tests fail with signature
    "ConnectionRefusedError" -> {(7, 1, "ubuntu", "ConnectionRefusedError")}; their failures
    are incident, not evidence, even though 12 of 400 tests (3 %) is under the share filter.
    """
    window_start = now - timedelta(days=policy.lookback_days)
    tests_by_cause: dict[UploadSignature, set[str]] = {}
    for key, records in histories.items():
        for r in records:
            if r.signature is None or r.outcome not in FAILING:
                continue
            if r.at < window_start or r.at > now:
                continue
            cause = (r.run_id, r.run_attempt, r.env_key, r.signature)
            tests_by_cause.setdefault(cause, set()).add(key)
    k = policy.infra_cluster_tests
    return frozenset(cause for cause, keys in tests_by_cause.items() if len(keys) >= k)


def evidence_by_env(score: FlakeScore) -> dict[str, float]:
    """The per-env positive gate evidence carried by a roll-up score (env_key -> points).

    >>> s = FlakeScore("k", "*", 0.0, Components(0, 0, 0, 0), Verdict.FLAKY, "low", "", 0, 0,
    ...                {"env_evidence:linux": 4.0, "scc": 2.0})
    >>> evidence_by_env(s)
    {'linux': 4.0}
    """
    return {
        key.removeprefix(ENV_EVIDENCE_PREFIX): value
        for key, value in score.evidence.items()
        if key.startswith(ENV_EVIDENCE_PREFIX)
    }


# --- evidence ---------------------------------------------------------------------------


def _shas_failing_in_every_env(by_env: Mapping[str, Sequence[ExecutionRecord]]) -> set[str]:
    """Shas run in >= 2 envs that failed (no passing attempt) in each: a code change, not luck."""
    if len(by_env) < 2:
        return set()
    envs_ran: dict[str, int] = {}
    envs_failed: dict[str, int] = {}
    for records in by_env.values():
        passed: set[str] = set()
        seen: set[str] = set()
        for r in records:
            seen.add(r.sha)
            if r.outcome not in FAILING:
                passed.add(r.sha)
        for sha in seen:
            envs_ran[sha] = envs_ran.get(sha, 0) + 1
            if sha not in passed:
                envs_failed[sha] = envs_failed.get(sha, 0) + 1
    return {sha for sha, k in envs_failed.items() if k >= 2 and envs_ran[sha] == k}


def _env_evidence(
    records: Sequence[ExecutionRecord],
    infra_excluded: int,
    all_env_failing: set[str],
    policy: ScoringPolicy,
) -> _Evidence:
    cells: dict[str, _Cell] = {}
    first_at: dict[str, datetime] = {}
    # Chains: branch -> sha -> first run time; None is the default branch.
    chains: dict[str | None, dict[str, datetime]] = {}
    finals: dict[tuple[int, int], tuple[int, bool]] = {}
    any_failure = False
    for r in records:
        failed = r.outcome in FAILING
        any_failure = any_failure or failed
        cell = cells.get(r.sha)
        if cell is None:
            cell = cells[r.sha] = [0, 0]
            first_at[r.sha] = r.at
        elif r.at < first_at[r.sha]:
            first_at[r.sha] = r.at
        cell[1 if failed else 0] += 1
        chain_key = None if r.is_default_branch else (r.branch or "")
        chain = chains.get(chain_key)
        if chain is None:
            chain = chains[chain_key] = {}
        if r.sha not in chain or r.at < chain[r.sha]:
            chain[r.sha] = r.at
        # Final result of the report: the is_final attempt, else the highest retry index.
        report = (r.run_id, r.run_attempt)
        rank = r.retry_index + (1 << 30 if r.is_final else 0)
        previous = finals.get(report)
        if previous is None or rank >= previous[0]:
            finals[report] = (rank, failed)

    runs = len(finals)
    failures = sum(1 for _, failed in finals.values() if failed)
    if not any_failure:
        return _Evidence(
            frozenset(), 0, 0, 0, 0, 0, 0, len(records), frozenset(), frozenset(),
            infra_excluded, runs, failures, None, None, False, 0,
        )  # fmt: skip

    repro_shas = {sha for sha, (p, f) in cells.items() if p == 0 and f >= 2}
    scc_shas = {sha for sha, (p, f) in cells.items() if p > 0 and f > 0}

    def commit_fails(sha: str) -> bool:
        return cells[sha][0] == 0

    explained: set[str] = repro_shas | (all_env_failing & cells.keys())
    iso_shas: set[str] = set()
    streaks = failing_commits = streak_commits = current_streak = 0
    broken_now = False
    default_chain = chains.get(None, {})
    default_order = sorted(default_chain, key=default_chain.__getitem__)
    default_times = [default_chain[sha] for sha in default_order]
    if default_order:
        fails = [commit_fails(sha) for sha in default_order]
        for start, length in _failing_runs(fails):
            failing_commits += length
            if length >= 2:
                streaks += 1
                streak_commits += length
                explained.update(default_order[start : start + length])
            elif 0 < start < len(fails) - 1:
                sha = default_order[start]
                if sha not in explained:
                    iso_shas.add(sha)
        while current_streak < len(fails) and fails[-1 - current_streak]:
            current_streak += 1
        latest_reproduced = default_order[-1] in repro_shas
        broken_now = current_streak >= policy.broken_streak_commits or (
            current_streak >= 1 and latest_reproduced
        )

    pr_branch_of: dict[str, str] = {}
    for chain_key, chain in chains.items():
        if chain_key is None:
            continue
        order = sorted(chain, key=chain.__getitem__)
        fails = [commit_fails(sha) for sha in order]
        for start, length in _failing_runs(fails):
            if length >= 2:
                explained.update(order[start : start + length])
        for sha, failed in zip(order, fails, strict=True):
            pr_branch_of.setdefault(sha, chain_key)
            if failed and sha not in explained:
                base = bisect_right(default_times, chain[sha]) - 1
                if base >= 0 and commit_fails(default_order[base]):
                    explained.add(sha)

    unexplained = 0
    xpr: set[str] = set()
    evidence_branches: set[str] = set()
    evidence_times: list[datetime] = []
    for r in records:
        if r.outcome not in FAILING:
            continue
        if r.sha not in explained:
            unexplained += 1
            if not r.is_default_branch:
                xpr.add(r.branch or "")
        if r.sha in scc_shas or r.sha in iso_shas:
            evidence_branches.add(r.branch or "")
            evidence_times.append(r.at)

    return _Evidence(
        scc_shas=frozenset(scc_shas),
        repro=len(repro_shas),
        iso=len(iso_shas),
        streaks=streaks,
        failing_commits=failing_commits,
        streak_commits=streak_commits,
        unexplained=unexplained,
        n=len(records),
        xpr_branches=frozenset(xpr),
        evidence_branches=frozenset(evidence_branches),
        infra_excluded=infra_excluded,
        runs=runs,
        failures=failures,
        first_evidence_at=min(evidence_times, default=None),
        last_evidence_at=max(evidence_times, default=None),
        broken_now=broken_now,
        current_streak=current_streak,
    )


def _failing_runs(fails: Sequence[bool]) -> Iterable[tuple[int, int]]:
    """(start, length) of each maximal run of True in `fails`."""
    start = -1
    for i, failed in enumerate(fails):
        if failed and start < 0:
            start = i
        elif not failed and start >= 0:
            yield start, i - start
            start = -1
    if start >= 0:
        yield start, len(fails) - start


def _pool(evidences: Iterable[_Evidence]) -> _Evidence:
    """Roll envs up: commits and branches as sets (count once), everything else summed."""
    items = list(evidences)
    firsts = [e.first_evidence_at for e in items if e.first_evidence_at is not None]
    lasts = [e.last_evidence_at for e in items if e.last_evidence_at is not None]
    return _Evidence(
        scc_shas=frozenset().union(*(e.scc_shas for e in items)),
        repro=sum(e.repro for e in items),
        iso=sum(e.iso for e in items),
        streaks=sum(e.streaks for e in items),
        failing_commits=sum(e.failing_commits for e in items),
        streak_commits=sum(e.streak_commits for e in items),
        unexplained=sum(e.unexplained for e in items),
        n=sum(e.n for e in items),
        xpr_branches=frozenset().union(*(e.xpr_branches for e in items)),
        evidence_branches=frozenset().union(*(e.evidence_branches for e in items)),
        infra_excluded=sum(e.infra_excluded for e in items),
        runs=sum(e.runs for e in items),
        failures=sum(e.failures for e in items),
        first_evidence_at=min(firsts, default=None),
        last_evidence_at=max(lasts, default=None),
        broken_now=False,  # each env judges itself; the roll-up takes the most severe class
        current_streak=max((e.current_streak for e in items), default=0),
    )


# --- score, gate, class ------------------------------------------------------------------


def _components(ev: _Evidence, now: datetime, policy: ScoringPolicy) -> Components:
    failure_rate = (
        min(1.0, (ev.unexplained / ev.n) / policy.failure_rate_saturation) if ev.n else 0.0
    )
    contradictions = (
        len(ev.scc_shas)
        + policy.inconsistency_iso_weight * ev.iso
        + policy.inconsistency_xpr_weight * max(0, len(ev.xpr_branches) - 1)
    )
    inconsistency = 1.0 - math.exp(-contradictions)
    recency = 0.0
    if ev.last_evidence_at is not None:
        age_days = max(0.0, (now - ev.last_evidence_at).total_seconds() / 86_400)
        recency = math.exp(-age_days / policy.recency_tau_days)
    branch_diversity = 1.0 - math.exp(-len(ev.evidence_branches) / policy.branch_diversity_scale)
    return Components(failure_rate, inconsistency, recency, branch_diversity)


def _score(c: Components, policy: ScoringPolicy) -> float:
    total = (
        policy.weight_failure_rate * c.failure_rate
        + policy.weight_inconsistency * c.inconsistency
        + policy.weight_recency * c.recency
        + policy.weight_branch_diversity * c.branch_diversity
    )
    return min(1.0, max(0.0, total))


def _positive_evidence(ev: _Evidence, policy: ScoringPolicy) -> float:
    return (
        policy.gate_scc_weight * min(len(ev.scc_shas), policy.gate_scc_cap)
        + policy.gate_iso_weight * min(ev.iso, policy.gate_iso_cap)
        + min(policy.gate_xpr_cap, policy.gate_xpr_weight * max(0, len(ev.xpr_branches) - 1))
    )


def _looks_broken(ev: _Evidence, policy: ScoringPolicy) -> bool:
    return ev.streaks > 0 and (ev.iso == 0 or ev.contig >= policy.broken_contig_share)


def _gate(ev: _Evidence, policy: ScoringPolicy) -> float:
    penalty = float(min(ev.repro, policy.gate_repro_cap))
    if _looks_broken(ev, policy):
        penalty += policy.gate_streak_penalty * min(ev.streaks, policy.gate_streak_cap)
    return _positive_evidence(ev, policy) - penalty


def _is_broken(ev: _Evidence, policy: ScoringPolicy) -> bool:
    if not ev.broken_now:
        return False
    if ev.current_streak >= policy.broken_streak_unconditional:
        return True
    has_flaky_evidence = bool(ev.scc_shas) or ev.iso > 0
    return not has_flaky_evidence or ev.contig >= policy.broken_contig_share


def _classify(ev: _Evidence, gate: float, score: float, policy: ScoringPolicy) -> Verdict:
    if _is_broken(ev, policy):
        return Verdict.BROKEN
    strong = gate >= policy.flaky_evidence or (
        score >= policy.flaky_score and gate >= policy.flaky_score_evidence
    )
    if strong and ev.runs >= policy.min_runs:
        return Verdict.FLAKY
    if gate >= policy.suspected_evidence or strong:
        return Verdict.SUSPECTED
    return Verdict.HEALTHY


def _confidence(ev: _Evidence, policy: ScoringPolicy) -> str:
    if ev.n >= policy.high_confidence_n and ev.scc_shas:
        return "high"
    if ev.n >= policy.medium_confidence_n:
        return "medium"
    return "low"


def _to_score(
    test_key: str,
    scope: str,
    ev: _Evidence,
    now: datetime,
    policy: ScoringPolicy,
    env_evidences: Mapping[str, _Evidence],
) -> FlakeScore:
    components = _components(ev, now, policy)
    score = _score(components, policy)
    gate = _gate(ev, policy)
    verdict = _classify(ev, gate, score, policy)
    evidence: dict[str, float] = {
        "scc": float(len(ev.scc_shas)),
        "repro": float(ev.repro),
        "iso": float(ev.iso),
        "streaks": float(ev.streaks),
        "contig": round(ev.contig, 4),
        "current_streak": float(ev.current_streak),
        "xpr": float(len(ev.xpr_branches)),
        "unexplained": float(ev.unexplained),
        "n": float(ev.n),
        "infra_excluded": float(ev.infra_excluded),
        "branches_with_evidence": float(len(ev.evidence_branches)),
        "gate": round(gate, 4),
    }
    if ev.last_evidence_at is not None:
        evidence["last_evidence_ts"] = ev.last_evidence_at.timestamp()
    for env, env_ev in sorted(env_evidences.items()):
        evidence[ENV_EVIDENCE_PREFIX + env] = _positive_evidence(env_ev, policy)
        evidence[ENV_UNEXPLAINED_PREFIX + env] = float(env_ev.unexplained)
        evidence[ENV_N_PREFIX + env] = float(env_ev.n)
    return FlakeScore(
        test_key=test_key,
        scope=scope,
        score=round(score, 6),
        components=components,
        verdict=verdict,
        confidence=_confidence(ev, policy),
        reason=_reason(verdict, ev, now, policy),
        runs=ev.runs,
        failures=ev.failures,
        evidence=evidence,
    )


def _with_verdict(
    rollup: FlakeScore, verdict: Verdict, env_scores: Sequence[FlakeScore]
) -> FlakeScore:
    """The roll-up takes a more severe env class, with that env's reason."""
    source = next(s for s in env_scores if s.verdict is verdict)
    return FlakeScore(
        test_key=rollup.test_key,
        scope=rollup.scope,
        score=rollup.score,
        components=rollup.components,
        verdict=verdict,
        confidence=rollup.confidence,
        reason=f"{source.reason} ({source.scope})",
        runs=rollup.runs,
        failures=rollup.failures,
        evidence=rollup.evidence,
    )


# --- reason ------------------------------------------------------------------------------


def _times(k: int) -> str:
    return "once" if k == 1 else "twice" if k == 2 else f"{k} times"


def _span(since: datetime | None, now: datetime) -> str:
    if since is None:
        return ""
    days = max(1, math.ceil((now - since).total_seconds() / 86_400))
    if days == 1:
        return " in the last day"
    if days < 14:
        return f" in {days} days"
    return f" in {round(days / 7)} weeks"


def _reason(verdict: Verdict, ev: _Evidence, now: datetime, policy: ScoringPolicy) -> str:
    """One human sentence for the class, naming the strongest evidence first."""
    if verdict is Verdict.BROKEN:
        if ev.current_streak >= 2:
            return f"failing on the last {ev.current_streak} commits of the default branch"
        return "failed every attempt on the latest commit of the default branch"
    parts: list[str] = []
    if ev.scc_shas:
        parts.append(f"passed and failed on the same commit {_times(len(ev.scc_shas))}")
    if ev.iso:
        parts.append(f"failed alone between passing default-branch commits {_times(ev.iso)}")
    if verdict in (Verdict.FLAKY, Verdict.SUSPECTED):
        if not parts and ev.xpr_branches:
            parts.append(f"failed without explanation on {len(ev.xpr_branches)} branches")
        sentence = " and ".join(parts) + _span(ev.first_evidence_at, now)
        if verdict is Verdict.SUSPECTED and ev.runs < policy.min_runs:
            return f"{sentence}; only {ev.runs} runs so far (need {policy.min_runs})"
        if verdict is Verdict.SUSPECTED:
            return f"{sentence}; not enough evidence to quarantine yet"
        return sentence
    if ev.runs == 0:
        return f"no runs in the last {policy.lookback_days} days"
    if ev.failures == 0 and ev.infra_excluded:
        return f"only failed during {ev.infra_excluded} infrastructure-outage uploads"
    if ev.failures == 0 and ev.unexplained == 0:
        return f"no failures in {ev.runs} runs over {policy.lookback_days} days"
    if ev.streaks or ev.repro:
        return "failures were reproduced or consecutive: a code change, not flakiness"
    return f"{ev.failures} failures in {ev.runs} runs without flaky evidence"
