"""Publishing our check run for a head SHA, and acting on its buttons.

Shared by `runs-analyze` (a module of helpers, not a queue processor). One check run per
(repository, head SHA, name): the first analysis creates it, later ones (other workflows
of the same commit, re-run attempts) update it in place. It reports every test of the
commit: the latest attempt of each run at that SHA.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import replace

import structlog

from flakeguard.adapters.db.checks import (
    ShaOutcome,
    check_run_record,
    outcomes_at_sha,
)
from flakeguard.adapters.db.history import (
    RepositoryInfo,
    StoredScore,
    load_quarantine,
    save_quarantine,
    select_cases,
)
from flakeguard.adapters.db.runs import StoredRunInfo
from flakeguard.adapters.github.client import (
    CheckRunBody,
    CheckRunConclusion,
    RepoCoords,
)
from flakeguard.core.models import FlakeScore, Verdict
from flakeguard.core.quarantine import (
    QuarantinePolicy,
    QuarantineState,
    is_muted,
    manual_add,
    manual_remove,
)
from flakeguard.core.reporting import (
    Annotation,
    CheckRunOutput,
    ReportCounts,
    ReportRow,
    RunReport,
    render_check_run,
)
from flakeguard.core.scoring import ALL_ENVS
from flakeguard.deps import Deps

log = structlog.get_logger("flakeguard.checks")

QUARANTINE = "quarantine"
UNQUARANTINE = "unquarantine"


def report_rows(
    outcomes: Sequence[ShaOutcome],
    scores: Mapping[str, FlakeScore | StoredScore],
    quarantine: dict[str, QuarantineState],
) -> tuple[ReportRow, ...]:
    """The tests worth showing: failed at this SHA, or flaky / suspected / quarantined."""
    rows = []
    for outcome in outcomes:
        score = scores.get(outcome.test_key)
        state = quarantine.get(outcome.test_key)
        verdict = score.verdict if score is not None else Verdict.HEALTHY
        interesting = outcome.failed or verdict in (Verdict.FLAKY, Verdict.SUSPECTED)
        if not interesting and state is None:
            continue
        muted = outcome.failed and is_muted(state, outcome.signature)
        runs = score.runs if score is not None else 0
        failures = score.failures if score is not None else 0
        rows.append(
            ReportRow(
                test_key=outcome.test_key,
                name=outcome.name,
                class_name=outcome.class_name,
                file=outcome.file,
                verdict=verdict,
                score=score.score if score is not None else 0.0,
                quarantined=muted or (state is not None and state.is_active and not outcome.failed),
                passed=runs - failures,
                failed=failures,
                failed_in_run=outcome.failed,
                message=outcome.message,
            )
        )
    return tuple(rows)


def annotation_key(annotation: Annotation) -> str:
    """Identity of an annotation, to send each one to GitHub once."""
    raw = f"{annotation.path}:{annotation.start_line}:{annotation.title}:{annotation.message}"
    return hashlib.blake2b(raw.encode(), digest_size=8).hexdigest()


def check_run_body(name: str, head_sha: str, output: CheckRunOutput) -> CheckRunBody:
    return CheckRunBody(
        name=name,
        head_sha=head_sha,
        conclusion=CheckRunConclusion(output.conclusion.value),
        title=output.title,
        summary=output.summary,
        text=output.text or None,
        annotations=output.annotations,
        actions=output.actions,
    )


async def publish_check_run(deps: Deps, repo: RepositoryInfo, run: StoredRunInfo) -> int | None:
    """Create or update the commit's check run; returns its id (None without GitHub).

    It shows what the database holds for the commit, under the check-run record's lock:
    the latest attempt of every run at the SHA, and the stored scores and quarantines of
    the tests worth showing (an analysis has stored its own before it publishes). One
    query reads our check-run row, the counts and the few tests shown (`checks.ShaView`),
    not every test.

    The database row is the record of our check run per commit: if it was lost (a restored
    database), a second check run appears for that commit; accepted to save a lookup call
    per analysis (API budget: <= 4 calls per run).
    """
    if deps.checks is None or repo.installation_id is None:
        return None
    name = deps.settings.check_run_name
    coords = RepoCoords(repo.owner, repo.name, repo.installation_id)
    async with check_run_record(deps.engine, repo.id, run.head_sha, name) as record:
        stored, view = await record.read()
        outcomes = [outcome for outcome, _, _ in view.shown]
        scores = {o.test_key: score for o, score, _ in view.shown if score is not None}
        quarantined = {o.test_key: o.test_case_id for o, _, flag in view.shown if flag}
        quarantine = {
            key: active[0]
            for key, states in (
                await load_quarantine(deps.engine, quarantined, conn=record.connection)
            ).items()
            if (active := [s for s in states if s.is_active])
        }
        report = RunReport(
            repo=repo.full_name,
            run_id=run.run_id,
            attempt=run.run_attempt,
            head_sha=run.head_sha,
            rows=report_rows(outcomes, scores, quarantine),
            counts=ReportCounts(
                total=view.total, passed=view.passed, failed=view.failed, skipped=view.skipped
            ),
            default_branch=repo.default_branch,
        )
        body = check_run_body(name, run.head_sha, render_check_run(report))
        sent = {annotation_key(a): a for a in body.annotations}
        if stored is None:
            # Our row is the record of the commit's check run: one API call, no lookup first.
            check_run_id = await deps.checks.create(coords, body)
        else:
            check_run_id = stored.check_run_id
            # GitHub appends annotations on update: send only the ones it does not have yet.
            fresh = [a for key, a in sent.items() if key not in stored.annotated]
            await deps.checks.update(coords, check_run_id, replace(body, annotations=fresh))
        annotated = frozenset(sent) | (stored.annotated if stored else frozenset())
        await record.remember(check_run_id, deps.clock(), annotated)
    return check_run_id


async def apply_button(
    deps: Deps, repo: RepositoryInfo, head_sha: str, identifier: str, scores: dict[str, FlakeScore]
) -> int:
    """Quarantine the possibly flaky tests of the commit, or release its quarantined ones."""
    outcomes = await outcomes_at_sha(deps.engine, repo.id, head_sha)
    cases = await select_cases(deps.engine, repo.id, ids=[o.test_case_id for o in outcomes])
    case_ids = {c.test_key: c.id for c in cases}
    existing = await load_quarantine(deps.engine, case_ids)
    now = deps.clock()
    changed: list[QuarantineState] = []
    for case in cases:
        active = [s for s in existing.get(case.test_key, ()) if s.is_active]
        verdict = scores[case.test_key].verdict if case.test_key in scores else Verdict.HEALTHY
        if (
            identifier == QUARANTINE
            and not active
            and verdict in (Verdict.FLAKY, Verdict.SUSPECTED)
        ):
            changed.append(
                manual_add(
                    case.test_key,
                    ALL_ENVS,
                    reason=f"quarantined from the check run of {head_sha[:7]}",
                    now=now,
                    policy=QuarantinePolicy(),
                )
            )
        elif identifier == UNQUARANTINE:
            changed.extend(
                manual_remove(s, reason=f"released from the check run of {head_sha[:7]}", now=now)
                for s in active
            )
    await save_quarantine(deps.engine, case_ids, changed)
    log.info("check_run.button", identifier=identifier, changed=len(changed))
    return len(changed)
