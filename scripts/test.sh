#!/usr/bin/env bash
# Runs the whole test suite, as root (tests build kernel objects, always inside throwaway namespaces).
#   sudo bash scripts/test.sh [PYTEST ARGS...]        e.g. -k bridge, tests/unit, -x
# Limits: each test's setup and body NETCTL_TEST_TIMEOUT seconds (default 300, see tests/conftest.py);
# the whole run NETCTL_SUITE_TIMEOUT seconds (default 3600). Throwaway hosts die with the run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/bootstrap.sh

# --foreground: the signal goes to pytest alone, which keeps ^C working at a terminal.
# The whole tests/ directory unless the arguments name test files or directories themselves.
targets=(tests)
for arg in "$@"; do
    [[ $arg != -* && -e ${arg%%::*} ]] && targets=()
done
exec timeout --foreground --kill-after=30 "${NETCTL_SUITE_TIMEOUT:-3600}" \
    .venv/bin/python -m pytest -n auto -p no:cacheprovider "${targets[@]}" "$@"
