#!/usr/bin/env python3
"""Benchmark of the multi-host overlay (issue #5), every figure beside its baseline from the same run.

    sudo .venv/bin/python bench/bench_overlay.py            # full run (~1.5 min on 2 cores)
    sudo .venv/bin/python bench/bench_overlay.py --quick    # smoke run (~30 s)

Lab: throwaway hosts h1, h2 on an underlay switch (tests/overlay/lab.py), state in a real etcd on
127.0.0.1, an overlay network with container a1 on h1 and a2 on h2.

Throughput (iperf3, one TCP stream, h1 -> h2), subjects interleaved round by round so a burst of load
hits them alike:
  * overlay     container a1 -> container a2: veth, bridge, VXLAN (netctl's data plane)
  * vxlan-raw   the kernel's VXLAN alone: a VXLAN device with an address in each host's namespace,
                a static flood entry, no bridge, no veth (the baseline of the issue's 95 % goal)
  * underlay    host -> host on the underlay itself: no encapsulation at all
Every subject uses its MTU as the user would get it (overlay: underlay MTU - 50, derived by netctl).

Convergence parts: from the commit that marks a new container ready in etcd, how long until a watch
(PrefixMirror) delivers its peer record, and how long the driver's reconcile on the remote host takes
to program it; then the first ping across. The daemon (next step of the issue) chains exactly these.

Medians, minima and maxima only; nothing here asserts a figure. Results: stdout, and
bench/results/overlay-*.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)
sys.path.insert(0, BENCH_DIR)
sys.path.insert(0, os.path.join(REPO_DIR, "tests"))
sys.path.insert(0, REPO_DIR)

from common import format_table, machine_info, root_namespace_state, write_results  # noqa: E402

RAW_VNI, RAW_PREFIX = 9999, "192.168.250."
IPERF_PORT = 5201
IPERF_TIMEOUT_S = 60
GOAL = 0.95


def log(message: str) -> None:
    print(f"[bench_overlay] {message}", file=sys.stderr, flush=True)


def build_lab(etcd_url: str):
    from harness import Host
    from overlay.lab import OverlayLab

    hosts = []
    try:
        for name in ("sw", "h1", "h2"):
            hosts.append(Host.start(name))
        lab = OverlayLab.build(hosts[0], hosts[1:], etcd_url, underlay_mtu=1500)
    except BaseException:
        for h in hosts:
            h.close()
        raise
    return lab, hosts


def add_raw_vxlan(lab) -> None:
    """The baseline: one VXLAN device per host namespace, addressed, a static flood entry to the peer."""
    h1, h2 = lab.hosts
    for i, (host, peer) in enumerate(((h1, h2), (h2, h1)), start=1):
        host.run("ip", "link", "add", "vxraw", "mtu", str(lab.underlay_mtu - 50), "type", "vxlan", "id",
                 str(RAW_VNI), "local", lab.vteps[host.name], "dstport", "4789", "nolearning")
        host.run("bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vxraw", "dst", lab.vteps[peer.name])
        host.run("ip", "addr", "add", f"{RAW_PREFIX}{i}/24", "dev", "vxraw")
        host.run("ip", "link", "set", "vxraw", "up")


def iperf(client_host, client_netns: str | None, server_host, server_netns: str | None, address: str,
          seconds: int) -> float:
    """Gbit/s received by one iperf3 TCP stream; the server is started and gone within the call."""
    def argv(netns: str | None, *args: str) -> list[str]:
        return (["nsenter", f"--net={netns}", "--"] if netns else []) + list(args)

    server = server_host.popen(*argv(server_netns, "iperf3", "-s", "-1", "-p", str(IPERF_PORT)),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:  # the server needs a moment to listen; until then the client reports an error
            proc = client_host.run(*argv(client_netns, "iperf3", "-c", address, "-p", str(IPERF_PORT), "-t",
                                         str(seconds), "-J"), check=False, timeout=IPERF_TIMEOUT_S)
            try:
                return json.loads(proc.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9
            except (ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: iperf3 to {address} failed: {proc.stdout[-500:]} {proc.stderr[-500:]}")
            time.sleep(0.1)
    finally:
        server.kill()
        server.wait(timeout=10)


def throughput(lab, a1, a2, rounds: int, seconds: int) -> dict[str, list[float]]:
    h1, h2 = lab.hosts
    subjects = {
        "overlay": lambda: iperf(h1, a1.sandbox.netns_path, h2, a2.sandbox.netns_path, a2.ip, seconds),
        "vxlan-raw": lambda: iperf(h1, None, h2, None, f"{RAW_PREFIX}2", seconds),
        "underlay": lambda: iperf(h1, None, h2, None, lab.vteps["h2"], seconds),
    }
    samples: dict[str, list[float]] = {name: [] for name in subjects}
    names = list(subjects)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:  # rotate who goes first
            samples[name].append(subjects[name]())
            log(f"round {r + 1}/{rounds} {name}: {samples[name][-1]:.2f} Gbit/s")
    return samples


def convergence(lab, network, trials: int) -> dict[str, list[float]]:
    """Per new container on h1: watch delivery (ms), reconcile on h2 (ms), first ping a2 -> it ok."""
    from libnetwork.store.etcd import Keys

    h1, h2 = lab.hosts
    arrivals: dict[str, float] = {}
    seen = threading.Condition()

    def on_change(mirror, events):
        if events:
            with seen:
                for event in events:
                    if event.kind == "put":
                        arrivals.setdefault(event.value["endpoint_id"], time.monotonic())
                seen.notify_all()

    mirror = lab.store(h1).mirror(Keys.peers_of(network.id))
    mirror.resync()
    follower = threading.Thread(target=mirror.follow, args=(on_change,), daemon=True)
    follower.start()
    watch_ms, reconcile_ms, first_ping = [], [], []
    a2 = lab.containers[1]
    try:
        for i in range(trials):
            c = lab.add_container(h1, network, f"t{i}")
            with seen:
                if not seen.wait_for(lambda: c.endpoint.id in arrivals, timeout=10):
                    raise SystemExit("bench: the watch never delivered a new container's peer record")
            watch_ms.append((arrivals[c.endpoint.id] - c.ready_at) * 1000)
            result = lab.reconcile(h2, network, timed=True)
            reconcile_ms.append(result["seconds"] * 1000)
            first_ping.append(1.0 if lab.ping(a2, c.ip) else 0.0)
    finally:
        mirror.stop()
        follower.join(timeout=10)
    return {"watch_ms": watch_ms, "reconcile_ms": reconcile_ms, "first_ping_ok": first_ping}


def summary(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few short runs only")
    args = parser.parse_args()
    rounds, seconds, trials = (2, 2, 5) if args.quick else (5, 4, 20)
    if os.geteuid() != 0:
        raise SystemExit("bench: needs root (throwaway namespaces); run with sudo")

    from overlay.etcd_server import EtcdServer

    root_before = root_namespace_state()
    with EtcdServer("netctl-bench") as etcd:
        lab, hosts = build_lab(etcd.url)
        try:
            h1, h2 = lab.hosts
            network = lab.create_network(h1, "bench")
            for host in lab.hosts:
                lab.ensure_network(host, network)
            a1, a2 = lab.add_container(h1, network, "a1"), lab.add_container(h2, network, "a2")
            lab.containers = [a1, a2]
            lab.reconcile_all(network)
            add_raw_vxlan(lab)
            log(f"lab up: overlay MTU {network.mtu} on a {lab.underlay_mtu} underlay; {rounds} rounds x {seconds} s")
            gbps = throughput(lab, a1, a2, rounds, seconds)
            conv = convergence(lab, network, trials)
        finally:
            lab.close()
            for h in hosts:
                h.close()
    if root_namespace_state() != root_before:
        raise SystemExit("bench: the machine's own namespace changed during the run")

    rows = []
    for name, values in gbps.items():
        med, lo, hi = summary(values)
        rows.append([name, f"{med:.2f}", f"{lo:.2f}", f"{hi:.2f}", f"{med / statistics.median(gbps['vxlan-raw']):.2f}"])
    print("\nThroughput, one TCP stream h1 -> h2 (Gbit/s)")
    print(format_table(["subject", "median", "min", "max", "vs vxlan-raw"], rows, numeric=(1, 2, 3, 4)))
    ratio = statistics.median(gbps["overlay"]) / statistics.median(gbps["vxlan-raw"])
    print(f"overlay / kernel VXLAN = {ratio:.1%} (goal >= {GOAL:.0%}: {'met' if ratio >= GOAL else 'NOT met'})")
    rows = []
    for name in ("watch_ms", "reconcile_ms"):
        med, lo, hi = summary(conv[name])
        rows.append([name, f"{med:.2f}", f"{lo:.2f}", f"{hi:.2f}"])
    watch_plus = [w + r for w, r in zip(conv["watch_ms"], conv["reconcile_ms"])]
    med, lo, hi = summary(watch_plus)
    rows.append(["sum", f"{med:.2f}", f"{lo:.2f}", f"{hi:.2f}"])
    print(f"\nConvergence parts over {trials} new containers (ms)")
    print(format_table(["part", "median", "min", "max"], rows, numeric=(1, 2, 3)))
    print(f"first ping right after reconcile: {int(sum(conv['first_ping_ok']))}/{trials} ok")
    print("distribution of watch + reconcile (ms):", " ".join(f"{v:.1f}" for v in sorted(watch_plus)))
    path = write_results("overlay", {"machine": machine_info(), "quick": args.quick, "mtu": network.mtu,
                                     "throughput_gbps": gbps, "convergence": conv})
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
