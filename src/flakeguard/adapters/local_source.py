"""A `RunSource` backed by a folder: tests, demos and local replays use it.

Layout: `<root>/<owner>/<repo>/<run_id>/<attempt>/run.json` describing the run
(`head_sha`, `head_branch`, `event`, `workflow`, `started_at`, `pr_number`, `conclusion`)
and one sub-folder per job (the environment key), holding XML files, folders or ZIPs.
Files directly in the attempt folder belong to the job `default`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

from flakeguard.adapters.artifacts import ReportSource, iter_path_reports
from flakeguard.adapters.queue.payloads import RunsIngestPayload
from flakeguard.adapters.sources import RunReports
from flakeguard.core.models import ReportProblem, RunRef
from flakeguard.errors import PermanentJobError


async def path_groups(
    paths: list[tuple[str, Path]],
) -> AsyncIterator[tuple[str, ReportSource | ReportProblem]]:
    """(env_key, source/problem) for each of `paths`, each an XML file, folder or ZIP."""
    for env_key, path in paths:
        for item in iter_path_reports(path):
            yield env_key, item


class LocalRunSource:
    def __init__(self, root: Path) -> None:
        self._root = root

    async def open_run(self, payload: RunsIngestPayload) -> RunReports:
        repo = payload.repository
        attempt = payload.metadata.run_attempt
        folder = self._root / repo.owner / repo.repo / str(payload.workflow_run_id) / str(attempt)
        meta_path = folder / "run.json"
        if not meta_path.is_file():
            raise PermanentJobError(
                f"run {repo.full_name}#{payload.workflow_run_id} attempt {attempt} not found"
            )
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        workflow = str(meta.get("workflow") or "ci")
        run = RunRef(
            repo=repo.full_name,
            run_id=payload.workflow_run_id,
            attempt=attempt,
            head_sha=str(meta.get("head_sha") or payload.metadata.head_sha or ""),
            branch=meta.get("head_branch") or payload.metadata.head_branch,
            event=meta.get("event"),
            workflow=workflow,
            pr_number=meta.get("pr_number"),
            started_at=datetime.fromisoformat(meta["started_at"])
            if meta.get("started_at")
            else None,
            conclusion=meta.get("conclusion"),
        )
        entries: list[tuple[str, Path]] = []
        for child in sorted(folder.iterdir()):
            if child.name == "run.json":
                continue
            job = child.name if child.is_dir() else "default"
            entries.append((f"{workflow}/{job}", child))
        return RunReports(run=run, groups=path_groups(entries))
