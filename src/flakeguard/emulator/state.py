"""The emulator's mutable world: scenario data, tokens, rate-limit budgets, check runs, the log.

Shared by the server thread and the test thread, so every mutation (and every iteration over a
collection that can grow) holds `EmulatorState.lock`.
"""

from __future__ import annotations

import secrets
import string
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from flakeguard.emulator.faults import FaultBook, FaultTarget
from flakeguard.emulator.scenario import (
    AppSpec,
    ArtifactSpec,
    ArtifactStore,
    InstallationSpec,
    RepoSpec,
    RunSpec,
    Scenario,
)

Clock = Callable[[], float]

TOKEN_LIFETIME_S = 3600
PRIMARY_LIMIT = 5000
RATE_WINDOW_S = 3600
ARTIFACT_RETENTION_S = 90 * 86400
_TOKEN_ALPHABET = string.ascii_letters + string.digits


def _is_hex(text: str) -> bool:
    return bool(text) and all(c in string.hexdigits for c in text)


class AuthKind(StrEnum):
    NONE = "none"
    JWT = "jwt"
    TOKEN = "token"


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as the emulator saw it. Credentials are summarised, never stored."""

    target: FaultTarget
    host: str
    method: str
    path: str
    query: str
    status: int
    has_authorization: bool
    auth_kind: AuthKind
    installation_id: int | None
    at_epoch_s: float


@dataclass(frozen=True, slots=True)
class TokenRecord:
    installation_id: int
    created_at_epoch_s: float
    expires_at_epoch_s: float
    revoked: bool = False


@dataclass(slots=True)
class RateBucket:
    """A primary rate-limit budget (per installation; key None for the app's JWT)."""

    limit: int = PRIMARY_LIMIT
    used: int = 0
    reset_epoch_s: float = 0.0

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)

    def roll(self, now: float) -> None:
        if now >= self.reset_epoch_s:
            self.used = 0
            self.reset_epoch_s = now + RATE_WINDOW_S


@dataclass(frozen=True, slots=True)
class CheckRunRecord:
    """A stored check run (replaced, not mutated, on every update)."""

    id: int
    repo_id: int
    name: str
    head_sha: str
    status: str
    conclusion: str | None
    title: str | None
    summary: str | None
    text: str | None
    annotations: tuple[dict[str, Any], ...]
    actions: tuple[dict[str, Any], ...]
    started_at: datetime
    completed_at: datetime | None
    external_id: str | None
    details_url: str | None
    check_suite_id: int
    writes: int = 1
    """Requests that created or changed it (create = 1)."""


@dataclass(slots=True)
class EmulatorState:
    scenario: Scenario
    clock: Clock = time.time
    lock: threading.Lock = field(default_factory=threading.Lock)
    artifacts_store: ArtifactStore = field(default_factory=ArtifactStore)
    faults: FaultBook = field(default_factory=FaultBook)
    app: AppSpec = field(init=False)
    installations: dict[int, InstallationSpec] = field(default_factory=dict)
    repos: dict[int, RepoSpec] = field(default_factory=dict)
    repos_by_name: dict[str, RepoSpec] = field(default_factory=dict)
    runs: dict[tuple[int, int], dict[int, RunSpec]] = field(default_factory=dict)
    """(repo id, run id) → attempt number → run."""
    runs_by_repo: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    artifacts: dict[int, tuple[ArtifactSpec, RunSpec]] = field(default_factory=dict)
    tokens: dict[str, TokenRecord] = field(default_factory=dict)
    buckets: dict[int | None, RateBucket] = field(default_factory=dict)
    check_runs: dict[int, CheckRunRecord] = field(default_factory=dict)
    check_runs_by_ref: dict[tuple[int, str], list[int]] = field(default_factory=dict)
    """(repo id, head sha) → check-run ids: listing for a commit stays O(runs on that commit)."""
    requests: list[RequestRecord] = field(default_factory=list)
    token_replication_delay_s: float = 0.0
    next_check_run_id: int = 9_000_001

    def __post_init__(self) -> None:
        self.app = self.scenario.app
        for name, data in self.scenario.artifact_templates.items():
            self.artifacts_store.put(name, data)
        for installation in self.scenario.installations:
            self.add_installation(installation)
        for repo in self.scenario.repos:
            self.add_repo(repo)
        for run in self.scenario.runs:
            self.add_run(run)

    # ---- growing the world -------------------------------------------------------------------

    def add_installation(self, spec: InstallationSpec) -> InstallationSpec:
        with self.lock:
            self.installations[spec.id] = spec
        return spec

    def add_repo(self, repo: RepoSpec) -> RepoSpec:
        with self.lock:
            if repo.installation_id not in self.installations:
                raise ValueError(f"unknown installation {repo.installation_id}")
            self.repos[repo.id] = repo
            self.repos_by_name[repo.full_name.lower()] = repo
            self.runs_by_repo.setdefault(repo.id, [])
        return repo

    def add_run(self, run: RunSpec) -> RunSpec:
        with self.lock:
            if run.repo_id not in self.repos:
                raise ValueError(f"unknown repo id {run.repo_id}")
            for artifact in run.artifacts:
                if artifact.template not in self.artifacts_store:
                    raise ValueError(f"unknown artifact template {artifact.template!r}")
            key = (run.repo_id, run.id)
            attempts = self.runs.get(key)
            if attempts is None:
                attempts = self.runs[key] = {}
                self.runs_by_repo[run.repo_id].append(key)
            attempts[run.attempt] = run
            for artifact in run.artifacts:
                self.artifacts[artifact.id] = (artifact, run)
        return run

    def expire_artifact(self, artifact_id: int) -> None:
        with self.lock:
            artifact, run = self.artifacts[artifact_id]
            self.artifacts[artifact_id] = (replace(artifact, expired=True), run)

    # ---- lookups -----------------------------------------------------------------------------

    def latest_attempt(self, repo_id: int, run_id: int) -> RunSpec | None:
        attempts = self.runs.get((repo_id, run_id))
        if not attempts:
            return None
        return attempts[max(attempts)]

    def run_attempt(self, repo_id: int, run_id: int, attempt: int) -> RunSpec | None:
        attempts = self.runs.get((repo_id, run_id))
        return None if attempts is None else attempts.get(attempt)

    def owner_of(self, repo: RepoSpec) -> InstallationSpec:
        return self.installations[repo.installation_id]

    # ---- credentials -------------------------------------------------------------------------

    def issue_token(self, installation_id: int) -> tuple[str, TokenRecord]:
        """A new `ghs_` token; variable length, as GitHub's stateless tokens are (2026)."""
        length = 36 + secrets.randbelow(40)
        token = "ghs_" + "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(length))
        now = self.clock()
        record = TokenRecord(installation_id, now, now + TOKEN_LIFETIME_S)
        with self.lock:
            self.tokens[token] = record
        return token, record

    def revoke_token(self, token: str) -> None:
        with self.lock:
            record = self.tokens.get(token)
            if record is not None:
                self.tokens[token] = replace(record, revoked=True)

    def expire_tokens(self, installation_id: int | None = None) -> int:
        """Make issued tokens (of one installation, or all) expired now; returns how many."""
        now = self.clock()
        changed = 0
        with self.lock:
            for token, record in list(self.tokens.items()):
                if installation_id is None or record.installation_id == installation_id:
                    self.tokens[token] = replace(record, expires_at_epoch_s=now - 1)
                    changed += 1
        return changed

    # ---- rate limits -------------------------------------------------------------------------

    def bucket(self, key: int | None) -> RateBucket:
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = RateBucket()
        bucket.roll(self.clock())
        return bucket

    def exhaust(self, key: int | None, reset_in_s: float) -> None:
        with self.lock:
            bucket = self.bucket(key)
            bucket.used = bucket.limit
            bucket.reset_epoch_s = self.clock() + reset_in_s

    def set_rate_limit(
        self, key: int | None, *, limit: int, remaining: int, reset_in_s: float
    ) -> None:
        with self.lock:
            bucket = self.bucket(key)
            bucket.limit = limit
            bucket.used = limit - remaining
            bucket.reset_epoch_s = self.clock() + reset_in_s

    # ---- check runs --------------------------------------------------------------------------

    def store_new_check_run(self, record: CheckRunRecord) -> None:
        with self.lock:
            self.check_runs[record.id] = record
            self.check_runs_by_ref.setdefault((record.repo_id, record.head_sha), []).append(
                record.id
            )

    def new_check_run_id(self) -> int:
        with self.lock:
            ident = self.next_check_run_id
            self.next_check_run_id += 1
        return ident

    def latest_suite_for(self, repo_id: int, head_sha: str) -> int:
        """The check suite of the newest run attempt on `head_sha` (a stable made-up id if none)."""
        with self.lock:
            for repo_and_run in reversed(self.runs_by_repo.get(repo_id, [])):
                attempts = self.runs[repo_and_run]
                run = attempts[max(attempts)]
                if run.head_sha == head_sha:
                    return run.id * 10 + run.attempt
        return 1 + int(head_sha[:7], 16) if _is_hex(head_sha[:7]) else 1

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), tz=UTC)
