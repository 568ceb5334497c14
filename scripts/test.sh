#!/usr/bin/env bash
# The test command: create the virtualenv from pyproject.toml, run the static checks and the
# whole suite (unit, integration against the local Redis/PostgreSQL, e2e), with coverage.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
. .venv/bin/activate

echo "== ruff";          ruff format --check src tests bench && ruff check src tests bench
echo "== mypy --strict"; mypy
echo "== import-linter"; lint-imports
echo "== pytest"
rm -f .coverage .coverage.*
python -m pytest -p no:cacheprovider --cov --cov-report=term --cov-fail-under=80 "$@"
