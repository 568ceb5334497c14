#!/usr/bin/env bash
# Create .venv and install the project with its development tools (idempotent, fast when done).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# The compiled parser loop is rebuilt when its source or build script changes, too.
stamp=.venv/.installed-$(cat pyproject.toml setup.py src/flakeguard/core/_junit_speedups.pyx | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev]"
  rm -f .venv/.installed-* && touch "$stamp"
fi
# Byte-code for our own modules (an editable install compiles none): without it, and where
# PYTHONDONTWRITEBYTECODE is set, every command compiles them again at start (~0.4 s).
# compileall skips the files that are up to date.
.venv/bin/python -m compileall -q src >/dev/null
