"""`netctl lab up`: a topology brought to life.

`up` goes: validate the file (nothing is made for a bad one) -> switch -> hosts -> etcd -> per host
(in parallel, bounded) daemon + image -> networks -> containers. Every step is recorded in state.json
as it is made; a failure anywhere runs `down` and reports one line. Each host's `netctl daemon`
registers it in etcd and keeps its overlay forwarding tables in step.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone

from libnetwork.errors import AlreadyExists, NetctlError
from netctl.lab import etcd, processes, topology
from netctl.lab.cgroups import cgroup_parent
from netctl.lab.down import down
from netctl.lab.processes import Recorded
from netctl.lab.shell import HostShell, creator, each_host
from netctl.lab.state import LabError, Paths, State, read_state, write_state
from netctl.lab.topology import Topology

DAEMON_START_TIMEOUT_S = 30.0


def up(root: str, file: str, *, log: Callable[[str], None] = lambda line: None) -> State:
    topo = topology.load(file)  # a bad file stops here, before anything is made
    paths = Paths(root, topo.name)
    _refuse_if_present(paths)
    started = time.monotonic()
    os.makedirs(paths.logs, exist_ok=True)
    state = State(topo.name, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  file=os.path.abspath(file), cgroup_parent=cgroup_parent(topo.name))  # fmt: skip
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
        each_host(list(topo.hosts), start_daemon)
    finally:
        write_state(paths, state)
    log(f"daemons: {len(state.daemons)} running")
    each_host([h for h in topo.hosts if topo.containers_on(h)], lambda h: shells[h].netctl("image", "build-busybox"))

    for network in topo.networks.values():
        if network.is_global:
            _create_network(shells[creator(topo, network.name)], network)
    def create_local_networks(host: str) -> None:
        for network in topo.networks.values():
            if network.host == host:
                _create_network(shells[host], network)

    each_host(list(topo.hosts), create_local_networks)
    log(f"networks: {', '.join(f'{n.name} ({n.driver})' for n in topo.networks.values()) or 'none'}")

    def run_containers(host: str) -> None:
        for container in topo.containers_on(host):
            _run_container(shells[host], container)

    each_host(list(topo.hosts), run_containers)
    log(f"containers: {len(topo.containers)} running")


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
            raise LabError(
                f"the daemon of host {shell.host} exited at start: {reason or proc.returncode} (log: {log_path})")
        if _answers(sock):
            return recorded
        time.sleep(0.05)
    processes.stop(recorded)
    raise LabError(f"the daemon of host {shell.host} did not listen on {sock} within {DAEMON_START_TIMEOUT_S:.0f} s "
                   f"(log: {log_path})")


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
