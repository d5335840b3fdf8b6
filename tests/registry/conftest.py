"""Fixtures for the registry tests: a throwaway host whose /var and /etc/docker are overlays with their
writable layer on the host's /run (skopeo's blob-info cache under /var/lib/containers, a test's
/etc/docker/certs.d: nothing reaches the machine's disk), HOME and NETCTL_CONFIG on /run too, its own
cgroup parent, and a real docker-registry inside it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from containers.conftest import RunnerHost, remove_cgroup_tree  # noqa: E402
from harness import Host, new_test_cgroup_parent  # noqa: E402
from registry_server import Registry  # noqa: E402

HOME = "/run/home"
CONFIG = "/run/netctl-config"

_PRIVATE_DIRS = r"""
set -e
for d in /var /etc/docker; do
    w=/run/overlays$d
    mkdir -p $w/upper $w/work
    mount -t overlay overlay -o lowerdir=$d,upperdir=$w/upper,workdir=$w/work $d
done
mkdir -p /run/home /run/netctl-config
"""


class RegistryHost(RunnerHost):
    def __init__(self, host: Host, cgroup_parent: str):
        super().__init__(host, cgroup_parent)
        self.env = {"NETCTL_CGROUP_PARENT": cgroup_parent, "HOME": HOME, "NETCTL_CONFIG": CONFIG}

    def run(self, *argv: str, env: dict | None = None, **kw):
        return self.host.run(*argv, env={"HOME": HOME, **(env or {})}, **kw)

    def layers_dir(self) -> str:
        return self.path("/run/netctl/images/layers")

    def stored_layers(self) -> set[str]:
        d = self.layers_dir()
        return set(os.listdir(d)) if os.path.isdir(d) else set()

    def image_ids(self) -> set[str]:
        d = self.path("/run/netctl/images/images")
        return {n[:-5] for n in os.listdir(d) if n.endswith(".json")} if os.path.isdir(d) else set()

    def tmp_entries(self) -> list[str]:
        d = self.path("/run/netctl/images/tmp")
        out = []
        for dirpath, dirnames, files in os.walk(d) if os.path.isdir(d) else []:
            out += [os.path.relpath(os.path.join(dirpath, n), d) for n in files + dirnames]
        return sorted(out)


@pytest.fixture
def rhost() -> Iterator[RegistryHost]:
    parent = new_test_cgroup_parent()
    host = Host.start("reghost")
    logged = ""
    try:
        host.run("sh", "-c", _PRIVATE_DIRS)
        yield RegistryHost(host, parent)
        logged = host.tracebacks()
    finally:
        host.close()
        left = remove_cgroup_tree(parent)
        assert not left, f"cgroups left behind: {left}"
    assert not logged, logged


@pytest.fixture
def registry(rhost) -> Iterator[Registry]:
    """Plain HTTP, anonymous, on the host's 127.0.0.1:5000."""
    reg = Registry(rhost.host, port=5000)
    try:
        yield reg.start()
    finally:
        reg.close()
