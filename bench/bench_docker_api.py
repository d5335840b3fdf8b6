#!/usr/bin/env python3
"""Benchmark of the Docker Engine API (issue #13): the same docker CLI and docker-compose against
netctl's agent socket and against podman's compat API, measured in the same run.

    sudo .venv/bin/python bench/bench_docker_api.py            # full run (n=20 per figure, ~5 min)
    sudo .venv/bin/python bench/bench_docker_api.py --quick    # smoke run (n=3)

Operations (each a whole client command line, timed from start to exit, DOCKER_HOST on the engine):
  run       `docker run --rm --network benchnet busybox true`
  network   `docker network create benchI` then `docker network rm benchI`
  compose   `docker-compose -p bench up -d` then `docker-compose -p bench down -v` of the three-service
            project in tests/docker_api/compose (a user network with its own subnet, the default
            network, a published port, a named volume, a bind mount, depends_on, restart: on-failure)

netctl: its agent (`netctl daemon`, started by hand) serving the Docker API on its socket under the
state root; busybox from `netctl image build-busybox`.
podman (Debian's 4.3): `podman system service --time=0 unix://…` on a socket in the throwaway host,
confined like bench_run.py's podman (its own containers.conf, storage and runroot under the host's /run,
netavark, runc, cgroupfs; /var an overlay whose upper layer is on /run); busybox is the same rootfs
tarball imported and tagged docker.io/library/busybox:latest, so nothing is pulled. The one difference
in the client's command lines: podman's containers get `--cgroup-parent` (compose: an override file
with `cgroup_parent`), because its compat API has no other way to keep them under this run's parent
(podman's default, /libpod_parent, would be a machine-wide cgroup left behind); netctl's containers go
under the same parent through NETCTL_CGROUP_PARENT, set for its agent.

The goals (netctl's median over podman's): run <= 1/3, network create+rm <= 1.0, compose <= 1/2. They
are reported, never asserted. Each operation is measured round-robin (one sample of each engine per
round). The network operation is also measured back to back (`network-b2b`, no goal): n samples of one
engine in a row, then the other's, as a script creating and removing networks in a loop runs them (each
create ~15 ms after the previous rm). netctl's agent deletes a removed network's bridge once it is quiet
(cni_plugins/service.py), or at once beyond 16 waiting; before each series the bench waits until no
such bridge is left, so that none is deleted in another series' timed window.
The network operation's spread (`network-spread`, no goal): the same round-robin on two canned engines
that answer its requests at once and do nothing (canned_docker.py). Their ratio is what noise alone
gives two identical engines: a netctl/podman ratio within it is parity, not a difference. (The canned
servers are threads of the timing process: their `cpu` figures include their own work; the ratio is of
wall-clock medians.)
Everything runs inside one throwaway host (tests/harness.py), the timing loop included; cgroups
(machine-wide) are made under one parent and removed at the end.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import canned_docker  # noqa: E402
from bench_run import remove_cgroups, use_bytecode_cache  # noqa: E402
from common import (  # noqa: E402
    REPO_DIR, CommandError, Progress, Series, answer_worker_task, driver_parser, fmt_ms, format_table,
    measure_rounds, netctl_argv, private_var, root_namespace_state, run_cmd, run_worker_in_host,
    write_comparison,
)

WORK = "/run/bench-docker-api"
COMPOSE_DIR = os.path.join(REPO_DIR, "tests", "docker_api", "compose")
COMPOSE_PROJECT = "bench"
TASK_TIMEOUT = 2400.0
SERVICE_TIMEOUT = 60.0  # seconds for an engine's socket to answer /_ping
GOALS = {"run": 1 / 3, "network": 1.0, "compose": 1 / 2}
OPERATIONS = ("run", "network", "compose")
BACK_TO_BACK = "network-b2b"  # the network operation, n in a row per engine (reported, no goal)
SPREAD = "network-spread"  # the network operation on two canned engines (reported, no goal)
CANNED = ("canned-a", "canned-b")


# ---- inside the throwaway host ----------------------------------------------------------------------


def ping(socket_path: str) -> bool:
    """Whether the engine on socket_path answers GET /_ping with 200 now."""
    import http.client
    import socket

    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(5)
            self.sock.connect(socket_path)

    connection = UnixConnection("localhost", timeout=5)
    try:
        connection.request("GET", "/_ping")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def wait_for_engine(socket_path: str, proc: subprocess.Popen, log: str) -> None:
    deadline = time.monotonic() + SERVICE_TIMEOUT
    while not ping(socket_path):
        if proc.poll() is not None or time.monotonic() > deadline:
            with open(log) as f:
                tail = f.read()[-2000:]
            raise CommandError(f"no Docker API on {socket_path} within {SERVICE_TIMEOUT}s:\n{tail}")
        time.sleep(0.05)


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM the engine we started (by its PID), bounded wait, then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


class Engine:
    """One Docker API server and the client environment that reaches it."""

    name = ""
    socket = ""
    run_options: list[str] = []  # extra `docker run` options (podman: its cgroup parent)
    compose_files: list[str] = [os.path.join(COMPOSE_DIR, "docker-compose.yml")]

    def client_env(self) -> dict[str, str]:
        config = f"{WORK}/{self.name}/docker-config"  # not ~/.docker: no credential helpers, contexts
        os.makedirs(config, exist_ok=True)
        return dict(os.environ, DOCKER_HOST=f"unix://{self.socket}", DOCKER_CONFIG=config)

    def docker(self, *args: str) -> str:
        return run_cmd(["docker", *args], env=self.env)

    def compose(self, *args: str) -> list[str]:
        files = [part for f in self.compose_files for part in ("-f", f)]
        return ["docker-compose", *files, "--project-directory", COMPOSE_DIR, "-p", COMPOSE_PROJECT, *args]

    def ops(self) -> dict[str, list[list[str]]]:
        return {
            "run": [["docker", "run", "--rm", "--network", "benchnet", *self.run_options, "busybox", "true"]],
            "network": [["docker", "network", "create", "benchtmp"], ["docker", "network", "rm", "benchtmp"]],
            "compose": [self.compose("up", "-d"), self.compose("down", "-v")],
        }

    def prepare(self) -> None:
        self.env = self.client_env()
        self.docker("network", "create", "benchnet")
        # a first container warms what a first run pays once (image lookups, the monitor)
        run_cmd(self.ops()["run"][0], env=self.env)

    def check_compose(self) -> None:
        """Once, untimed: the project really comes up on this engine (client reaches both by name)."""
        run_cmd(self.compose("up", "-d"), env=self.env)
        try:
            deadline = time.monotonic() + 30
            expected = "client got: served by web / hello-from-store"
            while expected not in run_cmd(self.compose("logs", "client"), env=self.env):
                if time.monotonic() > deadline:
                    raise CommandError(f"{self.name}: the compose project's client reached nothing within 30 s")
                time.sleep(0.2)
        finally:
            run_cmd(self.compose("down", "-v"), env=self.env)


class Netctl(Engine):
    name = "netctl"

    def __init__(self, cgroup_parent: str):
        self.root = os.environ.get("NETCTL_ROOT", "/run/netctl")
        self.socket = os.path.join(self.root, "docker.sock")
        env = dict(os.environ, NETCTL_CGROUP_PARENT=f"{cgroup_parent}/netctl")
        run_cmd([*netctl_argv(), "image", "build-busybox"], env=env)
        self.log = f"{WORK}/netctl-agent.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([*netctl_argv(), "daemon"], env=env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        wait_for_engine(self.socket, self.proc, self.log)
        self.prepare()

    def close(self) -> None:
        stop_process(self.proc)  # the containers, if any are left, go with the throwaway host


PODMAN_CONF = """[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
cgroups = "no-conmon"
[network]
network_backend = "netavark"
network_config_dir = "{home}/net"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{home}/events.log"
tmp_dir = "{home}/tmp"
image_copy_tmp_dir = "{home}/tmp"
static_dir = "{home}/root/libpod"
volume_path = "{home}/root/volumes"
"""


class Podman(Engine):
    name = "podman"

    def __init__(self, rootfs_tar: str, cgroup_parent: str):
        home = f"{WORK}/podman"
        for sub in ("net", "root", "runroot", "tmp"):
            os.makedirs(f"{home}/{sub}", exist_ok=True)
        with open(f"{home}/containers.conf", "w") as f:
            f.write(PODMAN_CONF.format(home=home))
        with open(f"{home}/storage.conf", "w") as f:
            f.write(f'[storage]\ndriver = "overlay"\nrunroot = "{home}/runroot"\ngraphroot = "{home}/root"\n')
        with open(f"{home}/registries.conf", "w") as f:
            f.write("")  # no registry: nothing is ever pulled
        podman_env = dict(os.environ, CONTAINERS_CONF=f"{home}/containers.conf",
                          CONTAINERS_STORAGE_CONF=f"{home}/storage.conf",
                          CONTAINERS_REGISTRIES_CONF=f"{home}/registries.conf", TMPDIR=f"{home}/tmp")  # fmt: skip
        base = ["podman", "--root", f"{home}/root", "--runroot", f"{home}/runroot", "--tmpdir", f"{home}/tmp"]
        run_cmd([*base, "import", rootfs_tar, "docker.io/library/busybox:latest"], env=podman_env)
        parent = f"/{cgroup_parent}/podman"
        self.run_options = ["--cgroup-parent", parent]
        override = f"{home}/cgroup-parent.yml"
        with open(override, "w") as f:
            services = "".join(f"  {s}:\n    cgroup_parent: {parent}\n" for s in ("web", "store", "client"))
            f.write(f'version: "3.8"\nservices:\n{services}')
        self.compose_files = [*Engine.compose_files, override]
        self.socket = f"{home}/podman.sock"
        self.log = f"{home}/service.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([*base, "system", "service", "--time=0", f"unix://{self.socket}"],
                                         env=podman_env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)  # fmt: skip
        wait_for_engine(self.socket, self.proc, self.log)
        self.prepare()

    def close(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            ids = subprocess.run(["docker", "ps", "-aq"], env=self.env, capture_output=True, text=True,
                                 timeout=60).stdout.split()  # fmt: skip
            if ids:
                subprocess.run(["docker", "rm", "-f", *ids], env=self.env, capture_output=True, timeout=120)
        stop_process(self.proc)


class Canned(Engine):
    """An engine that answers the network operation's requests at once and does nothing."""

    def __init__(self, name: str):
        self.name = name
        self.socket = f"{WORK}/{name}.sock"
        self.server = canned_docker.serve(self.socket)
        self.env = self.client_env()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def measure_spread(n: int, warmup: int) -> list[Series]:
    """The network operation round-robin on two identical canned engines."""
    canned = [Canned(name) for name in CANNED]
    try:
        return measure_rounds(SPREAD, {c.name: command_lines(c, "network") for c in canned}, n, warmup)
    finally:
        for engine in canned:
            engine.close()


def settle(timeout: float = 30.0) -> None:
    """Wait (bounded) until netctl's agent has deleted the bridges of removed networks (their tombstone
    names, drivers/bridge.py), so that their deletion falls in no series' timed window."""
    from drivers.bridge import TOMBSTONE_PREFIX

    def links() -> list[str]:  # /proc/net/dev: the links of this process's network namespace (the host's)
        with open("/proc/net/dev") as f:
            return [line.split(":", 1)[0].strip() for line in f.readlines()[2:]]

    deadline = time.monotonic() + timeout
    while any(name.startswith(TOMBSTONE_PREFIX) for name in links()):
        if time.monotonic() > deadline:
            raise CommandError(f"netctl's removed bridges were still there after {timeout:.0f} s")
        time.sleep(0.05)


def command_lines(engine: Engine, operation: str):
    """The timed action: the operation's command lines, one after the other, on this engine."""
    argvs = engine.ops()[operation]
    return lambda: [run_cmd(argv, env=engine.env) for argv in argvs]


def worker(task: dict) -> dict:
    n, warmup, parent = task["n"], task["warmup"], task["cgroup_parent"]
    os.makedirs(WORK, exist_ok=True)
    private_var(WORK)
    use_bytecode_cache()
    if shutil.which("docker-compose") is None:
        raise SystemExit("bench: docker-compose missing (sudo bash scripts/bootstrap.sh)")
    tarball = f"{WORK}/busybox-rootfs.tar"
    from runner import busybox

    with open(tarball, "wb") as f:
        busybox.build_tarball(busybox.DEFAULT_BUSYBOX, f)
    engines: list[Engine] = []
    series: list[Series] = []
    extra: dict = {}
    try:
        for subject in task["subjects"]:
            try:
                engine: Engine = Netctl(parent) if subject == "netctl" else Podman(tarball, parent)
                engine.check_compose()
                engines.append(engine)
            except CommandError as err:
                extra[f"{subject}_error"] = str(err)
                print(f"{subject} left out: {err}", file=sys.stderr, flush=True)
        for operation in OPERATIONS:
            actions = {e.name: command_lines(e, operation) for e in engines}
            settle()
            measured = measure_rounds(operation, actions, n, warmup)
            if operation == "network":
                for engine in engines:  # one engine at a time: n rounds in a row
                    settle()
                    measured += measure_rounds(BACK_TO_BACK, {engine.name: actions[engine.name]}, n, warmup)
                settle()
                measured += measure_spread(n, warmup)
            for result in measured:
                print(f"measured {result.tool} {result.operation}: median {result.median:.1f} ms", file=sys.stderr,
                      flush=True)  # fmt: skip
            series += measured
    finally:
        for engine in engines:
            try:
                engine.close()
            except Exception:  # noqa: BLE001 - the throwaway host removes the rest
                pass
    return {"series": [s.to_dict() for s in series], "extra": extra}


# ---- outside: the driver ------------------------------------------------------------------------------


def summarise(series: list[Series]) -> tuple[str, list[dict]]:
    by = {(s.tool, s.operation): s for s in series}
    rows, comparisons = [], []
    for operation in (*OPERATIONS, BACK_TO_BACK):
        ours, peer = by.get(("netctl", operation)), by.get(("podman", operation))
        if ours is None or peer is None:
            continue
        ratio = ours.median / peer.median
        goal = GOALS.get(operation)
        comparisons.append({"operation": operation, "netctl_median_ms": round(ours.median, 2),
                            "peer": "podman", "peer_median_ms": round(peer.median, 2), "ratio": round(ratio, 3),
                            "goal": round(goal, 3) if goal else None,
                            "met": ratio <= goal if goal else None})  # fmt: skip
        verdict = ("met" if ratio <= goal else "NOT met") if goal else ""
        rows.append([operation, fmt_ms(ours.median), fmt_ms(ours.minimum), fmt_ms(ours.cpu_median),
                     fmt_ms(peer.median), fmt_ms(peer.minimum), fmt_ms(peer.cpu_median), f"{ratio:.2f}",
                     f"<= {goal:.2f}" if goal else "-", verdict])  # fmt: skip
    headers = ["operation", "netctl med", "min", "cpu", "podman med", "min", "cpu", "ratio", "goal", ""]
    table = format_table(headers, rows, numeric=(1, 2, 3, 4, 5, 6, 7))
    a, b = (by.get((name, SPREAD)) for name in CANNED)
    if a is not None and b is not None:
        comparisons.append({"operation": SPREAD, "tool": a.tool, "median_ms": round(a.median, 2), "peer": b.tool,
                            "peer_median_ms": round(b.median, 2), "ratio": round(a.median / b.median, 3),
                            "goal": None, "met": None})  # fmt: skip
        table += (f"\n{SPREAD}: two canned engines that do nothing, round-robin: medians {fmt_ms(a.median)} and "
                  f"{fmt_ms(b.median)} ms, ratio {a.median / b.median:.2f} (what noise alone gives the network "
                  "operation)")
    return table, comparisons


def main() -> int:
    parser = driver_parser(__doc__, "n=3, one warm-up", "samples per figure (default 20, quick 3)")
    parser.add_argument("--no-podman", action="store_true")
    parser.add_argument("--no-netctl", action="store_true")
    args = parser.parse_args()
    if answer_worker_task(args.worker, worker):
        return 0
    progress = Progress()
    n = args.n or (3 if args.quick else 20)
    parent = f"netctl-bench-{secrets.token_hex(3)}"
    subjects = [s for s, off in (("netctl", args.no_netctl), ("podman", args.no_podman)) if not off]
    task = {"n": n, "warmup": 1, "cgroup_parent": parent, "subjects": subjects}
    before = root_namespace_state()
    load_before = os.getloadavg()
    progress(f"Docker API benchmark: n={n}, engines {', '.join(subjects)}")
    try:
        result = run_worker_in_host("bench-docker-api", os.path.abspath(__file__), task, TASK_TIMEOUT)
    finally:
        remove_cgroups(parent)
    series = [Series.from_dict(d) for d in result["series"]]
    table, comparisons = summarise(series)
    print(table)
    for s in series:
        if not any(c["operation"] == s.operation for c in comparisons) and s.operation != SPREAD:
            print(f"{s.tool} {s.operation}: median {fmt_ms(s.median)} ms, min {fmt_ms(s.minimum)} ms")
    for key, value in result["extra"].items():
        print(f"{key}: {value}")
    after = root_namespace_state()
    load_after = os.getloadavg()
    print(f"load average (1/5/15 min) before {'/'.join(f'{x:.2f}' for x in load_before)}, "
          f"after {'/'.join(f'{x:.2f}' for x in load_after)} (2 cores; other work shifts the absolute figures)")
    write_comparison("docker_api", progress, task, series, comparisons, result["extra"], before, after,
                     load_average={"before": load_before, "after": load_after})
    return 2 if before != after else 0


if __name__ == "__main__":
    sys.exit(main())
