#!/usr/bin/env python3
"""Benchmark of the multi-host overlay (issue #5), every figure beside its baseline from the same run.

    sudo .venv/bin/python bench/bench_overlay.py            # full run (~3 min on 2 idle cores)
    sudo .venv/bin/python bench/bench_overlay.py --quick    # smoke run (~40 s)
    options: --rounds N --seconds S --streams P --pin | --one-cpu --calm F --prototype --no-convergence

Lab: throwaway hosts h1, h2 on an underlay switch (tests/overlay/lab.py; br_netfilter off in the
switch's namespace, so the emulated underlay costs what a wire does: nothing), state in a real etcd,
an overlay network built by the driver with container a1 on h1 and a2 on h2; MTU derived by netctl
(underlay 1500 - 50), nobody sets it.

Throughput (iperf3 TCP h1 -> h2, the same arguments for every subject), subjects interleaved round
by round with the order rotated, each round started once the machine is calm (bounded wait; other
engineers' tests share the two cores):
  * vxlan-raw      the baseline, raw kernel VXLAN: in each host's namespace a VXLAN device with the
                   driver's parameters (port, local VTEP, learning off, proxy, the same MTU), an
                   address on it, a static FDB entry and a permanent neighbour entry for the peer
  * overlay        container a1 -> container a2: netctl's data plane (veth, VXLAN, and the eBPF fast
                   path that hands frames between them past the bridge; drivers/overlay_fastpath.py)
  * overlay-bridge the same on a second overlay network made with -o fastpath=false: every frame
                   through the bridge, as Docker's overlay does (what the fast path gains)
  * veth           one veth pair straight from h1 to h2 at the overlay's MTU: the upper bound
  * macvlan-proto  with --prototype, NOT netctl: the driver's layout with the container attached to
                   the network's bridge by a macvlan instead of a veth pair (no veth hop)
The headline ratio is the median over rounds of overlay / vxlan-raw measured in the same round.

Convergence parts: from the commit that marks a new container ready in etcd, how long until a watch
(PrefixMirror) delivers its peer record, and how long the driver's reconcile on the remote host takes
to program it; then the first ping across.

Medians, minima and maxima only; nothing here asserts a figure. Results: stdout, and
bench/results/overlay-*.json (with the machine's load and idle share, so noisy runs show as such).
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

RAW_VNI, RAW_PREFIX = 9999, "192.168.250."  # the baseline's own segment, beside the overlay's
VETH_PREFIX = "192.168.251."  # the direct veth pair (upper bound)
PROTO_VNI, PROTO_PREFIX = 9998, "192.168.252."  # the macvlan attachment prototype
IPERF_PORT = 5201
IPERF_TIMEOUT_S = 60
GOAL = 0.95
CALM_WAIT_S = 10  # at most this long before each round for the machine to quieten down
BRIDGE_NF_SYSCTLS = ("net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables",
                     "net.bridge.bridge-nf-call-arptables")


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


def quiet_switch(lab) -> None:
    """A real underlay switch costs the hosts nothing. The lab's switch is a Linux bridge, and with
    br_netfilter loaded on the machine every frame it forwards would take a detour through the IP
    hooks, a cost added to every subject alike that would flatter the overlay's ratio; turn it off
    (the sysctls exist only while br_netfilter is loaded)."""
    for key in BRIDGE_NF_SYSCTLS:
        lab.switch.run("sysctl", "-qw", f"{key}=0", check=False)


def mac_of(prefix: str, i: int) -> str:
    octets = [int(o) for o in f"{prefix}{i}".split(".")]
    return "02:42:" + ":".join(f"{o:02x}" for o in octets)


def add_raw_vxlan(lab, network) -> None:
    """The baseline, raw kernel VXLAN: in each host's own namespace one VXLAN device with the very
    parameters the driver gives its device (VNI aside: UDP port, local VTEP, learning off, ARP/ND
    proxy, the network's MTU, i.e. the same MTU arithmetic), an address on it, and, as the driver's
    reconcile programs them, a static FDB entry (peer MAC -> peer VTEP) and a permanent neighbour
    entry. No bridge, no veth: the application sits right on the VXLAN device."""
    h1, h2 = lab.hosts
    for i, (host, peer) in enumerate(((h1, h2), (h2, h1)), start=1):
        j = 3 - i
        host.run("ip", "link", "add", "vxraw", "mtu", str(network.mtu), "address", mac_of(RAW_PREFIX, i), "type",
                 "vxlan", "id", str(RAW_VNI), "local", lab.vteps[host.name], "dstport",
                 network.driver_state["port"], "nolearning", "proxy")
        host.run("ip", "addr", "add", f"{RAW_PREFIX}{i}/24", "dev", "vxraw")
        host.run("ip", "link", "set", "vxraw", "up")
        host.run("bridge", "fdb", "replace", mac_of(RAW_PREFIX, j), "dev", "vxraw", "dst", lab.vteps[peer.name],
                 "self", "permanent")
        host.run("ip", "neigh", "replace", f"{RAW_PREFIX}{j}", "lladdr", mac_of(RAW_PREFIX, j), "dev", "vxraw",
                 "nud", "permanent")


def add_direct_veth(lab, mtu: int) -> None:
    """The upper bound: one veth pair straight from h1's namespace into h2's, no encapsulation, no
    bridge, the overlay's MTU (so TCP segments carry as much as the overlay's do). Created from the
    machine's side by PID, like the lab's underlay, so it never exists in the machine's namespace."""
    h1, h2 = lab.hosts
    subprocess.run(["nsenter", f"--net=/proc/{h1.pid}/ns/net", "--", "ip", "link", "add", "dv", "mtu", str(mtu),
                    "type", "veth", "peer", "name", "dv", "mtu", str(mtu), "netns", str(h2.pid)],
                   check=True, capture_output=True, text=True, timeout=30)
    for i, host in enumerate((h1, h2), start=1):
        host.run("ip", "addr", "add", f"{VETH_PREFIX}{i}/24", "dev", "dv")
        host.run("ip", "link", "set", "dv", "up")


def add_macvlan_prototype(lab, network) -> None:
    """Not netctl's data plane: what it would be if a container were attached to the network's bridge
    by a macvlan (bridge mode, the bridge as its lower device) instead of a veth pair. Same per-network
    namespace, bridge, VXLAN device and entries as the driver builds; only the attachment differs.
    Measured beside the rest to show what the veth hop costs."""
    h1, h2 = lab.hosts
    for i, (host, peer) in enumerate(((h1, h2), (h2, h1)), start=1):
        j, mtu = 3 - i, str(network.mtu)
        for ns in ("protonet", "protoctr"):
            host.run("ip", "netns", "add", ns)
        for key in BRIDGE_NF_SYSCTLS:  # as the driver does in a network's namespace
            host.run("ip", "netns", "exec", "protonet", "sysctl", "-qw", f"{key}=0", check=False)
        host.run("ip", "-n", "protonet", "link", "add", "brp", "mtu", mtu, "type", "bridge")
        host.run("ip", "link", "add", "vxp", "mtu", mtu, "netns", "protonet", "type", "vxlan", "id", str(PROTO_VNI),
                 "local", lab.vteps[host.name], "dstport", network.driver_state["port"], "nolearning", "proxy")
        host.run("ip", "-n", "protonet", "link", "set", "vxp", "master", "brp", "up")
        host.run("ip", "-n", "protonet", "link", "set", "brp", "up")
        host.run("ip", "-n", "protonet", "link", "add", "link", "brp", "name", "eth0", "netns", "protoctr", "mtu", mtu,
                 "address", mac_of(PROTO_PREFIX, i), "type", "macvlan", "mode", "bridge")
        host.run("ip", "-n", "protoctr", "addr", "add", f"{PROTO_PREFIX}{i}/24", "dev", "eth0")
        host.run("ip", "-n", "protoctr", "link", "set", "eth0", "up")
        host.run("bridge", "-n", "protonet", "fdb", "replace", mac_of(PROTO_PREFIX, j), "dev", "vxp", "dst",
                 lab.vteps[peer.name], "self", "permanent")
        host.run("ip", "-n", "protonet", "neigh", "replace", f"{PROTO_PREFIX}{j}", "lladdr", mac_of(PROTO_PREFIX, j),
                 "dev", "vxp", "nud", "permanent")


def link_mtus(host, netns: str | None) -> dict[str, int]:
    """{link name: MTU} in a namespace of `host` (a bound path, an `ip netns` name, or the host's own)."""
    if netns is None:
        argv = ["ip", "-o", "link"]
    elif netns.startswith("/"):
        argv = ["nsenter", f"--net={netns}", "--", "ip", "-o", "link"]
    else:
        argv = ["ip", "-n", netns, "-o", "link"]
    mtus = {}
    for line in host.run(*argv).stdout.splitlines():
        fields = line.split()
        if "mtu" in fields and fields[1].rstrip(":") != "lo":
            mtus[fields[1].rstrip(":").split("@")[0]] = int(fields[fields.index("mtu") + 1])
    return mtus


def device_mtus(lab, network, a1, *, prototype: bool) -> dict[str, dict[str, int]]:
    h1 = lab.hosts[0]
    mtus = {
        "h1 (underlay eth0, raw VXLAN, direct veth)": link_mtus(h1, None),
        "h1 overlay network namespace": link_mtus(h1, lab.netns_path(h1, network)),
        "h1 container a1": link_mtus(h1, a1.sandbox.netns_path),
    }
    if prototype:
        mtus["h1 macvlan prototype network"] = link_mtus(h1, "protonet")
        mtus["h1 macvlan prototype container"] = link_mtus(h1, "protoctr")
    return mtus


def iperf(client_host, client_netns: str | None, server_host, server_netns: str | None, address: str,
          seconds: int, extra: list[str]) -> float:
    """Gbit/s received by iperf3 (TCP); the server is started and gone within the call."""
    def argv(netns: str | None, *args: str) -> list[str]:
        if netns is None:
            return list(args)
        if netns.startswith("/"):
            return ["nsenter", f"--net={netns}", "--", *args]
        return ["ip", "netns", "exec", netns, *args]

    server = server_host.popen(*argv(server_netns, "iperf3", "-s", "-1", "-p", str(IPERF_PORT)),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:  # the server needs a moment to listen; until then the client reports an error
            proc = client_host.run(*argv(client_netns, "iperf3", "-c", address, "-p", str(IPERF_PORT), "-t",
                                         str(seconds), "-J", *extra), check=False, timeout=IPERF_TIMEOUT_S)
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


def cpu_ticks() -> tuple[int, int, int]:
    """(idle + iowait, steal, total) jiffies of all CPUs so far, from /proc/stat (guest time is inside user)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return values[3] + values[4], values[7], sum(values[:8])


def steal_share(before: tuple[int, int, int], after: tuple[int, int, int]) -> float:
    """Share of CPU time the hypervisor gave to other guests between two cpu_ticks() readings. On a
    shared VM the throughput figures (all subjects alike) sink with it, and the ratios get noisier."""
    return (after[1] - before[1]) / max(1, after[2] - before[2])


def bootstrap_median_interval(values: list[float], resamples: int = 2000, seed: int = 5) -> tuple[float, float]:
    """A 95 % bootstrap interval of the median of `values` (seeded: the same samples print the same
    interval). The round ratios scatter by several per cent on a shared VM; the interval says how
    far their median can be trusted."""
    import random

    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    return medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]


def idle_fraction(window_s: float = 0.5) -> float:
    """Share of the machine's CPU time that was idle over the next `window_s` (from /proc/stat)."""
    idle0, _, total0 = cpu_ticks()
    time.sleep(window_s)
    idle1, _, total1 = cpu_ticks()
    return (idle1 - idle0) / max(1, total1 - total0)


def wait_until_calm(min_idle: float, limit_s: float) -> float:
    """Other people's work on this machine (tests, builds) takes the same cores as iperf3: before a
    round, wait up to `limit_s` for the CPUs to be at least `min_idle` idle; return what was seen."""
    deadline = time.monotonic() + limit_s
    while True:
        idle = idle_fraction()
        if idle >= min_idle or time.monotonic() > deadline:
            return idle


def throughput(lab, a1, a2, b1, b2, rounds: int, seconds: int, extra: list[str], prototype: bool,
               calm: float, idle_seen: list[float]) -> dict[str, list[float]]:
    """Every subject once per round with the same iperf3 arguments, the order rotated each round, so
    that a burst of load from elsewhere on the machine hits all subjects alike; each round starts
    when the machine is calm (or after a bounded wait), and the idle share seen is kept."""
    h1, h2 = lab.hosts
    subjects = {
        "vxlan-raw": lambda: iperf(h1, None, h2, None, f"{RAW_PREFIX}2", seconds, extra),
        "overlay": lambda: iperf(h1, a1.sandbox.netns_path, h2, a2.sandbox.netns_path, a2.ip, seconds, extra),
        "overlay-bridge": lambda: iperf(h1, b1.sandbox.netns_path, h2, b2.sandbox.netns_path, b2.ip, seconds, extra),
        "veth": lambda: iperf(h1, None, h2, None, f"{VETH_PREFIX}2", seconds, extra),
    }
    if prototype:
        subjects["macvlan-proto"] = lambda: iperf(h1, "protoctr", h2, "protoctr", f"{PROTO_PREFIX}2", seconds, extra)
    samples: dict[str, list[float]] = {name: [] for name in subjects}
    names = list(subjects)
    for r in range(rounds):
        idle_seen.append(wait_until_calm(calm, CALM_WAIT_S) if calm else idle_fraction())
        for name in names[r % len(names):] + names[: r % len(names)]:  # rotate who goes first
            samples[name].append(subjects[name]())
        figures = "  ".join(f"{n} {samples[n][-1]:.2f}" for n in names)
        log(f"round {r + 1}/{rounds} (idle before {idle_seen[-1]:.0%}): {figures} Gbit/s")
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


def paired_ratios(samples: dict[str, list[float]], name: str) -> list[float]:
    """`name` over the baseline, round by round (both measured within seconds of each other)."""
    return [a / b for a, b in zip(samples[name], samples["vxlan-raw"])]


def report_throughput(gbps: dict[str, list[float]], mtus: dict, args, idle_seen: list[float],
                      steal: float) -> float:
    base = statistics.median(gbps["vxlan-raw"])
    rows = []
    for name, values in gbps.items():
        med, lo, hi = summary(values)
        rows.append([name, f"{med:.2f}", f"{lo:.2f}", f"{hi:.2f}", f"{med / base:.3f}",
                     f"{statistics.median(paired_ratios(gbps, name)):.3f}"])
    streams = f"{args.streams} TCP stream{'s' if args.streams > 1 else ''}"
    print(f"\nThroughput h1 -> h2, {streams}, {args.rounds} interleaved rounds x {args.seconds} s (Gbit/s)")
    print(format_table(["subject", "median", "min", "max", "median/raw", "median of round ratios"], rows,
                       numeric=(1, 2, 3, 4, 5)))
    overlay_ratios = paired_ratios(gbps, "overlay")
    ratio = statistics.median(overlay_ratios)
    low, high = bootstrap_median_interval(overlay_ratios)
    print(f"overlay / kernel VXLAN = {ratio:.1%}, median of {len(gbps['overlay'])} round ratios "
          f"(95 % bootstrap interval {low:.1%} .. {high:.1%}; goal >= {GOAL:.0%}: "
          f"{'met' if ratio >= GOAL else 'NOT met'})")
    gains = [fast / slow for fast, slow in zip(gbps["overlay"], gbps["overlay-bridge"])]
    print(f"fast path: overlay / overlay-bridge = {statistics.median(gains):.3f}, median of round ratios; "
          f"faster in {sum(g > 1 for g in gains)} of {len(gains)} rounds")
    calm = [r for r, idle in zip(overlay_ratios, idle_seen) if idle >= args.calm]
    if args.calm and calm:
        quartiles = statistics.quantiles(calm, n=4) if len(calm) > 1 else calm * 3
        print(f"  over the {len(calm)} rounds that started with >= {args.calm:.0%} of the CPUs idle: "
              f"{statistics.median(calm):.1%} (quartiles {quartiles[0]:.1%} .. {quartiles[2]:.1%})")
    print(f"  CPU time stolen by the hypervisor while measuring: {steal:.1%}")
    print("\nMTU of every device on h1 (h2 is built alike)")
    for where, links in mtus.items():
        print(f"  {where}: " + ", ".join(f"{name} {mtu}" for name, mtu in sorted(links.items())))
    return ratio


def report_convergence(conv: dict[str, list[float]], trials: int) -> None:
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few short runs only")
    parser.add_argument("--rounds", type=int, help="interleaved throughput rounds (default 11; quick 2)")
    parser.add_argument("--seconds", type=int, help="iperf3 duration per subject and round (default 2)")
    parser.add_argument("--streams", type=int, default=1, help="parallel TCP streams, iperf3 -P (default 1)")
    pinning = parser.add_mutually_exclusive_group()
    pinning.add_argument("--pin", action="store_true",
                         help="pin iperf3's client to CPU 0 and server to CPU 1 (iperf3 -A 0,1), every subject alike")
    pinning.add_argument("--one-cpu", action="store_true",
                         help="pin iperf3's client and server both to CPU 0 (iperf3 -A 0,0): the softirq work they "
                              "raise runs there too, so each subject's figure is the inverse of its CPU cost per byte, "
                              "what it gets on a machine whose other cores are busy")
    parser.add_argument("--prototype", action="store_true",
                        help="also measure a macvlan attachment prototype (not netctl's data plane)")
    parser.add_argument("--calm", type=float, default=0.8,
                        help="before each round wait (<= 10 s) until this share of CPU time is idle; 0: don't")
    parser.add_argument("--no-convergence", action="store_true", help="throughput only")
    args = parser.parse_args()
    args.rounds = args.rounds or (2 if args.quick else 11)
    args.seconds = args.seconds or 2  # short: the subjects of a round run close together in time
    trials = 5 if args.quick else 20
    affinity = ["-A", "0,1"] if args.pin else ["-A", "0,0"] if args.one_cpu else []
    extra = (["-P", str(args.streams)] if args.streams > 1 else []) + affinity
    if os.geteuid() != 0:
        raise SystemExit("bench: needs root (throwaway namespaces); run with sudo")

    from overlay.etcd_server import EtcdServer

    root_before = root_namespace_state()
    load_before = os.getloadavg()
    conv = None
    with EtcdServer("netctl-bench") as etcd:
        lab, hosts = build_lab(etcd.url)
        try:
            h1, h2 = lab.hosts
            quiet_switch(lab)
            network = lab.create_network(h1, "bench")
            for host in lab.hosts:
                lab.ensure_network(host, network)
            a1, a2 = lab.add_container(h1, network, "a1"), lab.add_container(h2, network, "a2")
            slow = lab.create_network(h1, "bench-bridge", options={"fastpath": "false"})
            for host in lab.hosts:
                lab.ensure_network(host, slow)
            b1, b2 = lab.add_container(h1, slow, "b1"), lab.add_container(h2, slow, "b2")
            lab.containers = [a1, a2, b1, b2]
            lab.reconcile_all(network)
            lab.reconcile_all(slow)
            add_raw_vxlan(lab, network)
            add_direct_veth(lab, network.mtu)
            if args.prototype:
                add_macvlan_prototype(lab, network)
            mtus = device_mtus(lab, network, a1, prototype=args.prototype)
            log(f"lab up: overlay MTU {network.mtu} (derived) on a {lab.underlay_mtu} underlay; "
                f"{args.rounds} rounds x {args.seconds} s, iperf3 {' '.join(extra) or '(defaults)'}")
            idle_seen: list[float] = []
            ticks_before = cpu_ticks()
            gbps = throughput(lab, a1, a2, b1, b2, args.rounds, args.seconds, extra, args.prototype, args.calm,
                              idle_seen)
            steal = steal_share(ticks_before, cpu_ticks())
            if not args.no_convergence:
                conv = convergence(lab, network, trials)
        finally:
            lab.close()
            for h in hosts:
                h.close()
    load_after = os.getloadavg()
    if root_namespace_state() != root_before:
        raise SystemExit("bench: the machine's own namespace changed during the run")

    ratio = report_throughput(gbps, mtus, args, idle_seen, steal)
    print(f"machine load average (1 min) before/after: {load_before[0]:.1f} / {load_after[0]:.1f} "
          f"on {os.cpu_count()} CPUs; idle share before each round: "
          + " ".join(f"{idle:.0%}" for idle in idle_seen))
    if conv is not None:
        report_convergence(conv, trials)
    path = write_results("overlay", {
        "machine": machine_info(), "quick": args.quick, "mtu": network.mtu, "device_mtus": mtus,
        "iperf3_args": extra, "rounds": args.rounds, "seconds": args.seconds, "streams": args.streams,
        "throughput_gbps": gbps, "overlay_over_raw_per_round": paired_ratios(gbps, "overlay"),
        "overlay_over_raw_median": ratio, "loadavg_before_after": [load_before, load_after],
        "idle_before_round": idle_seen, "steal_share": steal,
        "convergence": conv,
    })
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
