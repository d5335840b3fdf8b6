"""A real runtime: Debian's podman 4.3 with its CNI backend runs busybox containers on a netctl-bridge
conflist network, netctl's plugin directory first in cni_plugin_dirs.

podman is fully isolated inside the throwaway host: its configuration, storage, run root and libcni
cache live under the host's private /run and a private tmpfs over /var, so nothing reaches the
machine's /etc/containers, /var/lib/containers or /var/lib/cni. Containers get a cgroup parent named
netctl-cnitest-* (runc needs cgroups; conmon stays out of them), removed afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import uuid

import pytest

from containers.conftest import remove_cgroup_tree

from cni.helpers import Service

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(240)]

BUSYBOX = "/bin/busybox"
CONF_DIR = "/run/podman"
CONTAINERS_CONF = """[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
cgroups = "no-conmon"

[network]
network_backend = "cni"
cni_plugin_dirs = ["{plugin_dir}", "/usr/lib/cni"]
network_config_dir = "{conf_dir}/net.d"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "{conf_dir}/libpod"
static_dir = "{conf_dir}/storage/libpod"
volume_path = "{conf_dir}/storage/volumes"
"""
CONFLIST = {
    "cniVersion": "1.0.0",
    "name": "pynet",
    "plugins": [{
        "type": "netctl-bridge", "bridge": "pybr0", "isGateway": True, "ipMasq": True, "hairpinMode": True,
        "netctlRoot": "/run/netctl",
        "ipam": {"type": "netctl-ipam", "ranges": [[{"subnet": "10.77.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]},
    }],
}
# /var becomes a private tmpfs (podman and libcni write under /var/lib); /var/run must still be /run.
ISOLATE = """set -e
mount -t tmpfs -o mode=0755 tmpfs /var
mkdir -p /var/tmp /var/lib /var/cache {conf_dir}/net.d {conf_dir}/tmp
ln -s /run /var/run
"""


@pytest.fixture
def busybox_image(tmp_path) -> str:
    """A rootfs tarball: busybox and a link per applet."""
    if not os.access(BUSYBOX, os.X_OK):
        pytest.skip(f"{BUSYBOX} missing: apt-get install busybox-static")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    path = tmp_path / "busybox.tar"
    with tarfile.open(path, "w") as tar:
        for directory in ("bin", "proc", "sys", "dev", "etc", "tmp"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        tar.add(BUSYBOX, "bin/busybox")
        for applet in applets:
            if applet != "busybox":
                info = tarfile.TarInfo(f"bin/{applet}")
                info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(info)
    return str(path)


class Podman:
    def __init__(self, host, plugin_dir: str):
        self.host = host
        self.cgroup_parent = f"/netctl-cnitest-{uuid.uuid4().hex[:12]}"
        host.run("sh", "-c", ISOLATE.format(conf_dir=CONF_DIR))
        host.run("sh", "-c", f"cat > {CONF_DIR}/containers.conf",
                 input=CONTAINERS_CONF.format(plugin_dir=plugin_dir, conf_dir=CONF_DIR))
        host.run("sh", "-c", f"cat > {CONF_DIR}/net.d/pynet.conflist", input=json.dumps(CONFLIST))

    def __call__(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        argv = ["podman", "--root", f"{CONF_DIR}/storage", "--runroot", f"{CONF_DIR}/runroot",
                "--storage-driver", "vfs", *args]
        env = {"CONTAINERS_CONF": f"{CONF_DIR}/containers.conf", "TMPDIR": f"{CONF_DIR}/tmp"}
        return self.host.run(*argv, env=env, check=check, timeout=timeout).stdout.strip()

    def run_detached(self, name: str) -> str:
        self("run", "-d", "--name", name, "--cgroup-parent", self.cgroup_parent, "--network", "pynet",
             "localhost/busybox", "sleep", "120")
        return self("inspect", name, "--format", '{{(index .NetworkSettings.Networks "pynet").IPAddress}}')

    def cleanup(self) -> None:
        """Whatever the test reached: containers gone (their CNI DEL run), then their cgroup parent."""
        try:
            self("rm", "-f", "-a", "-t", "0", check=False, timeout=120)
        finally:
            # Bottom-up in every hierarchy, retried while the last processes leave (bounded): a plain
            # rmdir racing a slow `rm` on a loaded machine left netctl-cnitest-* behind.
            left = remove_cgroup_tree(self.cgroup_parent.lstrip("/"), timeout=30.0)
            assert not left, f"cgroups left behind: {left}"


@pytest.fixture
def podman(host, plugin_dir, busybox_image):
    if shutil.which("podman") is None or shutil.which("runc") is None:
        pytest.skip("podman and runc needed: apt-get install podman runc")
    pm = Podman(host, plugin_dir)
    try:
        pm("import", busybox_image, "localhost/busybox:latest")
        yield pm
    finally:
        pm.cleanup()


def test_podman_containers_on_a_netctl_bridge_network(cni, podman):
    assert podman("info", "--format", "{{.Host.NetworkBackend}}") == "cni"
    assert "pynet" in podman("network", "ls", "--format", "{{.Name}}").split()

    first = podman.run_detached("a")  # no CNI service yet: the plugins run in-process
    service = Service(cni.host)  # from here on podman's plugin calls are served by it
    try:
        second = podman.run_detached("b")
        assert first.startswith("10.77.0.") and second.startswith("10.77.0.") and first != second
        assert "ADD netctl-bridge" in service.log()
        ping = podman("exec", "a", "ping", "-c", "3", "-W", "2", second, check=False)
        assert " 0% packet loss" in ping, ping
        assert " 0% packet loss" in podman("exec", "b", "ping", "-c", "2", "-W", "2", first, check=False)

        network = cni.inspect("pynet")
        assert sorted(c["IPv4Address"].split("/")[0] for c in network["Containers"].values()) == sorted([first, second])
        assert {c["Name"] for c in network["Containers"].values()} == {
            podman("inspect", name, "--format", "{{.Id}}") for name in ("a", "b")}

        podman("rm", "-f", "-t", "0", "a", "b")
        assert cni.endpoint_addresses() == []  # podman rm ran CNI DEL: no address stays allocated
        assert cni.sandboxes() == []
        assert cni.wait_links_gone({n for n in cni.links() if n.startswith("nv")}) == set()
    finally:
        service.stop()
