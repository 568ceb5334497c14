"""Evaluation harness: FlakeGuard's detector vs the spec's naive formula on simulated CI worlds.

For each seed, `flaky_sim.simulate(seed)` builds a world with known ground truth. Two modes:

- in-process (default): ExecutionRecords are built straight from the simulation; at every
  checkpoint (each `--checkpoint-every` protected commits, and at the end) every test is scored
  with `score_test` and its quarantine advanced with `decide`, exactly as runs-analyze would.
- `--via-cli`: the world is written as JUnit + manifest and fed through the product's CLI
  (`flakeguard import-junit --manifest`, `flakeguard analyze --repo`, `flakeguard flaky --repo
  R --all --json`); only the end-of-history state is measured (no "ever" metrics). The
  timeline is shifted to end now, because the CLI scores against the wall clock.

Metrics (notes §2.3): precision / recall / F1 of "quarantined at the end" on *detectable* flaky
tests (flaky kinds with >= 2 failures caused by their flakiness) against the negatives (stable,
new_stable, fixed flaky, skipped, every broken kind); recall over all flaky tests; the share of
broken kinds (broken window, env-broken, branch-broken, always failing) quarantined at *any*
checkpoint; the same for stable tests; time to detect (protected commits from onset to the
first checkpoint in quarantine, median and p90); and the spec's naive formula
(0.4 raw failure rate + 0.3 alternation + 0.2 recency + 0.1 branch diversity on raw history)
at its best threshold, tuned on a separate seed (`--tune-seed`), never on a reported one.

    python bench/flaky_eval.py                    # seeds 101-105, tuning seed 7
    python bench/flaky_eval.py --seeds 1 2 --via-cli
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from flakeguard.core.models import FAILING, RAN, ExecutionRecord, test_key
from flakeguard.core.quarantine import (
    QuarantinePolicy,
    QuarantineState,
    decide,
)
from flakeguard.core.scoring import ScoringPolicy, infra_clusters, score_test
from flaky_sim import (  # the simulator lives beside this script
    BROKEN_KINDS,
    DEFAULT_BRANCH,
    FLAKY_KINDS,
    REPO,
    STABLE_KINDS,
    WORKFLOW,
    Kind,
    SimConfig,
    SimWorld,
    simulate,
    write_world,
)


@dataclass(frozen=True, slots=True)
class NaivePolicy:
    """The spec's formula taken literally (worker-spec "Analysis Algorithm")."""

    weight_failure_rate: float = 0.4
    weight_alternation: float = 0.3
    weight_recency: float = 0.2
    weight_branch_diversity: float = 0.1
    recency_tau_days: float = 7.0
    """Recency: failure rate weighted by exp(-age / 7 days) ("weight recent failures more")."""
    branch_saturation: int = 5
    """Branch diversity: distinct branches with a failure / 5, capped at 1."""


@dataclass(frozen=True, slots=True)
class SeedResult:
    seed: int
    positives: int
    precision: float
    recall: float
    f1: float
    recall_all: float
    broken_false_quarantine: float
    stable_false_flag: float
    ttd_median: float
    ttd_p90: float
    naive_f1: float
    naive_threshold: float
    elapsed_s: float


def build_records(world: SimWorld) -> dict[str, list[ExecutionRecord]]:
    """Every attempt of every test, per test key, sorted by time (what ingestion stores)."""
    keys = [test_key(t.suite, t.class_name, t.name, None) for t in world.tests]
    out: dict[str, list[ExecutionRecord]] = {k: [] for k in keys}
    for run in world.runs:
        is_default = run.branch == DEFAULT_BRANCH
        for report in run.reports:
            ran = [c for c in report.cases if c.outcomes[-1] in RAN]
            failing = sum(1 for c in ran if c.outcomes[-1] in FAILING)
            share = failing / len(ran) if ran else 0.0
            env_key = f"{WORKFLOW}/{report.env}"
            for case in report.cases:
                last = len(case.outcomes) - 1
                bucket = out[keys[case.test]]
                key = keys[case.test]
                sigs = case.signatures
                # Positional arguments: this loop builds ~1.5 M records per seed.
                bucket.extend(
                    ExecutionRecord(
                        key,
                        env_key,
                        run.run_id,
                        run.attempt,
                        k,
                        k == last,
                        run.sha,
                        run.branch,
                        is_default,
                        outcome,
                        run.started_at,
                        sigs[k],
                        share,
                    )
                    for k, outcome in enumerate(case.outcomes)
                )
    for records in out.values():
        records.sort(key=lambda r: (r.at, r.run_id, r.run_attempt, r.retry_index))
    return out


def flake_failures(world: SimWorld) -> list[int]:
    """Observed failures caused by each test's own flakiness (truth, outages excluded)."""
    counts = [0] * len(world.tests)
    for run in world.runs:
        for report in run.reports:
            for case in report.cases:
                counts[case.test] += case.flake_failures
    return counts


def naive_score(records: Sequence[ExecutionRecord], now: datetime, lookback_days: int) -> float:
    """0.4 failure rate + 0.3 alternation + 0.2 recency + 0.1 branch diversity, on raw history."""
    policy = NaivePolicy()
    start = now - timedelta(days=lookback_days)
    window = [r for r in records if start <= r.at <= now and r.outcome in RAN]
    if not window:
        return 0.0
    fails = [r.outcome in FAILING for r in window]
    failure_rate = sum(fails) / len(fails)
    flips = sum(1 for a, b in itertools.pairwise(fails) if a != b)
    alternation = flips / (len(fails) - 1) if len(fails) > 1 else 0.0
    weights = [
        math.exp(-(now - r.at).total_seconds() / 86_400 / policy.recency_tau_days) for r in window
    ]
    recency = sum(w for w, f in zip(weights, fails, strict=True) if f) / sum(weights)
    failing_branches = {r.branch for r, f in zip(window, fails, strict=True) if f}
    diversity = min(1.0, len(failing_branches) / policy.branch_saturation)
    return (
        policy.weight_failure_rate * failure_rate
        + policy.weight_alternation * alternation
        + policy.weight_recency * recency
        + policy.weight_branch_diversity * diversity
    )


def _labels(world: SimWorld, failures: Sequence[int]) -> tuple[set[int], set[int]]:
    positives = {t.index for t in world.tests if t.kind in FLAKY_KINDS and failures[t.index] >= 2}
    negatives = {t.index for t in world.tests if t.kind not in FLAKY_KINDS}
    return positives, negatives


def _prf(
    predicted: set[int], positives: set[int], negatives: set[int]
) -> tuple[float, float, float]:
    tp = len(predicted & positives)
    fp = len(predicted & negatives)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / len(positives) if positives else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def tune_naive_threshold(seed: int, config: SimConfig, lookback_days: int) -> float:
    """The naive formula's F1-best threshold on a seed that is never reported."""
    world = simulate(seed, config)
    records = build_records(world)
    positives, negatives = _labels(world, flake_failures(world))
    keys = list(records)
    scores = [naive_score(records[k], world.end, lookback_days) for k in keys]
    best = (-1.0, 0.0)
    for step in range(201):
        theta = step * 0.0025
        predicted = {i for i, s in enumerate(scores) if s >= theta and s > 0}
        best = max(best, (_prf(predicted, positives, negatives)[2], theta))
    return best[1]


@dataclass(frozen=True, slots=True)
class NaiveInputs:
    """The naive formula's end-of-history scores and the labels, per test index."""

    scores: tuple[float, ...]
    positives: frozenset[int]
    negatives: frozenset[int]

    def f1(self, threshold: float) -> float:
        predicted = {i for i, s in enumerate(self.scores) if s >= threshold and s > 0}
        return _prf(predicted, set(self.positives), set(self.negatives))[2]


def evaluate_in_process(
    seed: int,
    config: SimConfig,
    scoring: ScoringPolicy,
    quarantine: QuarantinePolicy,
    checkpoint_every: int,
) -> tuple[SeedResult, NaiveInputs]:
    started = time.perf_counter()
    world = simulate(seed, config)
    records = build_records(world)
    keys = list(records)
    times = {k: [r.at for r in records[k]] for k in keys}
    failures = flake_failures(world)
    positives, negatives = _labels(world, failures)
    checkpoints = [
        (i, world.main_times[i] + timedelta(minutes=1))
        for i in range(checkpoint_every, config.n_main_commits, checkpoint_every)
    ]
    checkpoints.append((config.n_main_commits, world.end))
    states: dict[int, QuarantineState | None] = {}
    ever: set[int] = set()
    first_seen: dict[int, int] = {}
    window = timedelta(days=scoring.lookback_days)
    # Incident clusters are per upload, so one pass over the whole history finds them all.
    whole = replace(scoring, lookback_days=10_000)
    infra = infra_clusters(records, now=world.end, policy=whole)
    # Times of failures that can be evidence (not outage uploads, not incident clusters): a
    # test without one in the window and without a quarantine scores healthy and stays
    # unquarantined, so scoring it can be skipped without changing any result.
    usable_failures = {
        k: [
            r.at
            for r in records[k]
            if r.outcome in FAILING
            and r.upload_failed_share <= scoring.infra_failed_share
            and (r.run_id, r.run_attempt, r.env_key, r.signature) not in infra
        ]
        for k in keys
    }
    for commit_index, now in checkpoints:
        for i, key in enumerate(keys):
            fails = usable_failures[key]
            if states.get(i) is None and bisect_right(fails, now) == bisect_right(
                fails, now - window
            ):
                continue
            hist = records[key]
            end = bisect_right(times[key], now)
            lo = bisect_right(times[key], now - window)
            rollup = score_test(key, hist[lo:end], now=now, policy=scoring, infra=infra)[-1]
            state = states.get(i)
            since = state.since if state is not None and state.is_active else now - window
            start = bisect_right(times[key], since - timedelta(microseconds=1))
            state = decide(state, rollup, hist[start:end], now=now, policy=quarantine)
            states[i] = state
            if state is not None and state.is_active:
                ever.add(i)
                first_seen.setdefault(i, commit_index)
    predicted = {i for i, s in states.items() if s is not None and s.is_active}
    precision, recall, f1 = _prf(predicted, positives, negatives)
    flaky_all = {t.index for t in world.tests if t.kind in FLAKY_KINDS}
    broken = {t.index for t in world.tests if t.kind in BROKEN_KINDS}
    stable = {t.index for t in world.tests if t.kind in STABLE_KINDS}
    ttd = sorted(
        first_seen[i] - (world.tests[i].start if world.tests[i].kind is Kind.NEW_FLAKY else 0)
        for i in positives
        if i in first_seen
    )
    naive = [naive_score(records[k], world.end, scoring.lookback_days) for k in keys]
    result = SeedResult(
        seed=seed,
        positives=len(positives),
        precision=precision,
        recall=recall,
        f1=f1,
        recall_all=len(predicted & flaky_all) / len(flaky_all) if flaky_all else 1.0,
        broken_false_quarantine=len(ever & broken) / len(broken) if broken else 0.0,
        stable_false_flag=len(ever & stable) / len(stable) if stable else 0.0,
        ttd_median=statistics.median(ttd) if ttd else math.nan,
        ttd_p90=ttd[min(len(ttd) - 1, int(0.9 * len(ttd)))] if ttd else math.nan,
        naive_f1=math.nan,
        naive_threshold=math.nan,
        elapsed_s=time.perf_counter() - started,
    )
    return result, NaiveInputs(tuple(naive), frozenset(positives), frozenset(negatives))


def evaluate_via_cli(
    seed: int,
    config: SimConfig,
    scoring: ScoringPolicy,
    naive_threshold: float,
    flakeguard: str,
) -> SeedResult:
    """Feed the world through the product's CLI and read `flaky --all --json` at the end."""
    started = time.perf_counter()
    span = timedelta(days=config.days)
    shifted = replace(config, start=datetime.now(UTC) - span - timedelta(hours=2))
    world = simulate(seed, shifted)
    failures = flake_failures(world)
    positives, negatives = _labels(world, failures)
    with tempfile.TemporaryDirectory(prefix=f"flaky-eval-{seed}-") as tmp:
        out = Path(tmp)
        write_world(world, out / "world")
        env = dict(os.environ, FLAKEGUARD_DATA_DIR=str(out / "data"))
        env.pop("DATABASE_URL", None)
        env.pop("REDIS_URL", None)

        def run(*args: str) -> str:
            done = subprocess.run(
                [flakeguard, *args], env=env, capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                raise SystemExit(f"{flakeguard} {' '.join(args)} failed:\n{done.stderr[-4000:]}")
            return done.stdout

        run("import-junit", "--manifest", str(out / "world" / "manifest.jsonl"))
        run("analyze", "--repo", REPO)
        listed = json.loads(run("flaky", "--repo", REPO, "--all", "--json"))
    by_identity = {(row["class_name"], row["name"]): row for row in listed}
    predicted = {
        t.index
        for t in world.tests
        if by_identity.get((t.class_name, t.name), {}).get("quarantined")
    }
    precision, recall, f1 = _prf(predicted, positives, negatives)
    flaky_all = {t.index for t in world.tests if t.kind in FLAKY_KINDS}
    broken = {t.index for t in world.tests if t.kind in BROKEN_KINDS}
    stable = {t.index for t in world.tests if t.kind in STABLE_KINDS}
    records = build_records(world)
    naive = [naive_score(records[k], world.end, scoring.lookback_days) for k in records]
    naive_predicted = {i for i, s in enumerate(naive) if s >= naive_threshold and s > 0}
    return SeedResult(
        seed=seed,
        positives=len(positives),
        precision=precision,
        recall=recall,
        f1=f1,
        recall_all=len(predicted & flaky_all) / len(flaky_all) if flaky_all else 1.0,
        broken_false_quarantine=len(predicted & broken) / len(broken) if broken else 0.0,
        stable_false_flag=len(predicted & stable) / len(stable) if stable else 0.0,
        ttd_median=math.nan,
        ttd_p90=math.nan,
        naive_f1=_prf(naive_predicted, positives, negatives)[2],
        naive_threshold=naive_threshold,
        elapsed_s=time.perf_counter() - started,
    )


def render_table(results: Sequence[SeedResult], *, via_cli: bool) -> str:
    broken_label = "broken quarantined (end)" if via_cli else "broken ever quarantined"
    stable_label = "stable flagged (end)" if via_cli else "stable ever flagged"
    head = (
        f"| seed | detectable | P | R | F1 | recall (all flaky) | {broken_label} | "
        f"{stable_label} | TTD median / p90 (commits) | naive F1 (θ) | F1 − naive |"
    )
    lines = [head, "|" + "---|" * 11]

    def row(label: str, r: SeedResult) -> str:
        return (
            f"| {label} | {r.positives} | {r.precision:.3f} | {r.recall:.3f} | {r.f1:.3f} | "
            f"{r.recall_all:.3f} | {r.broken_false_quarantine:.3f} | {r.stable_false_flag:.3f} | "
            f"{r.ttd_median:.0f} / {r.ttd_p90:.0f} | {r.naive_f1:.3f} ({r.naive_threshold:.4f}) | "
            f"{r.f1 - r.naive_f1:+.3f} |"
        )

    lines.extend(row(str(r.seed), r) for r in results)
    mean = SeedResult(
        seed=0,
        positives=round(statistics.mean(r.positives for r in results)),
        precision=statistics.mean(r.precision for r in results),
        recall=statistics.mean(r.recall for r in results),
        f1=statistics.mean(r.f1 for r in results),
        recall_all=statistics.mean(r.recall_all for r in results),
        broken_false_quarantine=statistics.mean(r.broken_false_quarantine for r in results),
        stable_false_flag=statistics.mean(r.stable_false_flag for r in results),
        ttd_median=statistics.mean(r.ttd_median for r in results),
        ttd_p90=statistics.mean(r.ttd_p90 for r in results),
        naive_f1=statistics.mean(r.naive_f1 for r in results),
        naive_threshold=results[0].naive_threshold,
        elapsed_s=sum(r.elapsed_s for r in results),
    )
    lines.append(row("**mean**", mean))
    return "\n".join(lines)


def _policies(overrides: Sequence[str]) -> tuple[ScoringPolicy, QuarantinePolicy]:
    """Default policies with `scoring.X=V` / `quarantine.X=V` overrides (for tuning runs)."""
    scoring_changes: dict[str, float] = {}
    quarantine_changes: dict[str, float] = {}
    for item in overrides:
        target, _, value = item.partition("=")
        which, _, name = target.partition(".")
        changes = scoring_changes if which == "scoring" else quarantine_changes
        changes[name] = int(value) if value.lstrip("-").isdigit() else float(value)
    scoring = replace(ScoringPolicy(), **scoring_changes)  # type: ignore[arg-type]
    return scoring, replace(QuarantinePolicy(), **quarantine_changes)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="FlakeGuard flaky-detection evaluation")
    parser.add_argument("--seeds", type=int, nargs="+", default=[101, 102, 103, 104, 105])
    parser.add_argument("--tune-seed", type=int, default=7)
    parser.add_argument("--tests", type=int, default=SimConfig().n_tests)
    parser.add_argument("--commits", type=int, default=SimConfig().n_main_commits)
    parser.add_argument("--checkpoint-every", type=int, default=10)
    parser.add_argument(
        "--stress",
        action="store_true",
        help="notes §2.3 stress variant: outages in 2 %% of legs hitting 5-100 %% of tests",
    )
    parser.add_argument("--no-reruns", action="store_true", help="no re-run attempts at all")
    parser.add_argument("--via-cli", action="store_true")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="POLICY.FIELD=VALUE",
        help="override a policy default, e.g. quarantine.alpha=0.01 or scoring.flaky_score=0.4",
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="seeds in parallel")
    parser.add_argument("--flakeguard", default="flakeguard", help="CLI executable (--via-cli)")
    args = parser.parse_args(argv)
    if args.tune_seed in args.seeds:
        parser.error("the tuning seed must not be a reported seed")
    config = SimConfig(n_tests=args.tests, n_main_commits=args.commits)
    if args.stress:
        config = replace(config, outage_prob=0.02, outage_low=0.05)
    if args.no_reruns:
        config = replace(config, rerun_pr=0.0, rerun_main=0.0)
    scoring, quarantine = _policies(args.set)
    started = time.perf_counter()
    results: list[SeedResult] = []
    if args.via_cli:
        theta = tune_naive_threshold(args.tune_seed, config, scoring.lookback_days)
        for seed in args.seeds:
            results.append(evaluate_via_cli(seed, config, scoring, theta, args.flakeguard))
    else:
        jobs = [(seed, config, scoring, quarantine, args.checkpoint_every) for seed in args.seeds]
        with multiprocessing.get_context("spawn").Pool(max(1, args.jobs)) as pool:
            tuned = pool.apply_async(
                tune_naive_threshold, (args.tune_seed, config, scoring.lookback_days)
            )
            evaluated = pool.starmap(evaluate_in_process, jobs)
            theta = tuned.get()
        results = [
            replace(result, naive_f1=naive.f1(theta), naive_threshold=theta)
            for result, naive in evaluated
        ]
    for result in results:
        print(f"seed {result.seed}: F1 {result.f1:.3f} ({result.elapsed_s:.1f} s)", file=sys.stderr)
    mode = "via CLI" if args.via_cli else "in-process"
    mode += ", stress outages" if args.stress else ""
    mode += ", no re-runs" if args.no_reruns else ""
    print(
        f"FlakeGuard vs spec formula, {mode}; {args.tests} tests x {args.commits} protected "
        f"commits, 3 OS legs; naive θ tuned on seed {args.tune_seed}; "
        f"{time.perf_counter() - started:.0f} s\n"
    )
    print(render_table(results, via_cli=args.via_cli))


if __name__ == "__main__":
    main()
