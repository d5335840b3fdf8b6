"""The lab's wiring: a switch namespace with one bridge per underlay, one namespace per host.

    switch namespace:  bridge ul-<underlay> (address .254: etcd) ── sw-h1 ──veth── eth0 198.18.0.1  host h1
                                                                ── sw-h2 ──veth── eth0 198.18.0.2  host h2

Every namespace is bound under the lab directory (ROOT/labs/<name>/netns/), never /run/netns. Each
veth pair is created from inside the switch namespace with its peer born inside the host's, so no link
ever exists in the caller's namespace, not even for a moment. With several underlays the switch routes
between them (ip_forward in the switch namespace only) and each host gets a route to the others via
its switch address. Cutting a host's link sets its switch port down; restoring sets it up.
"""

from __future__ import annotations

import os

from libnetwork.errors import KernelError
from netctl.lab.model import Topology

SWITCH = "switch"


class Fabric:
    """Namespaces and links of one lab (paths only until build/connect are called)."""

    def __init__(self, lab_dir: str):
        self.netns_dir = os.path.join(lab_dir, "netns")

    @property
    def switch(self) -> str:
        return os.path.join(self.netns_dir, SWITCH)

    def host(self, name: str) -> str:
        return os.path.join(self.netns_dir, f"host-{name}")

    def build_switch(self, topology: Topology) -> None:
        from libnetwork import netns, sysctl
        from libnetwork.netlink import Netlink

        netns.create(self.switch)
        with Netlink(self.switch) as switch:
            for underlay in topology.underlays.values():
                # A fixed MAC (02:42 + the switch address): otherwise the kernel gives the bridge the
                # lowest MAC of its ports, and the hosts' ARP entry for the switch address (their route
                # to other underlays, etcd's address) goes stale whenever a host's port comes or goes.
                mac = "02:42:" + ":".join(f"{int(o):02x}" for o in underlay.switch_address.split("."))
                index = switch.add_bridge(underlay.bridge, mtu=underlay.mtu, mac=mac)
                switch.add_addr(index, f"{underlay.switch_address}/{underlay.prefixlen}")
        if len(topology.underlays) > 1:
            sysctl.write("net.ipv4.ip_forward", "1", netns_path=self.switch)

    def add_host(self, topology: Topology, name: str) -> None:
        """The host's namespace, its eth0 on its underlay, routes to the other underlays."""
        from libnetwork import netns
        from libnetwork.netlink import Netlink

        host = topology.hosts[name]
        underlay = topology.underlays[host.underlay]
        path = self.host(name)
        netns.create(path)
        host_fd = netns.open_fd(path)
        try:
            with Netlink(self.switch) as switch:
                bridge = switch.link(underlay.bridge)
                if bridge is None:
                    raise KernelError(f"bridge {underlay.bridge} is missing in lab switch {self.switch}; "
                                      "`netctl lab down` and up again")
                switch.add_veth(host.switch_port, "eth0", peer_netns_fd=host_fd, mtu=underlay.mtu,
                                master=bridge.index, up=True)  # fmt: skip
        finally:
            os.close(host_fd)
        with Netlink(path) as inside:
            eth0 = inside.link("eth0")
            if eth0 is None:
                raise KernelError(f"eth0 did not appear in lab host {name}'s namespace {path}")
            inside.add_addr(eth0.index, f"{host.address}/{underlay.prefixlen}")
            inside.set_link(eth0.index, up=True)
            for other in topology.underlays.values():
                if other.name != underlay.name:
                    inside.add_route(other.subnet, gateway=underlay.switch_address, oif=eth0.index)

    def set_link(self, topology: Topology, name: str, *, up: bool) -> None:
        """Cut (up=False) or restore a host's underlay link at its switch port."""
        from libnetwork.netlink import Netlink

        with Netlink(self.switch) as switch:
            switch.set_link(topology.hosts[name].switch_port, up=up)

    def link_states(self, topology: Topology) -> dict[str, bool]:
        """{host: its switch port is up}."""
        from libnetwork.netlink import Netlink

        with Netlink(self.switch) as switch:
            links = {link.name: link for link in switch.links()}
        return {h.name: bool(links.get(h.switch_port) and links[h.switch_port].up) for h in topology.hosts.values()}

    def handles(self) -> list[str]:
        """Every namespace handle file of the lab's own (switch and hosts)."""
        if not os.path.isdir(self.netns_dir):
            return []
        return [os.path.join(self.netns_dir, entry) for entry in sorted(os.listdir(self.netns_dir))]
