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
# Two workers a CPU (at most 8, more untried): a test mostly waits on the kernel, daemons and
# clients. On a 2-CPU machine the suite took 751-810 s with one worker a CPU (-n auto, ~45% of the
# CPUs busy) and 505-630 s with two. A later -n in the arguments wins.
cpus=$(.venv/bin/python -c 'import os; print(len(os.sched_getaffinity(0)))')  # nproc obeys OMP_NUM_THREADS
workers=$(( cpus * 2 ))
workers=$(( workers > 8 ? 8 : workers ))
exec timeout --foreground --kill-after=30 "${NETCTL_SUITE_TIMEOUT:-3600}" \
    .venv/bin/python -m pytest -n "$workers" -p no:cacheprovider "${targets[@]}" "$@"
