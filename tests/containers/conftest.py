"""Fixtures for the container runner's tests.

cgroups are the one kernel object a throwaway host does not contain: the hierarchy is machine-wide. So
every host here gets its own cgroup parent (NETCTL_CGROUP_PARENT=netctl-t<random>), passed to every
netctl command, and the fixture removes that parent in every hierarchy once the host - and with its
PID namespace every process in it - is gone. The session's root guard then finds no netctl cgroup.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from harness import Host, new_test_cgroup_parent

CGROUP_ROOT = "/sys/fs/cgroup"
BUSYBOX = "/bin/busybox"


def remove_cgroup_tree(parent: str, timeout: float = 10.0) -> list[str]:
    """rmdir PARENT (bottom-up) in every hierarchy under /sys/fs/cgroup; returns what could not go.
    Frozen cgroups (a paused container) are thawed first, in every hierarchy before any rmdir: their
    killed processes die only once thawed, and until then hold the other hierarchies' cgroups too."""
    left = []
    deadline = time.monotonic() + timeout
    tops = [os.path.join(CGROUP_ROOT, d) for d in os.listdir(CGROUP_ROOT)] + [CGROUP_ROOT]
    trees = [sorted(os.walk(os.path.join(top, parent)), key=lambda e: -e[0].count("/")) for top in tops
             if os.path.isdir(os.path.join(top, parent))]  # fmt: skip
    for walked in trees:
        for dirpath, _, files in walked:
            for name, thawed in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
                if name in files:
                    try:
                        with open(os.path.join(dirpath, name), "w") as f:
                            f.write(thawed)
                    except OSError:
                        pass
    for walked in trees:
        for dirpath, _, _ in walked:
            while True:
                try:
                    os.rmdir(dirpath)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        left.append(dirpath)
                        break
                    time.sleep(0.05)
    return left


class RunnerHost:
    """A throwaway host with netctl commands that use the host's own cgroup parent."""

    def __init__(self, host: Host, cgroup_parent: str):
        self.host = host
        self.cgroup_parent = cgroup_parent
        self.env = {"NETCTL_CGROUP_PARENT": cgroup_parent}

    def netctl(self, *args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
        return self.host.netctl(*args, env={**self.env, **(env or {})}, **kw)

    def popen_netctl(self, *args: str, **kw) -> subprocess.Popen:
        return self.host.popen(sys.executable, "-m", "netctl", *args, env=dict(self.env), **kw)

    def run(self, *argv: str, **kw) -> subprocess.CompletedProcess:
        return self.host.run(*argv, **kw)

    def container(self, *args: str, **kw) -> subprocess.CompletedProcess:
        """`netctl run ARGS...`"""
        return self.netctl("run", *args, **kw)

    def start(self, name: str, *args: str, network: str | None = "net", command: tuple[str, ...] = ("sleep", "600"),
              **kw) -> str:  # fmt: skip
        """A detached container; returns its id."""
        net = ["--network", network] if network else []
        return self.netctl("run", "-d", "--name", name, *net, *args, "busybox", *command, **kw).stdout.strip()

    def exec(self, name: str, *argv: str, **kw) -> subprocess.CompletedProcess:
        return self.netctl("exec", name, *argv, **kw)

    def inspect(self, name: str) -> dict:
        return json.loads(self.netctl("inspect", name).stdout)[0]

    def path(self, inner: str) -> str:
        return self.host.path(inner)

    def cgroup_dirs(self, container_id: str) -> list[str]:
        """The container's cgroup directories that exist now (seen from the machine)."""
        found = []
        for top in os.listdir(CGROUP_ROOT):
            path = os.path.join(CGROUP_ROOT, top, self.cgroup_parent, container_id)
            if os.path.isdir(path):
                found.append(path)
        return found

    def cgroup_file(self, controller: str, container_id: str, name: str) -> str:
        with open(os.path.join(CGROUP_ROOT, controller, self.cgroup_parent, container_id, name)) as f:
            return f.read()


@pytest.fixture
def rhost() -> Iterator[RunnerHost]:
    """A throwaway host with the busybox image imported and a bridge network `net` (10.88.0.0/24)."""
    if not os.path.exists(BUSYBOX):
        pytest.skip("busybox-static is not installed (sudo bash scripts/bootstrap.sh)")
    parent = new_test_cgroup_parent()
    host = Host.start("rhost")
    try:
        runner = RunnerHost(host, parent)
        runner.netctl("image", "build-busybox")
        runner.netctl("network", "create", "--subnet", "10.88.0.0/24", "net")
        yield runner
    finally:
        close_runner_host(host, parent)


@pytest.fixture
def bare_rhost() -> Iterator[RunnerHost]:
    """Like rhost, without image or network."""
    parent = new_test_cgroup_parent()
    host = Host.start("rhost")
    try:
        yield RunnerHost(host, parent)
    finally:
        close_runner_host(host, parent)


def close_runner_host(host: Host, parent: str) -> None:
    """Remove the host and its cgroups; then fail if the container monitor (a process of its own, whose
    errors no command prints) or an agent logged a traceback."""
    logged = ""
    try:
        logged = host.tracebacks()
    finally:
        host.close()
        left = remove_cgroup_tree(parent)
    assert not left, f"cgroups left behind: {left}"
    assert not logged, logged


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
