"""Check-run content for one CI run: conclusion, title, markdown summary, annotations, actions.

Pure: `render_check_run(report)` turns a `RunReport` into a `CheckRunOutput` that fits GitHub's
Checks API limits (summary and text <= 65,535 characters, <= 3 actions with label and
identifier <= 20 and description <= 40 characters). Every annotation is returned; the client
sends them 50 per request (`annotation_pages`).

Each row lands in exactly one section, first match wins (notes/flakiness.md §4.5):

| row                                         | section                     | blocks the check |
|---------------------------------------------|-----------------------------|------------------|
| quarantined (its failure is muted)          | Known flaky (quarantined)   | no               |
| failed in this run, class `broken`          | Broken on default branch    | no (neutral)     |
| failed in this run, otherwise               | New failures                | yes (failure)    |
| passed, class `flaky` or `suspected`        | Possibly flaky              | no               |

Conclusion: `failure` with any new failure, else `neutral` with any broken-on-default failure,
else `success`. Flake rate is shown as "x% (passed N, failed M)", e.g. "2.9% (passed 136,
failed 4)". Sections list rows in a fixed order (score descending, then name) and, when the
budget runs out, end with "... and N more".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from flakeguard.core.models import Verdict


class Conclusion(StrEnum):
    """Check-run conclusions this report uses."""

    SUCCESS = "success"
    FAILURE = "failure"
    NEUTRAL = "neutral"


class AnnotationLevel(StrEnum):
    NOTICE = "notice"
    WARNING = "warning"
    FAILURE = "failure"


class Section(StrEnum):
    """Summary sections, in display order."""

    NEW_FAILURES = "New failures"
    BROKEN_ON_DEFAULT = "Broken on default branch"
    KNOWN_FLAKY = "Known flaky (quarantined)"
    POSSIBLY_FLAKY = "Possibly flaky"


@dataclass(frozen=True, slots=True)
class ReportRow:
    """One test this run touched that failed, or is flaky / suspected / quarantined."""

    test_key: str
    name: str
    class_name: str
    file: str | None
    verdict: Verdict
    score: float
    quarantined: bool
    """An active quarantine mutes this row's failure (`is_muted` already applied)."""
    passed: int
    """Runs that passed in the score's window (the flake-rate denominator's passes)."""
    failed: int
    """Runs that failed in the score's window."""
    failed_in_run: bool
    message: str | None = None
    """Failure message of this run (first attempt that failed), if any."""
    line: int | None = None


@dataclass(frozen=True, slots=True)
class ReportCounts:
    """Totals of the run's tests (final results)."""

    total: int
    passed: int
    failed: int
    skipped: int


@dataclass(frozen=True, slots=True)
class RunReport:
    """What the check run describes: one run attempt of one repository at one head sha."""

    repo: str
    run_id: int
    attempt: int
    head_sha: str
    rows: tuple[ReportRow, ...]
    counts: ReportCounts
    default_branch: str = "main"


MAX_ACTION_IDENTIFIER_CHARS = 20
"""GitHub's limit for a check-run button's identifier."""


@dataclass(frozen=True, slots=True)
class Annotation:
    """A check-run annotation (the GitHub client sends these as they are, 50 per request)."""

    path: str
    start_line: int
    end_line: int
    annotation_level: AnnotationLevel
    message: str
    title: str | None = None
    raw_details: str | None = None


@dataclass(frozen=True, slots=True)
class Action:
    """A check-run button. `label` (<= 20) and `description` (<= 40) are shortened when
    sent; `identifier` comes back in `requested_action` webhooks, so a longer one is an error."""

    label: str
    description: str
    identifier: str

    def __post_init__(self) -> None:
        if not 0 < len(self.identifier) <= MAX_ACTION_IDENTIFIER_CHARS:
            raise ValueError(
                f"check-run action identifier must be 1-{MAX_ACTION_IDENTIFIER_CHARS} characters"
            )


@dataclass(frozen=True, slots=True)
class CheckRunOutput:
    conclusion: Conclusion
    title: str
    summary: str
    text: str
    annotations: tuple[Annotation, ...]
    actions: tuple[Action, ...]


@dataclass(frozen=True, slots=True)
class ReportLimits:
    """GitHub's Checks API limits (docs of checks/create); tests shrink them."""

    max_summary_chars: int = 65_535
    max_text_chars: int = 65_535
    max_title_chars: int = 255
    max_annotation_message_chars: int = 4_000
    """GitHub allows 64 KB; 4,000 characters keep the annotation readable."""
    max_message_lines: int = 12
    """Failure-message lines quoted per test in the text."""
    annotations_per_request: int = 50
    max_actions: int = 3
    max_action_label: int = 20
    max_action_identifier: int = 20
    max_action_description: int = 40


QUARANTINE_ACTION = Action("Quarantine flaky", "Quarantine the possibly flaky tests", "quarantine")
"""Button shown when possibly flaky tests are listed (identifier handled by check_run webhooks)."""
UNQUARANTINE_ACTION = Action("Unquarantine", "Release the quarantined tests listed", "unquarantine")
"""Button shown when quarantined tests are listed."""


def section_of(row: ReportRow) -> Section | None:
    """The one section a row belongs to (None: nothing to say about it).

    >>> r = ReportRow("k", "t", "C", None, Verdict.BROKEN, 0.0, False, 0, 5, True)
    >>> section_of(r).value
    'Broken on default branch'
    """
    if row.quarantined:
        return Section.KNOWN_FLAKY
    if row.failed_in_run:
        return Section.BROKEN_ON_DEFAULT if row.verdict is Verdict.BROKEN else Section.NEW_FAILURES
    if row.verdict in (Verdict.FLAKY, Verdict.SUSPECTED):
        return Section.POSSIBLY_FLAKY
    return None


def flake_rate_text(passed: int, failed: int) -> str:
    """'x% (passed N, failed M)' with one decimal.

    >>> flake_rate_text(136, 4)
    '2.9% (passed 136, failed 4)'
    >>> flake_rate_text(0, 0)
    '0.0% (passed 0, failed 0)'
    """
    total = passed + failed
    rate = 100.0 * failed / total if total else 0.0
    return f"{rate:.1f}% (passed {passed}, failed {failed})"


def render_check_run(report: RunReport, limits: ReportLimits | None = None) -> CheckRunOutput:
    """The check run's content for `report` (deterministic: same report, same bytes)."""
    lim = limits or ReportLimits()
    sections: dict[Section, list[ReportRow]] = {s: [] for s in Section}
    for row in sorted(report.rows, key=_row_order):
        section = section_of(row)
        if section is not None:
            sections[section].append(row)
    conclusion = _conclusion(sections)
    title = _clip(_title(report, sections), lim.max_title_chars)
    summary = _summary(report, sections, lim)
    text = _text(sections, lim)
    annotations = tuple(_annotations(sections, lim))
    actions = _actions(sections, lim)
    return CheckRunOutput(conclusion, title, summary, text, annotations, actions)


def annotation_pages(output: CheckRunOutput, per_request: int = 50) -> list[tuple[Annotation, ...]]:
    """Annotations in request-sized pages (the first goes with create, the rest with update).

    >>> out = CheckRunOutput(Conclusion.SUCCESS, "t", "s", "", (), ())
    >>> annotation_pages(out)
    [()]
    """
    notes = output.annotations
    if not notes:
        return [()]
    return [notes[i : i + per_request] for i in range(0, len(notes), per_request)]


def output_payload(output: CheckRunOutput, page: Sequence[Annotation]) -> dict[str, object]:
    """The `output` object of a checks create/update request with one annotation page."""
    return {
        "title": output.title,
        "summary": output.summary,
        "text": output.text,
        "annotations": [
            {
                "path": a.path,
                "start_line": a.start_line,
                "end_line": a.end_line,
                "annotation_level": a.annotation_level.value,
                "message": a.message,
                "title": a.title,
            }
            for a in page
        ],
    }


def actions_payload(output: CheckRunOutput) -> list[dict[str, str]]:
    """The `actions` array of a checks create/update request."""
    return [
        {"label": a.label, "description": a.description, "identifier": a.identifier}
        for a in output.actions
    ]


# --- pieces ------------------------------------------------------------------------------


def _row_order(row: ReportRow) -> tuple[float, str, str, str]:
    return (-row.score, row.class_name, row.name, row.test_key)


def _display_name(row: ReportRow) -> str:
    name = f"{row.class_name}::{row.name}" if row.class_name else row.name
    return name.replace("`", "'")


def _first_line(message: str | None) -> str:
    if not message:
        return ""
    for line in message.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def _conclusion(sections: dict[Section, list[ReportRow]]) -> Conclusion:
    if sections[Section.NEW_FAILURES]:
        return Conclusion.FAILURE
    if sections[Section.BROKEN_ON_DEFAULT]:
        return Conclusion.NEUTRAL
    return Conclusion.SUCCESS


def _plural(k: int, word: str) -> str:
    return f"{k} {word}" if k == 1 else f"{k} {word}s"


def _title(report: RunReport, sections: dict[Section, list[ReportRow]]) -> str:
    new = len(sections[Section.NEW_FAILURES])
    broken = len(sections[Section.BROKEN_ON_DEFAULT])
    muted = sum(1 for r in sections[Section.KNOWN_FLAKY] if r.failed_in_run)
    parts: list[str] = []
    if new:
        parts.append(_plural(new, "new failure"))
    if broken:
        parts.append(f"{broken} broken on {report.default_branch}")
    if muted:
        parts.append(f"{muted} known flaky muted")
    if not parts:
        return f"All {report.counts.total - report.counts.skipped} tests passed"
    return ", ".join(parts)


def _row_line(section: Section, row: ReportRow) -> str:
    name = f"`{_display_name(row)}`"
    rate = flake_rate_text(row.passed, row.failed)
    where = f" ({row.file}:{row.line})" if row.file and row.line else ""
    where = where or (f" ({row.file})" if row.file else "")
    first = _first_line(row.message)
    detail = f": {first[:200]}" if first else ""
    if section is Section.NEW_FAILURES:
        hint = ""
        if row.verdict in (Verdict.FLAKY, Verdict.SUSPECTED):
            hint = f" — possibly flaky, {rate}"
        return f"- {name}{where}{detail}{hint}"
    if section is Section.BROKEN_ON_DEFAULT:
        return f"- {name}{where} — also failing on the default branch, {rate}"
    if section is Section.KNOWN_FLAKY:
        state = "failed (muted)" if row.failed_in_run else "passed"
        return f"- {name} — {rate}, score {row.score:.2f}, {state} in this run"
    return f"- {name} — {rate}, score {row.score:.2f}"


def _summary(report: RunReport, sections: dict[Section, list[ReportRow]], lim: ReportLimits) -> str:
    c = report.counts
    head = [
        f"**{c.total} tests**: {c.passed} passed, {c.failed} failed, {c.skipped} skipped "
        f"· run {report.run_id} attempt {report.attempt} · `{report.head_sha[:12]}`",
    ]
    if not any(sections.values()):
        head.append("")
        head.append("No failures and no flaky tests in this run.")
        return _clip("\n".join(head), lim.max_summary_chars)
    blocks: list[tuple[str, list[str]]] = []
    for section in Section:
        rows = sections[section]
        if not rows:
            continue
        heading = section.value
        if section is Section.BROKEN_ON_DEFAULT:
            heading = f"Broken on default branch ({report.default_branch})"
        blocks.append((f"### {heading} ({len(rows)})", [_row_line(section, r) for r in rows]))
    return _fit("\n".join(head), blocks, lim.max_summary_chars)


def _fit(head: str, blocks: Sequence[tuple[str, Sequence[str]]], limit: int) -> str:
    """Join head and blocks, cutting rows to fit `limit`; each cut block ends with "... and N more".

    Every heading is kept: the budget reserves room for the headings and cut lines of later
    blocks before spending it on rows.
    """
    out: list[str] = [head]
    used = len(head)
    for index, (heading, lines) in enumerate(blocks):
        later = sum(len(h) + 2 + len(_more(len(ls))) + 1 for h, ls in blocks[index + 1 :])
        out.append("")
        out.append(heading)
        used += len(heading) + 2
        for shown, line in enumerate(lines):
            more = _more(len(lines) - shown)
            rest_needed = 0 if shown == len(lines) - 1 else len(more) + 1
            if used + len(line) + 1 + rest_needed + later > limit:
                out.append(more)
                used += len(more) + 1
                break
            out.append(line)
            used += len(line) + 1
    return "\n".join(out)[:limit]


def _more(k: int) -> str:
    return f"... and {k} more"


def _text(sections: dict[Section, list[ReportRow]], lim: ReportLimits) -> str:
    """Failure details (messages) of the new and broken failures."""
    blocks: list[tuple[str, list[str]]] = []
    for section in (Section.NEW_FAILURES, Section.BROKEN_ON_DEFAULT):
        entries: list[str] = []
        for row in sections[section]:
            lines = (row.message or "(no message)").splitlines()[: lim.max_message_lines]
            body = "\n".join(line.replace("```", "'''") for line in lines)
            entries.append(f"#### `{_display_name(row)}`\n```\n{body}\n```")
        if entries:
            blocks.append((f"### {section.value}", entries))
    if not blocks:
        return ""
    return _fit("## Failure details", blocks, lim.max_text_chars)


_LEVELS: dict[Section, AnnotationLevel] = {
    Section.NEW_FAILURES: AnnotationLevel.FAILURE,
    Section.BROKEN_ON_DEFAULT: AnnotationLevel.WARNING,
    Section.KNOWN_FLAKY: AnnotationLevel.NOTICE,
}


def _annotations(sections: dict[Section, list[ReportRow]], lim: ReportLimits) -> list[Annotation]:
    """One annotation per failed row with a file; new failures first, then by path and line."""
    notes: list[Annotation] = []
    for section, level in _LEVELS.items():
        for row in sections[section]:
            if not row.failed_in_run or not row.file:
                continue
            line = row.line if row.line and row.line > 0 else 1
            prefix = {
                Section.NEW_FAILURES: "New failure",
                Section.BROKEN_ON_DEFAULT: "Also failing on the default branch",
                Section.KNOWN_FLAKY: "Known flaky (quarantined, muted)",
            }[section]
            message = f"{prefix}. Flake rate {flake_rate_text(row.passed, row.failed)}."
            if row.message:
                message += "\n" + row.message
            notes.append(
                Annotation(
                    path=row.file,
                    start_line=line,
                    end_line=line,
                    annotation_level=level,
                    message=_clip(message, lim.max_annotation_message_chars),
                    title=_clip(_display_name(row), lim.max_title_chars),
                )
            )
    rank = {AnnotationLevel.FAILURE: 0, AnnotationLevel.WARNING: 1, AnnotationLevel.NOTICE: 2}
    notes.sort(key=lambda a: (rank[a.annotation_level], a.path, a.start_line, a.title))
    return notes


def _actions(sections: dict[Section, list[ReportRow]], lim: ReportLimits) -> tuple[Action, ...]:
    candidates: list[Action] = []
    if sections[Section.POSSIBLY_FLAKY] or any(
        r.verdict in (Verdict.FLAKY, Verdict.SUSPECTED) for r in sections[Section.NEW_FAILURES]
    ):
        candidates.append(QUARANTINE_ACTION)
    if sections[Section.KNOWN_FLAKY]:
        candidates.append(UNQUARANTINE_ACTION)
    return tuple(
        Action(
            label=a.label[: lim.max_action_label],
            description=a.description[: lim.max_action_description],
            identifier=a.identifier[: lim.max_action_identifier],
        )
        for a in candidates[: lim.max_actions]
    )
