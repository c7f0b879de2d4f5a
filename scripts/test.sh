#!/usr/bin/env bash
# Set everything up in .venv and run every check: lint, format, types, tests.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k sqlite`).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'

# The dashboard's browser tests (tests/browser) drive the system's Chromium with
# Playwright, which downloads no browser of its own. Installed once, as root, from
# Debian's packages; without it those tests are skipped, and fail under CI=true.
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "== installing Chromium for the browser tests (apt-get install chromium)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq --no-install-recommends chromium >/dev/null \
            || { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
    else
        echo "== no /usr/bin/chromium: the browser tests will be skipped (failed under CI=true);" \
            "install it with: sudo apt-get install --no-install-recommends chromium"
    fi
fi

# The instruction budget (tests/guard) counts the hot path's instructions with
# valgrind's callgrind; installed the same way. Without it that test is skipped,
# and fails under CI=true.
if ! command -v valgrind >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "== installing valgrind for the instruction budget (apt-get install valgrind)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq --no-install-recommends valgrind >/dev/null \
            || { apt-get update -qq && apt-get install -y -qq --no-install-recommends valgrind >/dev/null; }
    else
        echo "== no valgrind: the instruction budget will not be checked (failed under CI=true);" \
            "install it with: sudo apt-get install --no-install-recommends valgrind"
    fi
fi

echo "== ruff check"
.venv/bin/ruff check src tests benchmarks examples scripts
echo "== ruff format --check"
.venv/bin/ruff format --check src tests benchmarks examples scripts
echo "== layering (no import ring, no upward import)"
.venv/bin/python scripts/check_layers.py
echo "== mypy --strict"
.venv/bin/mypy
# Every example's main.py is a module named `main`, so pyproject.toml leaves them
# out of the run above: one run apiece, with the same configuration.
for script in examples/*/main.py; do
    .venv/bin/mypy "$script"
done
echo "== mkdocs build --strict (a broken link or docstring fails)"
# Into a directory of its own, so that a build never leaves files in the tree.
# Not --quiet: it hides warnings from --strict, which then passes.
site_dir="$(mktemp -d)"
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir "$site_dir"
rm -rf "$site_dir"
echo "== pytest"
.venv/bin/python -m pytest "$@"
