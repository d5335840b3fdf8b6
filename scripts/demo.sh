#!/usr/bin/env bash
# A first look at netctl, as root:  sudo bash scripts/demo.sh
# Everything happens inside a throwaway host (own network, mount and PID namespaces, fresh /run,
# NETCTL_ROOT=/run/netctl) that vanishes at the end: the machine's own network is never touched.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ ${1:-} != --inside-throwaway-host ]]; then
    bash scripts/bootstrap.sh
    exec .venv/bin/python tests/harness.py --name netctl-demo -- bash scripts/demo.sh --inside-throwaway-host
fi

# ---- from here on we are inside the throwaway host ------------------------------------------------

if [[ -t 2 ]]; then BOLD=$'\033[1m' PLAIN=$'\033[0m'; else BOLD='' PLAIN=''; fi

step() {  # show a command (on stderr, so that $(step ...) captures only its output), then run it
    printf '\n%s$ %s%s\n' "$BOLD" "$*" "$PLAIN" >&2
    "$@"
}

demo() {
    step netctl network create -d bridge --subnet 10.77.0.0/24 demo-net
    step netctl network ls

    step netctl sandbox create --name alpha
    step netctl sandbox create --name beta
    step netctl network connect demo-net alpha
    step netctl network connect demo-net beta
    step netctl network inspect demo-net

    # beta's address as the kernel has it, then ping it from alpha.
    BETA_ADDR=$(netctl sandbox exec beta -- ip -4 -o addr show dev eth0 | awk '{ split($4, a, "/"); print a[1] }')
    echo
    echo "beta has $BETA_ADDR; alpha pings it:"
    step netctl sandbox exec alpha -- ping -c 3 -W 1 "$BETA_ADDR"

    echo
    echo "cleaning up:"
    step netctl network disconnect demo-net alpha
    step netctl network disconnect demo-net beta
    step netctl sandbox rm alpha beta
    step netctl network rm demo-net
    step netctl doctor
    echo
    echo "demo finished; the throwaway host and everything in it are removed now."
}

demo
