"""A real runtime on an overlay: Debian's podman (CNI backend, netctl's plugin directory first) runs a
busybox container on a netctl-overlay conflist network on host h1; a container ADDed by the plugin
directly on host h2 reaches it across the overlay and back. Both hosts run `netctl daemon --store`
(etcd inside the lab's switch). podman is isolated inside h1 exactly as in test_podman.py."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from cni.helpers import Cni
from cni.test_podman import CONF_DIR, Podman, busybox_image  # noqa: F401 - busybox_image is a fixture

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(300)]

PLUGIN = {"type": "netctl-overlay", "netctlRoot": "/run/netctl", "vni": 4343,
          "ipam": {"type": "netctl-ipam", "ranges": [[{"subnet": "10.82.0.0/24"}]]}}
CONFLIST = {"cniVersion": "1.0.0", "name": "pynet", "plugins": [PLUGIN]}
CONF = {"cniVersion": "1.0.0", "name": "pynet", **PLUGIN}  # the same network, for the plugin run by hand


@pytest.fixture
def lab(tmp_path):
    import harness

    from overlay.agent_helpers import start_daemon
    from overlay.conftest import _require_etcd
    from overlay.lab import netctl_lab

    if shutil.which("podman") is None or shutil.which("runc") is None:
        pytest.skip("podman and runc needed: apt-get install podman runc")
    missing = harness.missing_host_prerequisites()
    if missing:
        pytest.skip(missing)
    _require_etcd()
    with netctl_lab(2, register=False) as lab:
        daemons = [start_daemon(lab, host, str(tmp_path)) for host in lab.hosts]
        try:
            yield lab
        finally:
            for daemon in daemons:
                daemon.stop()


def until(predicate, timeout: float = 10.0) -> bool:
    """The other host's daemon programs its tables within ~1 s of a change: retry until then, bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_podman_container_on_a_netctl_overlay_reaches_a_container_on_another_host(lab, plugin_dir, busybox_image):
    h1, h2 = lab.hosts
    podman = Podman(h1, plugin_dir)
    h1.run("sh", "-c", f"cat > {CONF_DIR}/net.d/pynet.conflist", input=json.dumps(CONFLIST))
    far = Cni(h2, plugin_dir)
    try:
        podman("import", busybox_image, "localhost/busybox:latest")
        assert "pynet" in podman("network", "ls", "--format", "{{.Name}}").split()
        far_ip = far.add(CONF, "far")["ips"][0]["address"].split("/")[0]
        near_ip = podman.run_detached("a")
        assert near_ip.startswith("10.82.0.") and near_ip != far_ip

        assert until(lambda: " 0% packet loss" in podman("exec", "a", "ping", "-c", "1", "-W", "1", far_ip, check=False))
        assert until(lambda: far.inside("far", "ping", "-c", "1", "-W", "1", near_ip, check=False).returncode == 0)

        view = json.loads(lab.netctl(h2, "network", "inspect", "pynet").stdout)[0]
        podman_id = podman("inspect", "a", "--format", "{{.Id}}")
        assert sorted((e["Name"], e.get("Host")) for e in view["Containers"].values()) == sorted(
            [(podman_id, "h1"), ("far", "h2")])

        podman("rm", "-f", "-t", "0", "a")  # podman's CNI DEL
        far.delete(CONF, "far")
    finally:
        podman.cleanup()
    assert lab.overlay_netns(h1) == [] and lab.overlay_netns(h2) == []
    keys = lab.etcd_dump()
    assert not [k for k in keys if "/ipam/addresses/" in k and "gateway" not in keys[k]]
    assert not [k for k in keys if "/endpoints/" in k or "/peers/" in k]
