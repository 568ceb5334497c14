"""Scoring rules, one table row per rule (notes/flakiness.md §4), plus hypothesis properties.

Histories are written as patterns: one token per commit, `|` between re-run attempts of the
workflow run, one letter per in-run attempt (P passed, F failed, E error, S skipped). So
`"P FP F|P"` is three commits: a pass; a failure that passed on an in-run retry; a failed
attempt 1 re-run to a passing attempt 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flakeguard.core.models import ExecutionRecord, FlakeScore, Outcome, Verdict
from flakeguard.core.scoring import (
    ALL_ENVS,
    ScoringPolicy,
    evidence_by_env,
    score_many,
    score_test,
)

T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
LINUX, WINDOWS, MAC = "ci/ubuntu", "ci/windows", "ci/macos"
POLICY = ScoringPolicy()
_LETTERS = {"P": Outcome.PASSED, "F": Outcome.FAILED, "E": Outcome.ERROR, "S": Outcome.SKIPPED}


@dataclass
class History:
    """Builds one test's ExecutionRecords commit by commit, one hour apart."""

    key: str = "k"
    t: datetime = T0
    run: int = 0
    records: list[ExecutionRecord] = field(default_factory=list)

    def commit(
        self,
        cells: dict[str, str],
        *,
        branch: str = "main",
        share: float = 0.0,
        signature: str = "sig-1",
        sha: str | None = None,
    ) -> History:
        """One commit (one run) with a token per env."""
        self.run += 1
        sha = sha or f"{branch}-{self.run}"
        for env, token in sorted(cells.items()):
            for attempt_no, attempt in enumerate(token.split("|"), start=1):
                for i, letter in enumerate(attempt):
                    outcome = _LETTERS[letter]
                    self.records.append(
                        ExecutionRecord(
                            test_key=self.key,
                            env_key=env,
                            run_id=self.run,
                            run_attempt=attempt_no,
                            retry_index=i,
                            is_final=i == len(attempt) - 1,
                            sha=sha,
                            branch=branch,
                            is_default_branch=branch == "main",
                            outcome=outcome,
                            at=self.t + timedelta(minutes=10 * attempt_no),
                            signature=signature
                            if outcome in (Outcome.FAILED, Outcome.ERROR)
                            else None,
                            upload_failed_share=share,
                        )
                    )
        self.t += timedelta(hours=1)
        return self

    def add(
        self, pattern: str, *, env: str = LINUX, branch: str = "main", share: float = 0.0
    ) -> History:
        for token in pattern.split():
            self.commit({env: token}, branch=branch, share=share)
        return self

    def score(
        self, *, now: datetime | None = None, policy: ScoringPolicy = POLICY
    ) -> list[FlakeScore]:
        return score_test(self.key, self.records, now=now or self.t, policy=policy)

    def rollup(self, **kwargs: object) -> FlakeScore:
        scores = self.score(**kwargs)  # type: ignore[arg-type]
        assert scores[-1].scope == ALL_ENVS
        return scores[-1]


def passes(k: int) -> str:
    return " ".join(["P"] * k)


# --- rule tables -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "verdict", "evidence"),
    [
        # all passes: nothing to say
        (passes(20), Verdict.HEALTHY, {"scc": 0, "iso": 0, "unexplained": 0}),
        # two in-run retries that passed: two same-commit contradictions (E = 4)
        (f"{passes(10)} FP {passes(5)} FP P P", Verdict.FLAKY, {"scc": 2, "gate": 4}),
        # re-run attempts of a red run that passed: same rule via run_attempt
        (f"{passes(10)} F|P {passes(5)} F|P P", Verdict.FLAKY, {"scc": 2}),
        # one contradiction only: E = 2, but the fresh evidence lifts S above 0.35 (score path)
        (f"{passes(15)} F|P P", Verdict.FLAKY, {"scc": 1, "gate": 2}),
        # isolated default-branch failures (pass on both sides): iso = 3, E = 3
        (f"{passes(6)} F P P F P P F {passes(6)}", Verdict.FLAKY, {"iso": 3, "gate": 3}),
        # one isolated failure is not enough: suspected
        (f"{passes(6)} F {passes(8)}", Verdict.SUSPECTED, {"iso": 1, "gate": 1}),
        # a regression that was fixed: a streak, contig 1, never flaky
        (f"{passes(6)} F F F F {passes(6)}", Verdict.HEALTHY, {"streaks": 1, "contig": 1.0}),
        # the default branch is failing now: broken
        (f"{passes(10)} F F", Verdict.BROKEN, {"current_streak": 2}),
        # the latest commit's failure reproduced on re-run: broken
        (f"{passes(10)} F|F", Verdict.BROKEN, {"repro": 1}),
        # high-rate flaky with a chance streak at the end: mostly isolated (contig < 0.8), flaky
        ("P F P F P P F P F P F P F F", Verdict.FLAKY, {"current_streak": 2}),
        # ... but five failures in a row are broken whatever the history
        ("P F P F P P F P F P F F F F F", Verdict.BROKEN, {"current_streak": 5}),
        # reproduced failures (every attempt fails) are a real break, never flaky
        (f"{passes(6)} FFF {passes(3)} F|F|F {passes(4)}", Verdict.HEALTHY, {"repro": 2}),
        # contradictions on the same commit count once (commits, not runs)
        (f"{passes(12)} F|P|F", Verdict.FLAKY, {"scc": 1}),
    ],
)
def test_default_branch_rules(pattern: str, verdict: Verdict, evidence: dict[str, float]) -> None:
    rollup = History().add(pattern).rollup()
    assert rollup.verdict is verdict, rollup.reason
    for name, value in evidence.items():
        assert rollup.evidence[name] == value, name


@pytest.mark.parametrize(
    ("pattern", "runs", "failures"),
    [
        ("P P P", 3, 0),
        ("FP P", 2, 0),  # an in-run retry is one run with its final result
        ("F|P P", 3, 1),  # a re-run attempt is a run of its own
        ("F|F S P", 3, 2),  # skipped runs are not runs
    ],
)
def test_runs_and_failures_count_final_results(pattern: str, runs: int, failures: int) -> None:
    rollup = History().add(pattern).rollup()
    assert (rollup.runs, rollup.failures) == (runs, failures)


def test_scopes_are_envs_then_rollup_with_env_evidence() -> None:
    h = History()
    for _ in range(12):
        h.commit({LINUX: "P", WINDOWS: "P"})
    h.commit({LINUX: "FP", WINDOWS: "P"})
    h.commit({LINUX: "F|P", WINDOWS: "P"})
    scores = h.score()
    assert [s.scope for s in scores] == [LINUX, WINDOWS, ALL_ENVS]
    assert [s.verdict for s in scores] == [Verdict.FLAKY, Verdict.HEALTHY, Verdict.FLAKY]
    assert evidence_by_env(scores[-1]) == {LINUX: 4.0, WINDOWS: 0.0}


def test_env_difference_is_not_a_contradiction() -> None:
    """Same sha failing on windows and passing on ubuntu: environment, not flakiness."""
    h = History()
    for _ in range(10):
        h.commit({LINUX: "P", WINDOWS: "P"})
    for _ in range(4):
        h.commit({LINUX: "P", WINDOWS: "F|F"})
    for _ in range(4):
        h.commit({LINUX: "P", WINDOWS: "P"})
    scores = {s.scope: s for s in h.score()}
    assert scores[ALL_ENVS].evidence["scc"] == 0
    assert scores[WINDOWS].verdict is Verdict.HEALTHY
    assert scores[ALL_ENVS].verdict is Verdict.HEALTHY


def test_failure_in_every_env_at_one_commit_is_a_change_not_luck() -> None:
    h = History()
    for _ in range(8):
        h.commit({LINUX: "P", WINDOWS: "P", MAC: "P"})
    h.commit({LINUX: "F", WINDOWS: "F", MAC: "F"})
    for _ in range(8):
        h.commit({LINUX: "P", WINDOWS: "P", MAC: "P"})
    rollup = h.rollup()
    assert rollup.evidence["iso"] == 0
    assert rollup.evidence["unexplained"] == 0
    assert rollup.verdict is Verdict.HEALTHY


def test_pull_request_failure_on_a_broken_base_is_explained() -> None:
    h = History().add(passes(8))
    h.add("F")  # main breaks (single env, isolated so far)
    h.add("F", branch="feature/a")  # a PR based on the broken commit fails too
    h.add("P P P")
    rollup = h.rollup()
    assert rollup.evidence["xpr"] == 0
    assert rollup.evidence["unexplained"] == 1  # only the main failure itself


@pytest.mark.parametrize(
    ("main_passes", "verdict"),
    [
        # rare: FR = (4 / 48) / 0.2 = 0.42, S = 0.17 + 0.16 = 0.33 < 0.35 -> suspected
        (40, Verdict.SUSPECTED),
        # dense: 4 unexplained failures in 18 attempts saturate FR, S = 0.56 >= 0.35 with
        # E = 1.5 -> flaky on the score path
        (10, Verdict.FLAKY),
    ],
)
def test_failures_on_many_pull_requests_are_weak_evidence(
    main_passes: int, verdict: Verdict
) -> None:
    h = History().add(passes(main_passes))
    for i in range(4):
        h.add("F P", branch=f"feature/{i}")
    rollup = h.rollup()
    # xpr = 4 -> 0.5 * (4 - 1) = 1.5 gate points
    assert rollup.evidence["xpr"] == 4
    assert rollup.evidence["gate"] == 1.5
    assert rollup.verdict is verdict


def test_infra_outage_upload_is_excluded() -> None:
    h = History().add(passes(12))
    h.add("F|P F|P", share=0.6)  # 60 % of the upload failed: an outage
    h.add("P P")
    rollup = h.rollup()
    assert rollup.evidence["infra_excluded"] == 2
    assert rollup.evidence["scc"] == 0
    assert rollup.verdict is Verdict.HEALTHY
    assert "outage" not in rollup.reason or rollup.failures == 0


def test_min_runs_holds_back_flaky() -> None:
    rollup = History().add("FP FP P").rollup()
    assert rollup.evidence["gate"] >= POLICY.flaky_evidence
    assert rollup.verdict is Verdict.SUSPECTED
    assert "need 10" in rollup.reason


def test_min_runs_from_the_job_payload() -> None:
    policy = ScoringPolicy(min_runs=3)
    assert History().add("FP FP P").rollup(policy=policy).verdict is Verdict.FLAKY


def test_lookback_window_drops_old_history() -> None:
    h = History().add(f"{passes(10)} FP FP FP {passes(3)}")
    later = h.t + timedelta(days=31)
    assert h.rollup().verdict is Verdict.FLAKY
    rollup = h.rollup(now=later)
    assert rollup.runs == 0
    assert rollup.verdict is Verdict.HEALTHY
    assert rollup.reason == "no runs in the last 30 days"
    assert (
        History()
        .add(f"{passes(10)} FP FP FP")
        .rollup(now=later, policy=ScoringPolicy(lookback_days=60))
        .verdict
        is Verdict.FLAKY
    )


def test_future_records_are_ignored() -> None:
    h = History().add(passes(10))
    now = h.t
    h.add("FP FP FP")
    assert h.rollup(now=now).evidence["scc"] == 0


def test_reason_is_one_human_sentence() -> None:
    h = History().add(passes(10))
    for _ in range(3):
        h.add("FP")
        h.t += timedelta(days=5)
    rollup = h.rollup()
    assert rollup.reason == "passed and failed on the same commit 3 times in 2 weeks"
    assert rollup.confidence == "low"  # n < 20 attempts


def test_confidence_levels() -> None:
    high = History().add(f"{passes(60)} FP FP").rollup()
    medium = History().add(passes(25)).rollup()
    assert (high.confidence, medium.confidence) == ("high", "medium")


def test_components_follow_the_documented_formula() -> None:
    h = History().add(f"{passes(18)} FP")
    rollup = h.rollup()
    c = rollup.components
    # n = 20 attempts, 1 unexplained failure: rate 5 % / 20 % saturation = 0.25
    assert c.failure_rate == pytest.approx(0.25)
    assert c.inconsistency == pytest.approx(1 - 2.718281828**-1, rel=1e-6)
    expected = (
        0.4 * c.failure_rate + 0.3 * c.inconsistency + 0.2 * c.recency + 0.1 * c.branch_diversity
    )
    assert rollup.score == pytest.approx(expected, abs=1e-6)


def test_score_many_scores_each_history_in_key_order() -> None:
    a = History(key="a").add(passes(12))
    b = History(key="b").add(f"{passes(12)} FP FP")
    scores = score_many({"b": b.records, "a": a.records}, now=b.t, policy=POLICY)
    assert [(s.test_key, s.scope) for s in scores] == [
        ("a", LINUX),
        ("a", ALL_ENVS),
        ("b", LINUX),
        ("b", ALL_ENVS),
    ]
    assert scores[-1].verdict is Verdict.FLAKY


def test_records_of_other_tests_are_ignored() -> None:
    other = History(key="other").add("FP FP FP FP")
    mine = History(key="k").add(passes(12))
    scores = score_test("k", [*other.records, *mine.records], now=mine.t, policy=POLICY)
    assert scores[-1].verdict is Verdict.HEALTHY


# --- properties ----------------------------------------------------------------------------

_TOKENS = st.sampled_from(["P", "P", "P", "F", "E", "FP", "FFP", "FFF", "F|P", "F|F", "S", "P|P"])
_ENVS = st.sampled_from([LINUX, WINDOWS, MAC])
_BRANCHES = st.sampled_from(["main", "main", "feature/x", "feature/y"])


@st.composite
def histories(draw: st.DrawFn) -> History:
    h = History()
    for _ in range(draw(st.integers(0, 30))):
        envs = draw(st.sets(_ENVS, min_size=1, max_size=3))
        cells = {env: draw(_TOKENS) for env in envs}
        share = draw(st.sampled_from([0.0, 0.0, 0.0, 0.1, 0.5]))
        h.commit(cells, branch=draw(_BRANCHES), share=share)
    return h


@settings(max_examples=150, deadline=None)
@given(histories())
def test_property_score_and_components_in_unit_interval(h: History) -> None:
    for s in h.score():
        assert 0.0 <= s.score <= 1.0
        for value in (
            s.components.failure_rate,
            s.components.inconsistency,
            s.components.recency,
            s.components.branch_diversity,
        ):
            assert 0.0 <= value <= 1.0
        assert s.failures <= s.runs
        assert s.confidence in ("high", "medium", "low")
        assert s.reason


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(["P", "PP", "P|P"]), min_size=0, max_size=40),
    st.sets(_ENVS, min_size=1),
)
def test_property_all_pass_scores_zero(tokens: list[str], envs: set[str]) -> None:
    h = History()
    for token in tokens:
        h.commit(dict.fromkeys(envs, token), branch="main")
    for s in h.score():
        assert s.score == 0.0
        assert s.verdict is Verdict.HEALTHY


@settings(max_examples=100, deadline=None)
@given(histories(), st.data())
def test_property_skipped_runs_change_nothing(h: History, data: st.DataObject) -> None:
    before = h.score()
    skipped = History(t=T0 + timedelta(minutes=5), run=10_000)
    for _ in range(data.draw(st.integers(1, 10))):
        skipped.commit({data.draw(_ENVS): data.draw(st.sampled_from(["S", "SS", "S|S"]))})
    skipped_only_envs = {r.env_key for r in skipped.records} - {r.env_key for r in h.records}
    mixed = [*h.records, *skipped.records]
    after = score_test("k", mixed, now=h.t, policy=POLICY)
    # An env seen only through skipped runs has no runs at all, so it adds no scope.
    assert not skipped_only_envs or all(s.scope not in skipped_only_envs for s in after)
    assert after == before


@settings(max_examples=100, deadline=None)
@given(
    before=st.integers(3, 15),
    length=st.integers(1, 10),
    after=st.integers(0, 10),
    envs=st.sets(_ENVS, min_size=1, max_size=3),
    data=st.data(),
)
def test_property_broken_then_fixed_window_never_flaky(
    before: int, length: int, after: int, envs: set[str], data: st.DataObject
) -> None:
    if length == 1 and len(envs) == 1:
        length = 2  # one failing commit in one env is indistinguishable from an isolated flake
    h = History()
    for _ in range(before):
        h.commit(dict.fromkeys(envs, "P"))
    for _ in range(length):
        failing = {env: data.draw(st.sampled_from(["F", "FFF", "F|F", "E"])) for env in envs}
        h.commit(failing)
        if data.draw(st.booleans()):  # a PR based on the broken commit fails as well
            h.commit(
                dict.fromkeys(envs, data.draw(st.sampled_from(["F", "F|F"]))), branch="feature/pr"
            )
    for _ in range(after):
        h.commit(dict.fromkeys(envs, "P"))
    for s in h.score():
        assert s.verdict is not Verdict.FLAKY, (s.scope, s.reason, s.evidence)
        assert s.evidence["scc"] == 0


@settings(max_examples=100, deadline=None)
@given(histories(), st.data())
def test_property_infra_outage_upload_creates_no_flaky_evidence(
    h: History, data: st.DataObject
) -> None:
    envs = sorted({r.env_key for r in h.records}) or [LINUX]
    before = h.score()
    outage = History(t=T0 + timedelta(minutes=3), run=20_000)
    for _ in range(data.draw(st.integers(1, 6))):
        env = data.draw(st.sampled_from(envs))
        token = data.draw(st.sampled_from(["F", "FF", "F|F", "E", "FP"]))
        outage.commit({env: token}, share=data.draw(st.floats(0.21, 1.0)))
    after = score_test("k", [*h.records, *outage.records], now=h.t, policy=POLICY)
    after_by_scope = {s.scope: s for s in after}
    for old in before:
        new = after_by_scope[old.scope]
        assert (new.verdict, new.score, new.components) == (old.verdict, old.score, old.components)
        assert (new.runs, new.failures) == (old.runs, old.failures)
        changed = {k for k in old.evidence if old.evidence[k] != new.evidence.get(k)}
        assert changed <= {"infra_excluded"}
    for s in after:
        if s.scope not in {o.scope for o in before}:
            assert s.verdict is Verdict.HEALTHY
            assert s.evidence["scc"] == 0


def test_one_signature_failing_many_tests_in_one_upload_is_an_incident() -> None:
    """A small outage (5 of 400 tests, 1 %) slips under the share filter; its shared
    signature does not: score_many drops it before it mints pass-on-retry evidence."""
    histories: dict[str, list[ExecutionRecord]] = {}
    for i in range(6):
        h = History(key=f"t{i}").add(passes(12))
        h.commit({LINUX: "F|P"}, signature="ConnectionRefusedError", share=0.01)
        h.add("P")
        histories[h.key] = h.records
    now = T0 + timedelta(days=1)
    rollups = [s for s in score_many(histories, now=now, policy=POLICY) if s.scope == ALL_ENVS]
    assert [s.evidence["scc"] for s in rollups] == [0.0] * 6
    assert all(s.evidence["infra_excluded"] == 1 for s in rollups)
    # below the cluster size the same failures are ordinary evidence
    few = {k: histories[k] for k in list(histories)[:4]}
    rollups = [s for s in score_many(few, now=now, policy=POLICY) if s.scope == ALL_ENVS]
    assert [s.evidence["scc"] for s in rollups] == [1.0] * 4


def test_docstring_examples_hold() -> None:
    import doctest

    from flakeguard.core import quarantine, reporting, scoring

    for module in (scoring, quarantine, reporting):
        assert doctest.testmod(module).failed == 0, module.__name__
