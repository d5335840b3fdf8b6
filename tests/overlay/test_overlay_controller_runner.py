"""`netctl run --network OVERLAY` through the container runner, unchanged: containers on three hosts
reach each other by address and by name (names of the other host come from etcd's endpoint records,
served by the agent's name server, which runner/hosts.refresh tells when peers change: the daemon
calls it after a reconcile; here lab.reconcile plays that part). `rm` removes everything, here and in etcd."""

from __future__ import annotations

import json
import os

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
    parent = harness.new_test_cgroup_parent()
    try:
        with netctl_lab(3) as lab:
            lab.cgroup_env = {"NETCTL_CGROUP_PARENT": parent}
            for host in lab.hosts:
                lab.netctl(host, "image", "build-busybox", env=lab.cgroup_env)
            yield lab
    finally:
        left = remove_cgroup_tree(parent)
        assert not left, f"cgroups left behind: {left}"


def run(lab, host, *args, **kw):
    return lab.netctl(host, *args, env=lab.cgroup_env, **kw)


def test_containers_on_three_hosts_reach_each_other_by_address_and_name_and_rm_leaves_nothing(lab):
    h1, h2, h3 = lab.hosts
    placement = {"c1": h1, "c2": h2, "c3": h3}
    run(lab, h1, "network", "create", "-d", "overlay", "--subnet", "10.60.0.0/24", "web")
    for name, host in placement.items():
        run(lab, host, "run", "-d", "--name", name, "--network", "web", "busybox", "sleep", "600")
    lab.reconcile_all()
    addresses = {}
    for name, host in placement.items():
        addresses[name] = run(lab, host, "exec", name, "ip", "-4", "-o", "addr", "show", "eth0").stdout.split()[3].split("/")[0]
        inspected = json.loads(run(lab, host, "inspect", name).stdout)[0]
        assert inspected["Name"] == name
        web = inspected["NetworkSettings"]["Networks"]["web"]  # a global network, read from etcd
        assert web["IPAddress"] == addresses[name] and web["Gateway"] == "10.60.0.1", web
    for source, host in placement.items():
        for target in placement:
            if source != target:
                for how in (addresses[target], target):
                    ping = run(lab, host, "exec", source, "ping", "-c", "1", "-W", "2", how, check=False)
                    assert ping.returncode == 0, f"{source} -> {how}: {ping.stderr}"
    for name in ("c2", "c3"):  # the agent's name server, with the other hosts' endpoints from etcd
        assert addresses[name] in run(lab, h1, "exec", "c1", "nslookup", f"{name}.netctl.internal").stdout
    # A short-lived container on the overlay gets its address from the global IPAM, and --rm leaves
    # nothing of it in etcd. (Reaching a remote container at once would also need the remote host's
    # tables to learn it: its daemon's job, tested in test_agent*.py.)
    before = lab.etcd_dump()
    once = run(lab, h3, "run", "--rm", "--network", "web", "busybox", "ip", "-4", "-o", "addr", "show", "eth0")
    assert " 10.60.0." in once.stdout, once.stdout
    assert {k: v for k, v in lab.etcd_dump().items() if "/cursors/" not in k} == {
        k: v for k, v in before.items() if "/cursors/" not in k}

    run(lab, h2, "rm", "-f", "c2")
    lab.reconcile_all()
    gone = run(lab, h1, "exec", "c1", "nslookup", "c2.netctl.internal", check=False)
    assert gone.returncode != 0 and "NXDOMAIN" in gone.stdout + gone.stderr, gone.stdout
    assert lab.overlay_netns(h2) == []
    keys = lab.etcd_dump()
    assert not any(addresses["c2"] in v for k, v in keys.items() if "/ipam/addresses/" in k)
    assert not any('"c2"' in v for k, v in keys.items() if "/endpoints/" in k or "/peers/" in k)
    for name in ("c1", "c3"):
        run(lab, placement[name], "rm", "-f", name)
        assert lab.overlay_netns(placement[name]) == []
    run(lab, h1, "network", "rm", "web")
    assert set(lab.etcd_dump()) == {"/netctl/schema", *(f"/netctl/v1/hosts/{h.name}" for h in lab.hosts)}
    for host in lab.hosts:
        assert run(lab, host, "doctor").stdout.strip() == "no problems found"
