"""netctl-bridge, netctl-null and netctl-ipam against the real kernel (cni-conformance.md A4-A10, A13):
each plugin runs as a subprocess the way libcni runs it, inside a throwaway host."""

from __future__ import annotations

import json
import re

import pytest

from cni.helpers import bridge_conf, with_prev

pytestmark = pytest.mark.kernel

MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def test_add_then_del(cni):
    # What libcni leaves in (A2-15): capabilities, args, unknown keys; none of it may disturb ADD.
    conf = bridge_conf("t1", "10.99.0.0/24", capabilities={"portMappings": True}, unknownKey={"x": [1]},
                       args={"cni": {"labels": [{"key": "app", "value": "web"}]}})
    result = cni.add(conf, "c1")
    ns = cni.netns_path("c1")
    assert result["cniVersion"] == "1.1.0"
    bridge, host_veth, container = result["interfaces"]
    assert bridge["name"] == "cni-t1" and container == {"name": "eth0", "mac": container["mac"], "mtu": 1500, "sandbox": ns}
    assert all(MAC.match(i["mac"]) for i in result["interfaces"])
    assert result["ips"] == [{"address": "10.99.0.2/24", "gateway": "10.99.0.1", "interface": 2}]
    assert result["routes"] == [{"dst": "0.0.0.0/0"}]
    assert cni.addresses("c1") == ["10.99.0.2/24"]
    assert "default via 10.99.0.1 dev eth0" in cni.inside("c1", "ip", "route").stdout
    links = cni.links()
    assert links[host_veth["name"]]["master"] == "cni-t1" and links["cni-t1"]["address"] == bridge["mac"]
    assert cni.links("c1")["eth0"]["address"] == container["mac"]

    # the attachment is an ordinary netctl endpoint
    [entry] = cni.inspect("t1")["Containers"].values()
    assert (entry["Name"], entry["IPv4Address"], entry["HostInterface"]) == ("c1", "10.99.0.2/24", host_veth["name"])

    cni.add(conf, "c2")
    assert cni.ping("c1", "10.99.0.3")

    cni.delete(with_prev(conf, result), "c1")
    # The host's agent (started by the first ADD) serves the DEL and deletes the veth in the background.
    assert "eth0" not in cni.links("c1") and cni.wait_links_gone({host_veth["name"]}) == set()
    assert cni.endpoint_addresses() == ["10.99.0.3/24"]
    assert [e["Name"] for e in cni.inspect("t1")["Containers"].values()] == ["c2"]
    cni.delete(conf, "c1")  # again: still success, nothing printed
    cni.delete(conf, "c2")
    assert cni.endpoint_addresses() == [] and cni.sandboxes() == []
    assert "cni-t1" in cni.links()  # the network (and its bridge) stays, as the reference bridge does


@pytest.mark.parametrize("version", ["1.0.0", "0.4.0", "0.3.1", "0.3.0", "0.2.0", "0.1.0", None])
def test_result_shape_follows_the_request_version(cni, version):
    conf = bridge_conf("t2", "10.98.0.0/24", version=version or "x")
    if version is None:
        del conf["cniVersion"]  # spec: that is 0.1.0
    result = cni.add(conf, "v")
    assert result["cniVersion"] == (version or "0.1.0")
    if version in ("0.2.0", "0.1.0", None):
        assert result["ip4"] == {"ip": "10.98.0.2/24", "gateway": "10.98.0.1", "routes": [{"dst": "0.0.0.0/0"}]}
        assert "ips" not in result and "interfaces" not in result
    else:
        [ip] = result["ips"]
        assert ip.get("version") == ("4" if version != "1.0.0" else None)
        assert "mtu" not in result["interfaces"][2]  # a 1.1.0 field
    cni.delete(conf, "v")
    assert cni.endpoint_addresses() == []


def test_del_succeeds_whatever_is_already_gone(cni):
    conf = bridge_conf("t3", "10.97.0.0/24")
    cni.delete(conf, "never-added", netns="")
    cni.delete(conf, "never-added", netns="/run/netns/no-such-namespace")
    cni.add(conf, "gone")
    cni.drop_netns("gone")  # the runtime removed the namespace first
    cni.delete(conf, "gone")
    assert cni.endpoint_addresses() == [] and cni.sandboxes() == []
    cni.add(conf, "empty-ns")
    cni.delete(conf, "empty-ns", netns="")  # CNI_NETNS is optional for DEL
    assert cni.endpoint_addresses() == []
    assert cni.wait_links_gone({n for n in cni.links() if n.startswith("nv")}) == set()


def test_add_refuses_an_interface_name_already_in_the_container(cni):
    conf = bridge_conf("t4", "10.96.0.0/24")
    ns = cni.netns("busy")
    cni.host.run("ip", "-n", "busy", "link", "add", "eth0", "type", "veth", "peer", "name", "other")
    error = cni.run("netctl-bridge", "ADD", conf, cid="busy", netns=ns, ifname="eth0").error()
    assert "exists" in error["msg"]
    assert cni.endpoint_addresses() == [] and cni.sandboxes() == []
    assert not [n for n in cni.links() if n.startswith("nv")]
    assert cni.inspect("t4") is None  # the network this failed ADD created went with it


def test_check(cni):
    conf = bridge_conf("t5", "10.95.0.0/24")
    result = cni.add(conf, "c1")
    ns = cni.netns_path("c1")
    reply = cni.run("netctl-bridge", "CHECK", with_prev(conf, result), cid="c1", netns=ns, ifname="eth0")
    assert reply.ok and reply.stdout == ""
    error = cni.run("netctl-bridge", "CHECK", conf, cid="c1", netns=ns, ifname="eth0").error()
    assert (error["code"], error["msg"]) == (999, "Required prevResult missing")
    wrong_mac = json.loads(json.dumps(result))
    wrong_mac["interfaces"][2]["mac"] = "02:00:00:00:00:99"
    assert "MAC" in cni.run("netctl-bridge", "CHECK", with_prev(conf, wrong_mac), cid="c1", netns=ns, ifname="eth0").error()["msg"]
    cni.inside("c1", "ip", "addr", "flush", "dev", "eth0")
    assert "missing" in cni.run("netctl-bridge", "CHECK", with_prev(conf, result), cid="c1", netns=ns, ifname="eth0").error()["msg"]
    cni.delete(conf, "c1")
    assert cni.run("netctl-bridge", "CHECK", with_prev(conf, result), cid="c1", netns=ns, ifname="eth0").error()["code"] == 999


def test_runtime_config_and_cni_args(cni):
    conf = bridge_conf("t6", "10.94.0.0/24", capabilities={"ips": True, "mac": True, "portMappings": True})
    conf["runtimeConfig"] = {"ips": ["10.94.0.50/24"], "mac": "02:11:22:33:44:55",
                             "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
    result = cni.add(conf, "rc", args="IgnoreUnknown=1;K8S_POD_NAME=web;K8S_POD_NAMESPACE=default")
    assert result["ips"][0]["address"] == "10.94.0.50/24" and result["interfaces"][2]["mac"] == "02:11:22:33:44:55"
    assert cni.links("rc")["eth0"]["address"] == "02:11:22:33:44:55"
    [entry] = cni.inspect("t6")["Containers"].values()
    assert entry["Ports"] == ["8080->80/tcp"]
    assert "dport 8080" in cni.host.run("nft", "list", "table", "inet", "netctl").stdout
    cni.delete(conf, "rc")
    assert "dport 8080" not in cni.host.run("nft", "list", "ruleset").stdout  # (its tables too: t6 is empty)

    plain = bridge_conf("t6", "10.94.0.0/24")
    result = cni.add(plain, "args", args="IgnoreUnknown=1;IP=10.94.0.60;MAC=02:aa:bb:cc:dd:ee;K8S_POD_NAME=x")
    assert result["ips"][0]["address"] == "10.94.0.60/24" and result["interfaces"][2]["mac"] == "02:aa:bb:cc:dd:ee"
    cni.delete(plain, "args")
    # CONVENTIONS.md: the same key in args and CNI_ARGS -> args wins
    both = dict(plain, args={"cni": {"ips": ["10.94.0.70"]}})
    assert cni.add(both, "both", args="IP=10.94.0.71")["ips"][0]["address"] == "10.94.0.70/24"
    cni.delete(both, "both")
    error = cni.run("netctl-bridge", "ADD", plain, cid="out", netns=cni.netns("out"), ifname="eth0", args="IP=10.1.0.5").error()
    assert "outside" in error["msg"]
    assert cni.endpoint_addresses() == []


def test_chained_after_another_plugin_the_previous_result_is_kept(cni):
    conf = bridge_conf("t7", "10.93.0.0/24")
    earlier = {"cniVersion": "1.1.0", "interfaces": [{"name": "tap0", "mac": "02:00:00:00:00:01"}],
               "ips": [{"address": "192.0.2.5/24", "interface": 0}], "routes": [{"dst": "192.0.2.0/24"}],
               "dns": {"nameservers": ["192.0.2.53"]}}
    result = cni.add(with_prev(conf, earlier), "chain")
    assert [i["name"] for i in result["interfaces"]][0] == "tap0" and len(result["interfaces"]) == 4
    assert result["ips"] == [earlier["ips"][0], {"address": "10.93.0.2/24", "gateway": "10.93.0.1", "interface": 3}]
    assert result["routes"][0] == {"dst": "192.0.2.0/24"} and result["dns"] == earlier["dns"]
    cni.delete(with_prev(conf, result), "chain")
    # A6-40: a prevResult of an older version, or without cniVersion (taken as the config's), is converted
    legacy = {"cniVersion": "0.2.0", "ip4": {"ip": "192.0.2.5/24", "gateway": "192.0.2.1", "routes": [{"dst": "0.0.0.0/0"}]}}
    converted = cni.add(with_prev(conf, legacy), "chain")
    assert converted["ips"][0] == {"address": "192.0.2.5/24", "gateway": "192.0.2.1"}
    cni.delete(conf, "chain")
    unversioned = {k: v for k, v in earlier.items() if k != "cniVersion"}
    assert cni.add(with_prev(conf, unversioned), "chain")["interfaces"][0]["name"] == "tap0"
    cni.delete(conf, "chain")
    # netctl-null as a later plugin passes the result on unchanged (like loopback)
    null = {"cniVersion": "1.1.0", "name": "lo7", "type": "netctl-null", "prevResult": result}
    passed = cni.add(null, "chain", ifname="lo")
    assert {k: passed[k] for k in ("interfaces", "ips", "routes")} == {k: result[k] for k in ("interfaces", "ips", "routes")}
    cni.delete(null, "chain", ifname="lo")


def test_gc_removes_what_the_runtime_no_longer_lists(cni):
    conf = bridge_conf("t8", "10.92.0.0/24")
    for cid in ("keep", "drop"):
        cni.add(conf, cid)
    error = cni.run("netctl-bridge", "GC", conf).error()
    assert error["code"] == 7  # no list at all: refused, never read as "nothing is valid"
    gc = dict(conf, **{"cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]})
    reply = cni.run("netctl-bridge", "GC", gc)
    assert reply.ok and reply.stdout == ""
    assert cni.endpoint_addresses() == ["10.92.0.2/24"]
    assert "eth0" not in cni.links("drop") and "eth0" in cni.links("keep")
    legacy = dict(conf, **{"cni.dev/attachments": []})  # libcni >= 1.2.3 sends the old key too
    assert cni.run("netctl-bridge", "GC", legacy).ok
    assert cni.endpoint_addresses() == [] and cni.sandboxes() == []


def test_status_reports_an_exhausted_pool(cni):
    conf = bridge_conf("t9", "10.91.0.0/30")  # room for the gateway and one container
    assert cni.run("netctl-bridge", "STATUS", conf).ok
    cni.add(conf, "only")
    error = cni.run("netctl-bridge", "STATUS", conf).error()
    assert error["code"] == 50
    assert cni.run("netctl-bridge", "ADD", conf, cid="more", netns=cni.netns("more"), ifname="eth0").error()["code"] == 999
    cni.delete(conf, "only")
    assert cni.run("netctl-bridge", "STATUS", conf).ok


def test_a_cni_network_keeps_its_settings(cni):
    cni.add(bridge_conf("t10", "10.90.0.0/24"), "a")
    error = cni.run("netctl-bridge", "ADD", bridge_conf("t10", "10.90.1.0/24"), cid="b", netns=cni.netns("b"),
                    ifname="eth0").error()
    assert error["code"] == 7 and "10.90.1.0/24" in error["msg"]
    error = cni.run("netctl-bridge", "ADD", bridge_conf("t10", "10.90.0.0/24", ipMasq=True), cid="b",
                    netns=cni.netns("b"), ifname="eth0").error()
    assert "masquerade" in error["msg"]


def test_dual_stack_ranges_and_limits(cni):
    conf = bridge_conf("t11", "10.89.0.0/24", mtu=1400, hairpinMode=True)
    conf["ipam"]["ranges"] = [[{"subnet": "10.89.0.0/24", "rangeStart": "10.89.0.10", "rangeEnd": "10.89.0.11"}],
                              [{"subnet": "fd00:89::/64"}]]
    first = cni.add(conf, "a")
    assert [ip["address"] for ip in first["ips"]] == ["10.89.0.10/24", "fd00:89::2/64"]
    assert [ip["address"] for ip in cni.add(conf, "b")["ips"]] == ["10.89.0.11/24", "fd00:89::3/64"]
    error = cni.run("netctl-bridge", "ADD", conf, cid="c", netns=cni.netns("c"), ifname="eth0").error()
    assert "exhausted" in error["msg"]
    assert cni.links("a")["eth0"]["mtu"] == 1400
    port = json.loads(cni.host.run("bridge", "-j", "-d", "link", "show", "dev", first["interfaces"][1]["name"]).stdout)[0]
    assert port["hairpin"] is True
    assert cni.ping("a", "fd00:89::3")


def test_namespace_paths_are_opaque(cni):
    conf = bridge_conf("t12", "10.88.0.0/24")
    cni.host.run("touch", "/run/ns-file")
    cni.host.run("unshare", "--net=/run/ns-file", "true")  # a bind-mounted handle outside /run/netns
    cni.add(conf, "file", netns="/run/ns-file")
    sleeper = cni.host.popen("unshare", "--net", "sleep", "60")
    pid = cni.host.run("sh", "-c", "for i in $(seq 50); do p=$(pgrep -x sleep) && break; sleep 0.1; done; echo $p").stdout.strip()
    cni.add(conf, "proc", netns=f"/proc/{pid}/ns/net")
    assert "10.88.0.3/24" in cni.host.run("nsenter", f"--net=/proc/{pid}/ns/net", "ip", "addr").stdout
    cni.delete(conf, "file", netns="/run/ns-file")
    cni.delete(conf, "proc", netns=f"/proc/{pid}/ns/net")
    sleeper.kill()
    assert cni.endpoint_addresses() == []


def test_dns_from_the_config_or_the_ipam(cni):
    cni.host.run("sh", "-c", "printf 'nameserver 10.87.0.53\\nsearch a.example b.example\\noptions ndots:2\\n' > /run/resolv.test")
    conf = bridge_conf("t13", "10.87.0.0/24")
    conf["ipam"]["resolvConf"] = "/run/resolv.test"
    assert cni.add(conf, "a")["dns"] == {"nameservers": ["10.87.0.53"], "search": ["a.example", "b.example"],
                                        "options": ["ndots:2"]}
    conf["dns"] = {"nameservers": ["10.87.0.1"]}
    assert cni.add(conf, "b")["dns"] == {"nameservers": ["10.87.0.1"]}


def test_netctl_null(cni):
    conf = {"cniVersion": "0.3.1", "name": "loopback", "type": "netctl-null"}
    ns = cni.netns("lo1")
    result = cni.add(conf, "lo1", ifname="lo")
    assert result["interfaces"] == [{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": ns}]
    assert result["ips"] == [{"address": "127.0.0.1/8", "interface": 0, "version": "4"},
                             {"address": "::1/128", "interface": 0, "version": "6"}]
    assert "UP" in cni.links("lo1")["lo"]["flags"]
    assert cni.inspect("loopback")["Driver"] == "null" and len(cni.inspect("loopback")["Containers"]) == 1
    check = dict(conf, cniVersion="0.4.0", prevResult=result)
    assert cni.run("netctl-null", "CHECK", check, cid="lo1", netns=ns, ifname="lo").ok
    cni.delete(conf, "lo1", ifname="lo")
    assert "UP" not in cni.links("lo1")["lo"]["flags"]
    assert cni.run("netctl-null", "CHECK", check, cid="lo1", netns=ns, ifname="lo").error()["code"] == 999
    assert cni.inspect("loopback")["Containers"] == {}


def test_netctl_ipam_alone(cni):
    conf = {"cniVersion": "1.0.0", "name": "t14", "type": "whatever",
            "ipam": {"type": "netctl-ipam", "ranges": [[{"subnet": "10.86.0.0/24", "gateway": "10.86.0.254"}]],
                     "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.86.0.9"}]}}
    result = cni.add(conf, "i1", plugin="netctl-ipam")
    # spec §5, delegated plugins: no interfaces, no ips[].interface
    assert result == {"cniVersion": "1.0.0", "ips": [{"address": "10.86.0.1/24", "gateway": "10.86.0.254"}],
                      "routes": conf["ipam"]["routes"]}
    assert cni.links("i1") == {"lo": cni.links("i1")["lo"]}  # the IPAM configures nothing
    network = cni.inspect("t14")
    assert network["Driver"] == "external" and [c["IPv4Address"] for c in network["Containers"].values()] == ["10.86.0.1/24"]
    assert cni.run("netctl-ipam", "CHECK", dict(conf, prevResult=result), cid="i1", netns=cni.netns_path("i1"), ifname="eth0").ok
    error = cni.run("netctl-ipam", "ADD", conf, cid="i1", netns=cni.netns_path("i1"), ifname="eth0").error()
    assert "already" in error["msg"]  # host-local: duplicate allocation is not allowed
    cni.delete(conf, "i1", plugin="netctl-ipam")
    assert cni.run("netctl-ipam", "CHECK", dict(conf, prevResult=result), cid="i1", netns=cni.netns_path("i1"),
                   ifname="eth0").error()["code"] == 999
    assert cni.endpoint_addresses() == []


def test_one_container_on_two_networks(cni):
    blue, red = bridge_conf("blue", "10.85.0.0/24"), bridge_conf("red", "10.84.0.0/24")
    cni.add(blue, "c", ifname="eth0")
    cni.add(red, "c", ifname="eth1")
    assert sorted(cni.links("c")) == ["eth0", "eth1", "lo"]
    assert cni.sandboxes() == ["c"]
    cni.delete(blue, "c", ifname="eth1")  # wrong ifname for this network: nothing of blue's is touched
    assert cni.endpoint_addresses() == ["10.84.0.2/24", "10.85.0.2/24"]
    cni.delete(blue, "c", ifname="eth0")
    assert cni.sandboxes() == ["c"] and cni.endpoint_addresses() == ["10.84.0.2/24"]
    cni.delete(red, "c", ifname="eth1")
    assert cni.sandboxes() == [] and cni.endpoint_addresses() == []


def test_a_container_restarted_without_del_replaces_its_stale_records(cni):
    """A crash or a reboot skips DEL; the runtime then ADDs the same id in a new namespace."""
    conf = bridge_conf("t17", "10.83.0.0/24")
    cni.add(conf, "same", netns=cni.netns("old"))
    cni.drop_netns("old")
    result = cni.add(conf, "same", netns=cni.netns("new"))
    assert result["ips"][0]["address"] == "10.83.0.3/24"
    assert cni.endpoint_addresses() == ["10.83.0.3/24"]
    live = bridge_conf("t18", "10.82.0.0/24")
    cni.add(live, "same", netns=cni.netns_path("new"), ifname="eth1")
    error = cni.run("netctl-bridge", "ADD", live, cid="same", netns=cni.netns("other"), ifname="eth1").error()
    assert "attached in network namespace" in error["msg"]  # still alive elsewhere: a conflict, not stale


def test_port_isolation_keeps_containers_apart(cni):
    conf = bridge_conf("t19", "10.81.0.0/24", portIsolation=True)
    cni.add(conf, "a")
    cni.add(conf, "b")
    assert cni.ping("a", "10.81.0.1")  # the gateway, yes
    assert not cni.ping("a", "10.81.0.3", tries=1)  # the neighbour, no
    assert cni.inspect("t19")["Options"]["icc"] == "false"
