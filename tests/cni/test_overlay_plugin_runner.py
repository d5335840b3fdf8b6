"""A CNI runtime's container and a `netctl run` container on one overlay network, on two hosts with
`netctl daemon --store` running (etcd inside the lab's switch): they reach each other both ways, both
show in `network inspect`, and DEL + `rm` leave nothing in etcd or in either host's kernel."""

from __future__ import annotations

import json
import os
import time

import pytest

from cni.helpers import Cni

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(300)]

BUSYBOX = "/bin/busybox"


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
            daemons = [start_daemon(lab, host, str(tmp_path)) for host in lab.hosts]
            try:
                lab.cgroup_env = {"NETCTL_CGROUP_PARENT": parent}
                lab.netctl(lab.hosts[0], "image", "build-busybox", env=lab.cgroup_env)
                yield lab
            finally:
                for daemon in daemons:
                    daemon.stop()
    finally:
        left = remove_cgroup_tree(parent)
        assert not left, f"cgroups left behind: {left}"


def until(predicate, timeout: float = 10.0) -> bool:
    """The other host's daemon programs its tables within ~1 s of a change: retry until then, bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_cni_container_and_netctl_run_container_reach_each_other(lab, plugin_dir):
    h1, h2 = lab.hosts
    cni = Cni(h2, plugin_dir)
    conf = {"cniVersion": "1.0.0", "name": "mixed", "type": "netctl-overlay",
            "ipam": {"type": "netctl-ipam", "ranges": [[{"subnet": "10.81.0.0/24"}]]}}
    result = cni.add(conf, "pod1")  # creates the network in etcd
    pod_ip = result["ips"][0]["address"].split("/")[0]

    lab.netctl(h1, "run", "-d", "--name", "web", "--network", "mixed", "busybox", "sleep", "600", env=lab.cgroup_env)
    try:
        out = lab.netctl(h1, "exec", "web", "ip", "-4", "-o", "addr", "show", "eth0", env=lab.cgroup_env).stdout
        web_ip = out.split()[3].split("/")[0]
        assert web_ip.startswith("10.81.0.") and web_ip != pod_ip

        def web_pings_pod() -> bool:
            return lab.netctl(h1, "exec", "web", "ping", "-c", "1", "-W", "1", pod_ip, env=lab.cgroup_env,
                              check=False).returncode == 0

        assert until(web_pings_pod)
        assert until(lambda: cni.inside("pod1", "ping", "-c", "1", "-W", "1", web_ip, check=False).returncode == 0)

        view = json.loads(lab.netctl(h1, "network", "inspect", "mixed").stdout)[0]
        assert sorted((e["Name"], e.get("Host")) for e in view["Containers"].values()) == [("pod1", "h2"), ("web", "h1")]
    finally:
        lab.netctl(h1, "rm", "-f", "web", env=lab.cgroup_env, check=False)
    cni.delete(conf, "pod1")
    assert lab.overlay_netns(h1) == [] and lab.overlay_netns(h2) == []
    keys = lab.etcd_dump()
    assert not [k for k in keys if "/ipam/addresses/" in k and "gateway" not in keys[k]]
    assert not [k for k in keys if "/endpoints/" in k or "/peers/" in k]
    for host in lab.hosts:
        assert lab.netctl(host, "doctor").stdout.strip() == "no problems found"
