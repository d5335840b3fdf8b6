"""Fixtures of the lab tests: a throwaway host in which whole labs (switch, hosts, etcd, daemons,
containers) are nested, with its own cgroup parent so that nothing machine-wide is shared."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from harness import Host, new_test_cgroup_parent

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(REPO, "topology_examples")
CGROUP_ROOT = "/sys/fs/cgroup"


def cgroup_dirs(parent: str) -> list[str]:
    """PARENT in every hierarchy, where it exists (seen from the machine)."""
    tops = [CGROUP_ROOT] + [os.path.join(CGROUP_ROOT, d) for d in os.listdir(CGROUP_ROOT)]
    return [os.path.join(top, parent) for top in tops if os.path.isdir(os.path.join(top, parent))]


def remove_cgroup_tree(parent: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    for base in cgroup_dirs(parent):
        for dirpath, _, _ in sorted(os.walk(base), key=lambda e: -e[0].count("/")):
            while True:
                try:
                    os.rmdir(dirpath)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.05)


class LabHost:
    """A throwaway host that runs `netctl lab ...` (NETCTL_ROOT=/run/netctl inside)."""

    def __init__(self, host: Host, cgroup_parent: str):
        self.host = host
        self.cgroup_parent = cgroup_parent
        self.env = {"NETCTL_CGROUP_PARENT": cgroup_parent}

    def lab(self, *args: str, check: bool = True, timeout: float = 280) -> subprocess.CompletedProcess:
        return self.host.netctl("lab", *args, check=check, timeout=timeout, env=self.env)

    def mounts_under(self, path: str) -> list[str]:
        with open(f"/proc/{self.host.pid}/mountinfo") as f:
            return [line.split()[4] for line in f if line.split()[4].startswith(path)]

    def state(self) -> dict:
        """What must be the same before `lab up` and after `lab down`."""
        snapshot = self.host.snapshot()
        snapshot["mounts"] = self.mounts_under("/run/netctl")
        snapshot["processes"] = [str(len(self.host.processes()))]
        snapshot["labs"] = sorted(os.listdir(self.host.path("/run/netctl/labs"))) if os.path.isdir(
            self.host.path("/run/netctl/labs")) else []
        snapshot["cgroups"] = cgroup_dirs(self.cgroup_parent)
        return snapshot


def require_lab_tools() -> None:
    for tool in ("etcd", "busybox", "nsenter"):
        if shutil.which(tool) is None and not os.path.exists(f"/usr/bin/{tool}"):
            pytest.skip(f"{tool} is not installed (sudo bash scripts/bootstrap.sh)")
    pytest.importorskip("etcd3gw", reason="the etcd3gw client is not installed")


@pytest.fixture
def lab_host() -> Iterator[LabHost]:
    require_lab_tools()
    parent = new_test_cgroup_parent()
    host = Host.start("labhost")
    logged = ""
    try:
        yield LabHost(host, parent)
        logged = host.tracebacks()
    finally:
        host.close()  # every process of the lab dies with the host's PID namespace
        remove_cgroup_tree(parent)
    assert not logged, logged
