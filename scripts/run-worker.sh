#!/usr/bin/env bash
# Run a worker on its embedded defaults (bundled Redis, SQLite in ./.flakeguard) unless
# REDIS_URL / DATABASE_URL say otherwise. Extra arguments go to `flakeguard worker`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/flakeguard worker "$@"
