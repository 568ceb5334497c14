"""What a run source hands to storage: the run and its reports, streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from flakeguard.adapters.artifacts import ReportSource
from flakeguard.core.models import ReportProblem, RunRef


@dataclass(frozen=True, slots=True)
class RunReports:
    """A run attempt and the JUnit files found in it, grouped by environment (job/artifact)."""

    run: RunRef
    groups: AsyncIterator[tuple[str, ReportSource | ReportProblem]]
    """(env_key, source or problem) pairs, streamed: archives are opened one at a time."""
