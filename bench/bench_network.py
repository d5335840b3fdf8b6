#!/usr/bin/env python3
"""Benchmark of the single-host core (issues #2 and #10): network create/rm and endpoint
connect/disconnect, netctl beside its peers, measured in the same run.

    sudo .venv/bin/python bench/bench_network.py            # full run (~2.5 min on 2 cores)
    sudo .venv/bin/python bench/bench_network.py --quick    # smoke run (a few iterations, ~15 s)

Every measurement runs inside a throwaway host (tests/harness.py: private net, mount, PID and UTS
namespaces, /run a tmpfs) and is timed in there (bench/worker.py). Tools compared are interleaved in
time (round by round), so a burst of load on the machine hits them alike: in one host for network
create/rm; one host per subject, all alive at once, for the endpoint cycles. Output: the
tables on stdout, progress on stderr, everything (samples included) in bench/results/network-*.json.

netctl is measured the ways a user meets it (bench/worker.py says how): cold-first (no agent: the
call runs in-process and starts one), auto (the calls after that, served by the agent a first call
started), agent (`netctl daemon` started by hand), inproc (NETCTL_NO_DAEMON=1) and lib (the library
call in a warm process).

Medians and minima only; nothing here asserts a time. The issues' goals are reported, not enforced:
  * #10: with the agent, `network create`+`rm` and connect+disconnect no slower than the peer
    (podman with netavark; the reference bridge plugin); cold `network create` no slower than podman;
  * #2: netctl connect+disconnect at the 500th endpoint within 1.5x of the 1st.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    Comparison,
    Progress,
    Series,
    WorkerSession,
    changed_parts,
    fmt_ms,
    fmt_n,
    format_table,
    machine_info,
    root_namespace_state,
    run_in_throwaway_host,
    write_results,
)

SUBJECTS = ("netctl", "netctl-cold", "ip", "cni", "cni-masq")
# netctl's ways of running a command (bench/worker.py), in the order of the tables
NETCTL_TOOLS = ("netctl-cold-first", "netctl-auto", "netctl-agent", "netctl-inproc", "netctl-lib")
PODMAN_BACKENDS = ("netavark", "cni")
CREATE_GOAL_PEER = "podman-netavark"
ENDPOINT_GOAL_PEER = "cni-bridge"
SCALING_GOAL = 1.5
TASK_TIMEOUT = 900.0  # seconds the network section may take before its host is torn down
GROW_TIMEOUT = 600.0  # seconds to add the background endpoints of one step
CYCLE_TIMEOUT = 60.0  # seconds for one connect+disconnect


@dataclass
class Plan:
    """How many of everything: bounded, so a whole run stays under ~10 minutes on 2 cores."""

    network_runs: int  # n of network create/rm per tool
    cycles: int  # k connect+disconnect cycles per N
    points: list[int]  # the N-th endpoint measured
    warmup: int
    subjects: list[str]
    podman_backends: list[str]

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Plan":
        quick = args.quick
        return cls(
            network_runs=args.n or (5 if quick else 50),
            cycles=args.cycles or (3 if quick else 40),
            points=args.points or ([1, 10, 30] if quick else [1, 100, 500]),
            warmup=1 if quick else 2,
            subjects=args.subjects or list(SUBJECTS),
            podman_backends=[] if args.no_podman else list(args.podman_backends or PODMAN_BACKENDS),
        )


# ---- running ----------------------------------------------------------------------------------------


def measure(plan: Plan, sections: list[str], progress: Progress) -> list[Series]:
    series: list[Series] = []
    if "network" in sections:
        progress(f"network create/rm: n={plan.network_runs} per tool (podman backends: {plan.podman_backends or 'none'})")
        task = {"task": "network-lifecycle", "n": plan.network_runs, "warmup": plan.warmup, "backends": plan.podman_backends}
        series += run_in_throwaway_host("bench-network", task, TASK_TIMEOUT)
    if "endpoint" in sections:
        series += measure_endpoints(plan, progress)
    return series


def measure_endpoints(plan: Plan, progress: Progress) -> list[Series]:
    """One host per subject, all alive at once; at each N every subject is grown to N-1 endpoints,
    then the k timed cycles of all probes are interleaved (order rotated each round)."""
    with contextlib.ExitStack() as stack:
        sessions = []
        for subject in plan.subjects:
            progress(f"endpoint hosts: starting {subject}")
            task = {"task": "serve-endpoints", "subject": subject}
            sessions.append(stack.enter_context(WorkerSession(f"bench-{subject}", task)))
        units = [(session, probe) for session in sessions for probe in session.hello["probes"]]
        series: list[Series] = []
        for n in sorted(plan.points):
            for session in sessions:
                progress(f"endpoint hosts: growing {session.name} to {n - 1} background endpoints")
                session.request({"op": "grow", "to": n - 1}, timeout=GROW_TIMEOUT)
            progress(f"endpoint hosts: N={n}, {plan.warmup}+{plan.cycles} interleaved cycles of {len(units)} probes")
            samples: dict[str, list[dict[str, float]]] = {probe: [] for _, probe in units}
            for round_index in range(plan.warmup + plan.cycles):
                shift = round_index % len(units)
                for session, probe in units[shift:] + units[:shift]:
                    answer = session.request({"op": "cycle", "probe": probe}, timeout=CYCLE_TIMEOUT)
                    if round_index >= plan.warmup:
                        samples[probe].append(answer)
            for probe, answers in samples.items():
                for key in ("agent_ready_connect_ms", "agent_ready_disconnect_ms"):
                    if answers and key in answers[0]:
                        step = key.split("_")[2]
                        series.append(Series(probe, f"agent ready ({step})", [a[key] for a in answers], n))
                for operation, keys in (
                    ("connect", ("connect",)),
                    ("disconnect", ("disconnect",)),
                    ("connect+disconnect", ("connect", "disconnect")),
                ):
                    wall = [sum(a[f"{k}_ms"] for k in keys) for a in answers]
                    cpu = [sum(a[f"{k}_cpu_ms"] for k in keys) for a in answers]
                    series.append(Series(probe, operation, wall, n, cpu_samples_ms=cpu))
        progress("endpoint hosts: tearing down")
    return series


# ---- reporting --------------------------------------------------------------------------------------


def find(series: list[Series], tool: str, operation: str, n: int | None = None) -> Series | None:
    for s in series:
        if s.tool == tool and s.operation == operation and s.n_endpoints == n:
            return s
    return None


def comparisons(series: list[Series], points: list[int]) -> list[Comparison]:
    """netctl's ways beside the peers a user would pick instead; `ip` (the kernel's floor, no state)
    beside the library call only."""
    pairs: list[Comparison] = []
    for operation in ("network create", "network rm", "network create+rm"):
        for netctl_tool in NETCTL_TOOLS:
            netctl = find(series, netctl_tool, operation)
            for peer_tool in ("podman-netavark", "podman-cni") + (("ip",) if netctl_tool == "netctl-lib" else ()):
                peer = find(series, peer_tool, operation)
                if netctl and peer:
                    pairs.append(Comparison(operation, None, netctl, peer))
    for n in points:
        for netctl_tool in NETCTL_TOOLS:
            netctl = find(series, netctl_tool, "connect+disconnect", n)
            for peer_tool in ("cni-bridge", "cni-bridge-masq") + (("ip",) if netctl_tool == "netctl-lib" else ()):
                peer = find(series, peer_tool, "connect+disconnect", n)
                if netctl and peer:
                    pairs.append(Comparison("connect+disconnect", n, netctl, peer))
    return pairs


def detail_table(series: list[Series]) -> str:
    rows = [
        [
            s.operation,
            fmt_n(s.n_endpoints),
            s.tool,
            fmt_ms(s.median),
            fmt_ms(s.minimum),
            fmt_ms(s.cpu_median),
            str(len(s.samples_ms)),
        ]
        for s in series
    ]
    headers = ["operation", "N", "tool", "median ms", "min ms", "CPU median ms", "runs"]
    return format_table(headers, rows, numeric=(1, 3, 4, 5, 6))


def summary_table(pairs: list[Comparison]) -> str:
    rows = [
        [
            p.operation,
            fmt_n(p.n_endpoints),
            p.netctl.tool,
            fmt_ms(p.netctl.median),
            p.peer.tool,
            fmt_ms(p.peer.median),
            f"{p.ratio:.2f}",
        ]
        for p in pairs
    ]
    headers = ["operation", "N", "netctl", "median ms", "peer", "median ms", "ratio"]
    return format_table(headers, rows, numeric=(1, 3, 5, 6))


def scaling_rows(series: list[Series], points: list[int]) -> list[dict]:
    """Per tool: connect+disconnect median at each N and the ratio of the largest N to the first,
    in wall clock and in CPU time (the latter barely moves with the machine's other load)."""
    tools = []
    for s in series:
        if s.operation == "connect+disconnect" and s.tool not in tools:
            tools.append(s.tool)
    rows = []
    for tool in tools:
        measured = {n: find(series, tool, "connect+disconnect", n) for n in points}
        if any(m is None for m in measured.values()):
            continue
        first, last = measured[min(points)], measured[max(points)]
        rows.append(
            {
                "tool": tool,
                "medians_ms": {str(n): round(m.median, 3) for n, m in measured.items()},
                "cpu_medians_ms": {str(n): round(m.cpu_median, 3) for n, m in measured.items()},
                "ratio_last_to_first": round(last.median / first.median, 3),
                "cpu_ratio_last_to_first": round(last.cpu_median / first.cpu_median, 3),
            }
        )
    return rows


def scaling_table(rows: list[dict], points: list[int]) -> str:
    last, first = max(points), min(points)
    headers = ["tool"] + [f"N={n} ms" for n in points] + [f"N={last}/N={first}", f"CPU N={last}/N={first}"]
    body = [
        [r["tool"]]
        + [fmt_ms(r["medians_ms"][str(n)]) for n in points]
        + [f"{r['ratio_last_to_first']:.2f}", f"{r['cpu_ratio_last_to_first']:.2f}"]
        for r in rows
    ]
    return format_table(headers, body, numeric=tuple(range(1, len(headers))))


def _goal(label: str, netctl: Series | None, peer: Series | None, limit: float) -> str | None:
    if netctl is None or peer is None:
        return None
    ratio = netctl.median / peer.median
    return (f"{label}: {netctl.tool} {fmt_ms(netctl.median)} ms vs {peer.tool} {fmt_ms(peer.median)} ms, "
            f"ratio {ratio:.2f} (goal <= {limit:.1f}) -> {'met' if ratio <= limit else 'NOT met'}")


def goals(series: list[Series], scaling: list[dict], points: list[int]) -> list[str]:
    lines = []
    podman = {op: find(series, CREATE_GOAL_PEER, op) for op in ("network create", "network create+rm")}
    checks = [("#10 with the agent, network create+rm", "netctl-agent", "network create+rm"),
              ("#10 cold network create, first call", "netctl-cold-first", "network create"),
              ("#10 cold network create, the calls that follow", "netctl-auto", "network create")]
    for label, tool, operation in checks:
        line = _goal(label, find(series, tool, operation), podman[operation], 1.0)
        if line:
            lines.append(line)
    first = min(points)
    peer = find(series, ENDPOINT_GOAL_PEER, "connect+disconnect", first)
    for label, tool in (("with the agent", "netctl-agent"), ("cold, first call", "netctl-cold-first"),
                        ("cold, the calls that follow", "netctl-auto")):
        netctl = find(series, tool, "connect+disconnect", first)
        line = _goal(f"#10 connect+disconnect at N={first} {label}", netctl, peer, 1.0)
        if line:
            lines.append(line + ("" if tool == "netctl-agent" else " (reported; #10 sets no cold goal for this)"))
    for s in series:
        if s.operation.startswith("agent ready"):
            lines.append(f"agent started on first use: serving {fmt_ms(s.median)} ms (median; min {fmt_ms(s.minimum)}) "
                         f"after its first call started ({s.operation[13:-1]}, N={fmt_n(s.n_endpoints)}; polled from "
                         "that call's end: an upper bound); a command sooner than that runs in-process too")
    if max(points) >= 500:
        for row in scaling:
            if row["tool"].startswith("netctl"):
                ratio = row["ratio_last_to_first"]
                verdict = "met" if ratio <= SCALING_GOAL else "NOT met"
                lines.append(
                    f"#2 connect+disconnect at N={max(points)} within {SCALING_GOAL}x of N={min(points)}: "
                    f"{row['tool']} ratio {ratio:.2f} (CPU {row['cpu_ratio_last_to_first']:.2f}) -> {verdict}"
                )
    else:
        lines.append(f"#2 scaling goal (N=500 vs N=1) not judged: largest N measured is {max(points)}")
    return lines


def report(series: list[Series], plan: Plan) -> tuple[str, list[Comparison], list[dict], list[str]]:
    pairs = comparisons(series, plan.points)
    scaling = scaling_rows(series, plan.points)
    goal_lines = goals(series, scaling, plan.points)
    parts = [
        "== all measurements (wall clock per operation, medians of the runs after warm-up) ==",
        detail_table(series),
        "",
        "== summary: netctl beside each peer (ratio = netctl median / peer median) ==",
        summary_table(pairs),
    ]
    if scaling:
        parts += ["", "== connect+disconnect median by endpoint count on one bridge ==", scaling_table(scaling, plan.points)]
    parts += ["", "== goals of issues #10 and #2 (reported, not asserted) =="] + [f"  {line}" for line in goal_lines]
    return "\n".join(parts), pairs, scaling, goal_lines


# ---- entry point ------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: a few iterations, N up to 30")
    parser.add_argument("--sections", nargs="+", choices=["network", "endpoint"], default=["network", "endpoint"])
    parser.add_argument("--n", type=int, help="network create/rm runs per tool (default 50, quick 5)")
    parser.add_argument("--cycles", type=int, help="connect+disconnect cycles per N (default 40, quick 3)")
    parser.add_argument("--points", type=int, nargs="+", help="which N-th endpoints to measure (default 1 100 500)")
    parser.add_argument("--subjects", nargs="+", choices=SUBJECTS, help="endpoint subjects (default: all)")
    parser.add_argument("--podman-backends", nargs="+", choices=PODMAN_BACKENDS, help="podman backends (default: both)")
    parser.add_argument("--no-podman", action="store_true", help="leave podman out of the network section")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    if args.n is not None and not 1 <= args.n <= 200:
        parser.error("--n must be between 1 and 200 (each run uses its own /24)")
    if args.cycles is not None and not 1 <= args.cycles <= 1000:
        parser.error("--cycles must be between 1 and 1000")
    if args.points and not all(1 <= p <= 2000 for p in args.points):
        parser.error("--points must be between 1 and 2000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if os.geteuid() != 0:
        print("bench: needs root (it builds throwaway namespaces); run with sudo", file=sys.stderr)
        return 1
    plan = Plan.from_args(args)
    progress = Progress(quiet=args.quiet)
    root_before = root_namespace_state()
    load_before = os.getloadavg()
    series = measure(plan, args.sections, progress)
    load_after = os.getloadavg()
    root_after = root_namespace_state()
    text, pairs, scaling, goal_lines = report(series, plan)
    print(text)
    untouched = root_before == root_after
    if not untouched:
        print(f"\nWARNING: the machine's own {', '.join(changed_parts(root_before, root_after))} changed during "
              "the run (other engineers' work on a shared machine can do that too: see the result file)",
              file=sys.stderr)
    path = write_results(
        "network",
        {
            "machine": machine_info(),
            "plan": vars(plan),
            "quick": args.quick,
            "series": [s.to_dict() for s in series],
            "summary": [p.to_dict() for p in pairs],
            "scaling": scaling,
            "goals": goal_lines,
            "root_namespace_untouched": untouched,
            "root_namespace_before": root_before,
            "root_namespace_after": root_after,
            # Other work on the machine shows up as noise; interleaving spreads it, this records it.
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "elapsed_s": round(time.monotonic() - progress.started, 1),
        },
    )
    progress(f"results written to {os.path.relpath(path)}")
    return 0 if untouched else 2


if __name__ == "__main__":
    sys.exit(main())
