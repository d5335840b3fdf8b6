"""The measuring side of the benchmarks: runs INSIDE a throwaway host, never in the machine's namespaces.

Started by bench_network.py through tests/harness.py with a task as JSON in argv[1]. It times every
operation in this process with time.perf_counter, so the cost of entering the host is in no figure.

Tasks:
  network-lifecycle  one shot: `network create` and `network rm` by netctl CLI, podman (netavark,
                     CNI backends) and `ip`, interleaved round by round; prints the samples as JSON.
  serve-endpoints    long-lived, one subject per host: netctl (CLI and library probes on the same
                     network), ip, cni (bridge + host-local), cni-masq. Grows its bridge network and
                     times connect+disconnect cycles on request (JSON lines on stdin/stdout), so the
                     driver can interleave the cycles of subjects living in different hosts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import Callable, Protocol

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import Series, run_cmd, timed, timed_cmds  # noqa: E402


def inside_throwaway_host() -> bool:
    """PID 1 here is the harness's init: we are in a host's PID (and so net/mount) namespace."""
    try:
        with open("/proc/1/cmdline", "rb") as f:
            return b"netctl-test-host-init" in f.read()
    except OSError:
        return False


CNI_PATH = "/usr/lib/cni"
WORK_DIR = "/run/bench"  # /run is the host's private tmpfs


def log(message: str) -> None:
    print(f"  worker: {message}", file=sys.stderr, flush=True)


def use_bytecode_cache() -> None:
    """Let the netctl processes we start cache their bytecode, as an installed netctl does.

    A development shell often sets PYTHONDONTWRITEBYTECODE=1; then every module edited since its .pyc
    was written is compiled from source on every CLI call (~35 ms for five netctl modules here), a cost
    no user pays. The cache goes to this host's private /run, so nothing is written into the tree.
    """
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = f"{WORK_DIR}/pycache"
    run_cmd(netctl_argv() + ["network", "ls"])  # compiles (once) what the timed commands import


def netctl_argv() -> list[str]:
    """The console script a user runs (the venv's bin is first on PATH inside a host)."""
    path = shutil.which("netctl")
    return [path] if path else [sys.executable, "-m", "netctl"]


def in_process_env() -> dict[str, str]:
    """Environment that makes the netctl CLI do the work itself even while a daemon listens."""
    return dict(os.environ, NETCTL_NO_DAEMON="1")


def start_daemon() -> subprocess.Popen:
    """`netctl daemon` on this host's root: the CLI's thin client then delegates to it."""
    proc = subprocess.Popen(netctl_argv() + ["daemon"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    if "listening" not in line:
        proc.kill()
        raise RuntimeError(f"netctl daemon did not start: {line.strip()}")
    # Its per-request log lines are not needed: drain them so the pipe never fills.
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    return proc


def stop_daemon(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=30)


# ==== network create / rm ==========================================================================


class NetworkTool(Protocol):
    name: str

    def create(self, index: int) -> list[list[str]]: ...

    def remove(self, index: int) -> list[list[str]]: ...


@dataclass
class NetctlNetworks:
    name: str = "netctl-cli"
    argv: list[str] = field(default_factory=netctl_argv)
    env: dict[str, str] | None = None

    def create(self, index: int) -> list[list[str]]:
        return [self.argv + ["network", "create", "--subnet", f"10.91.{index}.0/24", f"bench{index}"]]

    def remove(self, index: int) -> list[list[str]]:
        return [self.argv + ["network", "rm", f"bench{index}"]]


@dataclass
class IpNetworks:
    """What `network create` does in the kernel, one `ip` command per step, no state kept."""

    name: str = "ip"
    env: dict[str, str] | None = None

    def create(self, index: int) -> list[list[str]]:
        bridge = f"ipbr{index}"
        return [
            ["ip", "link", "add", bridge, "type", "bridge"],
            ["ip", "addr", "add", f"10.93.{index}.1/24", "dev", bridge],
            ["ip", "link", "set", bridge, "up"],
        ]

    def remove(self, index: int) -> list[list[str]]:
        return [["ip", "link", "del", f"ipbr{index}"]]


@dataclass
class PodmanNetworks:
    """podman fully confined to WORK_DIR/podman-<backend>: its own containers.conf, storage.conf,
    network config dir, --root/--runroot/--tmpdir; nothing under /etc or /var/lib/containers.

    Note: podman's `network create` only writes a config file; the bridge appears when the first
    container joins. netctl (and `ip`) create the bridge, address and firewall rules right away.
    """

    backend: str  # netavark | cni
    name: str = ""
    env: dict[str, str] | None = None
    base: list[str] = field(default_factory=list)
    second_octet: int = 0

    def __post_init__(self) -> None:
        self.name = f"podman-{self.backend}"
        self.second_octet = 92 if self.backend == "netavark" else 94
        home = f"{WORK_DIR}/podman-{self.backend}"
        for sub in ("net", "root", "runroot", "tmp"):
            os.makedirs(f"{home}/{sub}", exist_ok=True)
        with open(f"{home}/containers.conf", "w") as f:
            f.write(
                "[network]\n"
                f'network_backend = "{self.backend}"\n'
                f'network_config_dir = "{home}/net"\n'
                f'cni_plugin_dirs = ["{CNI_PATH}"]\n'
                "[engine]\n"
                f'tmp_dir = "{home}/tmp"\n'
                f'static_dir = "{home}/root/libpod"\n'
                f'volume_path = "{home}/root/volumes"\n'
            )
        with open(f"{home}/storage.conf", "w") as f:
            f.write(f'[storage]\ndriver = "vfs"\nrunroot = "{home}/runroot"\ngraphroot = "{home}/root"\n')
        self.env = dict(
            os.environ,
            CONTAINERS_CONF=f"{home}/containers.conf",
            CONTAINERS_STORAGE_CONF=f"{home}/storage.conf",
            CONTAINERS_REGISTRIES_CONF=f"{home}/registries.conf",
        )
        with open(f"{home}/registries.conf", "w") as f:
            f.write("")
        self.base = [
            "podman", "--root", f"{home}/root", "--runroot", f"{home}/runroot", "--tmpdir", f"{home}/tmp",
            "--storage-driver", "vfs", "--network-backend", self.backend,
        ]  # fmt: skip
        # Fail now, with podman's own words, rather than in the middle of the timing loop.
        backend = run_cmd(self.base + ["info", "--format", "{{.Host.NetworkBackend}}"], env=self.env).strip()
        if backend != self.backend:
            raise SystemExit(f"podman uses network backend {backend!r}, not {self.backend!r}")

    def create(self, index: int) -> list[list[str]]:
        return [self.base + ["network", "create", "--subnet", f"10.{self.second_octet}.{index}.0/24", f"pbench{index}"]]

    def remove(self, index: int) -> list[list[str]]:
        return [self.base + ["network", "rm", f"pbench{index}"]]


def network_lifecycle(n: int, warmup: int, backends: list[str]) -> list[Series]:
    daemon = start_daemon()
    try:
        return _network_lifecycle(n, warmup, backends)
    finally:
        stop_daemon(daemon)


def _network_lifecycle(n: int, warmup: int, backends: list[str]) -> list[Series]:
    tools: list[NetworkTool] = [NetctlNetworks(env=in_process_env()), NetctlNetworks(name="netctl-daemon"), IpNetworks()]
    tools += [PodmanNetworks(backend) for backend in backends]
    created: dict[str, list[tuple[float, float]]] = {t.name: [] for t in tools}
    removed: dict[str, list[tuple[float, float]]] = {t.name: [] for t in tools}
    for index in range(warmup + n):
        # Rotate the order each round, so that no tool always runs right after the same other one.
        shift = index % len(tools)
        for tool in tools[shift:] + tools[:shift]:
            create = timed_cmds(tool.create(index), env=tool.env)
            remove = timed_cmds(tool.remove(index), env=tool.env)
            if index >= warmup:
                created[tool.name].append(create)
                removed[tool.name].append(remove)
        if (index + 1) % 10 == 0:
            log(f"network lifecycle round {index + 1}/{warmup + n}")
    series = []
    for tool in tools:
        for operation, samples in (("network create", created[tool.name]), ("network rm", removed[tool.name])):
            series.append(Series(tool.name, operation, [w for w, _ in samples], cpu_samples_ms=[c for _, c in samples]))
    return series


# ==== endpoint connect / disconnect at the N-th endpoint ===========================================


@dataclass
class Probe:
    """One way of attaching the extra sandbox: timed connect and disconnect."""

    tool: str
    connect: Callable[[], None]
    disconnect: Callable[[], None]


class Subject(Protocol):
    """One bridge network plus the means to grow it and to probe it."""

    def add_background(self, index: int) -> None: ...

    def probes(self) -> list[Probe]: ...


SUBNET_PREFIX = "10.90"  # a /16: room for every endpoint of the largest N


def address(index: int) -> str:
    """The index-th host address of 10.90.0.0/16 after the gateway (.0.1)."""
    value = index + 2
    return f"{SUBNET_PREFIX}.{value // 256}.{value % 256}"


class NetctlSubject:
    """netctl's bridge network; background endpoints are added through the library (fast set-up)."""

    NETWORK = "bench"

    def __init__(self) -> None:
        from libnetwork.controller import Controller, NetworkSpec
        from libnetwork.model import PoolConfig

        self.controller = Controller()
        self.controller.create_network(NetworkSpec(name=self.NETWORK, pools=[PoolConfig(subnet=f"{SUBNET_PREFIX}.0.0/16")]))
        self.controller.create_sandbox("probe")
        self.cli = netctl_argv()
        self.daemon = start_daemon()  # lives as long as this worker process

    def add_background(self, index: int) -> None:
        name = f"bg{index}"
        self.controller.create_sandbox(name)
        self.controller.connect(self.NETWORK, name)

    def probes(self) -> list[Probe]:
        cli, ctl, net = self.cli, self.controller, self.NETWORK
        return [
            Probe(
                "netctl-cli",
                lambda: run_cmd(cli + ["network", "connect", net, "probe"], env=in_process_env()),
                lambda: run_cmd(cli + ["network", "disconnect", net, "probe"], env=in_process_env()),
            ),
            Probe(
                "netctl-daemon",
                lambda: run_cmd(cli + ["network", "connect", net, "probe"]),
                lambda: run_cmd(cli + ["network", "disconnect", net, "probe"]),
            ),
            Probe("netctl-lib", lambda: ctl.connect(net, "probe"), lambda: ctl.disconnect(net, "probe")),
        ]


class IpSubject:
    """The same data plane with one `ip` command per step: veth with its peer created inside the
    sandbox's namespace, enslaved and up, address, up, default route; `ip link del` to undo."""

    BRIDGE = "ipbench"
    GATEWAY = f"{SUBNET_PREFIX}.0.1"

    def __init__(self) -> None:
        for argv in (
            ["ip", "link", "add", self.BRIDGE, "type", "bridge"],
            ["ip", "addr", "add", f"{self.GATEWAY}/16", "dev", self.BRIDGE],
            ["ip", "link", "set", self.BRIDGE, "up"],
            ["ip", "netns", "add", "probe"],
        ):
            run_cmd(argv)

    def connect_argvs(self, netns: str, host_veth: str, addr: str) -> list[list[str]]:
        return [
            ["ip", "link", "add", host_veth, "type", "veth", "peer", "name", "eth0", "netns", netns],
            ["ip", "link", "set", host_veth, "master", self.BRIDGE, "up"],
            ["ip", "-n", netns, "addr", "add", f"{addr}/16", "dev", "eth0"],
            ["ip", "-n", netns, "link", "set", "eth0", "up"],
            ["ip", "-n", netns, "route", "add", "default", "via", self.GATEWAY],
        ]

    def add_background(self, index: int) -> None:
        run_cmd(["ip", "netns", "add", f"bg{index}"])
        for argv in self.connect_argvs(f"bg{index}", f"vbg{index}", address(index)):
            run_cmd(argv)

    def probes(self) -> list[Probe]:
        argvs = self.connect_argvs("probe", "vprobe", f"{SUBNET_PREFIX}.255.254")
        return [
            Probe(
                "ip",
                lambda: [run_cmd(a) for a in argvs],
                lambda: run_cmd(["ip", "link", "del", "vprobe"]),
            )
        ]


class CniSubject:
    """The reference plugins executed the way libcni does: CNI_* environment, the network config on
    stdin, ADD; DEL with the ADD result as prevResult. Background attachments use the same plugin."""

    def __init__(self, masquerade: bool) -> None:
        self.tool = "cni-bridge-masq" if masquerade else "cni-bridge"
        self.config = {
            "cniVersion": "1.0.0",
            "name": "benchnet",
            "type": "bridge",
            "bridge": "cnibench0",
            "isGateway": True,
            "ipMasq": masquerade,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": f"{SUBNET_PREFIX}.0.0/16"}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                # Not the default /var/lib/cni/networks: that is on the machine's file system.
                "dataDir": f"{WORK_DIR}/cni-ipam",
            },
        }
        self.probe_result: dict = {}
        run_cmd(["ip", "netns", "add", "probe"])

    def _exec(self, command: str, container_id: str, netns: str, config: dict) -> str:
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": f"/run/netns/{netns}",
            "CNI_IFNAME": "eth0",
            "CNI_PATH": CNI_PATH,
        }
        return run_cmd([f"{CNI_PATH}/{config['type']}"], env=env, stdin=json.dumps(config))

    def add(self, container_id: str, netns: str) -> dict:
        return json.loads(self._exec("ADD", container_id, netns, self.config))

    def delete(self, container_id: str, netns: str, prev_result: dict) -> None:
        self._exec("DEL", container_id, netns, dict(self.config, prevResult=prev_result))

    def add_background(self, index: int) -> None:
        run_cmd(["ip", "netns", "add", f"bg{index}"])
        self.add(f"bg{index}", f"bg{index}")

    def probes(self) -> list[Probe]:
        def connect() -> None:
            self.probe_result = self.add("probe", "probe")

        def disconnect() -> None:
            self.delete("probe", "probe", self.probe_result)

        return [Probe(self.tool, connect, disconnect)]


def make_subject(name: str) -> Subject:
    if name == "netctl":
        return NetctlSubject()
    if name == "ip":
        return IpSubject()
    if name in ("cni", "cni-masq"):
        return CniSubject(masquerade=name == "cni-masq")
    raise SystemExit(f"unknown subject {name!r}")


def serve_endpoints(subject: str, out) -> None:
    """Answer the driver's requests, one JSON line each, until stdin closes:
    {"op": "grow", "to": M}        add background endpoints until the network has M of them;
    {"op": "cycle", "probe": P}    time one connect and one disconnect of the probe sandbox by P.
    The first line written, before any request, names the probes this subject offers."""
    target = make_subject(subject)
    probes = {probe.tool: probe for probe in target.probes()}
    grown = 0

    def reply(message: dict) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    reply({"probes": list(probes)})
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["op"] == "grow":
                while grown < request["to"]:
                    target.add_background(grown)
                    grown += 1
                reply({"grown": grown})
            elif request["op"] == "cycle":
                probe = probes[request["probe"]]
                connect_ms, connect_cpu_ms = timed(probe.connect)
                disconnect_ms, disconnect_cpu_ms = timed(probe.disconnect)
                reply(
                    {
                        "connect_ms": connect_ms,
                        "connect_cpu_ms": connect_cpu_ms,
                        "disconnect_ms": disconnect_ms,
                        "disconnect_cpu_ms": disconnect_cpu_ms,
                    }
                )
            else:
                reply({"error": f"unknown request {request!r}"})
        except Exception as err:  # the driver shows it and stops; a traceback helps here
            import traceback

            traceback.print_exc()
            reply({"error": f"{type(err).__name__}: {err}"})
            return


# ==== entry point ==================================================================================

def main() -> None:
    if not inside_throwaway_host():
        raise SystemExit("worker.py runs only inside a throwaway host; run bench/bench_network.py")
    # Our stdout is the channel to the driver: keep it for replies, send anything else to stderr.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    task = json.loads(sys.argv[1])
    name = task.pop("task")
    os.makedirs(WORK_DIR, exist_ok=True)
    use_bytecode_cache()
    if name == "network-lifecycle":
        series = network_lifecycle(**task)
        out.write(json.dumps([s.to_dict() for s in series]))
    elif name == "serve-endpoints":
        serve_endpoints(task["subject"], out)
    else:
        raise SystemExit(f"unknown task {name!r}")
    out.flush()


if __name__ == "__main__":
    main()
