"""`netctl lab up|down|status|test`: a topology brought to life, inspected, tested and removed.

Everything of a lab lives under ROOT/labs/<name>/:

    state.json            what `up` made, written as it goes (so `down` can undo a half-made lab)
    netns/switch          the switch namespace: one bridge per underlay, etcd on .254
    netns/host-<host>     one namespace per host, eth0 on its underlay
    hosts/<host>/         the host's own netctl root (store, images, containers, overlay namespaces)
    etcd/                 etcd's data directory
    logs/                 etcd.log, <host>-daemon.log

Each host is a netctl host in its own right: every command for it runs inside its namespace
(`nsenter --net`) with NETCTL_ROOT=its root, NETCTL_STORE=the lab's etcd as that host reaches it, and
NETCTL_CGROUP_PARENT=<parent>/lab-<name>/<host>; its `netctl daemon` registers it in etcd and keeps
its overlay forwarding tables in step.

`up` goes: validate the file (nothing is made for a bad one) -> switch -> hosts -> etcd -> per host
(in parallel, bounded) daemon + image -> networks -> containers. A failure anywhere runs `down` and
reports one line. `down` goes the other way and is idempotent; it also works on a half-made lab.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone

from libnetwork.errors import AlreadyExists, NetctlError, NotFound
from netctl.lab import etcd, matrix, processes, topology
from netctl.lab.fabric import Fabric
from netctl.lab.processes import Recorded
from netctl.lab.topology import Topology

HOST_PARALLEL = 4  # hosts set up at once (each step is a subprocess; the machine may have 2 cores)
DAEMON_START_TIMEOUT_S = 30.0
CGROUP_ROOT = "/sys/fs/cgroup"
CGROUP_REMOVE_TIMEOUT_S = 10.0
UMOUNT_ROUNDS = 8
MNT_DETACH = 2


class LabError(NetctlError):
    """A lab could not be brought up (it was torn down again) or is not in the state asked for."""


# --- where things are ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Paths:
    root: str  # netctl's root (ROOT)
    name: str

    @property
    def lab(self) -> str:
        return os.path.join(os.path.abspath(self.root), "labs", self.name)

    @property
    def state(self) -> str:
        return os.path.join(self.lab, "state.json")

    @property
    def logs(self) -> str:
        return os.path.join(self.lab, "logs")

    @property
    def etcd_data(self) -> str:
        return os.path.join(self.lab, "etcd")

    def host_root(self, host: str) -> str:
        return os.path.join(self.lab, "hosts", host)

    @property
    def hosts_dir(self) -> str:
        return os.path.join(self.lab, "hosts")

    def daemon_log(self, host: str) -> str:
        return os.path.join(self.logs, f"{host}-daemon.log")

    @property
    def fabric(self) -> Fabric:
        return Fabric(self.lab)


@dataclass
class State:
    """ROOT/labs/<name>/state.json: written after every step of `up`."""

    name: str
    phase: str = "starting"  # starting -> up
    created: str = ""
    file: str = ""
    cgroup_parent: str = ""  # PARENT/lab-<name>: each host's containers go under <this>/<host>
    etcd: dict = field(default_factory=dict)  # Recorded
    daemons: dict[str, dict] = field(default_factory=dict)  # host -> Recorded
    hosts: list[str] = field(default_factory=list)  # hosts whose namespace exists
    up_seconds: float = 0.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> "State":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def read_state(paths: Paths) -> State | None:
    try:
        with open(paths.state) as f:
            return State.from_dict(json.load(f))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as err:
        raise LabError(f"lab {paths.name}: state file {paths.state} is unreadable ({err}); `netctl lab down` removes the lab") from None


def write_state(paths: Paths, state: State) -> None:
    tmp = paths.state + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state.to_dict(), f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, paths.state)


# --- running netctl on a lab host ------------------------------------------------------------------------


class HostShell:
    """Runs netctl commands as lab host `host` (inside its namespace, with its root and store)."""

    def __init__(self, paths: Paths, topo: Topology, state: State, host: str):
        self.paths, self.topology, self.host = paths, topo, host
        self.netns = paths.fabric.host(host)
        self.root = paths.host_root(host)
        self.env = {
            **os.environ,
            "NETCTL_ROOT": self.root,
            "NETCTL_STORE": topo.store_url(host),
            "NETCTL_HOST_NAME": host,
            "NETCTL_CGROUP_PARENT": f"{state.cgroup_parent}/{host}",
        }

    def argv(self, *args: str) -> list[str]:
        return processes.in_netns(self.netns, processes.netctl_argv(*args))

    def netctl(self, *args: str, timeout: float = processes.COMMAND_TIMEOUT_S, what: str = ""):
        return processes.run(self.argv(*args), env=self.env, timeout=timeout,
                             what=what or f"host {self.host}: netctl {' '.join(args[:3])}")  # fmt: skip

    def containers(self) -> list[dict]:
        """`netctl ps -a --format json` of this host (reads records; starts nothing)."""
        if not os.path.isdir(os.path.join(self.root, "containers")):
            return []
        return json.loads(self.netctl("ps", "-a", "--format", "json", timeout=60).stdout or "[]")


# --- up ----------------------------------------------------------------------------------------------------


def up(root: str, file: str, *, log: Callable[[str], None] = lambda line: None) -> State:
    topo = topology.load(file)  # a bad file stops here, before anything is made
    paths = Paths(root, topo.name)
    _refuse_if_present(paths)
    started = time.monotonic()
    os.makedirs(paths.logs, exist_ok=True)
    state = State(topo.name, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  file=os.path.abspath(file), cgroup_parent=_cgroup_parent(topo.name))  # fmt: skip
    write_state(paths, state)
    try:
        _build(paths, topo, state, log)
    except BaseException as err:  # ^C included: never leave half a lab behind
        log(f"lab {topo.name}: failed, removing what was made")
        leftover = ""
        try:
            down(root, topo.name)
        except Exception as cleanup:  # noqa: BLE001 - the first failure is the one to report
            leftover = f" (and the clean-up failed: {getattr(cleanup, 'message', cleanup)})"
        if isinstance(err, NetctlError):
            raise LabError(f"lab {topo.name} did not come up: {err.message}{leftover}") from None
        raise
    state.phase = "up"
    state.up_seconds = round(time.monotonic() - started, 2)
    write_state(paths, state)
    return state


def _refuse_if_present(paths: Paths) -> None:
    state = read_state(paths)
    if state is not None and state.phase == "up":
        raise AlreadyExists(f"lab {paths.name} is already up (since {state.created}); `netctl lab down` it first")
    if state is not None or os.path.exists(paths.lab):
        raise AlreadyExists(f"lab {paths.name} is half-made ({paths.lab} exists); run `netctl lab down` first")


def _build(paths: Paths, topo: Topology, state: State, log: Callable[[str], None]) -> None:
    fabric = paths.fabric
    fabric.build_switch(topo)
    for host in topo.hosts:
        fabric.add_host(topo, host)
        state.hosts.append(host)
    write_state(paths, state)
    log(f"fabric: switch + {len(topo.hosts)} host(s) on {', '.join(u.subnet for u in topo.underlays.values())}")

    state.etcd = etcd.start(topo, fabric.switch, paths.etcd_data, os.path.join(paths.logs, "etcd.log")).to_dict()
    write_state(paths, state)
    log(f"etcd: {', '.join(f'{u.switch_address}:{topology.ETCD_PORT}' for u in topo.underlays.values())}")

    shells = {h: HostShell(paths, topo, state, h) for h in topo.hosts}
    recording = threading.Lock()

    def start_daemon(host: str) -> None:
        recorded = _start_daemon(shells[host], paths)
        with recording:  # at once: if another host's start fails, `down` must find this one
            state.daemons[host] = recorded.to_dict()

    try:
        _each_host(list(topo.hosts), start_daemon)
    finally:
        write_state(paths, state)
    log(f"daemons: {len(state.daemons)} running")
    _each_host([h for h in topo.hosts if topo.containers_on(h)], lambda h: shells[h].netctl("image", "build-busybox"))

    for network in topo.networks.values():
        if network.is_global:
            _create_network(shells[_creator(topo, network.name)], network)
    _each_host(list(topo.hosts), lambda h: [_create_network(shells[h], n) for n in topo.networks.values() if n.host == h])
    log(f"networks: {', '.join(f'{n.name} ({n.driver})' for n in topo.networks.values()) or 'none'}")

    _each_host(list(topo.hosts), lambda h: [_run_container(shells[h], c) for c in topo.containers_on(h)])
    log(f"containers: {len(topo.containers)} running")


def _each_host(hosts: list[str], step: Callable[[str], object]) -> list[tuple[str, object]]:
    """Run `step` for every host, HOST_PARALLEL at a time; the first failure is raised after all ended."""
    if not hosts:
        return []
    pool = ThreadPoolExecutor(max_workers=min(HOST_PARALLEL, len(hosts)))
    try:
        futures = [(h, pool.submit(step, h)) for h in hosts]
        wait([f for _, f in futures])
    except BaseException:
        # ^C while steps run: start no new one and let the running ones end (each is bounded), so
        # that the `down` which follows sees everything that was made, and nothing is made after it.
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return [(h, f.result()) for h, f in futures]


def _creator(topo: Topology, network: str) -> str:
    """The host that creates a global network: the first one with a container on it."""
    for container in topo.containers.values():
        if network in container.networks:
            return container.host
    return next(iter(topo.hosts))


def _start_daemon(shell: HostShell, paths: Paths) -> Recorded:
    host = shell.topology.hosts[shell.host]
    os.makedirs(shell.root, mode=0o700, exist_ok=True)
    argv = shell.argv("daemon", "--store", shell.topology.store_url(shell.host), "--vtep", host.address,
                      "--host-name", shell.host)  # fmt: skip
    log_path = paths.daemon_log(shell.host)
    proc, recorded = processes.spawn(argv, log_path=log_path, env=shell.env)
    sock = os.path.join(shell.root, "netctl.sock")
    deadline = time.monotonic() + DAEMON_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            with contextlib.suppress(OSError), open(log_path) as f:
                reason = processes.last_line(f.read())
            raise LabError(f"the daemon of host {shell.host} exited at start: {reason or proc.returncode} (log: {log_path})")
        if _answers(sock):
            return recorded
        time.sleep(0.05)
    processes.stop(recorded)
    raise LabError(f"the daemon of host {shell.host} did not listen on {sock} within {DAEMON_START_TIMEOUT_S:.0f} s (log: {log_path})")


def _answers(path: str) -> bool:
    with contextlib.closing(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)) as sock:
        try:
            sock.connect(path)
            return True
        except OSError:
            return False


def _create_network(shell: HostShell, network: topology.Network) -> None:
    args = ["network", "create", "-d", network.driver]
    args += ["--subnet", network.subnet] if network.subnet else []
    args += ["-o", f"vni={network.vni}"] if network.vni else []
    mtu = network.mtu
    if network.is_global and not mtu:
        mtu = _overlay_mtu(shell.topology)
    args += ["--mtu", str(mtu)] if mtu else []
    shell.netctl(*args, network.name, what=f"host {shell.host}: create network {network.name}")


def _overlay_mtu(topo: Topology) -> int:
    """With underlays of different MTUs, an overlay must fit the smallest (the creating host would
    otherwise size it from its own); 0 lets netctl decide (underlay - 50)."""
    mtus = {u.mtu for u in topo.underlays.values()}
    return min(mtus) - 50 if len(mtus) > 1 else 0


def _run_container(shell: HostShell, container: topology.Container) -> None:
    args = ["run", "-d", "--name", container.name, "--hostname", container.name]
    for network in container.networks:
        args += ["--network", network]
    shell.netctl(*args, container.image, *container.command, what=f"host {shell.host}: run container {container.name}")


# --- down --------------------------------------------------------------------------------------------------


def down(root: str, name: str, *, log: Callable[[str], None] = lambda line: None) -> bool:
    """Remove lab `name` entirely; False if there was nothing to remove. Best effort at every step, so
    that one broken piece does not keep the rest alive; what could not be removed is reported at the end."""
    paths = Paths(root, name)
    if not os.path.exists(paths.lab):
        return False
    state = _state_for_down(paths)
    problems: list[str] = []
    fabric = paths.fabric
    hosts = _hosts_present(paths, state)

    def step(what: str, action: Callable[[], object]) -> None:
        try:
            action()
        except Exception as err:  # noqa: BLE001 - record and go on: the later steps clean up anyway
            problems.append(f"{what}: {getattr(err, 'message', None) or err}")

    topo = _topology_for_shells(paths, state, hosts)
    if topo is not None and state.etcd:
        shells = [HostShell(paths, topo, state, h) for h in hosts if os.path.exists(fabric.host(h))]
        step("remove containers", lambda: _each_host([s.host for s in shells],
                                                     lambda h: _remove_containers(next(s for s in shells if s.host == h))))
    for host in hosts:
        step(f"stop the container monitor of {host}", lambda h=host: _stop_monitor(paths.host_root(h)))
    for host, recorded in state.daemons.items():
        step(f"stop the daemon of {host}", lambda r=recorded: processes.stop(Recorded.from_dict(r)))
    if state.etcd:
        step("stop etcd", lambda: processes.stop(Recorded.from_dict(state.etcd)))
    step("stop leftover processes", lambda: _kill_leftovers(paths))
    step("unmount", lambda: _unmount_under(paths.lab))
    step("remove cgroups", lambda: _remove_cgroups(state))
    if _mounts_under(paths.lab):
        problems.append(f"mounts remain under {paths.lab}; the directory was kept")
    else:
        step("remove the lab directory", lambda: shutil.rmtree(paths.lab))
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(paths.lab))  # ROOT/labs, if no other lab is left
    if problems:
        raise LabError(f"lab {name} was not removed completely: {'; '.join(problems)}")
    log(f"lab {name}: removed")
    return True


def _state_for_down(paths: Paths) -> State:
    try:
        state = read_state(paths)
    except LabError:
        state = None
    return state or State(paths.name, cgroup_parent=_cgroup_parent(paths.name))


def _hosts_present(paths: Paths, state: State) -> list[str]:
    hosts = list(state.hosts)
    if os.path.isdir(paths.hosts_dir):
        hosts += [h for h in sorted(os.listdir(paths.hosts_dir)) if h not in hosts]
    return hosts


def _topology_for_shells(paths: Paths, state: State, hosts: list[str]) -> Topology | None:
    """The topology as `up` read it (for each host's store URL); None if the file is gone or changed
    so much it no longer names these hosts: containers then go with their namespaces below."""
    with contextlib.suppress(NetctlError, OSError):
        topo = topology.load(state.file)
        if topo.name == paths.name and all(h in topo.hosts for h in hosts):
            return topo
    return None


def _remove_containers(shell: HostShell) -> None:
    ids = [c["Id"] for c in shell.containers()]
    if ids:
        shell.netctl("rm", "-f", *ids, timeout=180)


def _stop_monitor(host_root: str) -> None:
    """The host's container monitor (runner/monitor.py) writes its PID into monitor.lock."""
    try:
        with open(os.path.join(host_root, "monitor.lock")) as f:
            pid = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().split(b"\0")
    except OSError:
        return
    if b"runner.monitor" in cmdline and os.path.abspath(host_root).encode() in cmdline:
        recorded = Recorded.of(pid)
        if recorded is not None:
            processes.stop(recorded)


def _lab_netns_paths(paths: Paths) -> set[str]:
    """Every network namespace handle bound under the lab directory: switch, hosts, overlay networks
    and containers' sandboxes."""
    from libnetwork import netns

    return {point for point in _mounts_under(paths.lab) if netns.is_netns(point)}


def _lab_netns_ids(paths: Paths) -> set[tuple[int, int]]:
    """(st_dev, st_ino) of every network namespace of the lab (see _lab_netns_paths)."""
    ids = set()
    for handle in _lab_netns_paths(paths):
        with contextlib.suppress(OSError):
            st = os.stat(handle)
            ids.add((st.st_dev, st.st_ino))
    return ids


def _kill_leftovers(paths: Paths) -> None:
    """Anything still running inside one of the lab's own namespaces (a container whose monitor was
    gone, a daemon whose record was lost) is the lab's: SIGKILL it, bounded wait until gone."""
    ids = _lab_netns_ids(paths)
    if not ids:
        return
    deadline = time.monotonic() + processes.STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        pids = processes.processes_in(ids)
        if not pids:
            return
        for pid in pids:
            processes.kill_now(pid)
        time.sleep(0.05)
    raise LabError(f"processes {processes.processes_in(ids)} in the lab's namespaces did not exit")


def _mounts_under(directory: str) -> list[str]:
    prefix = os.path.abspath(directory)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = _unescape(line.split()[4])
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found


def _unescape(text: str) -> str:
    """mountinfo writes space, tab, newline and backslash as \\ooo octal."""
    import re

    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def _unmount_under(directory: str) -> None:
    """Unmount everything under `directory`, deepest first (netns handles, shared bind mounts of their
    directories, container root file systems). Shared propagation can stack copies: a few rounds."""
    from libnetwork import netns

    for _ in range(UMOUNT_ROUNDS):
        points = sorted(set(_mounts_under(directory)), key=lambda p: p.count("/"), reverse=True)
        if not points:
            return
        for point in points:
            with contextlib.suppress(OSError):
                netns._umount_detach(point)  # noqa: SLF001 - the same libc call, for any mount


def _cgroup_parent(name: str) -> str:
    from runner.cgroups import parent_name

    return f"{parent_name()}/lab-{name}"


def _cgroup_tops() -> list[str]:
    if not os.path.isdir(CGROUP_ROOT):
        return []
    return [CGROUP_ROOT] + [os.path.join(CGROUP_ROOT, d) for d in sorted(os.listdir(CGROUP_ROOT))]


def _remove_cgroups(state: State) -> None:
    """PARENT/lab-<name> in every hierarchy, then its ancestors that became empty (the default
    parent "netctl" included), as the runner does after a container's last cgroup. Derived from
    what is there, not from what `up` remembers having made: a concurrent lab or container, or an
    `up` cut short, cannot leave a parent behind."""
    from runner.cgroups import remove_empty_parents

    if not state.cgroup_parent:
        return
    left = []
    for top in _cgroup_tops():
        base = os.path.join(top, state.cgroup_parent)
        if not os.path.realpath(base).startswith(CGROUP_ROOT + "/"):
            continue
        if os.path.isdir(base):
            left += _rmdir_tree(base)
        remove_empty_parents(base, state.cgroup_parent.count("/"))
    if left:
        raise LabError(f"cgroups could not be removed: {', '.join(left[:3])}")


def _rmdir_tree(base: str) -> list[str]:
    """rmdir `base` and its sub-directories bottom-up; cgroup dirs cannot be removed while tasks
    remain, so wait a little for exiting ones. Returns what stayed."""
    dirs = [d for d, _, _ in os.walk(base)]
    left = []
    deadline = time.monotonic() + CGROUP_REMOVE_TIMEOUT_S
    for directory in sorted(dirs, key=lambda d: d.count("/"), reverse=True):
        while True:
            try:
                os.rmdir(directory)
                break
            except FileNotFoundError:
                break
            except OSError as err:
                if time.monotonic() > deadline:
                    left.append(f"{directory} ({err.strerror})")
                    break
                time.sleep(0.05)
    return left


# --- status ------------------------------------------------------------------------------------------------


def require_up(root: str, file: str) -> tuple[Paths, Topology, State]:
    topo = topology.load(file)
    paths = Paths(root, topo.name)
    state = read_state(paths)
    if state is None or state.phase != "up":
        raise NotFound(f"lab {topo.name} is not up; start it with `netctl lab up {file}`")
    return paths, topo, state


def status(root: str, file: str) -> dict:
    paths, topo, state = require_up(root, file)
    fabric = paths.fabric
    leases = etcd.host_leases(fabric.switch) if state.etcd else {}
    links = fabric.link_states(topo)
    etcd_process = Recorded.from_dict(state.etcd) if state.etcd else None
    hosts = []
    for name, host in topo.hosts.items():
        daemon = Recorded.from_dict(state.daemons[name]) if name in state.daemons else None
        lease = leases.get(name, {})
        hosts.append({
            "name": name, "address": host.address, "underlay": host.underlay, "link_up": links.get(name, False),
            "daemon_pid": daemon.pid if daemon else 0, "daemon_alive": bool(daemon and daemon.alive),
            "daemon_rss_kib": processes.rss_kib(daemon.pid) if daemon and daemon.alive else 0,
            "lease": lease.get("lease", 0), "lease_ttl": lease.get("ttl", -1) if lease else -1,
        })  # fmt: skip
    containers = []
    shells = {h: HostShell(paths, topo, state, h) for h in topo.hosts}
    addresses = _network_addresses(shells, topo)
    for host, view in _each_host(list(topo.hosts), lambda h: shells[h].containers()):
        for c in view:  # type: ignore[union-attr]
            containers.append({
                "name": c["Name"], "host": host, "state": c["State"]["Status"], "id": c["Id"][:12],
                "addresses": addresses.get(c["Name"], {}),
            })  # fmt: skip
    missing = sorted(set(topo.containers) - {c["name"] for c in containers})
    return {
        "name": topo.name, "phase": state.phase, "created": state.created, "up_seconds": state.up_seconds,
        "etcd": {"pid": etcd_process.pid if etcd_process else 0, "alive": bool(etcd_process and etcd_process.alive),
                 "healthy": etcd.healthy(fabric.switch)},
        "hosts": hosts, "containers": containers, "missing_containers": missing,
    }  # fmt: skip


# --- test --------------------------------------------------------------------------------------------------


@dataclass
class TestReport:
    sections: list[tuple[str, list[matrix.Row]]]  # ("base" or "scenario NAME" / "after NAME", rows)

    @property
    def ok(self) -> bool:
        return all(row.ok for _, rows in self.sections for row in rows)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "sections": [{"name": n, "rows": [r.to_dict() for r in rows]} for n, rows in self.sections]}


def test(root: str, file: str, *, settle_s: float = 5.0, parallel: int = matrix.SOURCE_PARALLEL,
         log: Callable[[str], None] = lambda line: None) -> TestReport:  # fmt: skip
    paths, topo, state = require_up(root, file)
    shells = {h: HostShell(paths, topo, state, h) for h in topo.hosts}
    addresses = _addresses(shells, topo)
    missing = sorted(set(topo.containers) - set(addresses))
    if missing:
        raise LabError(f"lab {topo.name}: containers {', '.join(missing)} are not running; see `netctl lab status`")

    def probe(source: str, targets: list[str]) -> dict[str, bool]:
        shell = shells[topo.containers[source].host]
        out = shell.netctl("exec", source, "sh", "-c", matrix.ping_script(targets), timeout=120,
                           what=f"probe from {source}").stdout  # fmt: skip
        return matrix.parse_output(out, targets)

    def flush() -> None:
        _flush_neighbours(paths)

    report = TestReport([])
    rows = matrix.plan(topo, topo.expect, addresses)
    matrix.run(rows, probe, settle_s=settle_s, parallel=parallel, between_waves=flush)
    report.sections.append(("base", rows))
    log(f"base: {sum(r.ok for r in rows)}/{len(rows)} as expected")
    for scenario in topo.scenarios:
        report.sections += _scenario(paths, topo, scenario, addresses, probe, settle_s, parallel, flush, log)
    return report


def _scenario(paths: Paths, topo: Topology, scenario: topology.Scenario, addresses, probe, settle_s, parallel, flush, log):
    fabric = paths.fabric
    try:
        for host in scenario.cut:
            fabric.set_link(topo, host, up=False)
        rows = matrix.plan(topo, scenario.expect, addresses)
        matrix.run(rows, probe, settle_s=settle_s, parallel=parallel, between_waves=flush)
    finally:
        for host in scenario.cut:
            fabric.set_link(topo, host, up=True)
    log(f"scenario {scenario.name} (cut {', '.join(scenario.cut)}): {sum(r.ok for r in rows)}/{len(rows)} as expected")
    # Restored: what the base expectations say about the cut hosts' containers must hold again.
    cut_containers = {c.name for h in scenario.cut for c in topo.containers_on(h)}
    after = [r for r in matrix.plan(topo, topo.expect, addresses) if r.source in cut_containers or r.target in cut_containers]
    matrix.run(after, probe, settle_s=max(settle_s, 10.0), parallel=parallel, between_waves=flush)
    log(f"after {scenario.name} (link restored): {sum(r.ok for r in after)}/{len(after)} as expected")
    return [(f"scenario {scenario.name}", rows), (f"after {scenario.name}", after)]


def _flush_neighbours(paths: Paths) -> None:
    """Forget the IPv4 neighbours the lab's namespaces learned (permanent and no-ARP entries, e.g. the
    overlay's static ones, stay): the machine has one neighbour table for all namespaces, and a big
    matrix would fill it (see matrix.WAVE_NEIGHBOURS). Entries are learned again on the next packet."""
    import socket as socket_module

    from libnetwork.netlink import Netlink

    keep = 0x80 | 0x40  # NUD_PERMANENT | NUD_NOARP
    for handle in sorted(_lab_netns_paths(paths)):
        with contextlib.suppress(NetctlError, OSError), Netlink(handle) as inside:
            for neighbour in inside.neighs(family=socket_module.AF_INET):
                if not neighbour.state & keep and neighbour.ip:
                    inside.neigh_del(neighbour.index, neighbour.ip)


def _addresses(shells: dict[str, HostShell], topo: Topology) -> matrix.Addresses:
    """{container: {network: IPv4 address}} of running containers.

    Addresses come from `netctl network inspect` (the controller's view, which for a global network
    lists the endpoints of every host), running states from each host's container records."""
    running = {c["Name"] for _, views in _each_host(list(shells), lambda h: shells[h].containers())
               for c in views if c["State"]["Running"]}  # type: ignore[union-attr]  # fmt: skip
    return {name: nets for name, nets in _network_addresses(shells, topo).items() if name in running}


def _network_addresses(shells: dict[str, HostShell], topo: Topology) -> matrix.Addresses:
    """{endpoint name: {network: IPv4 address}} from `netctl network inspect`: each bridge network on
    its host, the global ones on the host that created them."""
    asked: dict[str, list[str]] = {}
    for network in topo.networks.values():
        asked.setdefault(network.host or _creator(topo, network.name), []).append(network.name)

    def inspect(host: str) -> list[dict]:
        return json.loads(shells[host].netctl("network", "inspect", *asked[host], timeout=60).stdout or "[]")

    result: matrix.Addresses = {}
    for _, views in _each_host(list(asked), inspect):
        for view in views:  # type: ignore[union-attr]
            for endpoint in view.get("Containers", {}).values():
                address = endpoint.get("IPv4Address", "").split("/")[0]
                if address:
                    result.setdefault(endpoint["Name"], {})[view["Name"]] = address
    return result
