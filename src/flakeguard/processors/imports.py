"""Importing JUnit results that did not come through GitHub (`flakeguard import-junit`).

Same storage path as `runs-ingest`: `store_run`, one transaction per run attempt,
idempotent. Paths are XML files, folders (searched recursively) or ZIP archives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from flakeguard.adapters.db.runs import (
    CaseIdCaches,
    ParsedReport,
    ensure_repository,
    parse_item,
    store_run,
)
from flakeguard.adapters.local_source import path_groups
from flakeguard.core.junit import ParseLimits
from flakeguard.core.models import ReportProblem, RunRef
from flakeguard.errors import PermanentJobError

RepoSlug = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$")
]


class ImportSpec(BaseModel):
    """One run attempt to import: a line of a manifest, or the command-line options."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    repo: RepoSlug
    run_id: int = Field(gt=0)
    attempt: int = Field(default=1, ge=1)
    sha: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    branch: str | None = Field(default=None, max_length=255)
    started_at: datetime | None = None
    workflow: str = Field(default="ci", max_length=255)
    job: str = Field(default="default", max_length=255)
    event: str | None = Field(default=None, max_length=50)
    pr_number: int | None = Field(default=None, gt=0)
    default_branch: str | None = Field(default=None, max_length=255)
    paths: tuple[Path, ...] = Field(min_length=1)

    def run_ref(self) -> RunRef:
        return RunRef(
            repo=self.repo,
            run_id=self.run_id,
            attempt=self.attempt,
            head_sha=self.sha,
            branch=self.branch,
            event=self.event,
            workflow=self.workflow,
            pr_number=self.pr_number,
            started_at=self.started_at,
        )


class ManifestError(PermanentJobError):
    """The manifest as a whole is unusable (the command exits non-zero)."""


def read_manifest(path: Path) -> Iterator[ImportSpec]:
    """Validated specs in file order; relative paths resolve against the manifest's folder."""
    try:
        handle = path.open(encoding="utf-8")
    except OSError as error:
        raise ManifestError(f"cannot read manifest {path}: {error.strerror}") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                if not isinstance(raw, dict):
                    raise ValueError("expected a JSON object")
                raw["paths"] = [str(path.parent / p) for p in raw.get("paths") or []]
                yield ImportSpec.model_validate(raw)
            except (ValueError, ValidationError) as error:
                first = (
                    error.errors()[0]["msg"] if isinstance(error, ValidationError) else str(error)
                )
                raise ManifestError(f"{path}:{number}: {first[:200]}") from None


@dataclass(slots=True)
class ImportOutcome:
    runs: int = 0
    created: int = 0
    executions: int = 0
    cases: int = 0
    problems: list[ReportProblem] = field(default_factory=list)


def _env_key(spec: ImportSpec) -> str:
    return f"{spec.workflow}/{spec.job}"


async def import_run(
    engine: AsyncEngine,
    spec: ImportSpec,
    now: datetime,
    case_caches: CaseIdCaches | None = None,
    parsed: Sequence[tuple[str, ParsedReport | ReportProblem]] | None = None,
) -> tuple[bool, int, int, list[ReportProblem]]:
    """Store one run attempt; `case_caches` (bounded, as the worker's) spans one import.

    `parsed` holds the spec's reports when they were parsed ahead (`import_all`); without
    it they are read and parsed here, one by one.
    """
    owner, name = spec.repo.split("/", 1)
    repository_id = await ensure_repository(
        engine, owner, name, now=now, default_branch=spec.default_branch
    )
    case_cache = case_caches.for_repository(repository_id) if case_caches is not None else None
    groups = (
        _replay(parsed)
        if parsed is not None
        else path_groups([(_env_key(spec), p) for p in spec.paths])
    )
    stored = await store_run(
        engine,
        repository_id,
        spec.run_ref(),
        groups,
        now=now,
        source_kind="import",
        case_cache=case_cache,
    )
    return stored.created, stored.cases, stored.executions, stored.problems


async def _replay(
    items: Sequence[tuple[str, ParsedReport | ReportProblem]],
) -> AsyncIterator[tuple[str, ParsedReport | ReportProblem]]:
    for item in items:
        yield item


async def _parse_ahead(spec: ImportSpec) -> list[tuple[str, ParsedReport | ReportProblem]]:
    """Every report of `spec`, read and parsed in a worker thread (as `store_run` would)."""
    parsed: list[tuple[str, ParsedReport | ReportProblem]] = []
    async for env_key, item in path_groups([(_env_key(spec), p) for p in spec.paths]):
        parsed.append((env_key, await asyncio.to_thread(parse_item, item, ParseLimits())))
    return parsed


async def import_all(
    engine: AsyncEngine,
    specs: Iterator[ImportSpec],
    clock: Callable[[], datetime],
    on_progress: Callable[[ImportSpec, ImportOutcome], None] | None = None,
) -> ImportOutcome:
    """Import `specs` in order, one transaction per run attempt.

    The next spec's reports are parsed (in a thread) while the current one is written: the
    parser's CPU work overlaps the database's. At most one run is held parsed ahead.
    """
    outcome = ImportOutcome()
    case_caches = CaseIdCaches()
    started: list[asyncio.Task[list[tuple[str, ParsedReport | ReportProblem]]]] = []

    def parse_ahead(spec: ImportSpec | None) -> None:
        if spec is not None:
            started.append(asyncio.create_task(_parse_ahead(spec)))

    spec = next(specs, None)
    parse_ahead(spec)
    try:
        while spec is not None:
            upcoming = next(specs, None)
            parse_ahead(upcoming)  # parsed while `spec` is written
            parsed = await started.pop(0)
            missing = [p for p in spec.paths if not p.exists()]
            if missing and len(missing) == len(spec.paths):
                outcome.problems.extend(
                    ReportProblem(str(p), "no such file or folder") for p in missing
                )
            created, cases, executions, problems = await import_run(
                engine, spec, clock(), case_caches, parsed=parsed
            )
            outcome.runs += 1
            outcome.created += int(created)
            outcome.cases += cases
            outcome.executions += executions
            outcome.problems.extend(problems)
            if on_progress is not None:
                on_progress(spec, outcome)
            spec = upcoming
    finally:
        for task in started:  # an error stopped the import: no parsing is left running
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return outcome
