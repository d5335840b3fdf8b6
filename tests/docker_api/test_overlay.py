"""An overlay network through the Docker API of two hosts whose agents share an etcd (the overlay
lab of tests/overlay): created on one, listed and inspected on the other, containers of both hosts
on it reach each other, removed from the second."""

from __future__ import annotations

import json
import os
import time

import pytest

BUSYBOX = "/bin/busybox"
DOCKER_ENV = {"DOCKER_HOST": "unix:///run/netctl/docker.sock", "DOCKER_CONFIG": "/run/docker-cli-config"}


@pytest.fixture
def lab(tmp_path):
    import harness

    from containers.conftest import remove_cgroup_tree
    from overlay.agent_helpers import start_daemon
    from overlay.conftest import _require_etcd
    from overlay.lab import netctl_lab

    missing = harness.missing_host_prerequisites()
    if missing:
        pytest.skip(missing)
    _require_etcd()
    if not os.path.exists(BUSYBOX):
        pytest.skip("busybox-static is not installed (sudo bash scripts/bootstrap.sh)")
    parent = harness.new_test_cgroup_parent()
    try:
        with netctl_lab(2, register=False) as lab:
            lab.cgroup_env = {"NETCTL_CGROUP_PARENT": parent}
            daemons = [start_daemon(lab, host, str(tmp_path)) for host in lab.hosts]
            try:
                for host in lab.hosts:
                    lab.netctl(host, "image", "build-busybox", env=lab.cgroup_env)
                yield lab
            finally:
                for daemon in daemons:
                    daemon.stop()
                for daemon in daemons:
                    assert "Traceback" not in daemon.log(), daemon.log()
    finally:
        left = remove_cgroup_tree(parent)
        assert not left, f"cgroups left behind: {left}"


def docker(lab, host, *args: str, **kw):
    import shutil

    return host.run(shutil.which("docker") or "docker", *args, env={**DOCKER_ENV, **lab.cgroup_env}, **kw)


def until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_overlay_network_through_the_docker_api_of_two_hosts(lab):
    h1, h2 = lab.hosts
    net_id = docker(lab, h1, "network", "create", "-d", "overlay", "--subnet", "10.91.0.0/24", "ov").stdout.strip()
    view = json.loads(docker(lab, h2, "network", "inspect", "ov").stdout)[0]
    assert (view["Id"], view["Driver"], view["Scope"]) == (net_id, "overlay", "global")
    assert view["IPAM"]["Config"][0]["Subnet"] == "10.91.0.0/24"
    assert "ov" in docker(lab, h2, "network", "ls", "--filter", "driver=overlay", "--format", "{{.Name}}").stdout
    taken = docker(lab, h2, "network", "create", "-d", "overlay", "ov", check=False)
    assert taken.returncode == 1 and "already exists" in taken.stderr
    lab.netctl(h1, "run", "-d", "--name", "a", "--network", "ov", "busybox", "sleep", "600", env=lab.cgroup_env)
    lab.netctl(h2, "run", "-d", "--name", "b", "--network", "ov", "busybox", "sleep", "600", env=lab.cgroup_env)
    b_ip = json.loads(docker(lab, h2, "network", "inspect", "ov").stdout)[0]["Containers"]
    b_addr = next(c["IPv4Address"] for c in b_ip.values() if c["Name"] == "b").split("/")[0]
    assert until(lambda: lab.netctl(h1, "exec", "a", "ping", "-c", "1", "-W", "1", b_addr, env=lab.cgroup_env,
                                    check=False).returncode == 0)
    busy = docker(lab, h2, "network", "rm", "ov", check=False)
    assert busy.returncode == 1
    lab.netctl(h1, "rm", "-f", "a", env=lab.cgroup_env)
    lab.netctl(h2, "rm", "-f", "b", env=lab.cgroup_env)
    assert docker(lab, h2, "network", "rm", "ov").stdout.strip() == "ov"
    assert "ov" not in docker(lab, h1, "network", "ls", "--format", "{{.Name}}").stdout.split()
