"""libnetwork.netlink against the real kernel, cross-checked with pyroute2 and iproute2.

Each test runs its snippet in a throwaway network + mount namespace (`unshare`, /run a fresh tmpfs):
nothing it creates can reach the machine's own namespaces, and everything vanishes when it exits.
"""

from __future__ import annotations

from typing import Any

import pytest

from integration.snippets import run_in_throwaway_ns

pytestmark = pytest.mark.kernel

_PRELUDE = """
import dataclasses, errno, json, os, socket, subprocess
from libnetwork import netns
from libnetwork.netlink import Netlink, NetlinkError
from libnetwork.errors import AlreadyExists, InvalidArgument, NotFound

def sh(*argv):
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout

def ipj(*argv):
    return json.loads(sh("ip", "-j", *argv) or "[]")
"""


def in_throwaway_ns(code: str) -> Any:
    return run_in_throwaway_ns(_PRELUDE, code)


def test_veth_peer_is_created_inside_the_netns_with_name_mtu_mac_and_master():
    r = in_throwaway_ns("""
        netns.create("/run/t/ns1")
        with Netlink() as host:
            bridge = host.add_bridge("nc-t", mtu=1400)
            fd = netns.open_fd("/run/t/ns1")
            try:
                index = host.add_veth("nv1", "eth0", peer_netns_fd=fd, mtu=1400,
                                      peer_mac="02:42:ac:11:00:02", master=bridge, up=True)
            finally:
                os.close(fd)
            ours = host.link("nv1")
            result = {"bridge": bridge, "index": index, "ours": ours,
                      "host_ip": ipj("-d", "link", "show", "nv1")[0],
                      "host_has_eth0": host.link("eth0") is not None,
                      "inside": json.loads(sh("nsenter", "--net=/run/t/ns1", "ip", "-j", "link", "show", "eth0"))[0]}
    """)
    assert r["index"] == r["ours"]["index"] == r["host_ip"]["ifindex"]
    assert r["ours"]["kind"] == "veth" and r["ours"]["mtu"] == 1400 and r["ours"]["up"]
    assert r["ours"]["master"] == r["bridge"] and r["host_ip"]["master"] == "nc-t"
    assert r["ours"]["link_netnsid"] is not None  # the peer lives in another namespace
    assert not r["host_has_eth0"]  # created there directly, not here and moved
    assert r["inside"]["ifname"] == "eth0"
    assert r["inside"]["mtu"] == 1400
    assert r["inside"]["address"] == "02:42:ac:11:00:02"
    assert r["inside"]["ifindex"] == r["ours"]["link_index"]


def test_netlink_bound_to_a_netns_sees_only_that_namespace_and_leaves_the_thread_where_it_was():
    r = in_throwaway_ns("""
        netns.create("/run/t/ns1")
        before = netns.current_ns_id()
        with Netlink("/run/t/ns1") as inside:
            inside.add_bridge("br-inside")
            names_inside = [l.name for l in inside.links()]
        with Netlink() as here:
            names_here = [l.name for l in here.links()]
        result = {"same_thread_ns": before == netns.current_ns_id(), "inside": names_inside, "here": names_here}
    """)
    assert r["same_thread_ns"]
    assert r["inside"] == ["lo", "br-inside"]
    assert "br-inside" not in r["here"]


def test_addresses_v4_and_v6_are_usable_at_once_and_idempotent():
    r = in_throwaway_ns("""
        from pyroute2 import IPRoute
        with Netlink() as nl:
            nl.set_link("lo", up=True)  # a bare unshare'd namespace has lo down, without 127.0.0.1
            index = nl.add_bridge("br0")
            for cidr in ("10.1.2.3/24", "fd00:1::3/64", "10.1.2.3/24", "fd00:1::3/64", "192.0.2.1/31"):
                nl.add_addr(index, cidr)
            ours = sorted(a.address for a in nl.addrs(index) if a.scope == 0)
            only_lo = {a.index for a in nl.addrs(1)}
            with IPRoute() as ipr:
                kernel = {a.get_attr("IFA_ADDRESS"): (a["flags"], a.get_attr("IFA_BROADCAST"), a.get_attr("IFA_FLAGS"))
                          for a in ipr.get_addr(index=index)}
            deleted = [nl.del_addr(index, "fd00:1::3/64"), nl.del_addr(index, "fd00:1::3/64")]
            after = sorted(a.address for a in nl.addrs(index) if a.scope == 0)
        result = {"ours": ours, "only_lo": sorted(only_lo), "kernel": kernel, "deleted": deleted, "after": after}
    """)
    assert r["ours"] == ["10.1.2.3/24", "192.0.2.1/31", "fd00:1::3/64"]
    assert r["only_lo"] == [1]
    assert r["kernel"]["10.1.2.3"][1] == "10.1.2.255"
    assert r["kernel"]["192.0.2.1"][1] is None  # no broadcast on a /31
    ifa_f_tentative, ifa_f_nodad = 0x40, 0x02
    assert r["kernel"]["fd00:1::3"][2] & ifa_f_nodad
    assert not r["kernel"]["fd00:1::3"][2] & ifa_f_tentative  # no DAD wait: usable right away
    assert r["deleted"] == [True, False]
    assert r["after"] == ["10.1.2.3/24", "192.0.2.1/31"]


def test_default_routes_v4_v6_are_added_once_and_dumped():
    r = in_throwaway_ns("""
        from pyroute2 import IPRoute
        with Netlink() as nl:
            index = nl.add_bridge("br0")
            nl.add_addr(index, "10.1.0.2/16")
            nl.add_addr(index, "fd00:1::2/64")
            for _ in range(2):  # the second round meets EEXIST, which is fine
                nl.add_route("default", gateway="10.1.0.1", oif=index)
                nl.add_route("::/0", gateway="fd00:1::1", oif=index)
                nl.add_route("10.9.0.0/16", gateway="10.1.0.1", metric=50)
                nl.add_route("10.8.0.0/16", oif=index)  # no gateway: scope link
            routes = nl.routes()
            v4 = nl.routes(socket.AF_INET)
            local = nl.routes(socket.AF_INET, table=255)
            missing_table = nl.routes(table=1234)
            with IPRoute() as ipr:
                kernel = sorted((x["family"], x.get_attr("RTA_DST") or "default", x.get_attr("RTA_GATEWAY") or "")
                                for x in ipr.get_routes(table=254))
            deleted = [nl.del_route("10.9.0.0/16"), nl.del_route("10.9.0.0/16")]
        result = {"routes": routes, "v4": v4, "local": local, "missing_table": missing_table,
                  "kernel": kernel, "deleted": deleted}
    """)
    got = {(x["family"], x["dst"], x["gateway"]) for x in r["routes"]}
    assert (2, "0.0.0.0/0", "10.1.0.1") in got
    assert (10, "::/0", "fd00:1::1") in got
    assert sum(1 for x in r["routes"] if x["dst"] == "0.0.0.0/0") == 1
    assert len(r["routes"]) == len(r["kernel"])  # same table as the kernel holds, per pyroute2
    assert {(f, "default" if d in ("0.0.0.0/0", "::/0") else d.split("/")[0], g) for f, d, g in got} == {
        (f, d, g) for f, d, g in r["kernel"]}
    link_route = next(x for x in r["routes"] if x["dst"] == "10.8.0.0/16")
    assert link_route["scope"] == 253 and link_route["gateway"] == ""
    assert next(x for x in r["routes"] if x["dst"] == "10.9.0.0/16")["metric"] == 50
    assert all(x["family"] == 2 and x["table"] == 254 for x in r["v4"])
    assert r["local"] and all(x["table"] == 255 for x in r["local"])
    assert r["missing_table"] == []
    assert r["deleted"] == [True, False]


def test_set_link_renames_changes_mtu_mac_master_and_state():
    r = in_throwaway_ns("""
        with Netlink() as nl:
            bridge = nl.add_bridge("br0", mac="02:00:00:00:00:01")
            index = nl.add_veth("va", "vb", up=False)
            nl.set_link("va", name="vc", mtu=1300, mac="02:00:00:00:00:0c", master=bridge, up=True)
            changed = nl.link(index)
            nl.set_link(index, master=0, up=False)
            released = nl.link("vc")
            bridge_mac = nl.link(bridge).mac
        result = {"changed": changed, "released": released, "bridge_mac": bridge_mac}
    """)
    c = r["changed"]
    assert (c["name"], c["mtu"], c["mac"], c["up"]) == ("vc", 1300, "02:00:00:00:00:0c", True)
    assert c["master"] != 0
    assert r["released"]["master"] == 0 and not r["released"]["up"]
    assert r["bridge_mac"] == "02:00:00:00:00:01"  # a fixed MAC does not follow the ports


def test_index_of_answers_from_the_sockets_namespace():
    r = in_throwaway_ns("""
        netns.create("/run/t/ns1")
        with Netlink("/run/t/ns1") as inside, Netlink() as here:
            index = inside.add_bridge("br-inside")
            result = {"index": index, "inside": inside.index_of("br-inside"), "here": here.index_of("br-inside"),
                      "lo": inside.index_of("lo"), "ghost": inside.index_of("ghost")}
    """)
    assert r["inside"] == r["index"] and r["lo"] == 1
    assert r["here"] is None and r["ghost"] is None  # the calling thread's namespace does not have it


def test_a_batch_applies_every_request_in_order_and_raises_the_first_refusal_after_all():
    r = in_throwaway_ns("""
        with Netlink() as nl:
            index = nl.add_bridge("nc-b", up=False)
            with nl.batch() as batch:
                batch.add_addr(index, "10.1.0.1/24")
                batch.add_addr(index, "10.1.0.1/24")  # already there: fine, as add_addr
                batch.add_addr(index, "fd00:1::1/64")
                batch.set_link(index, up=True)
            up = {"link": nl.link(index), "addrs": sorted(a.address for a in nl.addrs(index) if a.family == 2),
                  "v6": sorted(a.address for a in nl.addrs(index) if a.family == 10 and not a.address.startswith("fe80"))}
            batch = nl.batch()
            batch.set_link(index, up=False)
            batch.del_addr(index, "10.9.9.9/24")  # never there: fine, as del_addr
            batch.set_link(99999, up=True)  # refused
            batch.del_addr(index, "10.1.0.1/24")  # still carried out
            batch.set_link(index, name="nc-renamed")  # renamed after the down, in the same write
            try:
                batch.commit()
                refusal = "no error"
            except NetlinkError as err:
                refusal = [type(err).__name__, err.errno, str(err)]
            after = {"link": nl.link(index), "addrs": [a.address for a in nl.addrs(index) if a.family == 2]}
            nl.set_link(index, up=True)  # the replies stayed in step: a plain request after it works
            again = nl.link("nc-renamed").up
        result = {"up": up, "refusal": refusal, "after": after, "again": again}
    """)
    assert r["up"]["link"]["up"] and r["up"]["addrs"] == ["10.1.0.1/24"] and r["up"]["v6"] == ["fd00:1::1/64"]
    assert r["refusal"] == ["NetlinkNotFound", 19, "cannot change link 99999: No such device"]
    assert r["after"]["link"]["name"] == "nc-renamed" and not r["after"]["link"]["up"]
    assert r["after"]["addrs"] == []
    assert r["again"]


def test_del_link_is_idempotent_and_takes_the_peer_along():
    r = in_throwaway_ns("""
        netns.create("/run/t/ns1")
        with Netlink() as nl, Netlink("/run/t/ns1") as inside:
            fd = netns.open_fd("/run/t/ns1")
            index = nl.add_veth("nv1", "eth0", peer_netns_fd=fd)
            os.close(fd)
            first, again, by_index = nl.del_link("nv1"), nl.del_link("nv1"), nl.del_link(index)
            peer_left = inside.link("eth0")
            try:
                nl.del_link("nv1", missing_ok=False)
                strict = "no error"
            except NotFound as err:
                strict = [type(err).__name__, err.errno, str(err)]
        result = {"first": first, "again": again, "by_index": by_index, "peer_left": peer_left, "strict": strict}
    """)
    assert (r["first"], r["again"], r["by_index"]) == (True, False, False)
    assert r["peer_left"] is None
    assert r["strict"] == ["NetlinkNotFound", 19, "cannot delete link nv1: No such device"]


def test_errors_name_the_operation_and_the_object():
    r = in_throwaway_ns("""
        netns.create("/run/t/ns1")
        def attempt(fn):
            try:
                fn()
                return "no error"
            except (NetlinkError, InvalidArgument) as err:
                return {"type": type(err).__name__, "errno": getattr(err, "errno", None), "message": str(err),
                        "already_exists": isinstance(err, AlreadyExists), "not_found": isinstance(err, NotFound)}
        with Netlink() as nl:
            fd = netns.open_fd("/run/t/ns1")
            nl.add_veth("nv1", "eth0", peer_netns_fd=fd)
            result = {
                "exists": attempt(lambda: nl.add_veth("nv1", "eth1")),
                "peer_exists": attempt(lambda: nl.add_veth("nv2", "eth0", peer_netns_fd=fd)),
                "missing": attempt(lambda: nl.set_link("ghost", up=True)),
                "missing_addr": attempt(lambda: nl.add_addr(999, "10.0.0.1/24")),
                "gateway": attempt(lambda: nl.add_route("10.5.0.0/16", gateway="10.99.99.99")),
                "long_name": attempt(lambda: nl.add_bridge("a-name-far-too-long")),
                "bad_cidr": attempt(lambda: nl.add_addr(1, "10.0.0.1/33")),
                "bad_mac": attempt(lambda: nl.add_veth("nv3", "eth3", peer_mac="02:42")),
                "lookup_missing": nl.link("ghost"),
                "survivor": nl.link("nv2"),  # the failed create left nothing behind
            }
            os.close(fd)
    """)
    assert r["exists"]["message"] == "cannot create veth nv1 (peer eth1): File exists"
    assert r["exists"]["errno"] == 17 and r["exists"]["already_exists"]
    assert r["peer_exists"]["message"].startswith("cannot create veth nv2 (peer eth0): File exists")
    assert r["missing"] == {"type": "NetlinkNotFound", "errno": 19, "message": "cannot change link ghost: No such device",
                            "already_exists": False, "not_found": True}
    assert r["missing_addr"]["message"].startswith("cannot add address 10.0.0.1/24 to link 999: No such device")
    assert r["gateway"]["errno"] == 101  # ENETUNREACH, with the kernel's own reason appended
    assert r["gateway"]["message"].startswith("cannot add route 10.5.0.0/16 via 10.99.99.99: Network is unreachable (")
    assert r["long_name"]["type"] == "InvalidArgument" and "a-name-far-too-long" in r["long_name"]["message"]
    assert r["bad_cidr"]["type"] == "InvalidArgument" and "prefix length" in r["bad_cidr"]["message"]
    assert r["bad_mac"]["type"] == "InvalidArgument"
    assert r["lookup_missing"] is None
    assert r["survivor"] is None


def test_dumps_span_many_datagrams_and_match_pyroute2():
    r = in_throwaway_ns("""
        from pyroute2 import IPRoute
        with Netlink() as nl:
            nl.set_link("lo", up=True)
            for i in range(150):  # 300 links: several multipart datagrams
                index = nl.add_veth(f"va{i}", f"vb{i}")
                nl.add_addr(index, f"10.{i // 200}.{i % 200}.1/24")
            ours = sorted((l.index, l.name, l.kind, l.mtu, l.mac) for l in nl.links())
            our_addrs = sorted(a.address for a in nl.addrs() if a.family == socket.AF_INET)
            our_routes = len(nl.routes(socket.AF_INET))
            with IPRoute() as ipr:
                kernel = sorted((l["index"], l.get_attr("IFLA_IFNAME"),
                                 (l.get_attr("IFLA_LINKINFO") or {"attrs": []}) and
                                 (l.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or ""),
                                 l.get_attr("IFLA_MTU"), l.get_attr("IFLA_ADDRESS")) for l in ipr.get_links())
                kernel_addrs = sorted(f"{a.get_attr('IFA_LOCAL')}/{a['prefixlen']}" for a in ipr.get_addr(family=socket.AF_INET))
                kernel_routes = len(ipr.get_routes(family=socket.AF_INET, table=254))
        result = {"ours": ours, "kernel": kernel, "our_addrs": our_addrs, "kernel_addrs": kernel_addrs,
                  "routes": [our_routes, kernel_routes]}
    """)
    assert len(r["ours"]) == 301
    assert r["ours"] == [list(x) for x in r["kernel"]]
    assert len(r["our_addrs"]) == 151 and r["our_addrs"] == r["kernel_addrs"]
    assert r["routes"][0] == r["routes"][1] == 150


def test_hairpin_on_a_bridge_port():
    r = in_throwaway_ns("""
        with Netlink() as nl:
            bridge = nl.add_bridge("br0")
            port = nl.add_veth("va", "vb", master=bridge)
            nl.set_bridge_port(port, hairpin=True)
            on = ipj("-d", "link", "show", "va")[0]["linkinfo"]["info_slave_data"]["hairpin"]
            nl.set_bridge_port(port, hairpin=False)
            off = ipj("-d", "link", "show", "va")[0]["linkinfo"]["info_slave_data"]["hairpin"]
        result = [on, off]
    """)
    assert r == [True, False]


def test_vxlan_fdb_and_neighbour_entries():
    r = in_throwaway_ns("""
        with Netlink() as nl:
            underlay = nl.add_veth("ul0", "ul1", up=True)
            nl.add_addr(underlay, "192.168.50.1/24")
            bridge = nl.add_bridge("br0")
            vx = nl.add_vxlan("nx-1", 4242, local="192.168.50.1", dev=underlay, mtu=1450, up=True)
            nl.set_link(vx, master=bridge)
            info = ipj("-d", "link", "show", "nx-1")[0]
            nl.fdb_replace(vx, "02:42:0a:00:00:05", "192.168.50.2")
            nl.fdb_replace(vx, "02:42:0a:00:00:05", "192.168.50.3")  # replace, not a second entry
            fdb = [f for f in nl.fdbs(vx) if f.ip]
            bridge_fdb = json.loads(sh("bridge", "-j", "fdb", "show", "dev", "nx-1"))
            nl.neigh_replace(bridge, "10.0.0.5", "02:42:0a:00:00:05")
            nl.neigh_replace(bridge, "fd00::5", "02:42:0a:00:00:05")
            neighs = [(n.ip, n.mac, n.state) for n in nl.neighs(bridge) if n.mac.startswith("02:42")]
            deleted = [nl.fdb_del(vx, "02:42:0a:00:00:05"), nl.fdb_del(vx, "02:42:0a:00:00:05"),
                       nl.neigh_del(bridge, "10.0.0.5"), nl.neigh_del(bridge, "10.0.0.5")]
            left = [f for f in nl.fdbs(vx) if f.ip] + [n for n in nl.neighs(bridge, socket.AF_INET) if n.mac.startswith("02:42")]
        result = {"info": info["linkinfo"], "mtu": info["mtu"], "fdb": fdb, "bridge_fdb": bridge_fdb,
                  "neighs": neighs, "deleted": deleted, "left": left}
    """)
    data = r["info"]["info_data"]
    assert r["info"]["info_kind"] == "vxlan" and r["mtu"] == 1450
    assert (data["id"], data["local"], data["port"], data["learning"]) == (4242, "192.168.50.1", 4789, False)
    assert [(f["mac"], f["ip"], f["state"], f["flags"]) for f in r["fdb"]] == [("02:42:0a:00:00:05", "192.168.50.3", 0x80, 2)]
    assert any(e["mac"] == "02:42:0a:00:00:05" and e.get("dst") == "192.168.50.3" for e in r["bridge_fdb"])
    assert sorted(map(tuple, r["neighs"])) == [("10.0.0.5", "02:42:0a:00:00:05", 0x80), ("fd00::5", "02:42:0a:00:00:05", 0x80)]
    assert r["deleted"] == [True, False, True, False]
    assert r["left"] == []
