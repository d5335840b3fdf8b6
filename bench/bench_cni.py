#!/usr/bin/env python3
"""Benchmark of the CNI plugins (issues #4 and #10): ADD then DEL of one container, netctl-bridge +
netctl-ipam beside the reference bridge + host-local (Debian's containernetworking-plugins), in the
same run.

    sudo .venv/bin/python bench/bench_cni.py              # 40 rounds (~1 min)
    sudo .venv/bin/python bench/bench_cni.py --runs 100

Subjects, interleaved round by round (a burst of load on the machine hits all of them alike), each
netctl one on a state root of its own (netctlRoot):
  * reference   /usr/lib/cni/bridge, which execs host-local (Go);
  * cold-first  nothing started by hand, no agent: the netctl-bridge executable runs the request
                in-process and starts `netctl daemon --auto` (cni_plugins/launch.py). ADD is a fresh
                root's first call; untimed, the agent it started is waited for (its ready time is
                kept) and stopped; DEL is then again a call that finds no agent. So both are first calls;
  * auto        the calls that follow a first call: served by the agent it started;
  * agent       `netctl daemon` started by hand;
  * inproc      NETCTL_NO_DAEMON=1: in-process, nothing started (the fallback's cost).
Every call is a fresh process started the way libcni starts it (six CNI_* variables, config on stdin),
timed from a Python loop inside one throwaway host (tests/harness.py). Masquerade is off for all, as
in the peer baseline. The agent answers DEL before the kernel has deleted the veth (that runs in the
background); "DEL settled" times DEL until the host veth is really gone, to show that cost too.

Medians and minima; the issues' goals (with the agent ADD+DEL <= 1.0x the reference; cold <= 1.5x)
are reported, not asserted. Results (samples included) go to bench/results/cni-*.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
REFERENCE_DIR = "/usr/lib/cni"
PLUGIN_DIR = "/run/bench-cni-bin"  # inside the throwaway host
ROOTS = {"netctl-agent": "/run/netctl", "netctl-auto": "/run/netctl-auto", "netctl-inproc": "/run/netctl-inproc"}
COLD_ROOT = "/run/netctl-cold"  # + the round's index: a fresh root each round
SUBJECTS = ("reference", "netctl-cold-first", "netctl-auto", "netctl-agent", "netctl-inproc")
SUBNETS = {"netctl-cold-first": "10.204.0.0/24", "netctl-auto": "10.205.0.0/24", "netctl-agent": "10.202.0.0/24",
           "netctl-inproc": "10.203.0.0/24"}
WARMUP = 3
SETTLE_TIMEOUT_S = 2.0

sys.path.insert(0, BENCH_DIR)

from common import (  # noqa: E402
    CommandError,
    changed_parts,
    load_harness,
    machine_info,
    root_namespace_state,
    stop_auto_agent,
    wait_agent_ready,
    write_results,
)


def config(subject: str, root: str = "") -> dict:
    if subject == "reference":
        return {"cniVersion": "1.0.0", "name": "ref", "type": "bridge", "bridge": "cniref0", "isGateway": True,
                "ipam": {"type": "host-local", "dataDir": "/run/bench-ipam", "ranges": [[{"subnet": "10.201.0.0/24"}]],
                         "routes": [{"dst": "0.0.0.0/0"}]}}
    name = subject.removeprefix("netctl-")
    return {"cniVersion": "1.0.0", "name": name, "type": "netctl-bridge", "bridge": f"nc-bench-{name}"[:15],
            "isGateway": True, "netctlRoot": root or ROOTS[subject],
            "ipam": {"type": "netctl-ipam", "ranges": [[{"subnet": SUBNETS[subject]}]],
                     "routes": [{"dst": "0.0.0.0/0"}]}}


def binary(subject: str) -> str:
    return f"{REFERENCE_DIR}/bridge" if subject == "reference" else f"{PLUGIN_DIR}/netctl-bridge"


def call(subject: str, command: str, conf: dict, cid: str) -> tuple[float, bytes]:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command, "CNI_CONTAINERID": cid,
           "CNI_NETNS": f"/run/netns/{subject}", "CNI_IFNAME": "eth0", "CNI_ARGS": "",
           "CNI_PATH": f"{PLUGIN_DIR}:{REFERENCE_DIR}"}
    if subject == "netctl-inproc":
        env["NETCTL_NO_DAEMON"] = "1"
    started = time.perf_counter()
    done = subprocess.run([binary(subject)], input=json.dumps(conf).encode(), env=env, capture_output=True, timeout=60)
    elapsed = (time.perf_counter() - started) * 1000
    if done.returncode != 0:
        raise SystemExit(f"bench: {subject} {command} failed: {done.stdout.decode()} {done.stderr.decode()}")
    return elapsed, done.stdout


def host_links() -> set[str]:
    return {line.split(":")[1].strip().split("@")[0] for line in
            subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout.splitlines()}


def wait_gone(name: str, started: float) -> float:
    """Milliseconds from `started` until link `name` is gone (polled, bounded)."""
    sys.path.insert(0, REPO)
    from libnetwork.netlink import Netlink

    with Netlink() as host:
        while host.link(name) is not None:
            if time.perf_counter() - started > SETTLE_TIMEOUT_S:
                raise SystemExit(f"bench: {name} still there {SETTLE_TIMEOUT_S} s after DEL")
            time.sleep(0.0005)
    return (time.perf_counter() - started) * 1000


def cycle(subject: str, index: int, samples: dict[str, list[float]] | None) -> None:
    cold = subject == "netctl-cold-first"
    root = f"{COLD_ROOT}-{index}" if cold else ""
    conf = config(subject, root)
    cid = f"{subject}-{index}"
    started = time.perf_counter()
    add_ms, out = call(subject, "ADD", conf, cid)
    ready = []
    if cold:  # untimed: the agent this first call started, waited for and stopped
        ready.append(wait_agent_ready(root, started))
        stop_auto_agent(root)
    result = json.loads(out)
    started = time.perf_counter()
    del_ms, _ = call(subject, "DEL", dict(conf, prevResult=result), cid)
    settled_ms = wait_gone(result["interfaces"][1]["name"], started)
    if cold:
        ready.append(wait_agent_ready(root, started))
        stop_auto_agent(root)
        # The round's network goes with its root (in-process, untimed): the next round's is fresh.
        subprocess.run([sys.executable, "-m", "netctl", "--root", root, "network", "rm", conf["name"]], cwd=REPO,
                       env=dict(os.environ, NETCTL_NO_DAEMON="1"), check=True, capture_output=True, timeout=60)
        shutil.rmtree(root)
    version_ms, _ = call(subject, "VERSION", {"cniVersion": "1.0.0"}, "")
    if samples is not None:
        for key, value in (("ADD", add_ms), ("DEL", del_ms), ("ADD+DEL", add_ms + del_ms),
                           ("DEL settled", settled_ms), ("VERSION", version_ms)):
            samples.setdefault(key, []).append(value)
        if cold:
            samples.setdefault("agent ready after ADD", []).append(ready[0])
            samples.setdefault("agent ready after DEL", []).append(ready[1])


def python_floor(runs: int) -> list[float]:
    """The plugins' own interpreter (from the launcher's #! line) starting and doing nothing."""
    with open(binary("netctl-agent")) as f:
        interpreter = f.readline()[2:].split()[0]
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([interpreter, "-I", "-S", "-c", "pass"], check=True)
        times.append((time.perf_counter() - started) * 1000)
    return times


def inside(runs: int) -> dict:
    """The measurement, inside the throwaway host: set up, warm up, interleaved rounds."""
    sys.path.insert(0, REPO)  # libnetwork, for the agent helpers of common.py
    subprocess.run([sys.executable, "-m", "cni_plugins.install", PLUGIN_DIR], check=True, cwd=REPO, capture_output=True)
    for subject in SUBJECTS:
        subprocess.run(["ip", "netns", "add", subject], check=True)
    log = open("/run/bench-cni-agent.log", "w+")
    agent = subprocess.Popen([sys.executable, "-m", "netctl", "--root", ROOTS["netctl-agent"], "daemon"],
                             cwd=REPO, stdout=subprocess.DEVNULL, stderr=log, text=True)
    try:
        wait_agent_ready(ROOTS["netctl-agent"], time.perf_counter())
        for i in range(WARMUP):  # the first auto round starts netctl-auto's agent
            for subject in SUBJECTS:
                cycle(subject, -1 - i, None)
                if subject == "netctl-auto":
                    wait_agent_ready(ROOTS["netctl-auto"], time.perf_counter())
        samples: dict[str, dict[str, list[float]]] = {s: {} for s in SUBJECTS}
        for i in range(runs):
            # Rotate the order each round, so that no subject always runs right after the same other one.
            shift = i % len(SUBJECTS)
            for subject in SUBJECTS[shift:] + SUBJECTS[:shift]:
                cycle(subject, i, samples[subject])
        samples["python -I -S -c pass"] = {"start": python_floor(runs)}
    finally:
        agent.terminate()
        agent.wait(timeout=30)
        stop_auto_agent(ROOTS["netctl-auto"])
    samples["agent work"] = agent_times(log, runs)
    return samples


def agent_times(log, runs: int) -> dict[str, list[float]]:
    """The agent's own time per request (its log: "ADD netctl-bridge CID eth0: status 0 in 3.1 ms"):
    the rest of a call is process start-up, the client and the socket."""
    log.seek(0)
    times: dict[str, list[float]] = {}
    for line in log.read().splitlines():
        words = line.split()
        if "netctl-bridge" in words and words[-1] == "ms":
            command = words[words.index("netctl-bridge") - 1]
            times.setdefault(command, []).append(float(words[-2]))
    return {command: values[-runs:] for command, values in times.items()}


NETCTL = SUBJECTS[1:]


def summary(samples: dict) -> list[dict]:
    rows = []
    for operation in ("VERSION", "ADD", "DEL", "ADD+DEL", "DEL settled"):
        row = {"operation": operation}
        for subject in SUBJECTS:
            values = samples[subject][operation]
            row[subject] = (statistics.median(values), min(values))
        for subject in NETCTL:
            row[f"ratio {subject}"] = row[subject][0] / row["reference"][0]
        rows.append(row)
    return rows


def print_table(rows: list[dict], floor: list[float], runs: int, samples: dict) -> None:
    print(f"CNI ADD/DEL of one container, {runs} rounds, median / min in ms; "
          "ratio = netctl median / reference median\n")
    header = f"{'operation':<12} {'reference':>15}"
    header += "".join(f" {s.removeprefix('netctl-'):>15} {'ratio':>5}" for s in NETCTL)
    print(header)
    print("-" * len(header))
    for row in rows:
        line = f"{row['operation']:<12} {row['reference'][0]:7.1f} /{row['reference'][1]:6.1f}"
        for subject in NETCTL:
            line += f" {row[subject][0]:7.1f} /{row[subject][1]:6.1f} {row[f'ratio {subject}']:5.2f}"
        print(line)
    print(f"\nthe plugins' python -I -S -c pass: {statistics.median(floor):.1f} / {min(floor):.1f} ms "
          "(the floor of a Python plugin)")
    for key in ("agent ready after ADD", "agent ready after DEL"):
        values = samples["netctl-cold-first"].get(key)
        if values:
            print(f"cold: the {key.split()[-1]} first call's agent served {statistics.median(values):.1f} ms "
                  "(median) after that call started (polled from the call's end: an upper bound)")
    add_del = next(r for r in rows if r["operation"] == "ADD+DEL")
    version = next(r for r in rows if r["operation"] == "VERSION")["netctl-agent"][0]
    for subject, limit, label in (("netctl-agent", 1.0, "with the agent"),
                                  ("netctl-cold-first", 1.5, "cold, first calls"),
                                  ("netctl-auto", 1.5, "cold, the calls that follow")):
        ratio = add_del[f"ratio {subject}"]
        print(f"goal ADD+DEL {label} <= {limit}x the reference: {ratio:.2f} ({'met' if ratio <= limit else 'NOT met'})")
    print(f"goal VERSION < 15 ms: {version:.1f} ms ({'met' if version < 15 else 'NOT met'})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40, help="rounds (each subject: ADD, DEL, VERSION); >= 30")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5 rounds, figures not to be quoted")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inside:
        try:
            print(json.dumps(inside(args.runs)))
        except CommandError as err:  # an agent that would not start or stop: the figures would be wrong
            raise SystemExit(f"bench: {err}") from None
        return 0
    if args.quick:
        args.runs = 5
    elif args.runs < 30:
        parser.error("--runs must be at least 30: medians of fewer runs are noise on a 2-vCPU machine")
    harness = load_harness()
    reason = harness.missing_host_prerequisites()
    if reason:
        raise SystemExit(f"bench: {reason}")
    before = root_namespace_state()
    load = [os.getloadavg()]
    with harness.Host.start("bench-cni") as host:
        done = host.run(sys.executable, os.path.abspath(__file__), "--inside", "--runs", str(args.runs),
                        check=False, timeout=900)
    load.append(os.getloadavg())
    if done.returncode != 0:
        raise SystemExit(f"bench: the measurement failed:\n{done.stderr[-4000:]}")
    samples = json.loads(done.stdout)
    floor = samples.pop("python -I -S -c pass")["start"]
    work = samples.pop("agent work")
    rows = summary(samples)
    print_table(rows, floor, args.runs, samples)
    print("inside the agent (started by hand): " + ", ".join(f"{command} {statistics.median(values):.1f} ms"
                                                             for command, values in sorted(work.items())))
    path = write_results("cni", {"machine": machine_info(), "runs": args.runs, "python_floor_ms": floor,
                                 "agent_work_ms": work, "samples": samples, "loadavg": load,
                                 "summary": [{k: v for k, v in r.items()} for r in rows]})
    print(f"\nsamples: {path}")
    after = root_namespace_state()
    if after != before:
        print(f"WARNING: the machine's own {', '.join(changed_parts(before, after))} changed during the run",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
