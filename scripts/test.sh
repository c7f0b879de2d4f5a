#!/usr/bin/env bash
# Set everything up in .venv and run every check: lint, format, types, tests.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k sqlite`).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'

echo "== ruff check"
.venv/bin/ruff check src tests benchmarks examples
echo "== ruff format --check"
.venv/bin/ruff format --check src tests benchmarks examples
echo "== mypy --strict"
.venv/bin/mypy
echo "== pytest"
.venv/bin/python -m pytest "$@"
