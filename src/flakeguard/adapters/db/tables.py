"""The relational schema (DESIGN.md §4), one definition for PostgreSQL and SQLite.

Declarative models give typed rows for the ORM paths and `Model.__table__` for bulk
Core statements. Migrations in `migrations/versions` must match this file
(`tests/integration/test_migrations.py` compares them).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a real BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class RepositoryRow(Base):
    __tablename__ = "repositories"
    __table_args__ = (UniqueConstraint("owner", "name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(100))
    github_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    installation_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    default_branch: Mapped[str] = mapped_column(String(255), default="main")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    poll_cursor: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    """Created time of the newest completed run seen by polling."""
    poll_seen_run_ids: Mapped[list[int] | None] = mapped_column(JSON, nullable=True)
    """Run ids already enqueued at the cursor's edge (runs finishing late are not missed)."""
    poll_etag: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WorkflowRunRow(Base):
    """One attempt of one CI run; the unique key makes ingestion idempotent."""

    __tablename__ = "workflow_runs"
    __table_args__ = (
        UniqueConstraint("repository_id", "run_id", "run_attempt"),
        Index("ix_workflow_runs_repo_sha", "repository_id", "head_sha"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"))
    run_id: Mapped[int] = mapped_column(BigInteger)
    run_attempt: Mapped[int] = mapped_column(Integer, default=1)
    workflow: Mapped[str | None] = mapped_column(String(255), nullable=True)
    head_sha: Mapped[str] = mapped_column(String(64))
    head_branch: Mapped[str | None] = mapped_column(String(255), nullable=True)
    event: Mapped[str | None] = mapped_column(String(50), nullable=True)
    pr_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str | None] = mapped_column(String(30), nullable=True)
    conclusion: Mapped[str | None] = mapped_column(String(30), nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ingested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    source: Mapped[str] = mapped_column(String(20), default="github")
    cases: Mapped[int] = mapped_column(Integer, default=0)
    executions: Mapped[int] = mapped_column(Integer, default=0)
    problems: Mapped[list[dict[str, object]] | None] = mapped_column(JSON, nullable=True)
    """Files of the run that could not be used, with their reason (never retried)."""
    envs: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    """Environments (job / artifact keys) stored: each is ingested once per run attempt."""


class ReportRow(Base):
    """One JUnit file of a run: the unit of the infrastructure-outage filter."""

    __tablename__ = "reports"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workflow_run_id: Mapped[int] = mapped_column(
        ForeignKey("workflow_runs.id", ondelete="CASCADE"), index=True
    )
    env_key: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(Text)
    cases: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    failed_share: Mapped[float] = mapped_column(Float, default=0.0)


class CaseRow(Base):
    __tablename__ = "test_cases"
    __table_args__ = (UniqueConstraint("repository_id", "test_key"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"))
    test_key: Mapped[str] = mapped_column(String(32))
    suite: Mapped[str] = mapped_column(Text)
    class_name: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    file: Mapped[str | None] = mapped_column(Text, nullable=True)
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ExecutionRow(Base):
    """One attempt of one test in one report of one run attempt.

    The largest table by far (a row per test and attempt of every run), written only by
    COPY and read by test case or by run, so it carries nothing a row does not need:
    - no foreign keys (migrations 0003 and 0005): a key costs COPY a check per row, and rows
      are written in the transaction that reads or creates their test case, report and run.
      They leave with their run by the trigger `executions_leave_with_run` (migration 0005);
    - no surrogate `id` (migration 0006): nothing referred to it, and its sequence and
      primary-key index cost PostgreSQL ~28 % of a COPY's CPU. The mapper's identity below
      is for the ORM only; the database has no primary key here (for logical replication
      of deletes, set `REPLICA IDENTITY FULL` on the table).
    """

    __tablename__ = "executions"
    __table_args__ = (Index("ix_executions_test_case", "test_case_id", "workflow_run_id"),)
    __mapper_args__ = {  # noqa: RUF012  # SQLAlchemy's declarative attribute
        "primary_key": ["test_case_id", "workflow_run_id", "report_id", "retry_index"]
    }

    test_case_id: Mapped[int] = mapped_column(BigId)
    workflow_run_id: Mapped[int] = mapped_column(BigId, index=True)
    report_id: Mapped[int] = mapped_column(BigId)
    env_key: Mapped[str] = mapped_column(String(255))
    retry_index: Mapped[int] = mapped_column(SmallInteger, default=0)
    is_final: Mapped[bool] = mapped_column(Boolean, default=True)
    outcome: Mapped[str] = mapped_column(String(10))
    duration_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    failure_type: Mapped[str | None] = mapped_column(Text, nullable=True)
    signature: Mapped[str | None] = mapped_column(String(32), nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)


class FlakeScoreRow(Base):
    __tablename__ = "flake_scores"
    __table_args__ = (UniqueConstraint("test_case_id", "scope"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    test_case_id: Mapped[int] = mapped_column(ForeignKey("test_cases.id", ondelete="CASCADE"))
    scope: Mapped[str] = mapped_column(String(255))
    score: Mapped[float] = mapped_column(Float)
    failure_rate: Mapped[float] = mapped_column(Float)
    inconsistency: Mapped[float] = mapped_column(Float)
    recency: Mapped[float] = mapped_column(Float)
    branch_diversity: Mapped[float] = mapped_column(Float)
    verdict: Mapped[str] = mapped_column(String(20), index=True)
    confidence: Mapped[str] = mapped_column(String(10))
    reason: Mapped[str] = mapped_column(Text)
    runs: Mapped[int] = mapped_column(Integer)
    failures: Mapped[int] = mapped_column(Integer)
    evidence: Mapped[dict[str, float]] = mapped_column(JSON)
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class QuarantineRow(Base):
    __tablename__ = "quarantine"
    __table_args__ = (UniqueConstraint("test_case_id", "scope"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    test_case_id: Mapped[int] = mapped_column(ForeignKey("test_cases.id", ondelete="CASCADE"))
    scope: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(20), index=True)
    reason: Mapped[str] = mapped_column(Text)
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    clean_runs_since: Mapped[int] = mapped_column(Integer, default=0)
    signatures: Mapped[list[str]] = mapped_column(JSON, default=list)
    manual: Mapped[bool] = mapped_column(Boolean, default=False)
    owner: Mapped[str | None] = mapped_column(String(255), nullable=True)


class CheckRunRow(Base):
    """Our check run per head SHA, so analyses update it in place instead of adding more."""

    __tablename__ = "check_runs"
    __table_args__ = (UniqueConstraint("repository_id", "head_sha", "name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"))
    head_sha: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(100))
    check_run_id: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    annotated: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    """Keys of annotations already sent: GitHub appends annotations on every update."""


def table_of(model: type[Base]) -> Table:
    """The model's Core `Table`, typed, for bulk statements."""
    found = model.__table__
    if not isinstance(found, Table):
        raise TypeError(f"{model.__name__} is not mapped to a Table")
    return found
