"""Interop with Debian's containernetworking-plugins (1.1.1, /usr/lib/cni): IPAM delegation both ways
and a chain netctl-bridge -> portmap -> tuning, each run the way libcni runs a conflist (ADD in order
with the previous result; DEL in reverse order with the final one). DEL must clean up completely."""

from __future__ import annotations

import json
import os

import pytest

from cni.helpers import REFERENCE_DIR, with_prev

pytestmark = pytest.mark.kernel

DATA_DIR = "/run/cni-ipam"  # host-local's state, inside the throwaway host


@pytest.fixture(autouse=True)
def reference_plugins():
    for name in ("bridge", "host-local", "portmap", "tuning"):
        if not os.access(os.path.join(REFERENCE_DIR, name), os.X_OK):
            pytest.skip(f"{REFERENCE_DIR}/{name} missing: install containernetworking-plugins")


def host_local_files(cni, network: str) -> list[str]:
    done = cni.host.run("ls", f"{DATA_DIR}/{network}", check=False)
    return sorted(f for f in done.stdout.split() if f != "lock" and not f.startswith("last_reserved_ip"))


def test_host_local_under_netctl_bridge(cni):
    conf = {"cniVersion": "1.0.0", "name": "hl", "type": "netctl-bridge", "bridge": "cni-hl", "isGateway": True,
            "ipam": {"type": "host-local", "dataDir": DATA_DIR, "ranges": [[{"subnet": "10.70.0.0/24"}]],
                     "routes": [{"dst": "0.0.0.0/0"}]}}
    result = cni.add(conf, "a")
    assert result["ips"] == [{"address": "10.70.0.2/24", "gateway": "10.70.0.1", "interface": 2}]
    assert host_local_files(cni, "hl") == ["10.70.0.2"]
    assert cni.addresses("a") == ["10.70.0.2/24"]
    # netctl mirrors what host-local handed out: inspect shows it, netctl's IPAM will not reuse it
    assert [c["IPv4Address"] for c in cni.inspect("hl")["Containers"].values()] == ["10.70.0.2/24"]
    cni.add(conf, "b")
    assert cni.ping("a", "10.70.0.3")
    assert cni.run("netctl-bridge", "CHECK", with_prev(conf, result), cid="a", netns=cni.netns_path("a"), ifname="eth0").ok

    # A failure after the IPAM's ADD gives the address back to host-local (spec §4).
    cni.netns("busy")
    cni.host.run("ip", "-n", "busy", "link", "add", "eth0", "type", "veth", "peer", "name", "x")
    assert cni.run("netctl-bridge", "ADD", conf, cid="busy", netns=cni.netns_path("busy"), ifname="eth0").error()
    assert host_local_files(cni, "hl") == ["10.70.0.2", "10.70.0.3"]

    cni.delete(with_prev(conf, result), "a")
    cni.drop_netns("b")
    cni.delete(conf, "b")  # namespace already gone: host-local still releases (its DEL always runs)
    assert host_local_files(cni, "hl") == []
    assert cni.endpoint_addresses() == [] and cni.sandboxes() == []
    # a's veth: deleted by the agent in the background; b's: by the kernel with b's namespace, also later
    assert cni.wait_links_gone({n for n in cni.links() if n.startswith("nv")}) == set()


def test_netctl_ipam_under_the_reference_bridge(cni):
    conf = {"cniVersion": "1.0.0", "name": "ni", "type": "bridge", "bridge": "refbr0", "isGateway": True,
            "ipam": {"type": "netctl-ipam", "ranges": [[{"subnet": "10.71.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}}
    result = cni.add(conf, "a", plugin="bridge")
    assert result["ips"][0]["address"] == "10.71.0.2/24" and result["ips"][0]["gateway"] == "10.71.0.1"
    assert cni.addresses("a") == ["10.71.0.2/24"]
    cni.add(conf, "b", plugin="bridge")
    assert cni.ping("a", "10.71.0.3")
    network = cni.inspect("ni")
    assert network["Driver"] == "external"
    assert sorted(c["IPv4Address"] for c in network["Containers"].values()) == ["10.71.0.2/24", "10.71.0.3/24"]
    assert cni.run("bridge", "CHECK", with_prev(conf, result), cid="a", netns=cni.netns_path("a"), ifname="eth0").ok
    cni.delete(with_prev(conf, result), "a", plugin="bridge")
    cni.delete(conf, "b", plugin="bridge")
    assert cni.endpoint_addresses() == [] and cni.sandboxes() == []
    assert "eth0" not in cni.links("a")


def test_chain_netctl_bridge_portmap_tuning(cni):
    plugins = [
        {"type": "netctl-bridge", "bridge": "cni-chain", "isGateway": True,
         "ipam": {"type": "netctl-ipam", "ranges": [[{"subnet": "10.72.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.arp_notify": "1"}, "mtu": 1400},
    ]
    mappings = [{"hostPort": 8081, "containerPort": 80, "protocol": "tcp"}]

    def request(index: int, previous=None) -> dict:
        conf = dict(plugins[index], cniVersion="1.0.0", name="chain")
        if "capabilities" in conf:
            conf["runtimeConfig"] = {"portMappings": mappings}  # what libcni injects
        if previous is not None:
            conf["prevResult"] = previous
        return conf

    before = cni.host.run("iptables-save", "-t", "nat").stdout
    result = None
    for index, plugin in enumerate(plugins):
        result = cni.add(request(index, result), "ctr", plugin=plugin["type"])
    assert result["ips"][0]["address"] == "10.72.0.2/24"
    assert cni.links("ctr")["eth0"]["mtu"] == 1400
    assert cni.inside("ctr", "cat", "/proc/sys/net/ipv4/conf/eth0/arp_notify").stdout.strip() == "1"
    nat = cni.host.run("iptables-save", "-t", "nat").stdout
    assert "--dport 8081" in nat and "10.72.0.2:80" in nat

    for index in reversed(range(len(plugins))):
        cni.delete(request(index, result), "ctr", plugin=plugins[index]["type"])
    after = cni.host.run("iptables-save", "-t", "nat").stdout
    assert "8081" not in after and "CNI-DN-" not in after.replace(before, "")
    assert "eth0" not in cni.links("ctr")
    assert cni.endpoint_addresses() == [] and cni.sandboxes() == []
    assert cni.wait_links_gone({n for n in cni.links() if n.startswith("nv")}) == set()


FAKE_IPAM = """#!/bin/sh
# A delegated IPAM plugin that records what it was given and answers from a fixed script.
cat > "{log}/$CNI_COMMAND.stdin"
env | grep '^CNI_' | sort > "{log}/$CNI_COMMAND.env"
case "$CNI_COMMAND" in
  ADD) echo '{{"cniVersion":"1.0.0","ips":[{{"address":"10.73.0.9/24","gateway":"10.73.0.1"}}],"routes":[{{"dst":"10.74.0.0/16"}}]}}' ;;
  CHECK) echo '{{"code":42,"msg":"fake ipam says no","details":"on purpose"}}'; exit 1 ;;
esac
"""


def test_delegation_finds_the_first_plugin_in_cni_path_with_the_same_stdin(cni, tmp_path):
    """A1-10, A12-63..65, A11-62: first directory wins, same stdin and variables (but CNI_COMMAND),
    the IPAM's routes installed through the container interface, its errors passed on unchanged."""
    first, second, log = tmp_path / "first", tmp_path / "second", tmp_path / "log"
    for directory in (first, second, log):
        directory.mkdir()
    for directory, text in ((first, FAKE_IPAM.format(log=log)), (second, "#!/bin/sh\nexit 99\n")):
        (directory / "fake-ipam").write_text(text)
        (directory / "fake-ipam").chmod(0o755)
    conf = {"cniVersion": "1.0.0", "name": "fk", "type": "netctl-bridge", "bridge": "cni-fk", "ipam": {"type": "fake-ipam"}}
    path = f"{cni.plugin_dir}:{first}:{second}"
    result = cni.add(conf, "a", path=path, args="IgnoreUnknown=1;K8S_POD_NAME=a")
    assert result["ips"] == [{"address": "10.73.0.9/24", "gateway": "10.73.0.1", "interface": 2}]
    # the IPAM's route, and the default route netctl's bridge driver gives a container that has none
    assert result["routes"] == [{"dst": "10.74.0.0/16"}, {"dst": "0.0.0.0/0", "gw": "10.73.0.1"}]
    assert "10.74.0.0/16 via 10.73.0.1 dev eth0" in cni.inside("a", "ip", "route").stdout
    assert json.loads((log / "ADD.stdin").read_text()) == conf
    env = dict(line.split("=", 1) for line in (log / "ADD.env").read_text().splitlines())
    assert env["CNI_CONTAINERID"] == "a" and env["CNI_ARGS"] == "IgnoreUnknown=1;K8S_POD_NAME=a" and env["CNI_PATH"] == path
    error = cni.run("netctl-bridge", "CHECK", with_prev(conf, result), cid="a", netns=cni.netns_path("a"), ifname="eth0",
                    path=path).error()
    assert error == {"cniVersion": "1.0.0", "code": 42, "msg": "fake ipam says no", "details": "on purpose"}
    cni.delete(conf, "a", path=path)
    assert (log / "DEL.stdin").exists()
    assert cni.endpoint_addresses() == []
