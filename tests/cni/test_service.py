"""The CNI plugins served by the host agent (cni_plugins/service.py in `netctl daemon`): the plugin
executables forward to it when it listens on the root's netctl.sock, get byte-for-byte the answers of
an in-process run, and fall back to running in-process when it is gone or serves another root."""

from __future__ import annotations

import pytest

from cni.helpers import bridge_conf, with_prev

pytestmark = pytest.mark.kernel


def served(service, command: str, cid: str) -> bool:
    return any(f"netctl daemon: {command} netctl-bridge {cid} " in line for line in service.log().splitlines())


def test_requests_go_to_the_service_and_answer_as_in_process(cni, service):
    conf = bridge_conf("s1", "10.50.0.0/24")
    result = cni.add(conf, "a")
    assert served(service, "ADD", "a")
    assert result["ips"] == [{"address": "10.50.0.2/24", "gateway": "10.50.0.1", "interface": 2}]
    assert cni.addresses("a") == ["10.50.0.2/24"]
    bad = cni.run("netctl-bridge", "ADD", conf, cid="a/b", netns=cni.netns("b"), ifname="eth0")
    assert bad.error() == {"cniVersion": "1.1.0", "code": 4, "msg": "invalid characters in containerID", "details": "a/b"}
    assert cni.run("netctl-bridge", "CHECK", with_prev(conf, result), cid="a", netns=cni.netns_path("a"), ifname="eth0").ok

    # DEL answers before the kernel has deleted the veth; the name is free at once for a new ADD
    host_veth = result["interfaces"][1]["name"]
    cni.delete(with_prev(conf, result), "a")
    assert served(service, "DEL", "a")
    assert "eth0" not in cni.links("a")
    again = cni.add(conf, "a")
    assert again["ips"][0]["address"] == "10.50.0.3/24"  # round robin, as host-local
    assert cni.wait_links_gone({host_veth}) == set()
    cni.delete(conf, "a")
    assert cni.endpoint_addresses() == []


def test_another_root_or_no_service_means_in_process(cni, service):
    other = dict(bridge_conf("s2", "10.51.0.0/24"), netctlRoot="/run/netctl-other")
    result = cni.add(other, "x")
    assert not served(service, "ADD", "x")
    assert result["ips"][0]["address"] == "10.51.0.2/24"
    assert cni.host.netctl("--root", "/run/netctl-other", "network", "inspect", "s2", check=False).returncode == 0
    cni.delete(other, "x")

    service.kill()  # leaves a stale socket file behind: connection refused
    conf = bridge_conf("s3", "10.52.0.0/24")
    assert cni.add(conf, "y")["ips"][0]["address"] == "10.52.0.2/24"
    cni.delete(conf, "y")
    assert cni.endpoint_addresses() == []


def test_the_service_stops_cleanly_and_finishes_pending_removals(cni, service):
    conf = bridge_conf("s4", "10.53.0.0/24")
    names = set()
    for cid in ("a", "b", "c"):
        names.add(cni.add(conf, cid)["interfaces"][1]["name"])
    for cid in ("a", "b", "c"):
        cni.delete(conf, cid)
    service.stop()
    assert not (names & set(cni.links()))
    assert not cni.host.run("test", "-e", service.socket, check=False).returncode == 0
    assert cni.host.netctl("doctor", check=False).returncode == 0
