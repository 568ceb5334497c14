"""One error hierarchy, split by what the queue should do with the job.

`PermanentJobError` fails the job at once (BullMQ `UnrecoverableError`, never retried);
`TransientJobError` lets BullMQ retry with capped, jittered exponential backoff;
`GitHubRateLimited` waits for what GitHub said without burning an attempt.
Every error carries a `category` that ends up in the job's failed reason and in
`flakeguard_worker_job_retries_total{error_type}`. Messages never contain secrets.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCategory(StrEnum):
    VALIDATION = "validation"
    POISONED_INPUT = "poisoned_input"
    NETWORK = "network"
    REDIS = "redis"
    DATABASE = "database"
    GITHUB_5XX = "github_5xx"
    GITHUB_CLIENT = "github_client"
    RATE_LIMIT = "rate_limit"
    PROCESSING = "processing"
    SYSTEM = "system"
    UNKNOWN = "unknown"


class FlakeGuardError(Exception):
    """Base of every error we raise on purpose."""

    category: ErrorCategory = ErrorCategory.UNKNOWN

    def __init__(self, message: str, *, category: ErrorCategory | None = None) -> None:
        super().__init__(message)
        if category is not None:
            self.category = category


class ConfigError(FlakeGuardError):
    """Settings are invalid: the process stops at start with one clear line."""

    category = ErrorCategory.VALIDATION


class PermanentJobError(FlakeGuardError):
    """Retrying cannot help (invalid payload, poisoned artifact, 404 repository)."""

    category = ErrorCategory.VALIDATION


class TransientJobError(FlakeGuardError):
    """Retrying later may help (network, Redis, database, GitHub 5xx)."""

    category = ErrorCategory.NETWORK


class GitHubRateLimited(TransientJobError):  # noqa: N818  # the name DESIGN.md gives it
    """GitHub said to wait; the job is re-delayed by `retry_after_s` without using an attempt."""

    category = ErrorCategory.RATE_LIMIT

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class GitHubServerError(TransientJobError):
    category = ErrorCategory.GITHUB_5XX


class GitHubClientError(PermanentJobError):
    """A 4xx that is not a rate limit (400, 401 after refresh, 403, 404, 422)."""

    category = ErrorCategory.GITHUB_CLIENT

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class ArtifactExpired(FlakeGuardError):  # noqa: N818  # a state, like GitHub's 410 "Gone"
    """GitHub answered 410 for an artifact: recorded on the run, never retried."""

    category = ErrorCategory.GITHUB_CLIENT
