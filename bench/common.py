"""Shared pieces of the benchmarks: timing, statistics, tables, result files, throwaway hosts.

Used on both sides of the namespace boundary: by the driver scripts (outside, in the machine's
namespaces, where they only start and stop throwaway hosts) and by bench/worker.py (inside a host,
where every timed command runs). Standard library only, so importing it costs nothing (the agent
helpers, used inside a host, import libnetwork.ipc when first called).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.util
import json
import os
import platform
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)
RESULTS_DIR = os.path.join(BENCH_DIR, "results")
HARNESS_PATH = os.path.join(REPO_DIR, "tests", "harness.py")
COMMAND_TIMEOUT = 30.0  # seconds any single timed command may take before the run is abandoned
START_TIMEOUT = 120.0  # seconds for a worker to set up its subject and say hello
STOP_TIMEOUT = 30.0  # seconds for a worker to finish after its stdin closes


# ---- timing ---------------------------------------------------------------------------------------


class CommandError(RuntimeError):
    """A command under measurement failed: the figures would be meaningless, so the run stops."""


def run_cmd(argv: list[str], *, env: dict[str, str] | None = None, stdin: str | None = None) -> str:
    """Run argv to completion (bounded), return its stdout; raise CommandError on failure."""
    try:
        proc = subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise CommandError(f"{' '.join(argv)} took more than {COMMAND_TIMEOUT}s") from None
    if proc.returncode != 0:
        raise CommandError(
            f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}"
        )
    return proc.stdout


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of every child it has waited for."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(action: Callable[[], Any]) -> tuple[float, float]:
    """(wall-clock ms, CPU ms) of one call of action, its child processes included.

    Wall clock is the figure a user feels; CPU time barely moves when other work on the machine
    competes for the cores, so it shows whether a change between two runs is ours or the machine's.
    Kernel work done on our behalf in kernel threads (RCU, netns clean-up) is in neither figure's CPU.
    """
    wall, cpu = time.perf_counter(), cpu_seconds()
    action()
    return (time.perf_counter() - wall) * 1000.0, (cpu_seconds() - cpu) * 1000.0


def timed_cmds(argvs: list[list[str]], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall ms, CPU ms) to run several commands one after the other (one logical operation)."""
    return timed(lambda: [run_cmd(argv, env=env) for argv in argvs])


def measure_rounds(operation: str, actions: dict[str, Callable[[], Any]], n: int, warmup: int,
                   prepare: dict[str, Callable[[], Any]] | None = None) -> list[Series]:
    """Wall-clock and CPU ms of n runs of each tool's action (CPU: ours and our children's, so not the
    monitor's or a daemon's), round-robin: one sample of every tool per round, so that the load other
    work puts on the machine, which comes and goes within seconds, hits every tool alike.
    prepare[tool]() runs untimed before each of that tool's runs, warm-up included."""
    prepare = prepare or {}
    for _ in range(warmup):
        for tool, action in actions.items():
            prepare.get(tool, lambda: None)()
            action()
    samples: dict[str, list[tuple[float, float]]] = {tool: [] for tool in actions}
    for _ in range(n):
        for tool, action in actions.items():
            prepare.get(tool, lambda: None)()
            samples[tool].append(timed(action))
    return [Series(tool=tool, operation=operation, samples_ms=[w for w, _ in s], cpu_samples_ms=[c for _, c in s])
            for tool, s in samples.items()]  # fmt: skip


# ---- statistics -----------------------------------------------------------------------------------


@dataclass
class Series:
    """Samples of one operation by one tool (at one size N, when the operation depends on it)."""

    tool: str
    operation: str
    samples_ms: list[float]  # wall clock
    n_endpoints: int | None = None  # N: the endpoint measured is the N-th on its network
    cpu_samples_ms: list[float] = field(default_factory=list)  # CPU time of the same runs

    @property
    def median(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def minimum(self) -> float:
        return min(self.samples_ms)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_samples_ms) if self.cpu_samples_ms else float("nan")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            median_ms=round(self.median, 3),
            min_ms=round(self.minimum, 3),
            cpu_median_ms=round(self.cpu_median, 3),
            count=len(self.samples_ms),
        )
        data["samples_ms"] = [round(s, 3) for s in self.samples_ms]
        data["cpu_samples_ms"] = [round(s, 3) for s in self.cpu_samples_ms]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Series":
        return cls(
            tool=data["tool"],
            operation=data["operation"],
            samples_ms=list(data["samples_ms"]),
            n_endpoints=data.get("n_endpoints"),
            cpu_samples_ms=list(data.get("cpu_samples_ms", [])),
        )


@dataclass
class Comparison:
    """One line of the summary: netctl's median beside a peer's, and their ratio."""

    operation: str
    n_endpoints: int | None
    netctl: Series
    peer: Series

    @property
    def ratio(self) -> float:
        return self.netctl.median / self.peer.median

    def to_dict(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "N": self.n_endpoints,
            "netctl": self.netctl.tool,
            "netctl_median_ms": round(self.netctl.median, 3),
            "netctl_min_ms": round(self.netctl.minimum, 3),
            "peer": self.peer.tool,
            "peer_median_ms": round(self.peer.median, 3),
            "peer_min_ms": round(self.peer.minimum, 3),
            "ratio": round(self.ratio, 3),
        }


# ---- output ---------------------------------------------------------------------------------------


def format_table(headers: list[str], rows: list[list[str]], numeric: tuple[int, ...] = ()) -> str:
    """A plain-text table; the columns whose indexes are in numeric are right-aligned."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            out.append(cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i]))
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule] + [line(r) for r in rows])


def fmt_ms(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def fmt_n(value: int | None) -> str:
    return "-" if value is None else str(value)


def write_results(name: str, data: dict[str, Any]) -> str:
    """Write data as bench/results/<name>-<timestamp>.json; return the path."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = os.path.join(RESULTS_DIR, f"{name}-{stamp}.json")
    with open(path, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    return path


def write_comparison(name: str, progress: Progress, task: dict[str, Any], series: list[Series],
                     comparisons: list[dict[str, Any]], extra: dict[str, Any], before: dict[str, str],
                     after: dict[str, str], **more: Any) -> None:
    """A driver's results file (machine, task, every series, the comparisons, the worker's extra figures,
    whether the machine's own namespaces were left as they were, then `more`); its path as progress."""
    data = {"machine": machine_info(), "task": task, "series": [s.to_dict() for s in series],
            "comparisons": comparisons, "extra": extra, "root_namespace_unchanged": before == after,
            **more}  # fmt: skip
    path = write_results(name, data)
    progress(f"results in {path}; machine's own links and ruleset unchanged: {before == after}")


def machine_info() -> dict[str, Any]:
    """What the figures depend on, recorded beside them."""
    info: dict[str, Any] = {
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    for tool, argv in {
        "podman": ["podman", "--version"],
        "netavark": ["/usr/lib/podman/netavark", "--version"],
        "iproute2": ["ip", "-V"],
        "cni-plugins": ["dpkg-query", "-W", "-f", "${Version}", "containernetworking-plugins"],
    }.items():
        try:
            info[tool] = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            info[tool] = "unavailable"
    return info


# ---- throwaway hosts ------------------------------------------------------------------------------


def inside_throwaway_host() -> bool:
    """PID 1 here is the harness's init: we are in a host's PID (and so net/mount) namespace."""
    try:
        with open("/proc/1/cmdline", "rb") as f:
            return b"netctl-test-host-init" in f.read()
    except OSError:
        return False


def private_var(work: str) -> None:
    """Put an overlay over /var, its writable layer under `work` on this host's /run (a tmpfs): what
    the peers write under /var (podman's /var/lib/containers/cache) stays in this host's mount
    namespace and goes with it."""
    if not inside_throwaway_host():
        raise SystemExit("bench: the worker must run inside a throwaway host (its mounts are private)")
    layer = f"{work}/var"
    os.makedirs(f"{layer}/upper", exist_ok=True)
    os.makedirs(f"{layer}/work", exist_ok=True)
    options = f"lowerdir=/var,upperdir={layer}/upper,workdir={layer}/work"
    run_cmd(["mount", "-t", "overlay", "overlay", "-o", options, "/var"])


def driver_parser(doc: str, quick_help: str, n_help: str) -> argparse.ArgumentParser:
    """The options of a driver whose measuring side is itself run with --worker (run_worker_in_host)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("-n", type=int, default=0, help=n_help)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser


def answer_worker_task(task: str | None, worker: Callable[[dict[str, Any]], dict[str, Any]]) -> bool:
    """The measuring side of run_worker_in_host: with --worker TASK, print worker(TASK) as JSON (True)."""
    if not task:
        return False
    print(json.dumps(worker(json.loads(task))))
    return True


def run_worker_in_host(name: str, script: str, task: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run `script --worker TASK` inside a fresh throwaway host (the repository on its PYTHONPATH),
    copy its stderr to ours, and return what it printed as JSON; stop the bench if it failed."""
    harness = load_harness()
    reason = harness.missing_host_prerequisites()
    if reason:
        raise SystemExit(f"bench: {reason}")
    with harness.Host.start(name) as host:
        proc = host.run(sys.executable, script, "--worker", json.dumps(task), timeout=timeout,
                        check=False, env={"PYTHONPATH": REPO_DIR})  # fmt: skip
        sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"bench: worker failed (exit {proc.returncode})")
    return json.loads(proc.stdout)


# ---- netctl inside a host: its command, its agents --------------------------------------------------

AGENT_READY_TIMEOUT = 60.0  # seconds for an agent to start serving (its start repairs the root: N endpoints)
AGENT_STOP_TIMEOUT = 30.0  # seconds for an agent to be gone after SIGTERM


def netctl_argv() -> list[str]:
    """The console script a user runs (the venv's bin is first on PATH inside a host)."""
    path = shutil.which("netctl")
    return [path] if path else [sys.executable, "-m", "netctl"]


def agent_ready(root: str) -> bool:
    """Whether ROOT/netctl.sock accepts a connection now (the next command would be served)."""
    from libnetwork import ipc

    sock = ipc.try_connect(os.path.join(root, "netctl.sock"))
    if sock is None:
        return False
    sock.close()  # the agent reads an empty request and drops it
    return True


def wait_agent_ready(root: str, started: float) -> float:
    """Poll (bounded) until the agent of `root` accepts connections; ms since `started` (perf_counter)."""
    deadline = time.monotonic() + AGENT_READY_TIMEOUT
    while not agent_ready(root):
        if time.monotonic() > deadline:
            raise CommandError(f"no agent served {root} within {AGENT_READY_TIMEOUT}s of a first call")
        time.sleep(0.001)
    return (time.perf_counter() - started) * 1000.0


def lock_free(lock: str) -> bool:
    """Whether nobody holds the flock on `lock` (a missing file is free)."""
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)  # releases the lock if we got it
    return True


def stop_auto_agent(root: str) -> None:
    """Stop the agent a first call started on `root` (SIGTERM, bounded wait). Only an auto-started
    agent is touched: its PID is the one it wrote into ROOT/daemon.pid with the note "auto"."""
    from libnetwork import ipc

    lock = os.path.join(root, "daemon.pid")
    if lock_free(lock):
        return
    pid, note = ipc.lock_holder(lock)
    if pid <= 0 or note != "auto":
        raise CommandError(f"{lock} is held by {pid} ({note!r}), not by an agent started on first use")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + AGENT_STOP_TIMEOUT
    while not lock_free(lock):
        if time.monotonic() > deadline:
            raise CommandError(f"the agent {pid} of {root} did not stop within {AGENT_STOP_TIMEOUT}s")
        time.sleep(0.002)


# ---- throwaway hosts, from outside ------------------------------------------------------------------


def load_harness():
    """tests/harness.py as a module (it is not a package), for its throwaway Host."""
    spec = importlib.util.spec_from_file_location("netctl_test_harness", HARNESS_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def run_in_throwaway_host(name: str, task: dict[str, Any], timeout: float) -> list[Series]:
    """Run bench/worker.py with task inside a fresh throwaway host; return the series it measured.

    The timing loop runs inside the host, so nsenter's cost is in no figure; the host (with every
    bridge, veth, namespace and nftables rule made in it) vanishes when this returns.
    """
    harness = load_harness()
    reason = harness.missing_host_prerequisites()
    if reason:
        raise SystemExit(f"bench: cannot make a throwaway host: {reason}")
    worker = os.path.join(BENCH_DIR, "worker.py")
    with harness.Host.start(name) as host:
        proc = host.run(sys.executable, worker, json.dumps(task), timeout=timeout, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"bench: task {task['task']!r} failed (exit {proc.returncode}):\n{proc.stderr.strip()}")
    return [Series.from_dict(d) for d in json.loads(proc.stdout)]


class WorkerSession:
    """A long-lived bench/worker.py inside its own throwaway host, driven by JSON lines.

    Several sessions live side by side (one host each, so their kernel objects never mix) and the
    caller interleaves their timed cycles: a burst of load on the machine then hits every tool alike
    instead of whichever happened to run at that moment.
    """

    def __init__(self, name: str, task: dict[str, Any]):
        self.name = name
        self._harness = load_harness()
        reason = self._harness.missing_host_prerequisites()
        if reason:
            raise SystemExit(f"bench: cannot make a throwaway host: {reason}")
        self._log = tempfile.TemporaryFile(mode="w+")
        self._buffer = b""
        self.host = self._harness.Host.start(name)
        try:
            self._proc = self.host.popen(
                sys.executable, os.path.join(BENCH_DIR, "worker.py"), json.dumps(task),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=False,
            )  # fmt: skip
            self.hello = self._read(START_TIMEOUT)
        except BaseException:
            self.close()
            raise

    def request(self, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps(message).encode() + b"\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            raise SystemExit(f"bench: worker {self.name} is gone:\n{self._log_text()}") from None
        return self._read(timeout)

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SystemExit(f"bench: worker {self.name} gave no answer within {timeout}s:\n{self._log_text()}")
            readable, _, _ = select.select([fd], [], [], left)
            if readable:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise SystemExit(f"bench: worker {self.name} exited:\n{self._log_text()}")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        answer = json.loads(line)
        if "error" in answer:
            raise SystemExit(f"bench: worker {self.name} failed: {answer['error']}\n{self._log_text()}")
        return answer

    def _log_text(self) -> str:
        self._log.seek(0)
        return self._log.read()[-4000:]

    def close(self) -> None:
        """End the worker (EOF on its stdin), then the host with everything in it. Idempotent."""
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.stdin is not None and not proc.stdin.closed:
            with contextlib.suppress(OSError):
                proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=STOP_TIMEOUT)
        self.host.close()  # kills whatever is left inside, bounded
        self._log.close()

    def __enter__(self) -> "WorkerSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def root_namespace_state() -> dict[str, str]:
    """The machine's own links, ruleset, named network namespaces and netctl cgroups, to show that a
    run left them as they were. Cgroups of tests (netctl-t<hex>, made and removed by tests other
    engineers may be running meanwhile) are left out."""
    state = {}
    for key, argv in {"links": ["ip", "-o", "link"], "nft": ["nft", "list", "ruleset"]}.items():
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
        # Carrier and counters change by themselves; only the set of names/config matters here.
        state[key] = "\n".join(sorted(line.split("link/")[0].split(" state ")[0] for line in out.splitlines()))
    state["netns"] = "\n".join(sorted(os.listdir("/run/netns"))) if os.path.isdir("/run/netns") else ""
    cgroups = []
    for top in sorted(os.listdir("/sys/fs/cgroup")) if os.path.isdir("/sys/fs/cgroup") else []:
        base = os.path.join("/sys/fs/cgroup", top)
        if os.path.isdir(base):
            cgroups += [os.path.join(top, d) for d in sorted(os.listdir(base))
                        if d.startswith("netctl") and not d.startswith("netctl-t")]
    state["cgroups"] = "\n".join(cgroups)
    return state


def changed_parts(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """The keys of root_namespace_state() that differ (empty: the machine is as it was)."""
    return sorted(key for key in set(before) | set(after) if before.get(key) != after.get(key))


@dataclass
class Progress:
    """One-line progress notes on stderr, so stdout keeps only the tables."""

    quiet: bool = False
    started: float = field(default_factory=time.monotonic)

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(f"[{time.monotonic() - self.started:6.1f}s] {message}", file=sys.stderr, flush=True)
