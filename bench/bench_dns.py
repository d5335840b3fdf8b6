#!/usr/bin/env python3
"""Benchmark of the embedded name server (issue 14): lookups of a peer's name from inside a container,
netctl's server (127.0.0.11 in the container's namespace, served by the agent) beside aardvark-dns
(Debian's 1.4, podman's netavark companion), in the same run.

    sudo .venv/bin/python bench/bench_dns.py              # 5 rounds (~1 min)
    sudo .venv/bin/python bench/bench_dns.py --rounds 9 --queries 4000 --seconds 3

Set-up, inside one throwaway host (tests/harness.py): `netctl daemon`, a bridge network, two busybox
containers (`netctl run`): web, and client, the asker. aardvark-dns runs as netavark starts it
(`aardvark-dns --config DIR -p 53 run`), with a config directory this bench writes in netavark's
format (a file per network: the gateway to listen on, then `ID IPV4 IPV6 NAMES` per container)
listing the same two containers, so it listens on the network's gateway and answers the same name.

Measured by a Python stub resolver (dnslib-built queries, a UDP socket, one query at a time per
process) run inside the client container's namespace:
  * one at a time: N lookups of "web", each timed (perf_counter_ns): median and p99 latency;
  * in parallel: P processes each asking in a closed loop for S seconds: queries per second in all.
Subjects alternate round by round (a burst of load on the machine hits both alike); per round the
figures are medians, and the report gives the median over rounds. Goals (reported, not asserted):
p50 <= 1.0x aardvark, qps >= 1.0x aardvark. Results go to bench/results/dns-*.json.
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
AARDVARK = "/usr/lib/podman/aardvark-dns"
AARDVARK_DIR = "/run/bench-aardvark"
SUBNET, GATEWAY = "10.96.0.0/24", "10.96.0.1"
NETCTL_SERVER = "127.0.0.11"
NAME = "web"


# ---- the load, run inside the client's namespace ---------------------------------------------------


def load_serial(server: str, name: str, count: int) -> dict:
    import socket

    from dnslib import DNSRecord

    queries = []
    for i in range(count):
        record = DNSRecord.question(name)
        record.header.id = i & 0xFFFF
        queries.append(bytes(record.pack()))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2.0)
    sock.connect((server, 53))
    samples, failures = [], 0
    clock = time.perf_counter_ns
    for query in queries:
        start = clock()
        sock.send(query)
        try:
            reply = sock.recv(4096)
        except TimeoutError:
            failures += 1
            continue
        elapsed = clock() - start
        if reply[:2] != query[:2] or reply[3] & 0x0F or reply[6:8] == b"\x00\x00":
            failures += 1  # wrong ID, an error rcode, or no answer record
            continue
        samples.append(elapsed / 1000.0)  # microseconds
    samples.sort()
    return {"p50_us": statistics.median(samples), "p99_us": samples[int(len(samples) * 0.99) - 1],
            "n": len(samples), "failures": failures}


def load_parallel(server: str, name: str, processes: int, seconds: float) -> dict:
    """`processes` closed-loop askers for `seconds`; their answers per second, summed."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    workers = [ctx.Process(target=_ask_for, args=(server, name, seconds, queue)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=seconds + 30) for _ in workers]
    for worker in workers:
        worker.join(10)
    answered = sum(r[0] for r in results)
    elapsed = max(r[1] for r in results)
    return {"qps": answered / elapsed, "answered": answered, "failures": sum(r[2] for r in results)}


def _ask_for(server: str, name: str, seconds: float, queue) -> None:
    import socket

    from dnslib import DNSRecord

    record = DNSRecord.question(name)
    base = bytearray(record.pack())
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(1.0)
    sock.connect((server, 53))
    answered = failures = 0
    start = time.perf_counter()
    deadline = start + seconds
    qid = os.getpid() & 0xFFFF
    while time.perf_counter() < deadline:
        qid = (qid + 1) & 0xFFFF
        base[0], base[1] = qid >> 8, qid & 0xFF
        sock.send(base)
        try:
            reply = sock.recv(4096)
        except TimeoutError:
            failures += 1
            continue
        if reply[0] == base[0] and reply[1] == base[1] and not reply[3] & 0x0F:
            answered += 1
        else:
            failures += 1
    queue.put((answered, time.perf_counter() - start, failures))


# ---- the driver ----------------------------------------------------------------------------------


class Bench:
    def __init__(self, host, cgroup_parent: str):
        self.host = host
        self.env = {"NETCTL_CGROUP_PARENT": cgroup_parent}

    def netctl(self, *args: str, **kw) -> str:
        return self.host.netctl(*args, env=self.env, **kw).stdout

    def set_up(self) -> dict[str, str]:
        h = self.host
        # The host's resolv.conf: nothing the bench reaches (it asks only for a local name).
        h.run("sh", "-c", "mkdir -p /run/bench-dns && echo 'nameserver 192.0.2.53' > /run/bench-dns/resolv.conf && "
                          "mount --bind /run/bench-dns/resolv.conf /etc/resolv.conf")
        self.agent = h.popen("sh", "-c", f"exec {sys.executable} -m netctl daemon 2>>/run/bench-agent.log")
        deadline = time.monotonic() + 30
        while h.run("test", "-S", "/run/netctl/dns.sock", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise SystemExit("bench: the agent did not start; see /run/bench-agent.log in the host")
            time.sleep(0.05)
        self.netctl("image", "build-busybox")
        self.netctl("network", "create", "--subnet", SUBNET, "--gateway", GATEWAY, "bench")
        ids = {}
        for name in ("web", "client"):
            ids[name] = self.netctl("run", "-d", "--name", name, "--network", "bench", "busybox", "sleep",
                                    "3600").strip()
        addresses = {}
        for name in ids:
            info = json.loads(self.netctl("inspect", name))[0]
            addresses[name] = info["NetworkSettings"]["Networks"]["bench"]["IPAddress"]
        # aardvark-dns as netavark configures and starts it.
        lines = [GATEWAY] + [f"{ids[n]} {addresses[n]}  {n}" for n in ids]
        h.run("sh", "-c", f"mkdir -p {AARDVARK_DIR} && cat > {AARDVARK_DIR}/bench", input="\n".join(lines) + "\n")
        self.aardvark = h.popen(AARDVARK, "--config", AARDVARK_DIR, "-p", "53", "run",
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return addresses

    def load(self, *args: str) -> dict:
        out = self.netctl("sandbox", "exec", "client", "--", sys.executable, os.path.abspath(__file__), "--load",
                          *args, timeout=300)
        return json.loads(out.strip().splitlines()[-1])


def check_answers(bench: Bench, addresses: dict[str, str]) -> None:
    """Both servers must answer web's address before anything is timed."""
    code = ("import sys, json; from dnslib import DNSRecord; import socket\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)\n"
            "out = {}\n"
            "for server in sys.argv[1:]:\n"
            "    for attempt in range(30):\n"
            "        s.sendto(DNSRecord.question('web').pack(), (server, 53))\n"
            "        try:\n"
            "            out[server] = [str(r.rdata) for r in DNSRecord.parse(s.recv(4096)).rr]; break\n"
            "        except (TimeoutError, OSError):\n"
            "            import time; time.sleep(0.1)\n"
            "print(json.dumps(out))\n")
    out = bench.netctl("sandbox", "exec", "client", "--", sys.executable, "-c", code, NETCTL_SERVER, GATEWAY,
                       timeout=120)
    answers = json.loads(out.strip().splitlines()[-1])
    for server in (NETCTL_SERVER, GATEWAY):
        if answers.get(server) != [addresses["web"]]:
            raise SystemExit(f"bench: {server} answered {answers.get(server)} for web, not [{addresses['web']}]")


def remove_cgroup_parent(parent: str, timeout: float = 10.0) -> None:
    """rmdir the containers' cgroup parent in every hierarchy, bottom-up, retried (bounded) while the
    host's last processes leave."""
    deadline = time.monotonic() + timeout
    base = "/sys/fs/cgroup"
    for top in [os.path.join(base, d) for d in os.listdir(base)] + [base]:
        path = os.path.join(top, parent)
        if not os.path.isdir(path):
            continue
        for directory, _, _ in sorted(os.walk(path), key=lambda e: -e[0].count("/")):
            while os.path.isdir(directory):
                try:
                    os.rmdir(directory)
                except OSError:
                    if time.monotonic() > deadline:
                        print(f"bench: cgroup {directory} left behind", file=sys.stderr)
                        break
                    time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--queries", type=int, default=3000, help="lookups per one-at-a-time series")
    parser.add_argument("--processes", type=int, default=4, help="askers in parallel")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of a parallel series")
    parser.add_argument("--load", nargs="+", help=argparse.SUPPRESS)  # worker mode, inside the container
    args = parser.parse_args()
    if args.load:
        kind, server = args.load[0], args.load[1]
        if kind == "serial":
            result = load_serial(server, NAME, int(args.load[2]))
        else:
            result = load_parallel(server, NAME, int(args.load[2]), float(args.load[3]))
        print(json.dumps(result))
        return
    sys.path.insert(0, BENCH_DIR)
    from common import changed_parts, load_harness, machine_info, root_namespace_state, write_results

    if not os.path.exists(AARDVARK):
        raise SystemExit(f"bench: {AARDVARK} missing: apt-get install --no-install-recommends aardvark-dns")
    harness = load_harness()
    reason = harness.missing_host_prerequisites()
    if reason:
        raise SystemExit(f"bench: {reason}")
    before = root_namespace_state()
    parent = harness.new_test_cgroup_parent()
    subjects = {"netctl": NETCTL_SERVER, "aardvark": GATEWAY}
    rounds: list[dict] = []
    try:
        with harness.Host.start("bench-dns") as host:
            bench = Bench(host, parent)
            addresses = bench.set_up()
            check_answers(bench, addresses)
            bench.load("serial", NETCTL_SERVER, "300")  # warm-up, both
            bench.load("serial", GATEWAY, "300")
            for i in range(args.rounds):
                order = list(subjects) if i % 2 == 0 else list(reversed(subjects))
                figures: dict[str, dict] = {}
                for subject in order:
                    serial = bench.load("serial", subjects[subject], str(args.queries))
                    parallel = bench.load("parallel", subjects[subject], str(args.processes), str(args.seconds))
                    figures[subject] = {**serial, **parallel}
                rounds.append(figures)
                print(f"round {i + 1}: " + "; ".join(
                    f"{s} p50 {f['p50_us']:.1f} us p99 {f['p99_us']:.1f} us {f['qps']:.0f} q/s"
                    for s, f in figures.items()), file=sys.stderr)
            for name in ("web", "client"):
                bench.netctl("rm", "-f", name)
    finally:
        remove_cgroup_parent(parent)
    after = root_namespace_state()
    summary = {}
    for subject in subjects:
        summary[subject] = {key: statistics.median(r[subject][key] for r in rounds)
                            for key in ("p50_us", "p99_us", "qps")}
        summary[subject]["failures"] = sum(r[subject]["failures"] for r in rounds)
    ratio_p50 = summary["netctl"]["p50_us"] / summary["aardvark"]["p50_us"]
    ratio_qps = summary["netctl"]["qps"] / summary["aardvark"]["qps"]
    print(f"{'subject':<10} {'p50 us':>9} {'p99 us':>9} {'q/s (' + str(args.processes) + ' askers)':>18} failures")
    for subject, s in summary.items():
        print(f"{subject:<10} {s['p50_us']:>9.1f} {s['p99_us']:>9.1f} {s['qps']:>18.0f} {s['failures']:>8}")
    print(f"netctl/aardvark: p50 {ratio_p50:.2f}x (goal <= 1.0), qps {ratio_qps:.2f}x (goal >= 1.0)")
    path = write_results("dns", {"machine": machine_info(), "args": vars(args), "rounds": rounds, "summary": summary,
                                 "ratios": {"p50": ratio_p50, "qps": ratio_qps},
                                 "root_namespace_unchanged": not changed_parts(before, after)})
    print(f"results in {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
