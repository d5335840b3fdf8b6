"""The overlay's eBPF fast path (drivers/overlay_fastpath.py) on the real kernel: what it maps, that
frames really pass the bridge by, and that the bridge still carries what the map lacks.

    overlay F (fast path, the default):  f1, f1b on h1, f2 on h2
    overlay S (-o fastpath=false):       s1 on h1, s2 on h2
"""

from __future__ import annotations

import json

import pytest

from drivers.overlay import host_veth_name, vxlan_name
from overlay.lab import driver_lab

pytestmark = pytest.mark.kernel

PINGS = 20


@pytest.fixture(scope="module")
def lab(etcd_session_server):
    with driver_lab(etcd_session_server.url, ["h1", "h2"]) as lab:
        h1, h2 = lab.hosts
        lab.f = lab.create_network(h1, "f")
        lab.s = lab.create_network(h1, "s", options={"fastpath": "false"})
        for host in lab.hosts:
            lab.ensure_network(host, lab.f)
            lab.ensure_network(host, lab.s)
        lab.f1, lab.f1b, lab.f2 = (lab.add_container(h, lab.f, n) for h, n in ((h1, "f1"), (h1, "f1b"), (h2, "f2")))
        lab.s1, lab.s2 = lab.add_container(h1, lab.s, "s1"), lab.add_container(h2, lab.s, "s2")
        lab.reconcile_all(lab.f)
        lab.reconcile_all(lab.s)
        yield lab


def segment_side(container) -> str:
    return host_veth_name(container.endpoint.id)


def tx_packets(lab, container, network) -> int:
    """Frames the container's veth end in the network's namespace sent towards the container: what
    the bridge forwarded to it (a frame redirected to the container's side never passes there)."""
    out = lab.in_network(container.host, network, "ip", "-j", "-s", "link", "show", segment_side(container)).stdout
    return json.loads(out)[0]["stats64"]["tx"]["packets"]


def test_the_map_sends_local_macs_to_their_veths_and_remote_ones_to_the_vxlan_device(lab):
    h1, h2 = lab.hosts
    vxlan = vxlan_name(lab.f)
    assert lab.fast_path(h1, lab.f) == {
        lab.f1.endpoint.mac: segment_side(lab.f1), lab.f1b.endpoint.mac: segment_side(lab.f1b),
        lab.f2.endpoint.mac: vxlan,
    }
    assert lab.fast_path(h2, lab.f) == {
        lab.f2.endpoint.mac: segment_side(lab.f2), lab.f1.endpoint.mac: vxlan, lab.f1b.endpoint.mac: vxlan,
    }
    assert lab.fast_path(h1, lab.s) is None and lab.fast_path(h2, lab.s) is None


@pytest.mark.parametrize("source", ["f2", "f1b"], ids=["from-another-host", "from-the-same-host"])
def test_frames_for_a_container_pass_the_bridge_by(lab, source):
    sender = getattr(lab, source)
    before = tx_packets(lab, lab.f1, lab.f)
    assert lab.ping(sender, lab.f1.ip, count=PINGS, interval=0.05)
    # Broadcast and multicast (ARP, IPv6's router solicitations and MLD) go the bridge's way; the
    # echo requests do not.
    assert tx_packets(lab, lab.f1, lab.f) - before < PINGS // 2


def test_without_the_fast_path_every_frame_crosses_the_bridge(lab):
    before = tx_packets(lab, lab.s1, lab.s)
    assert lab.ping(lab.s2, lab.s1.ip, count=PINGS, interval=0.05)
    assert tx_packets(lab, lab.s1, lab.s) - before >= PINGS


def test_every_pair_reaches_each_other_both_ways(lab):
    for a, b in ((lab.f1, lab.f2), (lab.f2, lab.f1), (lab.f1, lab.f1b), (lab.f1b, lab.f2), (lab.s1, lab.s2)):
        assert lab.ping(a, b.ip), f"{a.name} -> {b.name}"
    assert lab.ping(lab.f1, lab.f2.ip, size=lab.f.mtu - 28, dont_fragment=True)  # full-size frames too


def test_a_remote_endpoint_left_out_of_the_store_leaves_the_map_and_the_bridge_takes_over(lab):
    h1 = lab.hosts[0]
    others = [p for p in lab.peers(lab.f) if p["mac"] != lab.f2.endpoint.mac]
    lab.agent(h1, {"op": "reconcile", "network": lab.f.to_dict(), "peers": others})
    try:
        assert lab.f2.endpoint.mac not in lab.fast_path(h1, lab.f)
        assert not lab.ping(lab.f1, lab.f2.ip)  # no FDB entry either: nowhere to send it
    finally:
        lab.reconcile(h1, lab.f)
    assert lab.fast_path(h1, lab.f)[lab.f2.endpoint.mac] == vxlan_name(lab.f)
    assert lab.ping(lab.f1, lab.f2.ip)


def test_a_leave_drops_the_entry_and_a_new_container_gets_its_own(lab):
    h1 = lab.hosts[0]
    extra = lab.add_container(h1, lab.f, "f1c")
    try:
        lab.reconcile(lab.hosts[1], lab.f)
        assert lab.fast_path(h1, lab.f)[extra.endpoint.mac] == segment_side(extra)
        assert lab.ping(extra, lab.f2.ip) and lab.ping(extra, lab.f1.ip)
    finally:
        lab.remove_container(extra, lab.f)
    assert extra.endpoint.mac not in lab.fast_path(h1, lab.f)
    lab.reconcile(lab.hosts[1], lab.f)
    assert lab.ping(lab.f1, lab.f2.ip)


def test_a_map_entry_whose_veth_vanished_is_swept_and_the_bridge_carries_the_rest(lab):
    # What a crash between deleting a veth and updating the map leaves: the veth goes behind the
    # driver's back; the next change on the network sweeps the entry.
    h1 = lab.hosts[0]
    extra = lab.add_container(h1, lab.f, "f1d")
    try:
        lab.in_network(h1, lab.f, "ip", "link", "del", segment_side(extra))
        assert lab.fast_path(h1, lab.f)[extra.endpoint.mac].startswith("<gone")
        lab.reconcile(h1, lab.f)
        assert extra.endpoint.mac not in lab.fast_path(h1, lab.f)
    finally:
        lab.remove_container(extra, lab.f)
    assert lab.ping(lab.f1b, lab.f1.ip) and lab.ping(lab.f1, lab.f2.ip)


# Runs inside a throwaway host: the program's verdict (BPF_PROG_TEST_RUN) for frames to each kind of
# destination MAC, arriving on the VXLAN device or on a veth end. 7 = redirect, -1 = on to the bridge.
VERDICTS = r"""
import ctypes, json, socket, struct, subprocess
from drivers import overlay_fastpath as fp

subprocess.run(["ip", "link", "add", "vx", "type", "vxlan", "id", "7", "dstport", "4789", "local", "10.0.0.1",
                "nolearning"], check=True)
subprocess.run(["ip", "link", "add", "pa", "type", "veth", "peer", "name", "qa"], check=True)
vx, pa = socket.if_nametoindex("vx"), socket.if_nametoindex("pa")
map_fd = fp._create_map()
prog_fd = fp._load_program(map_fd, vx)
fp._map_update(map_fd, "02:42:0a:00:00:02", pa)  # a local container behind pa
fp._map_update(map_fd, "02:42:0a:00:00:03", vx)  # a remote endpoint

def verdict(dst, arrived_on):
    frame = bytes.fromhex(dst.replace(":", "")) + bytes.fromhex("0242aabbccdd") + b"\x08\x00" + bytes(46)
    data = ctypes.create_string_buffer(frame, len(frame))
    ctx = bytearray(48)
    struct.pack_into("<I", ctx, fp.SKB_IFINDEX, arrived_on)
    ctx_buf = ctypes.create_string_buffer(bytes(ctx), len(ctx))
    attr = ctypes.create_string_buffer(struct.pack("<IIIIQQIIIIQQ", prog_fd, 0, len(frame), 0, ctypes.addressof(data),
                                                   0, 1, 0, len(ctx), 0, ctypes.addressof(ctx_buf), 0), fp.ATTR_SIZE)
    fp._bpf_call(10, attr)  # BPF_PROG_TEST_RUN
    return struct.unpack_from("<i", attr.raw, 4)[0]

print(json.dumps({
    "broadcast from a veth": verdict("ff:ff:ff:ff:ff:ff", pa),
    "multicast from the vxlan device": verdict("33:33:00:00:00:01", vx),
    "unknown MAC from a veth": verdict("02:42:0a:00:00:09", pa),
    "unknown MAC from the vxlan device": verdict("02:42:0a:00:00:09", vx),
    "local container from the vxlan device": verdict("02:42:0a:00:00:02", vx),
    "local container from its own veth (hairpin)": verdict("02:42:0a:00:00:02", pa),
    "remote endpoint from a veth": verdict("02:42:0a:00:00:03", pa),
    "remote endpoint from the vxlan device": verdict("02:42:0a:00:00:03", vx),
}))
"""


def test_the_program_redirects_known_unicast_and_leaves_everything_else_to_the_bridge(host):
    verdicts = json.loads(host.py(VERDICTS).stdout)
    redirect, bridge = 7, -1  # TCX_REDIRECT, TCX_NEXT
    assert verdicts == {
        "broadcast from a veth": bridge,
        "multicast from the vxlan device": bridge,
        "unknown MAC from a veth": bridge,
        "unknown MAC from the vxlan device": bridge,
        "local container from the vxlan device": redirect,
        "local container from its own veth (hairpin)": bridge,
        "remote endpoint from a veth": redirect,
        "remote endpoint from the vxlan device": bridge,
    }


def test_the_bridge_knows_each_local_container_statically(lab):
    # Its unicast passes the bridge by, so the bridge could not learn it; a miss would then flood.
    h1 = lab.hosts[0]
    for network, containers in ((lab.f, (lab.f1, lab.f1b)), (lab.s, (lab.s1,))):
        out = lab.in_network(h1, network, "bridge", "-j", "fdb", "show", "br", network.driver_state["bridge"]).stdout
        static = {(e["mac"], e["ifname"]) for e in json.loads(out) if e.get("state") == "static"}
        assert {(c.endpoint.mac, segment_side(c)) for c in containers} <= static
