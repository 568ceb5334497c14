"""One pydantic model per queue payload (DESIGN.md §5).

Field names are snake_case in Python and camelCase on the wire, so jobs written by a Node
BullMQ producer with the spec's TypeScript interfaces validate as they are. Every model is
frozen; unknown fields are ignored (a newer producer must not poison an older worker).
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from flakeguard.core.models import Priority

# GitHub: owners are 1-39 alphanumerics or single hyphens; repository names 1-100 of [A-Za-z0-9._-].
Owner = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$")]
RepoName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,100}$")]
Sha = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{7,64}$")]
_SAFE_TEXT = re.compile(r"^[^\x00-\x1f]*$")


class Payload(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="ignore",
        alias_generator=to_camel,
        populate_by_name=True,
        str_max_length=10_000,
    )

    def to_job_data(self) -> dict[str, object]:
        """The camelCase JSON a Node worker would also understand."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class RepositoryRef(Payload):
    owner: Owner
    repo: RepoName
    installation_id: int | None = Field(default=None, gt=0)

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.repo}"


class RunMetadata(Payload):
    run_status: str | None = Field(default=None, max_length=40)
    conclusion: str | None = Field(default=None, max_length=40)
    head_sha: Sha | None = None
    head_branch: str | None = Field(default=None, max_length=255)
    run_attempt: int = Field(default=1, ge=1, le=1000)
    event: str | None = Field(default=None, max_length=50)
    pr_number: int | None = Field(default=None, gt=0)
    workflow_name: str | None = Field(default=None, max_length=255)
    created_at: datetime | None = None

    @field_validator("head_branch", "workflow_name", "event", "conclusion", "run_status")
    @classmethod
    def _no_control_chars(cls, value: str | None) -> str | None:
        if value is not None and not _SAFE_TEXT.match(value):
            raise ValueError("control characters are not allowed")
        return value


class RunsIngestPayload(Payload):
    workflow_run_id: int = Field(gt=0)
    repository: RepositoryRef
    priority: Priority = Priority.NORMAL
    metadata: RunMetadata = Field(default_factory=RunMetadata)
    correlation_id: str | None = Field(default=None, max_length=100)

    def dedup_key(self) -> str:
        return (
            f"ingest:{self.repository.full_name}:{self.workflow_run_id}:{self.metadata.run_attempt}"
        )


class AnalysisConfig(Payload):
    lookback_days: int | None = Field(default=None, ge=1, le=365)
    min_runs_threshold: int | None = Field(default=None, ge=1, le=10_000)


class ButtonAction(StrEnum):
    """Check-run buttons (their `identifier`), pressed by a person on GitHub."""

    QUARANTINE = "quarantine"
    UNQUARANTINE = "unquarantine"


class RunsAnalyzePayload(Payload):
    workflow_run_id: int = Field(gt=0)
    repository: RepositoryRef
    run_attempt: int = Field(default=1, ge=1, le=1000)
    force_recompute: bool = False
    analysis_config: AnalysisConfig = Field(default_factory=AnalysisConfig)
    priority: Priority = Priority.HIGH
    correlation_id: str | None = Field(default=None, max_length=100)
    requested_action: ButtonAction | None = None
    """Set when a person pressed a check-run button; applied before the check is redrawn."""

    def dedup_key(self) -> str:
        key = f"analyze:{self.repository.full_name}:{self.workflow_run_id}:{self.run_attempt}"
        return f"{key}:{self.requested_action}" if self.requested_action else key


class RecomputeScopeType(StrEnum):
    ALL = "all"
    TEST_PATTERN = "test_pattern"
    CLASS_PATTERN = "class_pattern"
    SPECIFIC_TESTS = "specific_tests"


class RecomputeScope(Payload):
    type: RecomputeScopeType = RecomputeScopeType.ALL
    patterns: tuple[Annotated[str, StringConstraints(min_length=1, max_length=500)], ...] = Field(
        default=(), max_length=1000
    )
    lookback_days: int | None = Field(default=None, ge=1, le=365)

    @model_validator(mode="after")
    def _patterns_needed(self) -> RecomputeScope:
        if self.type is not RecomputeScopeType.ALL and not self.patterns:
            raise ValueError(f"scope {self.type.value} needs at least one pattern")
        return self


class RecomputeOptions(Payload):
    batch_size: int = Field(default=500, ge=1, le=10_000)
    update_quarantine_status: bool = True


class RecomputePayload(Payload):
    """The spec's TestsRecomputeJobData."""

    repository: RepositoryRef
    recompute_scope: RecomputeScope = Field(default_factory=RecomputeScope)
    options: RecomputeOptions = Field(default_factory=RecomputeOptions)
    priority: Priority = Priority.LOW
    correlation_id: str | None = Field(default=None, max_length=100)

    def dedup_key(self) -> str:
        digest = hashlib.blake2b(
            self.model_dump_json(exclude={"correlation_id", "priority"}).encode(), digest_size=8
        ).hexdigest()
        return f"recompute:{self.repository.full_name}:{digest}"


class PollingPayload(Payload):
    repository: RepositoryRef | None = None
    """None: discover installations and poll every enabled repository."""
    correlation_id: str | None = Field(default=None, max_length=100)
