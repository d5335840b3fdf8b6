#!/usr/bin/env python3
"""Where a netctl CLI call spends its time: interpreter start, the thin client, the agent, the library.

    sudo .venv/bin/python bench/profile_cli.py [--runs 21]

Runs inside a throwaway host (tests/harness.py) like every benchmark, with an agent started by hand
(`netctl daemon`) on the host's root. Every figure of one table comes from the same rounds (round-robin).
Prints:
  1. a start-up ladder: medians of ever larger commands, so each step's cost is a difference; among
     them the thin client's import under both launchers: pip's (#! the venv's python, with site) and
     the fast one scripts/bootstrap.sh writes (/usr/bin/python3 -I -S, sys.path explicit);
  2. agent-served commands by launcher (pip's, the fast one, `python -m netctl`), and in-process
     (NETCTL_NO_DAEMON=1) for reference;
  3. one agent-served command taken apart: from the client's side (interpreter start and exit, the
     thin client's imports, connect, request to answer), and inside the agent (RequestServer's CLI
     path in a warm process: click, output capture, the warm controller) beside the library call;
  4. `python -X importtime` of an in-process `netctl network create` (the cold path), by origin.
Not a benchmark against a peer, a diagnosis: see bench_network.py and bench_cni.py for comparisons.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import REPO_DIR, fmt_ms, format_table, load_harness, write_results  # noqa: E402

# Runs inside the host (argv: runs, repo). Everything timed here; the JSON on stdout.
_INNER = r'''
import json, os, statistics, subprocess, sys, sysconfig, time
runs, repo = int(sys.argv[1]), sys.argv[2]
py = sys.executable  # the venv's
site = list(dict.fromkeys((sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"])))
work = "/run/bench"
root = os.environ["NETCTL_ROOT"]
env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
env["PYTHONPYCACHEPREFIX"] = f"{work}/pycache"  # for the launchers that read it (not -I ones)
inproc_env = dict(env, NETCTL_NO_DAEMON="1")

def run(argv, e=env):
    subprocess.run(argv, env=e, check=True, capture_output=True, timeout=30)

def timed(argv, e=env):
    t = time.perf_counter(); run(argv, e); return (time.perf_counter() - t) * 1000

# Launchers: pip's (what setuptools wrote from bin/netctl: #! the venv's python, site on) and the
# installed one (scripts/bootstrap.sh's fast launcher, if bootstrap ran).
pip_launcher = f"{work}/netctl-pip"
with open(pip_launcher, "w") as f:
    f.write(f"#!{py}\nfrom netctl.entry import main\n\nmain()\n")
os.chmod(pip_launcher, 0o755)
installed = os.path.join(os.path.dirname(py), "netctl")
with open(installed) as f:
    first = f.readline()
fast_python = first[2:].split()[0] if "-IS" in first else py
launchers = {"pip launcher (venv python, site)": [pip_launcher], f"installed launcher ({first[2:].strip()})": [installed],
             "python -m netctl": [py, "-m", "netctl"]}

run([py, "-m", "netctl", "network", "ls"], inproc_env)  # fill the bytecode cache
agent = subprocess.Popen([py, "-m", "netctl", "daemon"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
for _ in range(100):
    if "listening" in agent.stderr.readline():
        break
import threading
threading.Thread(target=agent.stderr.read, daemon=True).start()
run([installed, "sandbox", "create", "--name", "probe"])
run([installed, "network", "create", "--subnet", "10.60.0.0/16", "fixed"])
for launcher in launchers.values():  # each launcher's interpreter compiles what it needs, once
    run(launcher + ["network", "ls"])

prefix = f"import sys; sys.path[:0] = [{repo!r}]; sys.path += {site!r}; "
ladder = [
    ("true (process start)", ["true"]),
    ("/usr/bin/python3 -I -S -c pass (static)", ["/usr/bin/python3", "-I", "-S", "-c", "pass"]),
    ("venv python -I -S -c pass", [py, "-I", "-S", "-c", "pass"]),
    ("venv python -c pass (site)", [py, "-c", "pass"]),
    ("venv python (site): import netctl.entry  [pip's launcher]", [py, "-c", "import netctl.entry"]),
    (f"{fast_python} -I -S: import netctl.entry  [installed launcher]", [fast_python, "-I", "-S", "-c", prefix + "import netctl.entry"]),
    ("/usr/bin/python3 -I -S: import netctl.entry", ["/usr/bin/python3", "-I", "-S", "-c", prefix + "import netctl.entry"]),
    (f"{fast_python} -I -S: import libnetwork.ipc only", [fast_python, "-I", "-S", "-c", prefix + "import libnetwork.ipc"]),
    (f"{fast_python} -I -S: import os", [fast_python, "-I", "-S", "-c", "import os"]),
    ("venv python (site): import click", [py, "-c", "import click"]),
    ("venv python (site): import netctl.cli", [py, "-c", "import netctl.cli"]),
]
out = {"ladder": [], "commands": [], "client": [], "agent": [], "importtime": "", "launchers": list(launchers)}
samples = {label: [] for label, _ in ladder}
for _ in range(runs):
    for label, argv in ladder:
        samples[label].append(timed(argv))
out["ladder"] = [[label, statistics.median(v), min(v)] for label, v in samples.items()]

# Agent-served commands by launcher, and in-process; interleaved.
ops = {"network ls": lambda i: [["network", "ls"]],
       "network create+rm": lambda i: [["network", "create", "--subnet", f"10.61.{i % 200}.0/24", f"n{i}"], ["network", "rm", f"n{i}"]],
       "network connect+disconnect": lambda i: [["network", "connect", "fixed", "probe"], ["network", "disconnect", "fixed", "probe"]]}
ways = {name: (argv, env) for name, argv in launchers.items()}
ways["in-process (installed launcher, NETCTL_NO_DAEMON=1)"] = ([installed], inproc_env)
command_samples = {(op, way): [] for op in ops for way in ways}
i = 0
for _ in range(runs):
    for op, argvs in ops.items():
        for way, (launcher, e) in ways.items():
            i += 1
            t = time.perf_counter()
            for argv in argvs(i):
                run(launcher + argv, e)
            command_samples[(op, way)].append((time.perf_counter() - t) * 1000)
out["commands"] = [[op, way, statistics.median(v), min(v)] for (op, way), v in command_samples.items()]

# One agent-served command from the client's side, in a fresh process under the fast launcher's interpreter.
probe = f"{work}/client_probe.py"
with open(probe, "w") as f:
    f.write("""import time
t0 = time.perf_counter()
import sys
sys.path[:0] = [REPO]; sys.path += SITE
from netctl import entry
from libnetwork import ipc
t1 = time.perf_counter()
argv = sys.argv[1:]
path = entry.delegable(argv)
sock = ipc.try_connect(path)
t2 = time.perf_counter()
sock.sendall(ipc.message({"op": "cli", "argv": argv}))
for kind, payload in ipc.read_frames(sock):
    if kind == ipc.JSON:
        break
t3 = time.perf_counter()
sock.close()
import posix
posix.write(1, ipc.dumps([(t1 - t0) * 1000, (t2 - t1) * 1000, (t3 - t2) * 1000]).encode())
""".replace("REPO", repr(repo)).replace("SITE", repr(site)))
parts = {(verb, key): [] for verb in ("connect", "disconnect") for key in ("wall", "imports", "connect", "request")}
for _ in range(runs):
    for verb in ("connect", "disconnect"):
        t = time.perf_counter()
        done = subprocess.run([fast_python, "-I", "-S", probe, "network", verb, "fixed", "probe"], env=env, check=True,
                              capture_output=True, timeout=30)
        wall = (time.perf_counter() - t) * 1000
        imports, connect, request = json.loads(done.stdout)
        for key, value in (("wall", wall), ("imports", imports), ("connect", connect), ("request", request)):
            parts[(verb, key)].append(value)
med = {k: statistics.median(v) for k, v in parts.items()}
out["client"] = [[label] + [med[(verb, key)] if key else
                            med[(verb, "wall")] - med[(verb, "imports")] - med[(verb, "connect")] - med[(verb, "request")]
                            for verb in ("connect", "disconnect")]
                 for label, key in (("whole process", "wall"), ("interpreter start and exit (the rest)", ""),
                                    ("thin client imports (netctl.entry, libnetwork.ipc)", "imports"),
                                    ("connect to ROOT/netctl.sock", "connect"),
                                    ("request sent to answer read (the agent's part)", "request"))]

# Inside the agent: its CLI path in this (warm) process on a root of its own, beside the library call.
sys.path[:0] = [repo]
from netctl.service import RequestServer
from libnetwork.controller import NetworkSpec
from libnetwork.model import PoolConfig
srv_root = "/run/netctl-srv"
srv = RequestServer(srv_root, None)
ctl = srv._warm_controller()
ctl.create_network(NetworkSpec(name="fixed", pools=[PoolConfig(subnet="10.64.0.0/16")]))
ctl.create_sandbox("probe")
agent_ops = {"network connect": (["network", "connect", "fixed", "probe"], lambda: ctl.connect("fixed", "probe")),
             "network disconnect": (["network", "disconnect", "fixed", "probe"], lambda: ctl.disconnect("fixed", "probe")),
             "network ls": (["network", "ls"], lambda: ctl.list_networks() if hasattr(ctl, "list_networks") else None)}
inside = {(op, way): [] for op in agent_ops for way in ("agent", "library")}
connect, disconnect = (lambda: ctl.connect("fixed", "probe")), (lambda: ctl.disconnect("fixed", "probe"))
before = {"network disconnect": connect}  # untimed: the state each operation needs (and leaves behind)
after = {"network connect": disconnect}
for _ in range(runs + 2):
    for op, (argv, call) in agent_ops.items():
        for way in ("agent", "library"):
            if op in before: before[op]()
            t = time.perf_counter()
            if way == "agent":
                code, _, err = srv._run_cli({"argv": argv})
                assert code == 0, err
            else:
                call()
            inside[(op, way)].append((time.perf_counter() - t) * 1000)
            if op in after: after[op]()
out["agent"] = [[op, statistics.median(inside[(op, "agent")][2:]), statistics.median(inside[(op, "library")][2:])] for op in agent_ops]

proc = subprocess.run([py, "-X", "importtime", "-m", "netctl", "network", "create", "--subnet", "10.63.0.0/24", "imp"],
                      env=inproc_env, capture_output=True, text=True, timeout=30, check=True)
out["importtime"] = proc.stderr
agent.terminate(); agent.wait(timeout=30)
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
    load = [os.getloadavg()]
    with harness.Host.start("bench-profile") as host:
        host.run("mkdir", "-p", "/run/bench")
        proc = host.run(sys.executable, "-c", _INNER, str(args.runs), REPO_DIR, timeout=900)
    load.append(os.getloadavg())
    data = json.loads(proc.stdout)

    print("== start-up ladder (median / min ms) ==")
    print(format_table(["command", "median", "min"], [[l, fmt_ms(m), fmt_ms(n)] for l, m, n in data["ladder"]], numeric=(1, 2)))
    print("\n== commands served by the agent, by launcher; in-process for reference (median / min ms) ==")
    rows = [[op, way, fmt_ms(m), fmt_ms(n)] for op, way, m, n in data["commands"]]
    print(format_table(["command", "how", "median", "min"], rows, numeric=(2, 3)))
    print("\n== `network connect` / `disconnect` served by the agent, from the client's side (fast launcher's interpreter, median ms) ==")
    rows = [[label, fmt_ms(c), fmt_ms(d)] for label, c, d in data["client"]]
    print(format_table(["part", "connect", "disconnect"], rows, numeric=(1, 2)))
    print("\n== inside the agent: its CLI path (click, capture, warm controller) beside the library call (median ms) ==")
    rows = [[op, fmt_ms(agent), fmt_ms(lib), fmt_ms(agent - lib)] for op, agent, lib in data["agent"]]
    print(format_table(["command", "agent's CLI path", "library", "difference"], rows, numeric=(1, 2, 3)))
    packages, modules = parse_importtime(data["importtime"])
    print("\n== -X importtime of an in-process `netctl network create` (the cold path): self time by origin (ms, inflated by the tracing) ==")
    print(format_table(["origin", "self ms"], [[g, f"{ms:.1f}"] for g, ms in group_packages(packages)], numeric=(1,)))
    print("\n== modules with the largest self time (ms) ==")
    print(format_table(["module", "self", "cumulative"], [[m, f"{s:.1f}", f"{c:.1f}"] for m, s, c in modules[:15]], numeric=(1, 2)))
    print(f"\nload average before / after: {load[0][0]:.2f} / {load[1][0]:.2f}")
    path = write_results("profile-cli", dict(data, packages=packages, runs=args.runs, loadavg=load))
    print(f"\nresults written to {os.path.relpath(path)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
