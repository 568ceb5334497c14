from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import AliasChoices

from flakeguard.errors import ConfigError
from flakeguard.settings import LogLevel, Settings, load_settings


def test_defaults_are_the_specs() -> None:
    s = load_settings({})
    assert (s.worker_concurrency, s.high_priority_concurrency) == (5, 3)
    assert (s.metrics_port, s.health_check_port) == (9090, 8080)
    assert (s.remove_on_complete, s.remove_on_fail) == (100, 50)
    assert (s.max_retry_attempts, s.retry_delay_ms, s.max_retry_delay_ms) == (3, 5000, 30000)
    assert s.backoff_multiplier == 2
    assert s.stalled_job_timeout_ms == 30000
    assert s.github_api_url == "https://api.github.com"
    assert s.embedded_redis
    assert s.embedded_database
    assert not s.github_enabled


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL: Input should be"),
        (
            {"WORKER_CONCURRENCY": "0"},
            "WORKER_CONCURRENCY: Input should be greater than or equal to 1",
        ),
        ({"METRICS_PORT": "70000"}, "METRICS_PORT:"),
        ({"REDIS_CLUSTER_NODES": "a:1,b"}, "REDIS_CLUSTER_NODES: expected host:port, got 'b'"),
        ({"DATABASE_URL": "mysql://u:hunter2@x/y"}, "DATABASE_URL: expected a postgresql://"),
        ({"REDIS_URL": "http://x"}, "REDIS_URL: expected a redis://"),
        ({"GITHUB_API_URL": "ftp://x"}, "GITHUB_API_URL: expected an http(s) URL"),
        ({"RETRY_DELAY_MS": "60000"}, "MAX_RETRY_DELAY_MS must be >= RETRY_DELAY_MS"),
        ({"POLLING_ENABLED": "perhaps"}, "POLLING_ENABLED:"),
    ],
)
def test_invalid_values_give_one_line_naming_the_variable(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    text = str(caught.value)
    assert text.startswith(message.split(":")[0]) or message in text
    assert message in text
    assert "\n" not in text
    assert "hunter2" not in text


def test_node_env_and_level_aliases() -> None:
    s = load_settings({"NODE_ENV": "production", "LOG_LEVEL": "WARNING"})
    assert s.environment == "production"
    assert s.log_level is LogLevel.WARN
    assert load_settings({"LOG_LEVEL": "trace"}).log_level is LogLevel.TRACE
    assert load_settings({"ENVIRONMENT": "staging", "NODE_ENV": "x"}).environment == "staging"


def test_secrets_never_in_repr() -> None:
    s = load_settings(
        {
            "GITHUB_PRIVATE_KEY": "-----BEGIN KEY-----\\nabc",
            "GITHUB_WEBHOOK_SECRET": "whsec",
            "ADMIN_API_TOKEN": "tok",
            "DATABASE_URL": "postgresql://u:pw@h/db",
            "GITHUB_APP_ID": "1",
        }
    )
    text = repr(s)
    for secret in ("BEGIN KEY", "whsec", "tok'", "pw@"):
        assert secret not in text
    assert s.github_private_key_pem() == "-----BEGIN KEY-----\nabc"
    assert s.github_enabled


def test_private_key_path_and_errors(tmp_path: Path) -> None:
    key = tmp_path / "app.pem"
    key.write_text("PEM")
    assert load_settings({"GITHUB_PRIVATE_KEY_PATH": str(key)}).github_private_key_pem() == "PEM"
    missing = load_settings({"GITHUB_PRIVATE_KEY_PATH": str(tmp_path / "nope.pem")})
    with pytest.raises(ConfigError, match="GITHUB_PRIVATE_KEY_PATH: cannot read"):
        missing.github_private_key_pem()
    with pytest.raises(ConfigError, match="not both"):
        load_settings({"GITHUB_PRIVATE_KEY": "x", "GITHUB_PRIVATE_KEY_PATH": str(key)})


def test_cluster_nodes_parsed() -> None:
    s = load_settings({"REDIS_CLUSTER_ENABLED": "true", "REDIS_CLUSTER_NODES": "r1:6379, r2:6380"})
    assert s.redis_cluster_nodes == ("r1:6379", "r2:6380")
    assert not s.embedded_redis
    with pytest.raises(ConfigError, match="REDIS_CLUSTER_ENABLED needs"):
        load_settings({"REDIS_CLUSTER_ENABLED": "true"})


def test_every_variable_is_in_the_readmes_configuration_table() -> None:
    readme = Path(__file__).parents[2] / "README.md"
    section = (
        readme.read_text(encoding="utf-8").split("## Configuration", 1)[1].split("\n## ", 1)[0]
    )
    rows = "\n".join(line for line in section.splitlines() if line.startswith("| `"))
    variables = {
        choice
        for field in Settings.model_fields.values()
        for choice in (
            field.validation_alias.choices
            if isinstance(field.validation_alias, AliasChoices)
            else [field.validation_alias]
        )
        if isinstance(choice, str)
    }
    assert len(variables) > 30
    assert sorted(v for v in variables if f"`{v}`" not in rows) == []
