"""Repair at agent start (libnetwork/repair.py), overlay part: two lab hosts, etcd inside the switch.

A "reboot" destroys throwaway host h1 (its links, namespaces and processes, its daemon too) and starts
a new h1 on the same state root (a directory under tmp_path) and the same underlay address. Its new
`netctl daemon --store` must release h1's vanished endpoints (here and in etcd, so h2 drops them from
its tables) and let a new container reach h2's. Without a reboot, an overlay segment lost under a live
sandbox is rebuilt with its FDB/neighbour entries when the daemon starts.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from cni.helpers import REPO, Cni
from harness import Host

from overlay.agent_helpers import attach, pings, start_daemon, tables, wait_for
from overlay.lab import SWITCH_BRIDGE

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(240)]

SUBNET = "10.60.0.0/24"


def reboot(lab, old: Host, port: str) -> Host:
    """Destroy `old` and start its successor on the same root, plugged into the underlay with the same
    VTEP address (switch port `port`: the old one may linger while the old namespace is torn down)."""
    index = lab.hosts.index(old)
    old.close()
    new = Host.start(old.name)
    new.root = old.root
    lab.hosts[index] = new
    subprocess.run(["nsenter", f"--net=/proc/{lab.switch.pid}/ns/net", "--", "ip", "link", "add", port, "type",
                    "veth", "peer", "name", "eth0", "netns", str(new.pid)],
                   check=True, capture_output=True, text=True, timeout=30)  # fmt: skip
    lab.switch.run("ip", "link", "set", port, "master", SWITCH_BRIDGE, "up")
    new.run("ip", "addr", "add", f"{lab.vteps[old.name]}/24", "dev", "eth0")
    new.run("ip", "link", "set", "eth0", "up")
    return new


def endpoints_by_sandbox(lab, host: Host, network: str) -> dict[str, dict]:
    containers = lab.netctl_json(host, "network", "inspect", network)[0]["Containers"]
    return {e["Sandbox"]: e for e in containers.values()}


def in_step(lab, host: Host, network_id: str) -> bool:
    found = tables(lab, host, network_id)
    return found["have"] == found["want"]


def test_reboot_releases_vanished_overlay_endpoints_and_a_new_container_reaches_the_peers(overlay_lab, tmp_path):
    lab = overlay_lab(2, register=False)
    h1, h2 = lab.hosts
    h1.root = str(tmp_path / "h1-root")
    start_daemon(lab, h1, str(tmp_path)), start_daemon(lab, h2, str(tmp_path))
    network_id = lab.netctl(h1, "network", "create", "-d", "overlay", "--subnet", SUBNET, "ov").stdout.strip()
    lab.netctl(h1, "network", "create", "--subnet", "10.77.0.0/24", "web")
    a1, b1 = attach(lab, h1, "a1", "ov"), attach(lab, h2, "b1", "ov")
    lab.netctl(h1, "network", "connect", "web", "a1")
    wait_for(lambda: pings(a1, b1), 10, "a1 to reach b1 before the reboot")
    gone = endpoints_by_sandbox(lab, h1, "ov")["a1"]

    new = reboot(lab, h1, "ul1r")
    try:
        daemon = start_daemon(lab, new, str(tmp_path))
        repairs = [line.split("repair: ", 1)[1] for line in daemon.lines("repair: ")]
        assert f"released endpoint {gone['EndpointID'][:12]} of network ov, {gone['IPv4Address']} " \
               "(sandbox a1: namespace gone)" in repairs, daemon.log()
        assert any(line.startswith("network web: bridge nc-") and "recreated" in line for line in repairs), repairs
        assert not daemon.lines("not repaired")

        # Released in etcd too: h2 no longer lists it, and h2's agent drops it from its tables.
        assert list(endpoints_by_sandbox(lab, h2, "ov")) == ["b1"]
        wait_for(lambda: in_step(lab, h2, network_id), 10, "h2's tables to drop a1")
        assert gone["MacAddress"] not in tables(lab, h2, network_id)["have"]["fdb"]
        assert lab.netctl(new, "doctor").stdout == "no problems found\n"
        assert lab.netctl(h2, "doctor").stdout == "no problems found\n"

        # A new container on the rebooted host reaches h2's, both ways, over a segment in step with etcd.
        a2 = attach(lab, new, "a2", "ov")
        wait_for(lambda: pings(a2, b1), 10, "a2 to reach b1")
        wait_for(lambda: pings(b1, a2), 10, "b1 to reach a2")
        assert in_step(lab, new, network_id)

        # And a new CNI attachment (netctl-overlay) reaches h2's container.
        cni = Cni(new, install_plugins(str(tmp_path / "cni-bin")))
        conf = {"cniVersion": "1.0.0", "name": "ov", "type": "netctl-overlay",
                "ipam": {"type": "netctl-ipam", "ranges": [[{"subnet": SUBNET}]]}}
        cni.add(conf, cid="k1")
        wait_for(lambda: cni.ping("k1", b1.ip), 10, "the CNI attachment to reach b1")
        cni.delete(conf, cid="k1")
        assert lab.netctl(new, "doctor").stdout == "no problems found\n"
    finally:
        logged = new.tracebacks()  # h1's root: both boots' logs
        new.close()
    assert not logged, logged


def install_plugins(directory: str) -> str:
    subprocess.run([sys.executable, "-m", "cni_plugins.install", directory], check=True, capture_output=True,
                   timeout=60, cwd=REPO)
    return directory


def test_agent_start_rebuilds_an_overlay_segment_lost_under_a_live_sandbox(overlay_lab, tmp_path):
    lab = overlay_lab(2, register=False)
    h1, h2 = lab.hosts
    d1 = start_daemon(lab, h1, str(tmp_path))
    start_daemon(lab, h2, str(tmp_path))
    network_id = lab.netctl(h1, "network", "create", "-d", "overlay", "--subnet", SUBNET, "ov").stdout.strip()
    a1, b1 = attach(lab, h1, "a1", "ov"), attach(lab, h2, "b1", "ov")
    wait_for(lambda: pings(a1, b1), 10, "a1 to reach b1")

    # The segment's namespace goes while the daemon is away: its bridge, its VXLAN device and a1's veth
    # pair (whose host side lived in it) go with it; a1's own namespace lives on.
    assert d1.stop() == 0
    h1.py(f"from libnetwork import netns; netns.delete({h1.root + '/overlay/' + network_id!r})")
    wait_for(lambda: "eth0" not in h1.in_netns(a1.netns, "ip", "-o", "link").stdout, 10, "a1's eth0 to go")

    d1 = start_daemon(lab, h1, str(tmp_path))
    repairs = [line.split("repair: ", 1)[1] for line in d1.lines("repair: ")]
    assert "overlay network ov: segment rebuilt" in " ".join(repairs), d1.log()
    assert any("(sandbox a1): veth ny" in line and line.endswith("recreated") for line in repairs), repairs
    assert "overlay network ov: 1 FDB and 1 neighbour entries restored" in repairs, repairs
    assert not d1.lines("not repaired")
    wait_for(lambda: pings(a1, b1), 10, "a1 to reach b1 again")
    wait_for(lambda: pings(b1, a1), 10, "b1 to reach a1 again")
    assert in_step(lab, h1, network_id)
    assert lab.netctl(h1, "doctor").stdout == "no problems found\n"

    # A warm restart with the segment and its endpoint in place repairs nothing.
    assert d1.stop() == 0
    d1 = start_daemon(lab, h1, str(tmp_path))
    assert not d1.lines("repair: "), d1.log()
    assert pings(a1, b1)


def test_reboot_with_etcd_away_repairs_the_local_part_and_releases_the_rest_at_the_next_start(overlay_lab, tmp_path):
    lab = overlay_lab(2, register=False)
    h1, h2 = lab.hosts
    h1.root = str(tmp_path / "h1-root")
    start_daemon(lab, h1, str(tmp_path)), start_daemon(lab, h2, str(tmp_path))
    lab.netctl(h1, "network", "create", "-d", "overlay", "--subnet", SUBNET, "ov")
    lab.netctl(h1, "network", "create", "--subnet", "10.77.0.0/24", "web")
    attach(lab, h1, "a1", "ov"), attach(lab, h2, "b1", "ov")
    lab.netctl(h1, "network", "connect", "web", "a1")
    gone = endpoints_by_sandbox(lab, h1, "ov")["a1"]

    new = reboot(lab, h1, "ul1r")
    try:
        lab.etcd.stop()
        daemon = start_daemon(lab, new, str(tmp_path), wait_registered=False)
        # The local network is back; the sandbox with an overlay endpoint waits for etcd, whole.
        repairs = [line.split("repair: ", 1)[1] for line in daemon.lines("repair: ")]
        assert any(line.startswith("network web: bridge nc-") for line in repairs), daemon.log()
        waiting = (f"sandbox a1: namespace gone, but not released: etcd at {lab.etcd.url} is unreachable: "
                   "connection refused; start it or pass --store; the agent's next start or `netctl gc` releases it")
        assert [line for line in repairs if "not re" in line] == [waiting], daemon.log()
        assert not daemon.lines("released endpoint")

        lab.etcd.start()
        assert daemon.stop() == 0
        again = start_daemon(lab, new, str(tmp_path))
        released = again.lines("released endpoint")
        assert len(released) == 2 and any(f"released endpoint {gone['EndpointID'][:12]} of network ov" in line
                                          for line in released), again.log()
        assert list(endpoints_by_sandbox(lab, h2, "ov")) == ["b1"]
        assert lab.netctl(new, "doctor").stdout == "no problems found\n"
    finally:
        logged = new.tracebacks()  # h1's root: both boots' logs
        new.close()
    assert not logged, logged
