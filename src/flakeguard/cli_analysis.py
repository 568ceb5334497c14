"""`flakeguard analyze | flaky | quarantine ...`: scores and quarantine from the command line.

The JSON of `flaky --json` is a public contract: one array of objects with `test_id`,
`suite`, `class_name`, `name`, `file`, `score`, `is_flaky`, `class`, `confidence`,
`quarantined`, `runs`, `failures`, `components` (`failure_rate`, `inconsistency`,
`recency`, `branch_diversity`), `evidence`, `reason` (plus `quarantine_scope`).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from flakeguard.cli_common import fail, run, settings_or_exit
from flakeguard.core.exports import pytest_node_id
from flakeguard.observability import configure_logging

if TYPE_CHECKING:
    from flakeguard.adapters.db.history import ScoredTest

# The database and processor modules are imported inside the commands: importing them
# costs about a second, which every `flakeguard ...` invocation would otherwise pay.

quarantine_app = typer.Typer(help="List, add or remove quarantined tests.", no_args_is_help=True)
RepoOption = Annotated[str, typer.Option("--repo", help="OWNER/NAME")]


def _split(repo: str) -> tuple[str, str]:
    owner, sep, name = repo.partition("/")
    if not sep or not owner or not name:
        raise fail(f"--repo must be OWNER/NAME, got {repo!r}")
    return owner, name


def analyze(
    repo: RepoOption,
    lookback_days: Annotated[int | None, typer.Option("--lookback-days")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 500,
    no_quarantine: Annotated[
        bool, typer.Option("--no-quarantine", help="Score only; leave quarantine as it is.")
    ] = False,
) -> None:
    """Score every test of a repository (the tests-recompute path with scope `all`)."""
    from flakeguard.adapters.queue.payloads import (
        RecomputeOptions,
        RecomputePayload,
        RecomputeScope,
        RepositoryRef,
    )
    from flakeguard.database import open_database, utc_now
    from flakeguard.observability import Metrics
    from flakeguard.processors.analysis import ScoringContext
    from flakeguard.processors.tests_recompute import recompute

    owner, name = _split(repo)
    settings = settings_or_exit()
    configure_logging(settings.log_level)
    console = Console(stderr=True)
    progress = Progress(
        TextColumn("scoring"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        disable=not console.is_terminal,
        transient=True,
    )
    payload = RecomputePayload(
        repository=RepositoryRef(owner=owner, repo=name),
        recompute_scope=RecomputeScope(lookback_days=lookback_days),
        options=RecomputeOptions(batch_size=batch_size, update_quarantine_status=not no_quarantine),
    )

    async def go() -> dict[str, Any]:
        async with open_database(settings) as engine:
            with progress:
                task = progress.add_task("score", total=None)

                async def step(done: int, total: int) -> None:
                    progress.update(task, completed=done, total=total)

                context = ScoringContext(engine=engine, metrics=Metrics(), clock=utc_now)
                return await recompute(context, payload, step)

    result = run(go())
    typer.echo(
        f"scored {result['tests']} tests of {owner}/{name}: {result['flaky']} flaky, "
        f"{result['broken']} broken, {result['quarantined']} quarantined"
    )


def _as_json(test: ScoredTest) -> dict[str, Any]:
    c = test.case
    return {
        "test_id": c.test_key,
        "suite": c.suite,
        "class_name": c.class_name,
        "name": c.name,
        "file": c.file,
        "score": round(test.score, 4),
        "is_flaky": test.verdict == "flaky",
        "class": test.verdict,
        "confidence": test.confidence,
        "quarantined": test.quarantine_scope is not None,
        "quarantine_scope": test.quarantine_scope,
        "runs": test.runs,
        "failures": test.failures,
        "components": {
            "failure_rate": round(test.failure_rate, 4),
            "inconsistency": round(test.inconsistency, 4),
            "recency": round(test.recency, 4),
            "branch_diversity": round(test.branch_diversity, 4),
        },
        "evidence": test.evidence,
        "reason": test.reason,
    }


async def _scored(
    settings: Any, owner: str, name: str, verdicts: list[str] | None
) -> list[ScoredTest]:
    from flakeguard.adapters.db.history import find_repository, list_scored_tests
    from flakeguard.database import open_database

    async with open_database(settings) as engine:
        info = await find_repository(engine, owner, name)
        if info is None:
            raise fail(f"no results stored for {owner}/{name}")
        return await list_scored_tests(engine, info.id, verdicts=verdicts)


def flaky(
    repo: RepoOption,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON array (stable contract).")
    ] = False,
    show_all: Annotated[bool, typer.Option("--all", help="Every test with history.")] = False,
) -> None:
    """List flaky and suspected tests (or all tests) with their scores and reasons."""
    owner, name = _split(repo)
    settings = settings_or_exit()
    configure_logging(settings.log_level)
    tests = run(_scored(settings, owner, name, None if show_all else ["flaky", "suspected"]))
    if as_json:
        typer.echo(json.dumps([_as_json(t) for t in tests], indent=None))
        return
    table = Table(title=f"{owner}/{name}: {len(tests)} tests")
    for column in (
        "test",
        "class",
        "score",
        "confidence",
        "runs",
        "failed",
        "quarantined",
        "reason",
    ):
        table.add_column(column)
    for t in tests:
        table.add_row(
            f"{t.case.class_name}::{t.case.name}",
            t.verdict,
            f"{t.score:.2f}",
            t.confidence,
            str(t.runs),
            str(t.failures),
            t.quarantine_scope or "",
            t.reason,
        )
    Console().print(table)


@quarantine_app.command("list")
def quarantine_list(
    repo: RepoOption,
    output: Annotated[
        str,
        typer.Option("--format", help="table, json, or pytest (a --deselect argument per line)"),
    ] = "table",
) -> None:
    """Quarantined tests; `--format pytest` prints `--deselect NODEID` lines for CI scripts."""
    owner, name = _split(repo)
    settings = settings_or_exit()
    configure_logging(settings.log_level)
    tests = [t for t in run(_scored(settings, owner, name, None)) if t.quarantine_scope is not None]
    if output == "json":
        typer.echo(json.dumps([_as_json(t) for t in tests]))
    elif output == "pytest":
        for t in tests:
            typer.echo(f"--deselect={pytest_node_id(t.case.class_name, t.case.name, t.case.file)}")
    elif output == "table":
        table = Table(title=f"{owner}/{name}: {len(tests)} quarantined")
        for column in ("test", "scope", "class", "reason"):
            table.add_column(column)
        for t in tests:
            table.add_row(
                f"{t.case.class_name}::{t.case.name}", t.quarantine_scope or "", t.verdict, t.reason
            )
        Console().print(table)
    else:
        raise fail(f"--format must be table, json or pytest, not {output!r}")


async def _change_quarantine(
    settings: Any,
    owner: str,
    name: str,
    pattern: str,
    add: bool,
    reason: str,
    scope: str,
    days: int,
) -> int:
    from flakeguard.adapters.db.history import (
        find_repository,
        load_quarantine,
        save_quarantine,
        select_cases,
    )
    from flakeguard.core.quarantine import QuarantinePolicy, manual_add, manual_remove
    from flakeguard.database import open_database, utc_now

    async with open_database(settings) as engine:
        info = await find_repository(engine, owner, name)
        if info is None:
            raise fail(f"no results stored for {owner}/{name}")
        cases = await select_cases(engine, info.id, name_patterns=[pattern])
        cases += [c for c in await select_cases(engine, info.id) if c.test_key == pattern]
        if not cases:
            raise fail(f"no test matches {pattern!r}")
        ids = {c.test_key: c.id for c in cases}
        existing = await load_quarantine(engine, ids)
        now = utc_now()
        policy = QuarantinePolicy(expiry_days=days)
        changed = []
        for case in cases:
            active = [s for s in existing.get(case.test_key, ()) if s.is_active]
            if add and not active:
                changed.append(
                    manual_add(case.test_key, scope, reason=reason, now=now, policy=policy)
                )
            elif not add:
                changed.extend(manual_remove(s, reason=reason, now=now) for s in active)
        await save_quarantine(engine, ids, changed)
        return len(changed)


@quarantine_app.command("add")
def quarantine_add(
    repo: RepoOption,
    test: Annotated[str, typer.Option("--test", help="Test id, name or pattern (fnmatch).")],
    reason: Annotated[str, typer.Option(help="Why (shown in check runs).")] = "quarantined by hand",
    scope: Annotated[str, typer.Option(help="Environment key, or * for all.")] = "*",
    days: Annotated[int, typer.Option(help="Expires after this many days.")] = 30,
) -> None:
    """Quarantine tests by hand (they keep running; their failures are muted)."""
    owner, name = _split(repo)
    settings = settings_or_exit()
    configure_logging(settings.log_level)
    changed = run(_change_quarantine(settings, owner, name, test, True, reason, scope, days))
    typer.echo(f"quarantined {changed} tests (expires in {timedelta(days=days).days} days)")


@quarantine_app.command("remove")
def quarantine_remove(
    repo: RepoOption,
    test: Annotated[str, typer.Option("--test", help="Test id, name or pattern (fnmatch).")],
    reason: Annotated[str, typer.Option(help="Why.")] = "released by hand",
) -> None:
    """Release quarantined tests."""
    owner, name = _split(repo)
    settings = settings_or_exit()
    configure_logging(settings.log_level)
    changed = run(_change_quarantine(settings, owner, name, test, False, reason, "*", 30))
    typer.echo(f"released {changed} quarantines")
