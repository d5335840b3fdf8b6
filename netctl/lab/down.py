"""`netctl lab down`: a lab removed entirely, the reverse of `up`.

Idempotent, and it works on a half-made lab too: it goes by what is there (host directories,
namespaces, mounts, cgroups) as much as by what state.json recorded. Best effort at every step, so
that one broken piece does not keep the rest alive; what could not be removed is reported at the end.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import time
from collections.abc import Callable

from libnetwork.errors import NetctlError
from netctl.lab import processes, topology
from netctl.lab.cgroups import cgroup_parent, remove_cgroups
from netctl.lab.mounts import lab_netns_paths, mounts_under, unmount_under
from netctl.lab.processes import Recorded
from netctl.lab.shell import HostShell, each_host
from netctl.lab.state import LabError, Paths, State, read_state
from netctl.lab.topology import Topology


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
        by_host = {s.host: s for s in shells}
        step("remove containers", lambda: each_host(list(by_host), lambda h: _remove_containers(by_host[h])))
    for host in hosts:
        step(f"stop the container monitor of {host}", functools.partial(_stop_monitor, paths.host_root(host)))
    for host, recorded in state.daemons.items():
        step(f"stop the daemon of {host}", functools.partial(_stop_recorded, recorded))
    if state.etcd:
        step("stop etcd", lambda: processes.stop(Recorded.from_dict(state.etcd)))
    step("stop leftover processes", lambda: _kill_leftovers(paths))
    step("unmount", lambda: unmount_under(paths.lab))
    step("remove cgroups", lambda: remove_cgroups(state))
    if mounts_under(paths.lab):
        problems.append(f"mounts remain under {paths.lab}; the directory was kept")
    else:
        step("remove the lab directory", lambda: shutil.rmtree(paths.lab))
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(paths.lab))  # ROOT/labs, if no other lab is left
    if problems:
        raise LabError(f"lab {name} was not removed completely: {'; '.join(problems)}")
    log(f"lab {name}: removed")
    return True


def _stop_recorded(recorded: dict) -> None:
    processes.stop(Recorded.from_dict(recorded))


def _state_for_down(paths: Paths) -> State:
    try:
        state = read_state(paths)
    except LabError:
        state = None
    return state or State(paths.name, cgroup_parent=cgroup_parent(paths.name))


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


def _lab_netns_ids(paths: Paths) -> set[tuple[int, int]]:
    """(st_dev, st_ino) of every network namespace of the lab (see lab_netns_paths)."""
    ids = set()
    for handle in lab_netns_paths(paths):
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
