"""JUnit parser throughput: our `ReportReader` beside bare hardened `lxml.etree.iterparse`.

Generates a ~50 MB report (200,000 test cases in 2,000 suites: 90 % pass, 5 % fail with 4-12
frame stacks and output, 2 % error, 3 % skipped) into a temp dir, then runs each parser in
fresh subprocesses (N runs, interleaved) and prints MB/s, cases/s, peak RSS and the ratio
ours/bare by median and by best run (the best is steadier when neighbours load the machine).
Targets (issue 3): throughput >= 0.7 of bare lxml, peak RSS < 80 MB.

A third variant, "floor", is bare plus reading each testcase's attributes and nothing else:
the part of the gap that any parser producing per-case results pays before doing any work.

    python bench/parse.py                 # generate, measure, print
    python bench/parse.py --runs 5        # more runs
    python bench/parse.py --profile       # cProfile of our parser on the same file (top 25)
    python bench/parse.py --keep DIR      # keep the generated file in DIR
    python bench/parse.py --instructions  # also count instructions under valgrind (~3 min)

Wall and CPU times move by ±30 % on a shared VM, with the neighbours. `--instructions` runs
bare and ours once more under `valgrind --tool=callgrind` and prints the ratio of executed
instructions (each minus a run that only imports): repeatable to ~0.5 %, whatever the load,
but blind to cache misses and branch mispredictions, which cost ours more per instruction
than bare (so the instruction ratio is an upper bound of the time ratio).

Our parser runs its compiled loop (`flakeguard.core._junit_speedups`) when it is built; the
line "ours" says which loop ran, and `--pure` measures the pure-Python loop instead.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

SEED = 20240601
KINDS = ("bare", "floor", "ours")
SUITES = 2_000
CASES_PER_SUITE = 100


def _frames(rng: random.Random, count: int) -> str:
    lines = []
    for _ in range(count):
        pkg = rng.choice(["com.acme.shop", "org.example.billing", "io.flake.core"])
        cls = rng.choice(["CartService", "InvoiceRepo", "Gateway", "Scheduler"])
        meth = rng.choice(["apply", "load", "commit", "run", "handle"])
        lines.append(f"\tat {pkg}.{cls}.{meth}({cls}.java:{rng.randint(10, 900)})")
    return "\n".join(lines)


def generate(path: Path) -> int:
    """Write the benchmark report to `path`; return its size in bytes."""
    rng = random.Random(SEED)
    with path.open("w", encoding="utf-8") as out:
        out.write('<?xml version="1.0" encoding="UTF-8"?>\n<testsuites name="bench">\n')
        for s in range(SUITES):
            cls = f"com.acme.module{s % 97}.Feature{s}Test"
            out.write(
                f'  <testsuite name="{cls}" tests="{CASES_PER_SUITE}" failures="0" errors="0"'
                f' skipped="0" time="12.5" timestamp="2024-06-01T10:00:00" hostname="ci-42">\n'
            )
            for c in range(CASES_PER_SUITE):
                roll = rng.random()
                time_s = f"{rng.random() * 2:.3f}"
                head = (
                    f'    <testcase name="test_case_{c}_does_something" classname="{cls}"'
                    f' time="{time_s}"'
                )
                if roll < 0.90:
                    out.write(head + "/>\n")
                elif roll < 0.95:
                    stack = _frames(rng, rng.randint(4, 12))
                    out.write(
                        head + ">\n"
                        f'      <failure message="expected: &lt;{c}&gt; but was: &lt;{c + 1}&gt;"'
                        ' type="org.opentest4j.AssertionFailedError">'
                        f"org.opentest4j.AssertionFailedError: expected: &lt;{c}&gt; but was"
                        f": &lt;{c + 1}&gt;\n{stack}\n</failure>\n"
                        "      <system-out><![CDATA["
                        + "log line with some details of the run\n" * rng.randint(20, 50)
                        + "]]></system-out>\n    </testcase>\n"
                    )
                elif roll < 0.97:
                    stack = _frames(rng, rng.randint(4, 12))
                    out.write(
                        head + ">\n"
                        '      <error message="Connection refused (after 3 retries)"'
                        ' type="java.net.ConnectException">'
                        f"java.net.ConnectException: Connection refused\n{stack}\n</error>\n"
                        "      <system-err>"
                        + "WARN retrying connection to db:5432\n" * rng.randint(10, 30)
                        + "</system-err>\n    </testcase>\n"
                    )
                else:
                    out.write(
                        head + '>\n      <skipped message="disabled on CI"/>\n    </testcase>\n'
                    )
            out.write("  </testsuite>\n")
        out.write("</testsuites>\n")
    return path.stat().st_size


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _testcase_ends(stream: IO[bytes]) -> Iterator[tuple[str, Any]]:
    """Bare hardened `iterparse`: "end" events of `<testcase>` only (the notes' recipe)."""
    from lxml import etree

    events: Iterator[tuple[str, Any]] = etree.iterparse(
        stream,
        events=("end",),
        tag="testcase",
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        recover=False,
    )
    return events


def run_bare(path: Path) -> int:
    cases = 0
    with path.open("rb") as stream:
        for _event, elem in _testcase_ends(stream):
            cases += 1
            elem.clear(keep_tail=False)
            parent = elem.getparent()
            if parent is not None:
                while elem.getprevious() is not None:
                    del parent[0]
    return cases


def run_floor(path: Path) -> int:
    """`run_bare` plus reading each testcase's attributes: what any parser must add.

    Not a parser (nothing is kept): it shows how much of the bare figure is left for the
    work of a real one (identity, outcome, retries, signatures, one result per case). A
    loop of its own, not a flag in `run_bare`, so the bare figure pays for no test.
    """
    cases = 0
    with path.open("rb") as stream:
        for _event, elem in _testcase_ends(stream):
            cases += 1
            elem.keys()
            elem.values()
            elem.clear(keep_tail=False)
            parent = elem.getparent()
            if parent is not None:
                while elem.getprevious() is not None:
                    del parent[0]
    return cases


def run_ours(path: Path, speedups: bool = True) -> int:
    from flakeguard.core.junit import ReportReader

    with path.open("rb") as stream:
        reader = ReportReader(stream, path.name, speedups=speedups)
        attempts = 0
        for case in reader:
            attempts += len(case.attempts)
    if reader.problem is not None:
        raise SystemExit(f"unexpected problem: {reader.problem.reason}")
    return attempts


def run_pure(path: Path) -> int:
    return run_ours(path, speedups=False)


def run_nothing(path: Path) -> int:
    """The imports alone: the baseline subtracted from instruction counts."""
    return 0


def child(kind: str, path: Path) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    baseline_mb = _peak_rss_mb()
    runner = {
        "ours": run_ours,
        "pure": run_pure,
        "bare": run_bare,
        "floor": run_floor,
        "imports-lxml": run_nothing,
        "imports-ours": run_nothing,
    }[kind]
    import lxml.etree  # noqa: F401

    if kind in ("ours", "pure", "imports-ours"):
        import flakeguard.core.junit  # noqa: F401  # import cost is not parse cost
    import_mb = _peak_rss_mb()
    start = time.perf_counter()
    start_cpu = time.process_time()
    cases = runner(path)
    elapsed_s = time.perf_counter() - start
    cpu_s = time.process_time() - start_cpu
    print(
        json.dumps(
            {
                "kind": kind,
                "seconds": elapsed_s,
                "cpu_s": cpu_s,
                "cases": cases,
                "peak_rss_mb": _peak_rss_mb(),
                "after_import_rss_mb": import_mb,
                "start_rss_mb": baseline_mb,
            }
        )
    )


def measure(path: Path, runs: int, ours: str) -> dict[str, list[dict[str, float]]]:
    results: dict[str, list[dict[str, float]]] = {kind: [] for kind in KINDS}
    for _ in range(runs):
        for kind in KINDS:
            out = subprocess.run(
                [sys.executable, __file__, "--child", ours if kind == "ours" else kind, str(path)],
                check=True,
                capture_output=True,
                text=True,
            )
            results[kind].append(json.loads(out.stdout.strip().splitlines()[-1]))
    return results


def instructions(path: Path, kind: str) -> int:
    """Instructions one child executes, counted by callgrind (deterministic)."""
    out = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "--child",
            kind,
            str(path),
        ],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    match = re.search(r"Collected : (\d+)", out.stderr)
    if match is None:
        raise SystemExit(f"no instruction count from valgrind: {out.stderr[-500:]}")
    return int(match.group(1))


def profile(path: Path) -> None:
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    run_ours(path)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--keep", type=Path, default=None)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "PATH"))
    parser.add_argument("--pure", action="store_true", help="ours without the compiled loop")
    parser.add_argument("--instructions", action="store_true", help="also count instructions")
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "bench-junit.xml"
        size_b = generate(path)
        size_mb = size_b / 1e6
        print(f"file: {size_mb:.2f} MB, {SUITES * CASES_PER_SUITE:,} test cases, {SUITES:,} suites")
        if args.profile:
            profile(path)
            return
        from flakeguard.core.junit import SPEEDUPS

        ours = "pure" if args.pure or not SPEEDUPS else "ours"
        loop = "compiled loop" if ours == "ours" else "pure-Python loop"
        print(f"ours runs the {loop} (flakeguard.core._junit_speedups built: {SPEEDUPS})")
        results = measure(path, args.runs, ours)
        medians: dict[str, float] = {}
        cpu_medians: dict[str, float] = {}
        for kind in KINDS:
            rows = results[kind]
            median_s = statistics.median(r["seconds"] for r in rows)
            medians[kind] = median_s
            cpu = sorted(r["cpu_s"] for r in rows)
            cpu_medians[kind] = statistics.median(cpu)
            peak = max(r["peak_rss_mb"] for r in rows)
            base = statistics.median(r["after_import_rss_mb"] for r in rows)
            print(
                f"{kind:>5}: median {median_s:.3f} s (best {min(r['seconds'] for r in rows):.3f})"
                f"  {size_mb / median_s:6.1f} MB/s  {rows[0]['cases'] / median_s:9,.0f} items/s"
                f"  peak RSS {peak:.1f} MB (after imports {base:.1f} MB)"
                f"  CPU median {cpu_medians[kind]:.3f} s (range {cpu[0]:.3f}-{cpu[-1]:.3f})"
            )
        best = {kind: min(r["cpu_s"] for r in results[kind]) for kind in KINDS}
        ratio = medians["bare"] / medians["ours"]
        peak_ours = max(r["peak_rss_mb"] for r in results["ours"])
        print(f"ratio ours/bare throughput: {ratio:.2f} (target >= 0.70)")
        # CPU time is what the parser costs; wall time also counts other load on the machine.
        cpu_ratio = cpu_medians["bare"] / cpu_medians["ours"]
        print(f"ratio ours/bare by CPU time: {cpu_ratio:.2f}")
        print(f"ratio ours/bare by best CPU time: {best['bare'] / best['ours']:.2f}")
        print(f"ours peak RSS: {peak_ours:.1f} MB (target < 80 MB)")
        print(
            f"floor (bare + reading each testcase's attributes, no output): "
            f"{medians['bare'] / medians['floor']:.2f} of bare by wall time,"
            f" {cpu_medians['bare'] / cpu_medians['floor']:.2f} by CPU time,"
            f" {best['bare'] / best['floor']:.2f} by best CPU time"
        )
        if args.instructions:
            bare = instructions(path, "bare") - instructions(path, "imports-lxml")
            mine = instructions(path, ours) - instructions(path, "imports-ours")
            print(
                f"instructions (callgrind, minus imports): bare {bare / 1e6:,.0f} M,"
                f" ours {mine / 1e6:,.0f} M, ratio ours/bare {bare / mine:.3f}"
            )


if __name__ == "__main__":
    main()
