"""The segment of one overlay network on one host: its network namespace (ROOT/overlay/<network id>)
with a Linux bridge (`no-<id>`) and one VXLAN device (`nx-<id>`) as a port, created in that namespace
while its UDP socket stays in the host's. Built, checked and removed here; the names and parameters
of its devices derive from the network's driver_state.

Separate from the driver (drivers/overlay.py), which decides when a segment is built (under its lock,
with rollback) and joins endpoints to it, and from the forwarding tables (drivers/overlay_tables.py),
which change all the time on a segment built once.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from libnetwork import netns, sysctl
from libnetwork.errors import InvalidArgument, NotFound

if TYPE_CHECKING:
    from libnetwork.model import Network
    from libnetwork.netlink import Netlink

BRIDGE_PREFIX = "no-"  # not "nc-"/"nv": the bridge driver claims those names as its own
VXLAN_PREFIX = "nx-"
IFNAMSIZ = 15
DEFAULT_PORT = 4789  # IANA; Linux's own default is 8472, which clashes with flannel and VMware NSX


def bridge_name(network: "Network") -> str:
    return network.driver_state["bridge"]


def vxlan_name(network: "Network") -> str:
    return network.driver_state["vxlan"]


def network_vni(network: "Network") -> int:
    text = network.driver_state.get("vni", "")
    if not text.isdigit():
        raise InvalidArgument(
            f"overlay network '{network.name}' has no VNI; allocate one in the global store before planning it"
        )
    return int(text)


def network_port(network: "Network") -> int:
    return int(network.driver_state.get("port") or network.options.get("port") or DEFAULT_PORT)

def build(path: str, network: "Network", host: "Netlink", vtep: str) -> int:
    """The bridge and the VXLAN device inside the (new, empty) namespace at `path`, both up; returns
    the VXLAN device's index there. The caller removes the segment if this fails."""
    from libnetwork.netlink import Netlink

    skip_bridge_netfilter(path)
    with Netlink(path) as inside:
        bridge = inside.add_bridge(bridge_name(network), mtu=network.mtu, up=False)
        # No IPv6 on the bridge: no link-local address, no router solicitation or MLD report
        # sent into the segment.
        sysctl.write(f"net.ipv6.conf.{bridge_name(network)}.disable_ipv6", "1", netns_path=path)
        fd = netns.open_fd(path)
        try:
            host.add_vxlan(vxlan_name(network), network_vni(network), local=vtep, port=network_port(network),
                           learning=False, proxy=True, mtu=network.mtu, netns_fd=fd)
        finally:
            os.close(fd)
        # The VXLAN device keeps IPv6 (its ND proxy needs IPv6 neighbour entries, which a device
        # with IPv6 disabled refuses) but gets no address of its own.
        sysctl.write(f"net.ipv6.conf.{vxlan_name(network)}.addr_gen_mode", "1", netns_path=path)
        vxlan = inside.link(vxlan_name(network))
        if vxlan is None:
            raise NotFound(f"VXLAN device {vxlan_name(network)} vanished right after creation")
        inside.set_link(vxlan.index, master=bridge, up=True)
        inside.set_link(bridge, up=True)
    return vxlan.index


def skip_bridge_netfilter(path: str) -> None:
    """Nothing filters inside a network's namespace, but with br_netfilter loaded (Docker and many
    hosts load it) every bridged frame would still take a detour through the IP hooks: ~10 % of
    the throughput on our machines. The sysctls exist only while br_netfilter is loaded."""
    for family in ("iptables", "ip6tables", "arptables"):
        try:
            sysctl.write(f"net.bridge.bridge-nf-call-{family}", "0", netns_path=path)
        except NotFound:
            return


def remove(path: str, network: "Network") -> None:
    """The segment gone (idempotent)."""
    from libnetwork.netlink import Netlink

    if netns.is_netns(path):
        # Delete the devices first: a namespace is torn down asynchronously once its last handle
        # goes, and the VXLAN device's UDP socket should be gone when we return.
        with Netlink(path) as inside:
            inside.del_link(vxlan_name(network), missing_ok=True)
            inside.del_link(bridge_name(network), missing_ok=True)
    netns.delete(path)


def present(path: str, network: "Network") -> bool:
    """The segment is whole and up: the bridge, the VXLAN device as its port, both up."""
    from libnetwork.netlink import Netlink

    if not netns.is_netns(path):
        return False
    with Netlink(path) as inside:
        bridge, vxlan = inside.link(bridge_name(network)), inside.link(vxlan_name(network))
    return (bridge is not None and bridge.kind == "bridge" and vxlan is not None and vxlan.kind == "vxlan"
            and vxlan.master == bridge.index and vxlan.up and bridge.up)
