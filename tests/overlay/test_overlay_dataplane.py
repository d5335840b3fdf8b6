"""The overlay data plane on the real kernel: three throwaway hosts on an underlay switch, state in a
real etcd, containers pinging each other across VXLAN.

One lab per module (building it costs a few seconds); tests that change it put it back as they found
it. Layout:

    overlay A (VNI from etcd, dual stack):  a1 on h1, a2 on h2, a3 on h3
    overlay B (another VNI):                b1 on h1, b3 on h3
    underlay: 198.18.0.{1,2,3}/24, MTU 1400, so the overlay's MTU must come out as 1350 by itself
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from overlay.lab import SWITCH_BRIDGE, driver_lab

pytestmark = pytest.mark.kernel

UNDERLAY_MTU = 1400
WAIT_S = 10.0


@pytest.fixture(scope="module")
def lab(etcd_session_server):
    with driver_lab(etcd_session_server.url, ["h1", "h2", "h3"], underlay_mtu=UNDERLAY_MTU) as lab:
        h1, h2, h3 = hosts = lab.hosts
        lab.a = lab.create_network(h1, "a", subnet6="fd00:a::/64")
        lab.b = lab.create_network(h3, "b")
        for host in hosts:
            lab.ensure_network(host, lab.a)
        for host in (h1, h3):
            lab.ensure_network(host, lab.b)
        lab.a1, lab.a2, lab.a3 = (lab.add_container(h, lab.a, f"a{i}") for i, h in enumerate(hosts, start=1))
        lab.b1, lab.b3 = lab.add_container(h1, lab.b, "b1"), lab.add_container(h3, lab.b, "b3")
        lab.reconcile_all(lab.a)
        lab.reconcile_all(lab.b, [h1, h3])
        yield lab


def wait_until(condition, what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout} s")
        time.sleep(0.1)


def test_the_networks_come_out_of_etcd_with_their_own_vni_subnet_and_derived_mtu(lab):
    assert lab.a.driver_state["vni"] != lab.b.driver_state["vni"]
    assert lab.a.mtu == lab.b.mtu == UNDERLAY_MTU - 50
    assert lab.a.pools[0].subnet != lab.b.pools[0].subnet
    addresses = [c.ip for c in (lab.a1, lab.a2, lab.a3)]
    assert len(set(addresses)) == 3  # one global IPAM, three hosts
    h1 = lab.hosts[0]
    link = json.loads(lab.in_network(h1, lab.a, "ip", "-j", "-d", "link", "show", lab.a.driver_state["vxlan"]).stdout)[0]
    data = link["linkinfo"]["info_data"]
    assert (data["id"], data["port"], data["learning"], data["proxy"], data["local"], link["mtu"]) == (
        int(lab.a.driver_state["vni"]), 4789, False, True, "198.18.0.1", UNDERLAY_MTU - 50)
    assert "group" not in data  # no multicast: nothing is flooded to other hosts
    inside = json.loads(h1.in_netns(lab.a1.sandbox.netns_path, "ip", "-j", "link", "show", "eth0").stdout)[0]
    assert inside["mtu"] == UNDERLAY_MTU - 50
    # Nothing of the overlay is in the host's own namespace: the segment lives in one of its own.
    assert h1.ip_link_names() == {"lo", "eth0"}


def test_containers_of_one_overlay_reach_each_other_across_hosts_v4_and_v6(lab):
    members = (lab.a1, lab.a2, lab.a3)
    for source in members:
        for target in members:
            if source is not target:
                assert lab.ping(source, target.ip), f"{source.name} -> {target.name} ({target.ip})"
                assert lab.ping(source, target.ip6), f"{source.name} -> {target.name} ({target.ip6})"
    # The largest packet the overlay MTU allows crosses whole, the next size up is refused at the source.
    payload = lab.a.mtu - 28  # IPv4 20 + ICMP 8
    assert lab.ping(lab.a1, lab.a3.ip, size=payload, dont_fragment=True)
    assert not lab.ping(lab.a1, lab.a3.ip, size=payload + 1, dont_fragment=True)
    assert lab.ping(lab.b1, lab.b3.ip)


def test_overlays_are_isolated_from_each_other_and_from_the_host(lab):
    h1 = lab.hosts[0]
    b1_netns = lab.b1.sandbox.netns_path
    # Give b1 every chance: a route to A's subnet straight out of its eth0. Its ARP requests stay on B's
    # bridge, whose VXLAN device knows no A address, so nothing answers.
    h1.in_netns(b1_netns, "ip", "route", "add", lab.a.pools[0].subnet, "dev", "eth0")
    try:
        assert not lab.ping(lab.b1, lab.a1.ip)  # same host, other overlay
        assert not lab.ping(lab.b1, lab.a3.ip)  # other host, other overlay
    finally:
        h1.in_netns(b1_netns, "ip", "route", "del", lab.a.pools[0].subnet, "dev", "eth0")
    # The host is not on the segment: nothing a container sends reaches the host's own stack, not even
    # one way (a UDP datagram needs no answer): not by ARP, not aimed at the bridge's MAC, not broadcast.
    listener = h1.popen(sys.executable, "-c", UDP_LISTENER, stdout=subprocess.PIPE)
    a1_netns = lab.a1.sandbox.netns_path
    try:
        assert listener.stdout.readline().strip() == "listening"
        h1.in_netns(a1_netns, "ip", "route", "add", "default", "dev", "eth0")
        bridge = lab.a.driver_state["bridge"]
        bridge_mac = json.loads(lab.in_network(h1, lab.a, "ip", "-j", "link", "show", bridge).stdout)[0]["address"]
        h1.in_netns(a1_netns, "ip", "neigh", "replace", "192.0.2.1", "lladdr", bridge_mac, "dev", "eth0")
        for target in ("198.18.0.1", "192.0.2.1", "255.255.255.255"):
            h1.in_netns(a1_netns, sys.executable, "-c", UDP_SENDER, target)
        assert listener.communicate(timeout=10)[0].split() == ["nothing"]
    finally:
        listener.kill()
        h1.in_netns(a1_netns, "ip", "neigh", "del", "192.0.2.1", "dev", "eth0", check=False)
        h1.in_netns(a1_netns, "ip", "route", "del", "default", check=False)


UDP_LISTENER = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9999))
s.settimeout(1.5)
print("listening", flush=True)
try:
    print("got", s.recvfrom(64), flush=True)
except TimeoutError:
    print("nothing", flush=True)
"""
UDP_SENDER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
for _ in range(3):
    s.sendto(b"knock", (sys.argv[1], 9999))
"""

CAPTURE = textwrap.dedent(
    """
    import json, sys
    from scapy.all import AsyncSniffer, IP, IPv6, UDP, VXLAN
    sniffer = AsyncSniffer(iface=sys.argv[1], store=True,
                           lfilter=lambda p: UDP in p and p[UDP].dport == int(sys.argv[2]))
    sniffer.start()
    print("ready", flush=True)
    sys.stdin.readline()  # the test writes a line when its traffic is done
    packets = sniffer.stop() or []
    out = []
    for p in packets:
        if VXLAN not in p:
            continue
        inner = p[VXLAN].payload
        out.append({"outer": [p[IP].src, p[IP].dst], "vni": p[VXLAN].vni,
                    "inner": [inner[IP].src, inner[IP].dst] if IP in inner else
                             [inner[IPv6].src, inner[IPv6].dst] if IPv6 in inner else None})
    print(json.dumps(out), flush=True)
    """
)


def test_the_underlay_carries_vxlan_with_the_networks_vni_around_the_inner_addresses(lab):
    switch = lab.switch
    sniffer = switch.popen(sys.executable, "-c", CAPTURE, SWITCH_BRIDGE, "4789",
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert sniffer.stdout.readline().strip() == "ready"
        time.sleep(0.3)  # AsyncSniffer's socket is open once started; give its thread a moment
        assert lab.ping(lab.a1, lab.a3.ip, count=2)
        assert lab.ping(lab.b1, lab.b3.ip, count=1)
        sniffer.stdin.write("done\n")
        sniffer.stdin.flush()
        captured = json.loads(sniffer.stdout.readline())
    finally:
        sniffer.kill()
        sniffer.wait(timeout=10)
    vni_a, vni_b = int(lab.a.driver_state["vni"]), int(lab.b.driver_state["vni"])
    seen_a = {(tuple(c["outer"]), tuple(c["inner"])) for c in captured if c["vni"] == vni_a and c["inner"]}
    assert (("198.18.0.1", "198.18.0.3"), (lab.a1.ip, lab.a3.ip)) in seen_a  # echo request
    assert (("198.18.0.3", "198.18.0.1"), (lab.a3.ip, lab.a1.ip)) in seen_a  # echo reply
    seen_b = {tuple(c["inner"]) for c in captured if c["vni"] == vni_b and c["inner"]}
    assert (lab.b1.ip, lab.b3.ip) in seen_b
    assert not any(c["vni"] == vni_b and c["inner"] and lab.a1.ip in c["inner"] for c in captured)
    # No ARP crossed the underlay: the VXLAN devices answered it from their neighbour tables.
    assert all(c["inner"] is not None for c in captured), captured


def test_reconcile_is_idempotent_and_matches_the_store_exactly(lab):
    again = lab.reconcile_all(lab.a)
    assert not any(any(r.values()) for r in again.values()), again
    for host, others in zip(lab.hosts, [(lab.a2, lab.a3), (lab.a1, lab.a3), (lab.a1, lab.a2)]):
        tables = lab.tables(host, lab.a)
        assert tables["fdb"] == {c.endpoint.mac: [lab.vteps[c.host.name]] for c in others}
        assert tables["neighbours"] == {ip: c.endpoint.mac for c in others for ip in (c.ip, c.ip6)}


def test_reconcile_removes_stale_entries_and_fixes_wrong_ones(lab):
    h1 = lab.hosts[0]
    vxlan = lab.a.driver_state["vxlan"]

    def inside(*argv):
        return lab.in_network(h1, lab.a, *argv)

    # What Docker's bug reports describe: a peer long gone, a flood entry, a MAC pointing at the wrong
    # VTEP, an ARP entry for an address now held by someone else.
    inside("bridge", "fdb", "add", "02:42:0a:63:63:63", "dev", vxlan, "dst", "198.18.0.99", "self", "permanent")
    inside("bridge", "fdb", "append", "00:00:00:00:00:00", "dev", vxlan, "dst", "198.18.0.2", "self", "permanent")
    inside("bridge", "fdb", "replace", lab.a3.endpoint.mac, "dev", vxlan, "dst", "198.18.0.2", "self", "permanent")
    inside("ip", "neigh", "replace", "10.0.0.99", "lladdr", "02:42:0a:63:63:63", "dev", vxlan, "nud", "permanent")
    inside("ip", "neigh", "replace", lab.a2.ip, "lladdr", "02:42:0a:63:63:63", "dev", vxlan, "nud", "permanent")
    h1.in_netns(lab.a1.sandbox.netns_path, "ip", "neigh", "flush", "all")  # the next ping must ask again
    assert not lab.ping(lab.a1, lab.a3.ip)  # sent to the wrong host
    drift = lab.reconcile(h1, lab.a, dry_run=True)  # what doctor would report; changes nothing
    assert lab.reconcile(h1, lab.a, dry_run=True) == drift and drift["fdb_removed"]
    result = lab.reconcile(h1, lab.a)
    assert result == drift
    assert sorted(result["fdb_removed"]) == sorted([
        "02:42:0a:63:63:63 -> 198.18.0.99", "00:00:00:00:00:00 -> 198.18.0.2", f"{lab.a3.endpoint.mac} -> 198.18.0.2"])
    assert result["fdb_added"] == [f"{lab.a3.endpoint.mac} -> 198.18.0.3"]
    assert sorted(result["neighbours_removed"]) == ["10.0.0.99 -> 02:42:0a:63:63:63"]
    assert result["neighbours_added"] == [f"{lab.a2.ip} -> {lab.a2.endpoint.mac}"]
    assert not any(lab.reconcile(h1, lab.a).values())
    assert lab.ping(lab.a1, lab.a3.ip) and lab.ping(lab.a1, lab.a2.ip)


def test_a_host_whose_lease_expires_disappears_from_the_others_and_comes_back(lab):
    h1, h2, h3 = lab.hosts
    store2 = lab.store(h2)
    with store2.snapshot() as tx:
        lease = tx.get_host("h2").lease
    # h2's daemon dies (kill -9): nobody keeps its lease alive any more. Revoking it is the expiry
    # without the wait (test_etcd_store.py waits for a real one).
    store2.stop_keepalive()
    store2._etcd.revoke(lease)
    wait_until(lambda: {p["vtep"] for p in lab.peers(lab.a)} == {"198.18.0.1", "198.18.0.3"}, "h2's peers expiring")
    for host in (h1, h3):
        result = lab.reconcile(host, lab.a)
        assert result["fdb_removed"] == [f"{lab.a2.endpoint.mac} -> 198.18.0.2"]
        assert lab.tables(host, lab.a)["fdb"].keys() == {c.endpoint.mac for c in (lab.a1, lab.a3) if c.host is not host}
    assert lab.ping(lab.a1, lab.a3.ip)  # the survivors keep talking
    # h2's daemon comes back: registering re-publishes the peers of its containers, reconcile restores them.
    store2.start_keepalive("198.18.0.2", ttl=30)
    assert sorted(p["vtep"] for p in lab.peers(lab.a)) == ["198.18.0.1", "198.18.0.2", "198.18.0.3"]
    for host in (h1, h3):
        assert lab.reconcile(host, lab.a)["fdb_added"] == [f"{lab.a2.endpoint.mac} -> 198.18.0.2"]
    assert lab.ping(lab.a1, lab.a2.ip) and lab.ping(lab.a3, lab.a2.ip)


def test_a_removed_container_leaves_no_entry_behind_anywhere(lab):
    h1, h2, h3 = lab.hosts
    extra = lab.add_container(h2, lab.a, "a4")
    lab.reconcile_all(lab.a)
    assert lab.ping(lab.a1, extra.ip)
    lab.remove_container(extra, lab.a)
    with lab.store(h1).snapshot() as tx:
        assert extra.endpoint.id not in {p.endpoint_id for p in tx.list_peers(lab.a.id)}
        assert extra.endpoint.address_of(4) not in [a for _, a, _ in tx.allocations(lab.a.id)]
    results = lab.reconcile_all(lab.a)
    for host in (h1, h3):
        assert results[host.name]["fdb_removed"] == [f"{extra.endpoint.mac} -> 198.18.0.2"]
        assert sorted(results[host.name]["neighbours_removed"]) == sorted(
            f"{ip} -> {extra.endpoint.mac}" for ip in (extra.ip, extra.ip6))
    assert "ny" + extra.endpoint.id[:13] not in lab.in_network(h2, lab.a, "ip", "-o", "link").stdout
    assert not lab.ping(lab.a1, extra.ip)


def test_deleting_a_network_on_a_host_leaves_nothing_and_rebuilding_is_idempotent(lab):
    h1, h2, h3 = lab.hosts
    c = lab.create_network(h2, "c")
    assert lab.ensure_network(h2, c) is True
    assert lab.ensure_network(h2, c) is False  # already there: untouched
    path = lab.netns_path(h2, c)
    assert lab.in_network(h2, c, "ip", "-o", "link").stdout.count("\n") == 3  # lo, bridge, vxlan
    lab.agent(h2, {"op": "delete", "network": c.to_dict()}, {"op": "delete", "network": c.to_dict()})
    assert not os.path.exists(h2.path(path))
    assert h2.ip_link_names() == {"lo", "eth0"}
    lab.store(h2).atomic(lambda tx: tx.delete_network(c.id))


def test_a_host_whose_underlay_cannot_carry_the_mtu_refuses_clearly_and_leaves_nothing(lab):
    h1 = lab.hosts[0]
    too_big = lab.create_network(h1, "jumbo")
    too_big.mtu = UNDERLAY_MTU  # as if created elsewhere, on a host with a larger underlay
    with pytest.raises(AssertionError) as failure:
        lab.ensure_network(h1, too_big)
    assert (f"overlay network 'jumbo' has MTU {UNDERLAY_MTU}, but underlay eth0 of this host has MTU "
            f"{UNDERLAY_MTU}, which carries at most {UNDERLAY_MTU - 50}; recreate the network with --mtu "
            f"{UNDERLAY_MTU - 50}") in str(failure.value)
    assert not os.path.exists(h1.path(lab.netns_path(h1, too_big)))
    lab.store(h1).atomic(lambda tx: tx.delete_network(too_big.id))
