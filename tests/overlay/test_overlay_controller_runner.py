"""`netctl run --network OVERLAY` through the container runner, unchanged: containers on two hosts
reach each other by address and by name (names of the other host come from etcd's endpoint records,
written into the hosts files by runner/hosts.refresh, which the daemon calls when peers change; here
lab.reconcile plays that part). `rm` removes everything, here and in etcd."""

from __future__ import annotations

import json
import os
import secrets

import pytest

from overlay.lab import netctl_lab

pytestmark = pytest.mark.kernel

BUSYBOX = "/bin/busybox"


@pytest.fixture
def lab():
    import harness

    from containers.conftest import remove_cgroup_tree
    from overlay.conftest import _require_etcd

    missing = harness.missing_host_prerequisites()
    if missing:
        pytest.skip(missing)
    _require_etcd()
    if not os.path.exists(BUSYBOX):
        pytest.skip("busybox-static is not installed (sudo bash scripts/bootstrap.sh)")
    parent = f"netctl-t{secrets.token_hex(4)}"
    try:
        with netctl_lab(2) as lab:
            lab.cgroup_env = {"NETCTL_CGROUP_PARENT": parent}
            for host in lab.hosts:
                lab.netctl(host, "image", "build-busybox", env=lab.cgroup_env)
            yield lab
    finally:
        left = remove_cgroup_tree(parent)
        assert not left, f"cgroups left behind: {left}"


def run(lab, host, *args, **kw):
    return lab.netctl(host, *args, env=lab.cgroup_env, **kw)


def test_containers_on_two_hosts_reach_each_other_by_address_and_name_and_rm_leaves_nothing(lab):
    h1, h2 = lab.hosts
    run(lab, h1, "network", "create", "-d", "overlay", "--subnet", "10.60.0.0/24", "web")
    run(lab, h1, "run", "-d", "--name", "c1", "--network", "web", "busybox", "sleep", "600")
    run(lab, h2, "run", "-d", "--name", "c2", "--network", "web", "busybox", "sleep", "600")
    lab.reconcile_all()
    addresses = {}
    for host, name in ((h1, "c1"), (h2, "c2")):
        view = json.loads(run(lab, host, "inspect", name).stdout)[0]
        addresses[name] = run(lab, host, "exec", name, "ip", "-4", "-o", "addr", "show", "eth0").stdout.split()[3].split("/")[0]
        assert view["Name"] == name
    assert run(lab, h1, "exec", "c1", "ping", "-c", "1", "-W", "2", addresses["c2"], check=False).returncode == 0
    assert run(lab, h1, "exec", "c1", "ping", "-c", "1", "-W", "2", "c2", check=False).returncode == 0
    assert run(lab, h2, "exec", "c2", "ping", "-c", "1", "-W", "2", "c1", check=False).returncode == 0
    hosts_file = run(lab, h1, "exec", "c1", "cat", "/etc/hosts").stdout
    assert f"{addresses['c2']}\tc2" in hosts_file

    run(lab, h2, "rm", "-f", "c2")
    lab.reconcile_all()
    assert "c2" not in run(lab, h1, "exec", "c1", "cat", "/etc/hosts").stdout
    assert lab.overlay_netns(h2) == []
    keys = lab.etcd_dump()
    assert not any(addresses["c2"] in v for k, v in keys.items() if "/ipam/addresses/" in k)
    assert not any('"c2"' in v for k, v in keys.items() if "/endpoints/" in k or "/peers/" in k)
    run(lab, h1, "rm", "-f", "c1")
    assert lab.overlay_netns(h1) == []
    run(lab, h1, "network", "rm", "web")
    assert set(lab.etcd_dump()) == {"/netctl/schema", "/netctl/v1/hosts/h1", "/netctl/v1/hosts/h2"}
    for host in lab.hosts:
        assert run(lab, host, "doctor").stdout.strip() == "no problems found"
