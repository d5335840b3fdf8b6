"""Overlay networks through the controller and the CLI, on three hosts with etcd inside the lab.

Everything is done the way a user does it on each host (`netctl network create -d overlay`,
`sandbox create`, `network connect`), with the store given by NETCTL_STORE / NETCTL_HOST_NAME and the
hosts registered as their daemons would register them. No daemon runs here: after each change the test
calls Controller.reconcile_overlay() on every host (lab.reconcile), which is what the daemon's loop does.

    overlay a (10.20.0.0/24 + fd00:20::/64, made on h1):  a1 on h1, a2 on h2, a3 on h3
    overlay b (default subnet, made on h3):              b1 on h1, b3 on h3
    bridge br (local to h1, 10.99.0.0/24):               c1 on h1
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from overlay.lab import SWITCH_BRIDGE, netctl_lab
from overlay.test_overlay_dataplane import CAPTURE

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def lab():
    import harness

    from overlay.conftest import _require_etcd

    missing = harness.missing_host_prerequisites()
    if missing:
        pytest.skip(missing)
    _require_etcd()
    with netctl_lab(3) as lab:
        h1, h2, h3 = lab.hosts
        lab.netctl(h1, "network", "create", "-d", "overlay", "--subnet", "10.20.0.0/24", "--subnet", "fd00:20::/64", "a")
        lab.netctl(h3, "network", "create", "-d", "overlay", "b")
        lab.netctl(h1, "network", "create", "--subnet", "10.99.0.0/24", "br")
        lab.addr = {}
        for host, sandbox, network in ((h1, "a1", "a"), (h2, "a2", "a"), (h3, "a3", "a"), (h1, "b1", "b"),
                                       (h3, "b3", "b"), (h1, "c1", "br")):
            lab.netctl(host, "sandbox", "create", "--name", sandbox)
            words = lab.netctl(host, "network", "connect", network, sandbox).stdout.split()
            lab.addr[sandbox] = [a.split("/")[0] for a in words[1:]]
        lab.reconcile_all()
        yield lab


def host_of(lab, sandbox: str):
    return {"a1": lab.hosts[0], "a2": lab.hosts[1], "a3": lab.hosts[2], "b1": lab.hosts[0], "b3": lab.hosts[2],
            "c1": lab.hosts[0]}[sandbox]


def ping(lab, source: str, address: str) -> bool:
    return lab.ping(host_of(lab, source), source, address)


def test_every_host_sees_the_global_networks_and_only_its_own_local_ones(lab):
    h1, h2, _ = lab.hosts
    listed = {n["name"]: n for n in lab.netctl_json(h2, "network", "ls", "--format", "json")}
    assert set(listed) == {"a", "b"}
    assert listed["a"]["scope"] == listed["b"]["scope"] == "global"
    assert listed["a"]["driver_state"]["vni"] != listed["b"]["driver_state"]["vni"]
    assert [p["subnet"] for p in listed["a"]["pools"]] == ["10.20.0.0/24", "fd00:20::/64"]
    assert listed["a"]["mtu"] == 1450  # the underlay's 1500 - 50, by itself
    table = lab.netctl(h1, "network", "ls").stdout.splitlines()
    assert table[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE", "SUBNETS"]
    rows = {line.split()[1]: line.split()[3] for line in table[1:]}
    assert rows == {"br": "local", "a": "global", "b": "global"}
    # inspect from a host with one endpoint shows the endpoints of every host, with their host.
    view = lab.netctl_json(h2, "network", "inspect", "a")[0]
    where = {c["Name"]: (c["Host"], c["State"], c["IPv4Address"].split("/")[0]) for c in view["Containers"].values()}
    assert where == {"a1": ("h1", "ready", lab.addr["a1"][0]), "a2": ("h2", "ready", lab.addr["a2"][0]),
                     "a3": ("h3", "ready", lab.addr["a3"][0])}
    assert view["VNI"] == int(listed["a"]["driver_state"]["vni"])
    # Each host built the network's kernel side because it has an endpoint on it, and only then.
    a_id, b_id = listed["a"]["id"], listed["b"]["id"]
    assert lab.overlay_netns(lab.hosts[1]) == [a_id]
    assert sorted(lab.overlay_netns(lab.hosts[0])) == sorted([a_id, b_id])
    assert len({lab.addr[s][0] for s in ("a1", "a2", "a3")}) == 3  # one global IPAM


def test_containers_of_one_overlay_reach_each_other_across_three_hosts_v4_and_v6(lab):
    members = ("a1", "a2", "a3")
    for source in members:
        for target in members:
            if source != target:
                for address in lab.addr[target]:
                    assert ping(lab, source, address), f"{source} -> {target} ({address})"
    assert ping(lab, "b1", lab.addr["b3"][0])


def test_another_overlay_cannot_reach_a_even_with_a_route(lab):
    h1, _, h3 = lab.hosts
    for host, sandbox in ((h1, "b1"), (h3, "b3")):
        lab.in_sandbox(host, sandbox, "ip", "route", "add", "10.20.0.0/24", "dev", "eth0")
    try:
        assert not ping(lab, "b1", lab.addr["a1"][0])  # same host, other overlay
        assert not ping(lab, "b1", lab.addr["a2"][0])  # other host, other overlay
        assert not ping(lab, "b3", lab.addr["a3"][0])
    finally:
        for host, sandbox in ((h1, "b1"), (h3, "b3")):
            lab.in_sandbox(host, sandbox, "ip", "route", "del", "10.20.0.0/24", "dev", "eth0", check=False)


def test_a_bridge_network_cannot_reach_the_overlay(lab):
    assert ping(lab, "c1", "10.99.0.1")  # its own gateway: the bridge network itself works
    for target in ("a1", "a2"):
        assert not ping(lab, "c1", lab.addr[target][0])


def test_the_underlay_carries_vxlan_with_the_networks_vni_around_the_inner_addresses(lab):
    vni = {n["name"]: int(n["driver_state"]["vni"]) for n in lab.netctl_json(lab.hosts[0], "network", "ls", "--format", "json")
           if n["scope"] == "global"}
    sniffer = lab.switch.popen(sys.executable, "-c", CAPTURE, SWITCH_BRIDGE, "4789", stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE)
    try:
        assert sniffer.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        assert ping(lab, "a1", lab.addr["a3"][0])
        assert ping(lab, "b3", lab.addr["b1"][0])
        sniffer.stdin.write("done\n")
        sniffer.stdin.flush()
        captured = json.loads(sniffer.stdout.readline())
    finally:
        sniffer.kill()
        sniffer.wait(timeout=10)
    seen_a = {(tuple(c["outer"]), tuple(c["inner"])) for c in captured if c["vni"] == vni["a"] and c["inner"]}
    a1, a3 = lab.addr["a1"][0], lab.addr["a3"][0]
    assert (("198.18.0.1", "198.18.0.3"), (a1, a3)) in seen_a
    assert (("198.18.0.3", "198.18.0.1"), (a3, a1)) in seen_a
    seen_b = {tuple(c["inner"]) for c in captured if c["vni"] == vni["b"] and c["inner"]}
    assert (lab.addr["b3"][0], lab.addr["b1"][0]) in seen_b
    assert not any(c["vni"] == vni["b"] and a1 in (c["inner"] or []) for c in captured)


def test_reconcile_is_idempotent_and_doctor_finds_nothing(lab):
    for host in lab.hosts:
        for result in lab.reconcile(host).values():
            assert not any(result.values()), result
        assert lab.netctl(host, "doctor").stdout.strip() == "no problems found"


def test_a_name_is_unique_in_a_network_across_hosts(lab):
    h2 = lab.hosts[1]
    before = lab.etcd_dump()
    lab.netctl(h2, "sandbox", "create", "--name", "a1")  # a1 lives on h1 already
    try:
        proc = lab.netctl(h2, "network", "connect", "a", "a1", check=False)
        assert proc.returncode == 4, proc
        assert "endpoint name 'a1' is already used" in proc.stderr and len(proc.stderr.splitlines()) == 1
        assert lab.etcd_dump() == before
        assert lab.overlay_netns(h2) == [lab.netctl_json(h2, "network", "inspect", "a")[0]["Id"]]
    finally:
        lab.netctl(h2, "sandbox", "rm", "a1")


def test_a_global_network_with_endpoints_elsewhere_cannot_be_removed(lab):
    h2 = lab.hosts[1]
    before = lab.etcd_dump()
    proc = lab.netctl(h2, "network", "rm", "b", check=False)  # h2 has no endpoint on b, h1 and h3 do
    assert proc.returncode == 5
    assert "b1 on h1" in proc.stderr and "b3 on h3" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert lab.etcd_dump() == before
    # -f on h1 would disconnect h1's own b1, but b3 on h3 still uses b: refused before b1 is touched.
    h1 = lab.hosts[0]
    host_before = (h1.snapshot(), lab.overlay_netns(h1))
    proc = lab.netctl(h1, "network", "rm", "-f", "b", check=False)
    assert proc.returncode == 5 and "b3 on h3" in proc.stderr and "b1 on h1" not in proc.stderr, proc.stderr
    assert (h1.snapshot(), lab.overlay_netns(h1)) == host_before
    assert lab.etcd_dump() == before


def test_disconnect_removes_the_endpoint_everywhere_and_the_network_from_its_last_host(lab):
    h1, h2, h3 = lab.hosts
    a_id = lab.netctl_json(h2, "network", "inspect", "a")[0]["Id"]
    old = lab.addr["a2"][0]
    lab.netctl(h2, "network", "disconnect", "a", "a2")
    assert lab.overlay_netns(h2) == []  # its last local endpoint: the kernel side went with it
    keys = lab.etcd_dump()
    assert not any(old in value for key, value in keys.items() if "/ipam/addresses/" in key)
    assert not any(key.startswith(f"/netctl/v1/peers/{a_id}/") and '"h2"' in value for key, value in keys.items())
    for host in (h1, h3):
        result = lab.reconcile(host, "a")[a_id]
        assert any(old in n for n in result["neighbours_removed"]), result
    assert not ping(lab, "a1", old)
    # Connect again: the network is rebuilt on h2 and everyone reaches it after one reconcile each.
    words = lab.netctl(h2, "network", "connect", "a", "a2").stdout.split()
    lab.addr["a2"] = [a.split("/")[0] for a in words[1:]]
    lab.reconcile_all()
    assert lab.overlay_netns(h2) == [a_id]
    assert ping(lab, "a2", lab.addr["a1"][0]) and ping(lab, "a3", lab.addr["a2"][0])
