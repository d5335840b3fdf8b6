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

# cgroups are machine-wide, unlike everything else here: give the demo's containers a parent of their
# own, and remove it whatever happens (the containers die with the throwaway host at the latest).
export NETCTL_CGROUP_PARENT="netctl-demo-$$"
cleanup_cgroups() {
    local ids
    ids=$(netctl ps -aq 2>/dev/null || true)
    [[ -n $ids ]] && netctl rm -f $ids >/dev/null 2>&1 || true
    for dir in /sys/fs/cgroup/*/"$NETCTL_CGROUP_PARENT" /sys/fs/cgroup/"$NETCTL_CGROUP_PARENT"; do
        [[ -d $dir ]] || continue
        find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
}
trap cleanup_cgroups EXIT

demo() {
    step netctl image build-busybox                 # a rootfs from Debian's busybox-static, imported
    step netctl image ls
    step netctl network create -d bridge --subnet 10.77.0.0/24 demo-net

    step netctl run -d --name alpha --network demo-net busybox sleep 600
    step netctl run -d --name beta --network demo-net --network-alias db busybox sleep 600
    step netctl ps

    echo
    echo "alpha knows beta by name (its /etc/hosts is kept up to date from the store):"
    step netctl exec alpha cat /etc/hosts
    step netctl exec alpha ping -c 3 -W 1 beta
    step netctl run --rm --network demo-net busybox ping -c 1 -W 1 db

    echo
    echo "cleaning up:"
    step netctl rm -f alpha beta                     # endpoints, addresses, netns, cgroups, files
    step netctl network rm demo-net
    step netctl image rm busybox
    step netctl doctor
    echo
    echo "demo finished; the throwaway host and everything in it are removed now."
}

demo
