"""The measuring side of the benchmarks: runs INSIDE a throwaway host, never in the machine's namespaces.

Started by bench_network.py through tests/harness.py with a task as JSON in argv[1]. It times every
operation in this process with time.perf_counter, so the cost of entering the host is in no figure.

Tasks:
  network-lifecycle  one shot: `network create` and `network rm` by netctl (cold, agent started on
                     first use, agent started by hand, in-process, library call), podman (netavark,
                     CNI backends) and `ip`, interleaved round by round; prints the samples as JSON.
  serve-endpoints    long-lived, one subject per host: netctl (agent started by hand, in-process and
                     library probes on the same network), netctl-cold (no agent started by hand: the
                     first call, and the calls that follow it), ip, cni (bridge + host-local),
                     cni-masq. Grows its bridge network and times connect+disconnect cycles on request
                     (JSON lines on stdin/stdout), so the driver can interleave the cycles of subjects
                     living in different hosts.

netctl's ways of running a command (the same command line each time, a state root each):
  cold-first  nothing started by hand and no agent: the call runs in-process and starts
              `netctl daemon --auto` for the next one (netctl/entry.py). Timed from a root whose
              agent is not running (network create: a fresh root); untimed afterwards, the agent it
              started is waited for (its "agent ready" time, from the call's start, is kept) and
              stopped again, so that every sample is a first call.
  auto        the calls that follow: served by the agent a first call started (not by hand).
  agent       `netctl daemon` started by hand.
  inproc      NETCTL_NO_DAEMON=1: in-process, nothing started (the fallback's cost, a reference).
  lib         the library call in this warm process (netctl's floor).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    AGENT_STOP_TIMEOUT,
    Series,
    agent_ready,
    inside_throwaway_host,
    lock_free,
    netctl_argv,
    run_cmd,
    stop_auto_agent,
    timed,
    timed_cmds,
    wait_agent_ready,
)

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
    run_cmd(netctl_argv() + ["network", "ls"], env=in_process_env())  # compiles (once) what the timed commands import


def in_process_env(root: str | None = None) -> dict[str, str]:
    """Environment that makes the netctl CLI do the work itself and start no agent."""
    return dict(os.environ, NETCTL_NO_DAEMON="1", **({"NETCTL_ROOT": root} if root else {}))


def root_env(root: str) -> dict[str, str]:
    return dict(os.environ, NETCTL_ROOT=root)


def start_daemon(root: str | None = None) -> subprocess.Popen:
    """`netctl daemon` started by hand on `root` (default: this host's NETCTL_ROOT)."""
    env = root_env(root) if root else None
    proc = subprocess.Popen(netctl_argv() + ["daemon"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    for _ in range(100):  # the start may log (repair) before it says it listens
        line = proc.stderr.readline()
        lines.append(line)
        if "listening" in line or not line:
            break
    if "listening" not in lines[-1]:
        proc.kill()
        proc.wait(timeout=AGENT_STOP_TIMEOUT)
        raise RuntimeError(f"netctl daemon did not start: {''.join(lines).strip()}")
    # Its per-request log lines are not needed: drain them so the pipe never fills.
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    return proc


def stop_daemon(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=AGENT_STOP_TIMEOUT)


def ensure_auto_agent(root: str) -> None:
    """An agent started on first use serves `root`: wait for one that is starting, or let an untimed
    command start one."""
    if agent_ready(root):
        return
    if lock_free(os.path.join(root, "daemon.pid")):
        run_cmd(netctl_argv() + ["network", "ls"], env=root_env(root))  # in-process; starts the agent
    wait_agent_ready(root, time.perf_counter())


# ==== network create / rm ==========================================================================


class NetworkTool(Protocol):
    """One way of making and removing the index-th network; each call returns (wall ms, CPU ms)."""

    name: str

    def create(self, index: int) -> tuple[float, float]: ...

    def remove(self, index: int) -> tuple[float, float]: ...


class CommandNetworks:
    """A tool driven by command lines (create_argvs/remove_argvs), timed as one operation each."""

    name: str
    env: dict[str, str] | None = None

    def create_argvs(self, index: int) -> list[list[str]]:
        raise NotImplementedError

    def remove_argvs(self, index: int) -> list[list[str]]:
        raise NotImplementedError

    def create(self, index: int) -> tuple[float, float]:
        return timed_cmds(self.create_argvs(index), env=self.env)

    def remove(self, index: int) -> tuple[float, float]:
        return timed_cmds(self.remove_argvs(index), env=self.env)


def netctl_create_argv(index: int) -> list[str]:
    return netctl_argv() + ["network", "create", "--subnet", f"10.91.{index}.0/24", f"bench{index}"]


def netctl_remove_argv(index: int) -> list[str]:
    return netctl_argv() + ["network", "rm", f"bench{index}"]


class NetctlNetworks(CommandNetworks):
    """The `netctl` command on a root of its own: in-process (env NETCTL_NO_DAEMON=1), served by an
    agent started by hand, or by the agent a first call started (`auto`)."""

    def __init__(self, name: str, root: str, env: dict[str, str]):
        self.name, self.root, self.env = name, root, env

    def create_argvs(self, index: int) -> list[list[str]]:
        return [netctl_create_argv(index)]

    def remove_argvs(self, index: int) -> list[list[str]]:
        return [netctl_remove_argv(index)]

    def create(self, index: int) -> tuple[float, float]:
        if self.name == "netctl-auto":
            ensure_auto_agent(self.root)  # untimed: only ever starts one before the first round
        return super().create(index)


class ColdNetctlNetworks:
    """Nothing started by hand. `network create` is a fresh root's very first call (no store, no
    agent: it runs in-process and starts the agent); `network rm` is the first call after that
    agent was stopped. Between them, untimed: wait for the agent the call started (its ready time,
    from the call's start, is kept: a command sooner than that still runs in-process), stop it."""

    name = "netctl-cold-first"

    def __init__(self) -> None:
        self.ready_ms: dict[str, list[float]] = {"network create": [], "network rm": []}

    def _root(self, index: int) -> str:
        return f"{WORK_DIR}/cold-{index}"

    def _first_call(self, operation: str, argv: list[str], root: str) -> tuple[float, float]:
        started = time.perf_counter()
        sample = timed_cmds([argv], env=root_env(root))
        self.ready_ms[operation].append(wait_agent_ready(root, started))
        stop_auto_agent(root)
        return sample

    def create(self, index: int) -> tuple[float, float]:
        return self._first_call("network create", netctl_create_argv(index), self._root(index))

    def remove(self, index: int) -> tuple[float, float]:
        sample = self._first_call("network rm", netctl_remove_argv(index), self._root(index))
        shutil.rmtree(self._root(index), ignore_errors=True)
        return sample


class LibNetworks:
    """Controller.create_network / delete_network in this warm process: the work itself."""

    name = "netctl-lib"

    def __init__(self, root: str) -> None:
        from libnetwork.controller import Controller

        self.controller = Controller(root)

    def create(self, index: int) -> tuple[float, float]:
        from libnetwork.controller import NetworkSpec
        from libnetwork.model import PoolConfig

        spec = NetworkSpec(name=f"bench{index}", pools=[PoolConfig(subnet=f"10.91.{index}.0/24")])
        return timed(lambda: self.controller.create_network(spec))

    def remove(self, index: int) -> tuple[float, float]:
        return timed(lambda: self.controller.delete_network(f"bench{index}"))


@dataclass
class IpNetworks(CommandNetworks):
    """What `network create` does in the kernel, one `ip` command per step, no state kept."""

    name: str = "ip"
    env: dict[str, str] | None = None

    def create_argvs(self, index: int) -> list[list[str]]:
        bridge = f"ipbr{index}"
        return [
            ["ip", "link", "add", bridge, "type", "bridge"],
            ["ip", "addr", "add", f"10.93.{index}.1/24", "dev", bridge],
            ["ip", "link", "set", bridge, "up"],
        ]

    def remove_argvs(self, index: int) -> list[list[str]]:
        return [["ip", "link", "del", f"ipbr{index}"]]


@dataclass
class PodmanNetworks(CommandNetworks):
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

    def create_argvs(self, index: int) -> list[list[str]]:
        return [self.base + ["network", "create", "--subnet", f"10.{self.second_octet}.{index}.0/24", f"pbench{index}"]]

    def remove_argvs(self, index: int) -> list[list[str]]:
        return [self.base + ["network", "rm", f"pbench{index}"]]


def network_lifecycle(n: int, warmup: int, backends: list[str]) -> list[Series]:
    agent_root, auto_root = f"{WORK_DIR}/root-agent", f"{WORK_DIR}/root-auto"
    daemon = start_daemon(agent_root)
    try:
        cold = ColdNetctlNetworks()
        tools: list[NetworkTool] = [
            cold,
            NetctlNetworks("netctl-auto", auto_root, root_env(auto_root)),
            NetctlNetworks("netctl-agent", agent_root, root_env(agent_root)),
            NetctlNetworks("netctl-inproc", f"{WORK_DIR}/root-inproc", in_process_env(f"{WORK_DIR}/root-inproc")),
            LibNetworks(f"{WORK_DIR}/root-lib"),
            IpNetworks(),
        ]
        tools += [PodmanNetworks(backend) for backend in backends]
        series = _network_lifecycle(tools, n, warmup)
        for operation, values in cold.ready_ms.items():
            series.append(Series(cold.name, f"agent ready ({operation})", values[warmup:]))
        return series
    finally:
        stop_daemon(daemon)
        stop_auto_agent(auto_root)


def _network_lifecycle(tools: list[NetworkTool], n: int, warmup: int) -> list[Series]:
    created: dict[str, list[tuple[float, float]]] = {t.name: [] for t in tools}
    removed: dict[str, list[tuple[float, float]]] = {t.name: [] for t in tools}
    for index in range(warmup + n):
        # Rotate the order each round, so that no tool always runs right after the same other one.
        shift = index % len(tools)
        for tool in tools[shift:] + tools[:shift]:
            create = tool.create(index)
            remove = tool.remove(index)
            if index >= warmup:
                created[tool.name].append(create)
                removed[tool.name].append(remove)
        if (index + 1) % 10 == 0:
            log(f"network lifecycle round {index + 1}/{warmup + n}")
    series = []
    for tool in tools:
        both = [(c[0] + r[0], c[1] + r[1]) for c, r in zip(created[tool.name], removed[tool.name], strict=True)]
        for operation, samples in (("network create", created[tool.name]), ("network rm", removed[tool.name]),
                                   ("network create+rm", both)):
            series.append(Series(tool.name, operation, [w for w, _ in samples], cpu_samples_ms=[c for _, c in samples]))
    return series


# ==== endpoint connect / disconnect at the N-th endpoint ===========================================


@dataclass
class Probe:
    """One way of attaching the extra sandbox: timed connect and disconnect. `before(step)` runs
    untimed before each ("connect", "disconnect"); `after()` untimed after both, and returns extra
    figures for the reply."""

    tool: str
    connect: Callable[[], None]
    disconnect: Callable[[], None]
    before: Callable[[str], None] | None = None
    after: Callable[[], dict[str, float]] | None = None


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
    """netctl's bridge network on this host's root; background endpoints are added through the
    library (fast set-up). Probes: an agent started by hand, in-process, the library call."""

    NETWORK = "bench"

    def __init__(self) -> None:
        from libnetwork.controller import Controller, NetworkSpec
        from libnetwork.model import PoolConfig

        self.root = os.environ["NETCTL_ROOT"]
        self.controller = Controller(self.root)
        pools = [PoolConfig(subnet=f"{SUBNET_PREFIX}.0.0/16")]
        self.controller.create_network(NetworkSpec(name=self.NETWORK, pools=pools))
        self.controller.create_sandbox("probe")
        self.cli = netctl_argv()
        self.start_agent()

    def start_agent(self) -> None:
        self.daemon = start_daemon(self.root)  # lives as long as this worker process

    def add_background(self, index: int) -> None:
        name = f"bg{index}"
        self.controller.create_sandbox(name)
        self.controller.connect(self.NETWORK, name)

    def command(self, verb: str, env: dict[str, str] | None = None) -> Callable[[], None]:
        argv = self.cli + ["network", verb, self.NETWORK, "probe"]
        return lambda: run_cmd(argv, env=env)

    def probes(self) -> list[Probe]:
        ctl, net = self.controller, self.NETWORK
        return [
            Probe("netctl-inproc", self.command("connect", in_process_env()),
                  self.command("disconnect", in_process_env())),
            Probe("netctl-agent", self.command("connect"), self.command("disconnect")),
            Probe("netctl-lib", lambda: ctl.connect(net, "probe"), lambda: ctl.disconnect(net, "probe")),
        ]


class NetctlColdSubject(NetctlSubject):
    """The same network with nothing started by hand. Probes:
    netctl-cold-first  each command is the first with no agent running: it runs in-process and starts
                       one; untimed, that agent is waited for (ready time kept) and stopped before the
                       next command (and left running after the disconnect, for netctl-auto);
    netctl-auto        the commands that follow a first call, served by the agent it started."""

    def start_agent(self) -> None:
        self.started = 0.0
        self.ready_ms: list[float] = []

    def _first_call(self, verb: str) -> Callable[[], None]:
        command = self.command(verb)

        def call() -> None:
            self.started = time.perf_counter()
            command()

        return call

    def _before_first_call(self, step: str) -> None:
        if step == "disconnect":
            self.ready_ms.append(wait_agent_ready(self.root, self.started))
        elif agent_ready(self.root) or not lock_free(os.path.join(self.root, "daemon.pid")):
            wait_agent_ready(self.root, time.perf_counter())  # one starting: let it finish its start first
        stop_auto_agent(self.root)

    def _after_first_calls(self) -> dict[str, float]:
        self.ready_ms.append(wait_agent_ready(self.root, self.started))
        ready, self.ready_ms = self.ready_ms, []
        return {"agent_ready_connect_ms": ready[0], "agent_ready_disconnect_ms": ready[1]}

    def probes(self) -> list[Probe]:
        return [
            Probe("netctl-cold-first", self._first_call("connect"), self._first_call("disconnect"),
                  before=self._before_first_call, after=self._after_first_calls),
            Probe("netctl-auto", self.command("connect"), self.command("disconnect"),
                  before=lambda step: ensure_auto_agent(self.root) if step == "connect" else None),
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
    if name == "netctl-cold":
        return NetctlColdSubject()
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
                if probe.before:
                    probe.before("connect")
                connect_ms, connect_cpu_ms = timed(probe.connect)
                if probe.before:
                    probe.before("disconnect")
                disconnect_ms, disconnect_cpu_ms = timed(probe.disconnect)
                extra = probe.after() if probe.after else {}
                reply(
                    {
                        "connect_ms": connect_ms,
                        "connect_cpu_ms": connect_cpu_ms,
                        "disconnect_ms": disconnect_ms,
                        "disconnect_cpu_ms": disconnect_cpu_ms,
                        **extra,
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
