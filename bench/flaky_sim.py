"""A CI world with known ground truth for evaluating flaky-test detection (notes/flakiness.md §2.3).

One repository, default branch "main". Each protected (main) commit i >= 1 comes from pull
request i: 1-3 commits based on main commit i - 1. Every push runs one workflow with three OS
legs (jobs); each leg writes one JUnit file per test suite dialect. A red leg is re-run ("re-run
failed jobs": same run_id and sha, attempt + 1, red legs only) with probability 0.35 on PRs and
0.6 on main, at most 3 attempts. With probability `outage_prob` per leg attempt an
infrastructure outage fails a U(outage_low, 1) fraction of that leg's tests, each with one of
three failure signatures (timeout, refused connection, DNS) of that outage.

Test kinds (`Kind`): stable; flaky(p) in every env, p half log-uniform 0.3-5 % (IDoFT-like),
half U(5 %, 40 %) (CI-like); env_flaky (one OS); flaky_fixed (stable after commit f); new_flaky
and new_stable (appear at commit f); broken_window(a, k) on main for k in {1,1,2,3,5,8,15}
commits, PRs based inside fail too; env_broken (the same on one OS); branch_broken (fails on one
PR until its last commit fixes it); always_failing; skipped.

Dialects (`Dialect`), one suite each: pytest (no retries), pytest-rerunfailures --reruns 2
(one `<testcase>` per attempt, earlier ones empty), Maven Surefire rerunFailingTestsCount=2
(`<flakyFailure>` / `<rerunFailure>`), jest-junit (no retries, classname == name).

`simulate(seed, config)` returns the world; `write_world(world, out_dir)` writes the JUnit
files, `manifest.jsonl` (the `flakeguard import-junit --manifest` format, one line per run
attempt and job) and `truth.json`. Run as a script: `python bench/flaky_sim.py --seed 1 --out DIR`.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from flakeguard.core.models import FAILING, Outcome

REPO = "sim/flaky-world"
DEFAULT_BRANCH = "main"
WORKFLOW = "ci"
ENVS: tuple[str, ...] = ("ubuntu-latest", "windows-latest", "macos-latest")
START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


class Kind(StrEnum):
    """Ground-truth kind of a simulated test."""

    STABLE = "stable"
    FLAKY = "flaky"
    ENV_FLAKY = "env_flaky"
    FLAKY_FIXED = "flaky_fixed"
    NEW_FLAKY = "new_flaky"
    NEW_STABLE = "new_stable"
    BROKEN_WINDOW = "broken_window"
    ENV_BROKEN = "env_broken"
    BRANCH_BROKEN = "branch_broken"
    ALWAYS_FAILING = "always_failing"
    SKIPPED = "skipped"


FLAKY_KINDS = frozenset({Kind.FLAKY, Kind.ENV_FLAKY, Kind.NEW_FLAKY})
"""Kinds that are flaky at the end of history (the positives)."""
BROKEN_KINDS = frozenset(
    {Kind.BROKEN_WINDOW, Kind.ENV_BROKEN, Kind.BRANCH_BROKEN, Kind.ALWAYS_FAILING}
)
"""Kinds that fail for a real reason: quarantining them is a false quarantine."""
STABLE_KINDS = frozenset({Kind.STABLE, Kind.NEW_STABLE})


class Dialect(StrEnum):
    """JUnit dialect (and retry behaviour) of a test suite."""

    PYTEST = "pytest"
    PYTEST_RERUN = "pytest-rerunfailures"
    SUREFIRE = "surefire"
    JEST = "jest-junit"


RETRYING = frozenset({Dialect.PYTEST_RERUN, Dialect.SUREFIRE})
"""Dialects whose runner retries a failed test in the same job (2 reruns)."""


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Size and rates of the world (defaults: notes §2.3)."""

    n_tests: int = 500
    n_main_commits: int = 200
    days: float = 28.0
    """Span of history: 200 protected commits in four weeks fit a 30-day lookback."""
    rerun_pr: float = 0.35
    rerun_main: float = 0.6
    max_attempts: int = 3
    in_run_reruns: int = 2
    outage_prob: float = 0.01
    outage_low: float = 0.3
    kind_shares: tuple[tuple[Kind, float], ...] = (
        (Kind.FLAKY, 0.08),
        (Kind.ENV_FLAKY, 0.02),
        (Kind.FLAKY_FIXED, 0.02),
        (Kind.NEW_FLAKY, 0.02),
        (Kind.NEW_STABLE, 0.03),
        (Kind.BROKEN_WINDOW, 0.04),
        (Kind.ENV_BROKEN, 0.025),
        (Kind.BRANCH_BROKEN, 0.02),
        (Kind.ALWAYS_FAILING, 0.005),
        (Kind.SKIPPED, 0.02),
    )
    """Shares of each kind; the rest is stable (≈ 12 % flaky, ≈ 9 % broken, as in notes §2.4)."""
    start: datetime = START
    """Time of the first protected commit (the harness's --via-cli mode ends history now)."""
    dialect_shares: tuple[tuple[Dialect, float], ...] = (
        (Dialect.PYTEST, 0.3),
        (Dialect.PYTEST_RERUN, 0.2),
        (Dialect.SUREFIRE, 0.2),
        (Dialect.JEST, 0.3),
    )
    """40 % of tests run under in-run retries, 60 % show only their final result."""


@dataclass(frozen=True, slots=True)
class SimTest:
    """One test with its ground truth."""

    index: int
    kind: Kind
    dialect: Dialect
    suite: str
    class_name: str
    name: str
    flake_rate: float = 0.0
    env: str | None = None
    """The only env of env_flaky / env_broken."""
    start: int = 0
    """Broken window start, fix commit (flaky_fixed) or introduction commit (new_*)."""
    length: int = 0
    """Broken window length in protected commits."""
    pr: int = 0
    """The pull request of branch_broken."""

    @property
    def identity(self) -> tuple[str, str, str]:
        return (self.suite, self.class_name, self.name)


@dataclass(frozen=True, slots=True)
class SimCase:
    """One test in one report: every attempt in order, the last is final."""

    test: int
    outcomes: tuple[Outcome, ...]
    signatures: tuple[str | None, ...]
    flake_failures: int
    """Failed attempts caused by the test's own flakiness (truth; outages excluded)."""


@dataclass(frozen=True, slots=True)
class SimReport:
    """One JUnit file: one dialect's suite in one job (env) of one run attempt."""

    run_id: int
    attempt: int
    env: str
    dialect: Dialect
    cases: tuple[SimCase, ...]
    outage: bool


@dataclass(frozen=True, slots=True)
class SimRunAttempt:
    """One attempt of one workflow run: its legs' reports."""

    run_id: int
    attempt: int
    sha: str
    branch: str
    event: str
    pr_number: int | None
    started_at: datetime
    main_index: int
    """Latest protected commit at this time (the PR's base, or the main commit itself)."""
    reports: tuple[SimReport, ...]


@dataclass(frozen=True, slots=True)
class SimWorld:
    seed: int
    config: SimConfig
    tests: tuple[SimTest, ...]
    runs: tuple[SimRunAttempt, ...]
    main_times: tuple[datetime, ...]
    """Time of each protected commit (index = commit number)."""
    end: datetime


@dataclass(frozen=True, slots=True)
class _Commit:
    sha: str
    branch: str
    event: str
    pr_number: int | None
    at: datetime
    main_index: int
    is_main: bool
    pr_position: int = 0
    pr_size: int = 1

    @property
    def code_index(self) -> float:
        """Position in code history: main i -> i; commit j of PR i -> between i - 1 and i."""
        if self.is_main:
            return float(self.main_index)
        return self.main_index + (self.pr_position + 1) / (self.pr_size + 1)


def simulate(seed: int, config: SimConfig | None = None) -> SimWorld:
    """Build the world for `seed` (deterministic)."""
    cfg = config or SimConfig()
    rng = random.Random(seed)
    commits, pr_sizes = _commits(rng, cfg)
    tests = _tests(rng, cfg, pr_sizes)
    runs: list[SimRunAttempt] = []
    run_id = 10_000 + seed * 100_000
    for commit in commits:
        run_id += 1
        runs.extend(_run(rng, cfg, tests, commit, run_id))
    step = timedelta(days=cfg.days / cfg.n_main_commits)
    main_times = tuple(cfg.start + i * step for i in range(cfg.n_main_commits))
    end = max(r.started_at for r in runs) + timedelta(hours=1)
    return SimWorld(seed, cfg, tuple(tests), tuple(runs), main_times, end)


def _commits(rng: random.Random, cfg: SimConfig) -> tuple[list[_Commit], dict[int, int]]:
    step = timedelta(days=cfg.days / cfg.n_main_commits)
    commits: list[_Commit] = []
    pr_sizes: dict[int, int] = {}
    for i in range(cfg.n_main_commits):
        at = cfg.start + i * step
        if i >= 1:
            size = rng.choice((1, 2, 2, 3))
            pr_sizes[i] = size
            for j in range(size):
                commits.append(
                    _Commit(
                        sha=f"{rng.getrandbits(160):040x}",
                        branch=f"feature/pr-{i}",
                        event="pull_request",
                        pr_number=i,
                        at=at - step + (j + 1) * step / (size + 1),
                        main_index=i - 1,
                        is_main=False,
                        pr_position=j,
                        pr_size=size,
                    )
                )
        commits.append(
            _Commit(f"{rng.getrandbits(160):040x}", DEFAULT_BRANCH, "push", None, at, i, True)
        )
    return commits, pr_sizes


def _tests(rng: random.Random, cfg: SimConfig, pr_sizes: dict[int, int]) -> list[SimTest]:
    n = cfg.n_main_commits
    kinds: list[Kind] = []
    for kind, share in cfg.kind_shares:
        kinds.extend([kind] * round(share * cfg.n_tests))
    kinds.extend([Kind.STABLE] * (cfg.n_tests - len(kinds)))
    rng.shuffle(kinds)
    dialects = [d for d, _ in cfg.dialect_shares]
    weights = [w for _, w in cfg.dialect_shares]
    multi_commit_prs = sorted(pr for pr, size in pr_sizes.items() if size >= 2)
    tests: list[SimTest] = []
    for index, kind in enumerate(kinds):
        dialect = rng.choices(dialects, weights)[0]
        suite, class_name, name = _identity(dialect, index)
        rate = 0.0
        if kind in (Kind.FLAKY, Kind.ENV_FLAKY, Kind.FLAKY_FIXED, Kind.NEW_FLAKY):
            if rng.random() < 0.5:
                rate = math.exp(rng.uniform(math.log(0.003), math.log(0.05)))
            else:
                rate = rng.uniform(0.05, 0.40)
        env = rng.choice(ENVS) if kind in (Kind.ENV_FLAKY, Kind.ENV_BROKEN) else None
        start = length = pr = 0
        if kind in (Kind.BROKEN_WINDOW, Kind.ENV_BROKEN):
            length = rng.choice((1, 1, 2, 3, 5, 8, 15))
            start = rng.randint(2, n - 2)
        elif kind is Kind.FLAKY_FIXED:
            start = rng.randint(int(0.2 * n), int(0.5 * n))
        elif kind in (Kind.NEW_FLAKY, Kind.NEW_STABLE):
            start = rng.randint(int(0.3 * n), int(0.8 * n))
        elif kind is Kind.BRANCH_BROKEN:
            pr = rng.choice(multi_commit_prs)
        tests.append(
            SimTest(index, kind, dialect, suite, class_name, name, rate, env, start, length, pr)
        )
    return tests


def _identity(dialect: Dialect, index: int) -> tuple[str, str, str]:
    module = index // 25
    if dialect is Dialect.SUREFIRE:
        cls = f"com.acme.sim.Module{module}Test"
        return (cls, cls, f"testCase{index}")
    if dialect is Dialect.JEST:
        title = f"module{module} case {index}"
        return (f"__tests__/module{module}.test.js", title, title)
    suite = "pytest" if dialect is Dialect.PYTEST else "pytest-rerun"
    return (suite, f"tests.test_module{module}", f"test_case_{index}")


# --- outcomes ----------------------------------------------------------------------------


def _exists(test: SimTest, commit: _Commit) -> bool:
    if test.kind in (Kind.NEW_FLAKY, Kind.NEW_STABLE):
        return commit.code_index > test.start - 1
    return True


def _broken(test: SimTest, commit: _Commit, env: str) -> bool:
    kind = test.kind
    if kind is Kind.ALWAYS_FAILING:
        return True
    if kind is Kind.BRANCH_BROKEN:
        return (
            not commit.is_main
            and commit.pr_number == test.pr
            and commit.pr_position < commit.pr_size - 1
        )
    if kind not in (Kind.BROKEN_WINDOW, Kind.ENV_BROKEN):
        return False
    if kind is Kind.ENV_BROKEN and env != test.env:
        return False
    a, k = test.start, test.length
    if commit.is_main:
        return a <= commit.main_index < a + k
    pr = commit.main_index + 1
    last = commit.pr_position == commit.pr_size - 1
    if pr == a:
        return last  # the breaking change lands with the PR's last commit
    return a + 1 <= pr <= a + k and not (pr == a + k and last)  # PR a + k fixes it last


def _flake_rate(test: SimTest, commit: _Commit, env: str) -> float:
    kind = test.kind
    if kind in (Kind.FLAKY, Kind.NEW_FLAKY):
        return test.flake_rate
    if kind is Kind.ENV_FLAKY:
        return test.flake_rate if env == test.env else 0.0
    if kind is Kind.FLAKY_FIXED:
        return test.flake_rate if commit.code_index < test.start else 0.0
    return 0.0


def _case(
    rng: random.Random,
    cfg: SimConfig,
    test: SimTest,
    commit: _Commit,
    env: str,
    outage_sig: str | None,
) -> SimCase:
    if test.kind is Kind.SKIPPED:
        return SimCase(test.index, (Outcome.SKIPPED,), (None,), 0)
    broken = _broken(test, commit, env)
    rate = _flake_rate(test, commit, env)
    reruns = cfg.in_run_reruns if test.dialect in RETRYING else 0
    outcomes: list[Outcome] = []
    signatures: list[str | None] = []
    flake_failures = 0
    for _ in range(reruns + 1):
        if outage_sig is not None:
            outcomes.append(Outcome.ERROR)
            signatures.append(outage_sig)
        elif broken:
            outcomes.append(Outcome.FAILED)
            signatures.append(f"broken-{test.index}")
        elif rate > 0 and rng.random() < rate:
            outcomes.append(Outcome.FAILED)
            signatures.append(f"flaky-{test.index}")
            flake_failures += 1
        else:
            outcomes.append(Outcome.PASSED)
            signatures.append(None)
            break
    return SimCase(test.index, tuple(outcomes), tuple(signatures), flake_failures)


_PASSED_CASES: dict[int, SimCase] = {}
"""Shared passing cases of stable tests (the bulk of every report; saves time and memory)."""


def _passed_case(index: int) -> SimCase:
    case = _PASSED_CASES[index] = SimCase(index, (Outcome.PASSED,), (None,), 0)
    return case


def _run(
    rng: random.Random,
    cfg: SimConfig,
    tests: Sequence[SimTest],
    commit: _Commit,
    run_id: int,
) -> Iterator[SimRunAttempt]:
    present = [t for t in tests if _exists(t, commit)]
    legs = list(ENVS)
    started = commit.at
    rerun_chance = cfg.rerun_main if commit.is_main else cfg.rerun_pr
    for attempt in range(1, cfg.max_attempts + 1):
        reports: list[SimReport] = []
        red: list[str] = []
        for env in legs:
            outage = False
            hit: dict[int, str] = {}
            if rng.random() < cfg.outage_prob:
                # An outage fails a share of the leg's tests with one of a few causes, each
                # with its own failure signature (timeout, refused connection, DNS).
                outage = True
                share = rng.uniform(cfg.outage_low, 1.0)
                causes = [
                    f"infra-{cause}-{run_id}-{attempt}" for cause in ("timeout", "conn", "dns")
                ]
                hit = {t.index: rng.choice(causes) for t in present if rng.random() < share}
            by_dialect: dict[Dialect, list[SimCase]] = {}
            for test in present:
                sig = hit.get(test.index)
                if sig is None and test.kind in STABLE_KINDS:
                    case = _PASSED_CASES.get(test.index) or _passed_case(test.index)
                else:
                    case = _case(rng, cfg, test, commit, env, sig)
                by_dialect.setdefault(test.dialect, []).append(case)
            leg_red = False
            for dialect in Dialect:
                cases = by_dialect.get(dialect)
                if not cases:
                    continue
                leg_red = leg_red or any(c.outcomes[-1] in FAILING for c in cases)
                reports.append(SimReport(run_id, attempt, env, dialect, tuple(cases), outage))
            if leg_red:
                red.append(env)
        yield SimRunAttempt(
            run_id=run_id,
            attempt=attempt,
            sha=commit.sha,
            branch=commit.branch,
            event=commit.event,
            pr_number=commit.pr_number,
            started_at=started,
            main_index=commit.main_index,
            reports=tuple(reports),
        )
        if not red or rng.random() >= rerun_chance:
            return
        legs = red
        started = started + timedelta(minutes=rng.uniform(20, 240))


# --- files -------------------------------------------------------------------------------


def write_world(world: SimWorld, out_dir: Path) -> None:
    """Write JUnit files, manifest.jsonl and truth.json under `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tests = world.tests
    lines: list[str] = []
    for run in world.runs:
        by_env: dict[str, list[str]] = {}
        for report in run.reports:
            rel = f"junit/{run.run_id}/{run.attempt}/{report.env}/{report.dialect.value}.xml"
            path = out_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(_junit_xml(report, tests), encoding="utf-8")
            by_env.setdefault(report.env, []).append(rel)
        for env, paths in by_env.items():
            lines.append(
                json.dumps(
                    {
                        "repo": REPO,
                        "run_id": run.run_id,
                        "attempt": run.attempt,
                        "sha": run.sha,
                        "branch": run.branch,
                        "started_at": run.started_at.isoformat(),
                        "workflow": WORKFLOW,
                        "job": env,
                        "event": run.event,
                        "pr_number": run.pr_number,
                        "paths": paths,
                    }
                )
            )
    (out_dir / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out_dir / "truth.json").write_text(json.dumps(truth(world), indent=1), encoding="utf-8")


def truth(world: SimWorld) -> dict[str, object]:
    """Ground truth: the world's parameters and every test's identity and kind."""
    return {
        "seed": world.seed,
        "repo": REPO,
        "default_branch": DEFAULT_BRANCH,
        "end": world.end.isoformat(),
        "tests": [
            {
                "suite": t.suite,
                "classname": t.class_name,
                "name": t.name,
                "kind": t.kind.value,
                "dialect": t.dialect.value,
                "flake_rate": round(t.flake_rate, 5),
                "env": t.env,
                "start": t.start,
                "length": t.length,
                "pr": t.pr,
            }
            for t in world.tests
        ],
    }


def _failure_xml(tag: str, signature: str | None) -> str:
    message = f"AssertionError: check failed ({signature})"
    return f'<{tag} message={quoteattr(message)} type="AssertionError">{escape(message)}</{tag}>'


def _junit_xml(report: SimReport, tests: Sequence[SimTest]) -> str:
    failures = sum(1 for c in report.cases if c.outcomes[-1] in FAILING)
    skipped = sum(1 for c in report.cases if c.outcomes[-1] is Outcome.SKIPPED)
    parts: list[str] = ['<?xml version="1.0" encoding="UTF-8"?>']
    dialect = report.dialect
    if dialect is Dialect.SUREFIRE:
        parts.append("<testsuites>")
        by_class: dict[str, list[SimCase]] = {}
        for case in report.cases:
            by_class.setdefault(tests[case.test].class_name, []).append(case)
        for cls, cases in sorted(by_class.items()):
            parts.append(f'<testsuite name="{cls}" tests="{len(cases)}">')
            parts.extend(_surefire_case(tests[c.test], c) for c in cases)
            parts.append("</testsuite>")
        parts.append("</testsuites>")
        return "\n".join(parts)
    root = "jest tests" if dialect is Dialect.JEST else "pytest tests"
    parts.append(f'<testsuites name="{root}" tests="{len(report.cases)}" failures="{failures}">')
    by_suite: dict[str, list[SimCase]] = {}
    for case in report.cases:
        by_suite.setdefault(tests[case.test].suite, []).append(case)
    for suite, cases in sorted(by_suite.items()):
        parts.append(
            f'<testsuite name={quoteattr(suite)} tests="{len(cases)}" '
            f'failures="{failures}" skipped="{skipped}">'
        )
        for case in cases:
            test = tests[case.test]
            attrs = f"classname={quoteattr(test.class_name)} name={quoteattr(test.name)}"
            if dialect is Dialect.PYTEST_RERUN:
                # pytest-rerunfailures >= 16.6.1: earlier attempts are empty testcases.
                for _ in case.outcomes[:-1]:
                    parts.append(f'<testcase {attrs} time="0.010"/>')
            parts.append(_final_case(attrs, case, dialect))
        parts.append("</testsuite>")
    parts.append("</testsuites>")
    return "\n".join(parts)


def _final_case(attrs: str, case: SimCase, dialect: Dialect) -> str:
    final = case.outcomes[-1]
    if final is Outcome.PASSED:
        return f'<testcase {attrs} time="0.010"/>'
    if final is Outcome.SKIPPED:
        skip_type = ' type="pytest.skip"' if dialect is not Dialect.JEST else ""
        return f'<testcase {attrs} time="0"><skipped{skip_type} message="disabled"/></testcase>'
    tag = "error" if final is Outcome.ERROR else "failure"
    return f'<testcase {attrs} time="0.010">{_failure_xml(tag, case.signatures[-1])}</testcase>'


def _surefire_case(test: SimTest, case: SimCase) -> str:
    attrs = f"name={quoteattr(test.name)} classname={quoteattr(test.class_name)}"
    final = case.outcomes[-1]
    if final is Outcome.SKIPPED:
        return f'<testcase {attrs} time="0"><skipped/></testcase>'
    if final is Outcome.PASSED:
        flaky = [
            _failure_xml("flakyError" if o is Outcome.ERROR else "flakyFailure", s)
            for o, s in zip(case.outcomes[:-1], case.signatures[:-1], strict=True)
        ]
        return f'<testcase {attrs} time="0.010">{"".join(flaky)}</testcase>'
    # Surefire writes the first failure as the main element and each rerun as rerunFailure.
    first_tag = "error" if case.outcomes[0] is Outcome.ERROR else "failure"
    children = [_failure_xml(first_tag, case.signatures[0])]
    for o, s in zip(case.outcomes[1:], case.signatures[1:], strict=True):
        children.append(_failure_xml("rerunError" if o is Outcome.ERROR else "rerunFailure", s))
    return f'<testcase {attrs} time="0.010">{"".join(children)}</testcase>'


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tests", type=int, default=SimConfig().n_tests)
    parser.add_argument("--commits", type=int, default=SimConfig().n_main_commits)
    args = parser.parse_args(argv)
    world = simulate(args.seed, SimConfig(n_tests=args.tests, n_main_commits=args.commits))
    write_world(world, args.out)
    n_reports = sum(len(r.reports) for r in world.runs)
    print(
        f"seed {args.seed}: {len(world.runs)} run attempts, {n_reports} JUnit files -> {args.out}"
    )


if __name__ == "__main__":
    main()
