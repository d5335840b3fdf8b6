#!/usr/bin/env python3
"""Benchmark of the CNI plugins (issue #4): ADD then DEL of one container, netctl-bridge + netctl-ipam
beside the reference bridge + host-local (Debian's containernetworking-plugins), in the same run.

    sudo .venv/bin/python bench/bench_cni.py              # 40 rounds (~30 s)
    sudo .venv/bin/python bench/bench_cni.py --runs 100

Subjects, interleaved round by round (a burst of load on the machine hits all of them alike):
  * reference       /usr/lib/cni/bridge, which execs host-local (Go);
  * netctl-service  the netctl-bridge executable forwarding to the CNI service (cni_plugins/server.py);
  * netctl-inproc   the same executable with no service for its root: the request runs in-process.
Every call is a fresh process started the way libcni starts it (six CNI_* variables, config on stdin),
timed from a Python loop inside one throwaway host (tests/harness.py). Masquerade is off for both, as
in the peer baseline. For the service, DEL answers before the kernel has deleted the veth (that runs
in the background); "DEL settled" times DEL until the host veth is really gone, to show that cost too.

Medians and minima; the issue's goal (ADD+DEL ratio <= 1.0 against the reference) is reported, not
asserted. Results (samples included) go to bench/results/cni-*.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
REFERENCE_DIR = "/usr/lib/cni"
PLUGIN_DIR = "/run/bench-cni-bin"  # inside the throwaway host
SERVICE_ROOT = "/run/netctl"
INPROC_ROOT = "/run/netctl-inproc"
SUBJECTS = ("reference", "netctl-service", "netctl-inproc")
WARMUP = 3
SETTLE_TIMEOUT_S = 2.0


def config(subject: str) -> dict:
    if subject == "reference":
        return {"cniVersion": "1.0.0", "name": "ref", "type": "bridge", "bridge": "cniref0", "isGateway": True,
                "ipam": {"type": "host-local", "dataDir": "/run/bench-ipam", "ranges": [[{"subnet": "10.201.0.0/24"}]],
                         "routes": [{"dst": "0.0.0.0/0"}]}}
    subnet = "10.202.0.0/24" if subject == "netctl-service" else "10.203.0.0/24"
    return {"cniVersion": "1.0.0", "name": subject, "type": "netctl-bridge", "bridge": subject[:15], "isGateway": True,
            "netctlRoot": SERVICE_ROOT if subject == "netctl-service" else INPROC_ROOT,
            "ipam": {"type": "netctl-ipam", "ranges": [[{"subnet": subnet}]], "routes": [{"dst": "0.0.0.0/0"}]}}


def binary(subject: str) -> str:
    return f"{REFERENCE_DIR}/bridge" if subject == "reference" else f"{PLUGIN_DIR}/netctl-bridge"


def call(subject: str, command: str, conf: dict, cid: str) -> tuple[float, bytes]:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command, "CNI_CONTAINERID": cid,
           "CNI_NETNS": f"/run/netns/{subject}", "CNI_IFNAME": "eth0", "CNI_ARGS": "",
           "CNI_PATH": f"{PLUGIN_DIR}:{REFERENCE_DIR}"}
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
    conf = config(subject)
    cid = f"{subject}-{index}"
    add_ms, out = call(subject, "ADD", conf, cid)
    result = json.loads(out)
    started = time.perf_counter()
    del_ms, _ = call(subject, "DEL", dict(conf, prevResult=result), cid)
    settled_ms = wait_gone(result["interfaces"][1]["name"], started)
    version_ms, _ = call(subject, "VERSION", {"cniVersion": "1.0.0"}, "")
    if samples is not None:
        for key, value in (("ADD", add_ms), ("DEL", del_ms), ("ADD+DEL", add_ms + del_ms),
                           ("DEL settled", settled_ms), ("VERSION", version_ms)):
            samples.setdefault(key, []).append(value)


def python_floor(runs: int) -> list[float]:
    """The plugins' own interpreter (from the launcher's #! line) starting and doing nothing."""
    with open(binary("netctl-service")) as f:
        interpreter = f.readline()[2:].split()[0]
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([interpreter, "-I", "-S", "-c", "pass"], check=True)
        times.append((time.perf_counter() - started) * 1000)
    return times


def inside(runs: int) -> dict:
    """The measurement, inside the throwaway host: set up, warm up, interleaved rounds."""
    subprocess.run([sys.executable, "-m", "cni_plugins.install", PLUGIN_DIR], check=True, cwd=REPO, capture_output=True)
    for subject in SUBJECTS:
        subprocess.run(["ip", "netns", "add", subject], check=True)
    log = open("/run/bench-cni-service.log", "w+")
    service = subprocess.Popen([sys.executable, "-m", "cni_plugins.server", "--root", SERVICE_ROOT, "--verbose"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert service.stdout.readline().startswith("listening")
        for i in range(WARMUP):
            for subject in SUBJECTS:
                cycle(subject, -1 - i, None)
        samples: dict[str, dict[str, list[float]]] = {s: {} for s in SUBJECTS}
        for i in range(runs):
            for subject in SUBJECTS:
                cycle(subject, i, samples[subject])
        samples["python -I -S -c pass"] = {"start": python_floor(runs)}
    finally:
        service.terminate()
        service.wait(timeout=30)
    samples["service work"] = service_times(log, runs)
    return samples


def service_times(log, runs: int) -> dict[str, list[float]]:
    """The service's own time per request (from its --verbose log): the rest of a call is process
    start-up, the client and the socket."""
    log.seek(0)
    times: dict[str, list[float]] = {}
    for line in log.read().splitlines():
        words = line.split()
        if len(words) > 2 and words[1] == "netctl-bridge" and words[-1] == "ms":
            times.setdefault(words[0], []).append(float(words[-2]))
    return {command: values[-runs:] for command, values in times.items()}


def summary(samples: dict) -> list[dict]:
    rows = []
    ref = samples["reference"]
    for operation in ("VERSION", "ADD", "DEL", "ADD+DEL", "DEL settled"):
        row = {"operation": operation}
        for subject in SUBJECTS:
            values = samples[subject][operation]
            row[subject] = (statistics.median(values), min(values))
        for subject in SUBJECTS[1:]:
            row[f"ratio {subject}"] = row[subject][0] / row["reference"][0]
        rows.append(row)
    return rows


def print_table(rows: list[dict], floor: list[float], runs: int) -> None:
    print(f"CNI ADD/DEL of one container, {runs} rounds, median / min in ms (ratio = netctl median / reference median)\n")
    header = f"{'operation':<12} {'reference':>15} {'netctl-service':>16} {'ratio':>6} {'netctl-inproc':>15} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for row in rows:
        cells = [f"{row[s][0]:7.1f} /{row[s][1]:6.1f}" for s in SUBJECTS]
        print(f"{row['operation']:<12} {cells[0]:>15} {cells[1]:>16} {row['ratio netctl-service']:6.2f} "
              f"{cells[2]:>15} {row['ratio netctl-inproc']:6.2f}")
    print(f"\nthe plugins' python -I -S -c pass: {statistics.median(floor):.1f} / {min(floor):.1f} ms (the floor of a Python plugin)")
    goal = next(r for r in rows if r["operation"] == "ADD+DEL")["ratio netctl-service"]
    version = next(r for r in rows if r["operation"] == "VERSION")["netctl-service"][0]
    print(f"goal ADD+DEL ratio <= 1.0: {goal:.2f} ({'met' if goal <= 1.0 else 'NOT met'}); "
          f"goal VERSION < 15 ms: {version:.1f} ms ({'met' if version < 15 else 'NOT met'})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40, help="rounds (each subject: ADD, DEL, VERSION); >= 30")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inside:
        print(json.dumps(inside(args.runs)))
        return 0
    if args.runs < 30:
        parser.error("--runs must be at least 30: medians of fewer runs are noise on a 2-vCPU machine")
    sys.path.insert(0, BENCH_DIR)
    from common import load_harness, machine_info, root_namespace_state, write_results

    harness = load_harness()
    reason = harness.missing_host_prerequisites()
    if reason:
        raise SystemExit(f"bench: {reason}")
    before = root_namespace_state()
    with harness.Host.start("bench-cni") as host:
        done = host.run(sys.executable, os.path.abspath(__file__), "--inside", "--runs", str(args.runs),
                        check=False, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"bench: the measurement failed:\n{done.stderr[-4000:]}")
    samples = json.loads(done.stdout)
    floor = samples.pop("python -I -S -c pass")["start"]
    work = samples.pop("service work")
    rows = summary(samples)
    print_table(rows, floor, args.runs)
    print("inside the service: " + ", ".join(f"{command} {statistics.median(values):.1f} ms"
                                             for command, values in sorted(work.items())))
    path = write_results("cni", {"machine": machine_info(), "runs": args.runs, "python_floor_ms": floor,
                                 "service_work_ms": work, "samples": samples,
                                 "summary": [{k: v for k, v in r.items()} for r in rows]})
    print(f"\nsamples: {path}")
    if root_namespace_state() != before:
        print("WARNING: the machine's own links or ruleset changed during the run", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
