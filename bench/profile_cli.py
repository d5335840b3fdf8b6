#!/usr/bin/env python3
"""Where a netctl CLI call spends its time: interpreter start, imports, the operation itself.

    sudo .venv/bin/python bench/profile_cli.py [--runs 21]

Runs inside a throwaway host (tests/harness.py) like every benchmark. Prints:
  1. a start-up ladder: medians of ever larger Python commands, so each step's cost is a difference;
  2. the same operations done in one warm process (library calls): the cost of the work itself;
  3. `python -X importtime` of `netctl network create`, summed by top-level package, and the modules
     with the largest self time;
  4. the same CLI calls with and without a bytecode cache (PYTHONDONTWRITEBYTECODE's cost).
Not a benchmark against a peer, a diagnosis: see bench_network.py for the comparisons.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import fmt_ms, format_table, load_harness, write_results  # noqa: E402

# Runs inside the host: times each argv `runs` times with the bytecode cache on (and the listed ones
# also with it off), times the same operations in-process, and runs -X importtime once.
_INNER = r'''
import json, os, statistics, subprocess, sys, time
runs = int(sys.argv[1])
py = sys.executable
cache_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
cache_env["PYTHONPYCACHEPREFIX"] = "/run/bench/pycache"
nocache_env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")

def run(argv, env):
    subprocess.run(argv, env=env, check=True, capture_output=True, timeout=30)

netctl = [py, "-m", "netctl"]
run(netctl + ["network", "ls"], cache_env)  # fill the bytecode cache
run(netctl + ["sandbox", "create", "--name", "probe"], cache_env)
run(netctl + ["network", "create", "--subnet", "10.60.0.0/16", "fixed"], cache_env)

ladder = [
    ("true (process start)", ["true"]),
    ("python -I -S -c pass", [py, "-I", "-S", "-c", "pass"]),
    ("python -c pass (site)", [py, "-c", "pass"]),
    ("+ import click", [py, "-c", "import click"]),
    ("+ import netctl.cli", [py, "-c", "import netctl.cli"]),
    ("+ libnetwork for create", [py, "-c", "import netctl.cli, libnetwork.controller, libnetwork.netlink, "
                                 "libnetwork.firewall, libnetwork.store.sqlite, drivers.bridge"]),
    ("netctl --help", netctl + ["--help"]),
    ("netctl network ls", netctl + ["network", "ls"]),
]
out = {"ladder": [], "cli": [], "lib": [], "importtime": ""}
# Round-robin, so that drift in the machine's speed spreads over every step alike.
ladder_samples = {label: [] for label, _ in ladder}
for _ in range(runs):
    for label, argv in ladder:
        t = time.perf_counter(); run(argv, cache_env); ladder_samples[label].append((time.perf_counter() - t) * 1000)
for label, samples in ladder_samples.items():
    out["ladder"].append([label, statistics.median(samples), min(samples)])

def cli_cycle(env):
    """create/rm and connect/disconnect, timed separately, runs times."""
    times = {"network create": [], "network rm": [], "network connect": [], "network disconnect": []}
    for i in range(runs):
        for op, argv in (("network create", ["network", "create", "--subnet", f"10.61.{i}.0/24", f"n{i}"]),
                         ("network rm", ["network", "rm", f"n{i}"]),
                         ("network connect", ["network", "connect", "fixed", "probe"]),
                         ("network disconnect", ["network", "disconnect", "fixed", "probe"])):
            t = time.perf_counter(); run(netctl + argv, env); times[op].append((time.perf_counter() - t) * 1000)
    return {op: (statistics.median(v), min(v)) for op, v in times.items()}

with_cache = cli_cycle(cache_env)
without_cache = cli_cycle(nocache_env)
for op in with_cache:
    out["cli"].append([op, *with_cache[op], *without_cache[op]])

from libnetwork.controller import Controller, NetworkSpec
from libnetwork.model import PoolConfig
ctl = Controller()
lib = {"network create": [], "network rm": [], "network connect": [], "network disconnect": []}
for i in range(runs):
    steps = (("network create", lambda: ctl.create_network(NetworkSpec(name=f"l{i}", pools=[PoolConfig(subnet=f"10.62.{i}.0/24")]))),
             ("network rm", lambda: ctl.delete_network(f"l{i}")),
             ("network connect", lambda: ctl.connect("fixed", "probe")),
             ("network disconnect", lambda: ctl.disconnect("fixed", "probe")))
    for op, call in steps:
        t = time.perf_counter(); call(); lib[op].append((time.perf_counter() - t) * 1000)
out["lib"] = [[op, statistics.median(v), min(v)] for op, v in lib.items()]

proc = subprocess.run([py, "-X", "importtime", "-m", "netctl", "network", "create", "--subnet", "10.63.0.0/24", "imp"],
                      env=cache_env, capture_output=True, text=True, timeout=30, check=True)
out["importtime"] = proc.stderr
print(json.dumps(out))
'''


def parse_importtime(text: str) -> tuple[list[tuple[str, float]], list[tuple[str, float, float]]]:
    """(self ms summed per top-level package, top modules by self ms with their cumulative ms)."""
    per_package: dict[str, float] = {}
    modules: list[tuple[str, float, float]] = []
    for line in text.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = line[len("import time:"):].split("|")
        module = name.strip()
        per_package[module.split(".")[0]] = per_package.get(module.split(".")[0], 0.0) + int(self_us) / 1000
        modules.append((module, int(self_us) / 1000, int(cumulative_us) / 1000))
    packages = sorted(per_package.items(), key=lambda kv: -kv[1])
    return packages, sorted(modules, key=lambda m: -m[1])


def group_packages(packages: list[tuple[str, float]]) -> list[tuple[str, float]]:
    ours = ("netctl", "libnetwork", "drivers", "cni_plugins", "runner")
    groups = {"click": 0.0, "netctl's own modules": 0.0, "standard library and others": 0.0}
    for name, ms in packages:
        if name == "click":
            groups["click"] += ms
        elif name in ours:
            groups["netctl's own modules"] += ms
        else:
            groups["standard library and others"] += ms
    return sorted(groups.items(), key=lambda kv: -kv[1])


def main() -> int:
    parser = argparse.ArgumentParser(description="Where a netctl CLI call spends its time.")
    parser.add_argument("--runs", type=int, default=21, help="runs per figure (1-200)")
    args = parser.parse_args()
    if not 1 <= args.runs <= 200:
        parser.error("--runs must be between 1 and 200")
    if os.geteuid() != 0:
        print("profile_cli: needs root (throwaway namespaces)", file=sys.stderr)
        return 1
    harness = load_harness()
    with harness.Host.start("bench-profile") as host:
        host.run("mkdir", "-p", "/run/bench")
        proc = host.run(sys.executable, "-c", _INNER, str(args.runs), timeout=600)
    data = json.loads(proc.stdout)

    print("== start-up ladder (median / min ms; each line adds to the one above) ==")
    print(format_table(["command", "median", "min"], [[l, fmt_ms(m), fmt_ms(n)] for l, m, n in data["ladder"]], numeric=(1, 2)))
    print("\n== CLI vs in-process library (median ms) ==")
    lib = {row[0]: row for row in data["lib"]}
    rows = []
    for op, med, mn, med_nc, mn_nc in data["cli"]:
        rows.append([op, fmt_ms(med), fmt_ms(mn), fmt_ms(med_nc), fmt_ms(lib[op][1]), fmt_ms(med - lib[op][1])])
    headers = ["operation", "CLI", "CLI min", "CLI, no .pyc cache", "library", "CLI - library"]
    print(format_table(headers, rows, numeric=(1, 2, 3, 4, 5)))
    packages, modules = parse_importtime(data["importtime"])
    print("\n== -X importtime of `netctl network create`: self time by origin (ms, inflated by the tracing) ==")
    print(format_table(["origin", "self ms"], [[g, f"{ms:.1f}"] for g, ms in group_packages(packages)], numeric=(1,)))
    print("\n== modules with the largest self time (ms) ==")
    print(format_table(["module", "self", "cumulative"], [[m, f"{s:.1f}", f"{c:.1f}"] for m, s, c in modules[:15]], numeric=(1, 2)))
    path = write_results("profile-cli", dict(data, packages=packages, runs=args.runs))
    print(f"\nresults written to {os.path.relpath(path)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
