"""GitHub as a `RunSource` (artifacts of a run) and a `CheckPublisher` (check runs).

Artifacts are downloaded one at a time into a spooled temporary file (memory up to
8 MiB, then disk, never extracted: the ZIP is read member by member from it) and closed
before the next one, so peak memory stays flat whatever the run's size. An expired
artifact (410) becomes a per-file problem of the run: recorded, never retried.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from typing import BinaryIO, cast

from flakeguard.adapters.artifacts import ReportSource, iter_zip_reports
from flakeguard.adapters.github.client import (
    CheckRunBody,
    GitHubClient,
    RepoCoords,
    WorkflowRunInfo,
)
from flakeguard.adapters.queue.payloads import RunsIngestPayload
from flakeguard.adapters.sources import RunReports
from flakeguard.core.models import ReportProblem, RunRef
from flakeguard.errors import ArtifactExpired, PermanentJobError

SPOOL_MEMORY_BYTES = 8 * 2**20


def coords_of(payload: RunsIngestPayload) -> RepoCoords:
    repo = payload.repository
    if repo.installation_id is None:
        raise PermanentJobError(f"{repo.full_name}: the payload has no installationId")
    return RepoCoords(repo.owner, repo.repo, repo.installation_id)


def run_ref(info: WorkflowRunInfo, repo: str) -> RunRef:
    return RunRef(
        repo=repo,
        run_id=info.id,
        attempt=info.run_attempt,
        head_sha=info.head_sha,
        branch=info.head_branch,
        event=info.event,
        workflow=info.name,
        pr_number=info.pull_request_numbers[0] if info.pull_request_numbers else None,
        started_at=info.run_started_at or info.created_at,
        conclusion=info.conclusion,
    )


def run_from_metadata(payload: RunsIngestPayload) -> RunRef | None:
    """The run as webhooks and polling describe it, saving a `GET run` call; None if partial."""
    meta = payload.metadata
    if meta.head_sha is None or meta.created_at is None or meta.workflow_name is None:
        return None
    return RunRef(
        repo=payload.repository.full_name,
        run_id=payload.workflow_run_id,
        attempt=meta.run_attempt,
        head_sha=meta.head_sha,
        branch=meta.head_branch,
        event=meta.event,
        workflow=meta.workflow_name,
        pr_number=meta.pr_number,
        started_at=meta.created_at,
        conclusion=meta.conclusion,
    )


class GitHubRunSource:
    def __init__(self, client: GitHubClient | None, max_artifact_bytes: int) -> None:
        self._client = client
        self._max_artifact_bytes = max_artifact_bytes

    async def open_run(self, payload: RunsIngestPayload) -> RunReports:
        if self._client is None:
            raise PermanentJobError(
                "GitHub App is not configured (GITHUB_APP_ID, GITHUB_PRIVATE_KEY)"
            )
        coords = coords_of(payload)
        run = run_from_metadata(payload)
        if run is None:
            info = await self._client.get_workflow_run(
                coords, payload.workflow_run_id, payload.metadata.run_attempt
            )
            run = run_ref(info, coords.full_name)
        return RunReports(run=run, groups=self._groups(coords, run))

    async def _groups(
        self, coords: RepoCoords, run: RunRef
    ) -> AsyncIterator[tuple[str, ReportSource | ReportProblem]]:
        if self._client is None:
            return
        artifacts = await self._client.list_run_artifacts(coords, run.run_id)
        workflow = run.workflow or "workflow"
        for artifact in sorted(artifacts, key=lambda a: (a.name, a.id)):
            env_key = f"{workflow}/{artifact.name}"
            label = f"{artifact.name}.zip"
            if artifact.expired:
                yield env_key, ReportProblem(label, "artifact expired on GitHub")
                continue
            if artifact.size_in_bytes > self._max_artifact_bytes:
                yield (
                    env_key,
                    ReportProblem(
                        label, f"artifact is {artifact.size_in_bytes} bytes, over the limit"
                    ),
                )
                continue
            with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES) as spooled:
                spool = cast(BinaryIO, spooled)
                try:
                    await self._client.download_artifact(
                        coords, artifact.id, spool, max_bytes=self._max_artifact_bytes
                    )
                except ArtifactExpired:
                    yield env_key, ReportProblem(label, "artifact expired on GitHub (410)")
                    continue
                except PermanentJobError as error:
                    yield env_key, ReportProblem(label, str(error))
                    continue
                spool.seek(0)
                for item in iter_zip_reports(spool, label):
                    yield env_key, item


class GitHubChecks:
    def __init__(self, client: GitHubClient) -> None:
        self._client = client

    async def create(self, repo: RepoCoords, body: CheckRunBody) -> int:
        return await self._client.create_check_run(repo, body)

    async def update(self, repo: RepoCoords, check_run_id: int, body: CheckRunBody) -> None:
        await self._client.update_check_run(repo, check_run_id, body)
