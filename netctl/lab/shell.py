"""Running netctl as a lab host: HostShell (one host's namespace, root, store and cgroup parent) and
each_host (a step on every host, a few at a time), which up, down, status and test all use.

Each host is a netctl host in its own right: every command for it runs inside its namespace
(`nsenter --net`) with NETCTL_ROOT=its root, NETCTL_STORE=the lab's etcd as that host reaches it, and
NETCTL_CGROUP_PARENT=<parent>/lab-<name>/<host>.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TypeVar

from netctl.lab import processes
from netctl.lab.model import Topology
from netctl.lab.state import Paths, State

HOST_PARALLEL = 4  # hosts set up at once (each step is a subprocess; the machine may have 2 cores)

T = TypeVar("T")


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


def each_host(hosts: list[str], step: Callable[[str], T]) -> list[tuple[str, T]]:
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


def creator(topo: Topology, network: str) -> str:
    """The host that creates a global network: the first one with a container on it."""
    for container in topo.containers.values():
        if network in container.networks:
            return container.host
    return next(iter(topo.hosts))
