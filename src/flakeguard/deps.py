"""What processors depend on: a `Deps` bundle of ports, built once by `bootstrap`.

Processors see these Protocols, never concrete clients, so tests pass fakes for our own
ports (a directory-backed `RunSource`, a recording `CheckPublisher`) and real Redis and
databases for everything else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from flakeguard.adapters.db.history_cache import HistoryCache
from flakeguard.adapters.db.runs import CaseIdCaches, RepositoryIds
from flakeguard.adapters.queue.payloads import RunsIngestPayload
from flakeguard.adapters.queue.producer import JobProducer
from flakeguard.adapters.sources import RunReports

__all__ = ["CheckPublisher", "Deps", "RunReports", "RunSource"]

if TYPE_CHECKING:
    from flakeguard.adapters.github.client import CheckRunBody, GitHubClient, RepoCoords
    from flakeguard.observability import Metrics
    from flakeguard.settings import Settings


class RunSource(Protocol):
    """Where a run's results come from: GitHub artifacts, or a local folder in tests."""

    async def open_run(self, payload: RunsIngestPayload) -> RunReports: ...


class CheckPublisher(Protocol):
    """Creates or updates our check run on a commit (GitHub, or a recording fake)."""

    async def create(self, repo: RepoCoords, body: CheckRunBody) -> int: ...

    async def update(self, repo: RepoCoords, check_run_id: int, body: CheckRunBody) -> None: ...


@dataclass(frozen=True, slots=True)
class Deps:
    settings: Settings
    engine: AsyncEngine
    producer: JobProducer
    metrics: Metrics
    run_source: RunSource
    clock: Callable[[], datetime]
    github: GitHubClient | None = None
    checks: CheckPublisher | None = None
    case_ids: CaseIdCaches = field(default_factory=CaseIdCaches)
    """Test-case ids by repository, learned by `runs-ingest` (one per worker process)."""
    repository_ids: RepositoryIds = field(default_factory=RepositoryIds)
    """Repository rows by owner and name, as `runs-ingest` last saw them (one per process)."""
    history_cache: HistoryCache = field(default_factory=HistoryCache)
    """Test histories kept between the scoring passes of `runs-analyze` (one per process)."""
