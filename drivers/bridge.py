"""The bridge driver: one Linux bridge per network, one veth pair per endpoint.

The sandbox end of each veth is created directly inside the sandbox's namespace under its final name
(eth0, eth1, ...): moving a link between namespaces costs ~30 ms of kernel time, creating it there costs
nothing extra. Firewalling (masquerade, ICC, isolation, published ports) is not done here but derived
by the controller from the store into netctl's nftables tables (libnetwork/firewall.py).
"""

from __future__ import annotations

import os

from drivers.base import IFNAMSIZ, KernelObject, parse_bool_option, validate_ifname
from libnetwork import netns, sysctl
from libnetwork.errors import AlreadyExists, InvalidArgument, KernelError, NetctlError

BRIDGE_PREFIX = "nc-"
TOMBSTONE_PREFIX = BRIDGE_PREFIX + "z"  # a removed network's bridge, renamed until it is deleted
VETH_PREFIX = "nv"

# Docker's option names are accepted too, so `-o com.docker.network.bridge.name=br0` works.
OPTION_ALIASES = {
    "com.docker.network.bridge.name": "bridge",
    "com.docker.network.bridge.enable_icc": "icc",
    "com.docker.network.bridge.enable_ip_masquerade": "masquerade",
    "com.docker.network.driver.mtu": "mtu",
}
BOOL_OPTIONS = ("icc", "masquerade")
KNOWN_OPTIONS = ("bridge", "icc", "masquerade", "mtu")


def bridge_name(network) -> str:
    return network.driver_state["bridge"]


def bridge_mac(network_id: str) -> str:
    """Locally administered, unicast, stable for the network's life."""
    return "02:" + ":".join(network_id[i : i + 2] for i in range(0, 10, 2))


def host_veth_name(endpoint_id: str) -> str:
    return VETH_PREFIX + endpoint_id[: IFNAMSIZ - len(VETH_PREFIX)]


def gateway_addresses(network) -> list[str]:
    """What the bridge carries: each pool's gateway with its subnet's prefix length."""
    return [f"{pool.gateway}/{pool.subnet.split('/')[1]}" for pool in network.pools]


def _normal(cidr: str) -> str:
    import ipaddress

    return str(ipaddress.ip_interface(cidr))


def _switch_on(key: str) -> None:
    """Set a machine-wide switch to 1 unless it is already: writing ip_forward costs ~115 us of the
    kernel's time even when nothing changes, reading it ~15 us, and every bridge network create asks."""
    if sysctl.read(key) != "1":
        sysctl.write(key, "1")


class BridgeDriver:
    name = "bridge"
    scope = "local"
    uses_ipam = True
    host_ifname_prefix = VETH_PREFIX

    @staticmethod
    def host_ifname(endpoint_id: str) -> str:
        return host_veth_name(endpoint_id)

    # --- options and planning -------------------------------------------------------------------

    def validate_options(self, options: dict[str, str]) -> dict[str, str]:
        normalised: dict[str, str] = {}
        for key, value in options.items():
            key = OPTION_ALIASES.get(key, key)
            if key not in KNOWN_OPTIONS:
                raise InvalidArgument(
                    f"unknown option {key!r} for driver bridge; known options: {', '.join(KNOWN_OPTIONS)}"
                )
            if key in BOOL_OPTIONS:
                value = parse_bool_option(self.name, key, value)
            elif key == "bridge":
                validate_ifname(value, "bridge name")
            elif key == "mtu" and not value.isdigit():
                raise InvalidArgument(f"option mtu={value!r} of driver bridge must be a number")
            normalised[key] = value
        return normalised

    def plan_network(self, network, others, host) -> None:
        name = network.options.get("bridge") or BRIDGE_PREFIX + network.id[: IFNAMSIZ - len(BRIDGE_PREFIX)]
        for other in others:
            if other.driver_state.get("bridge") == name:
                raise AlreadyExists(
                    f"bridge {name} is already used by network {other.name!r}; choose another -o bridge=NAME"
                )
        if host.index_of(name) is not None:
            raise AlreadyExists(
                f"a link named {name} already exists on this host; choose another -o bridge=NAME"
            )
        network.driver_state = {"bridge": name}

    def icc(self, network) -> bool:
        return network.options.get("icc", "true") == "true"

    def masquerade(self, network) -> bool:
        return network.options.get("masquerade", "true") == "true" and not network.internal

    # --- networks -------------------------------------------------------------------------------

    def create_network(self, network, host) -> None:
        name = bridge_name(network)
        # A fixed MAC: otherwise the kernel gives the bridge the lowest MAC of its ports, and the
        # gateway's MAC would change under running containers as endpoints come and go.
        index = host.add_bridge(name, mtu=network.mtu, up=False, mac=bridge_mac(network.id))
        try:
            self._enable_forwarding(network)
            with host.batch() as batch:  # one round trip: `docker network create` waits on it
                for address in gateway_addresses(network):
                    batch.add_addr(index, address)
                # Published ports reached as 127.0.0.1 from the host itself are DNATed onto the bridge.
                batch.set_link(index, up=True, route_localnet=True if network.pools_of(4) else None)
        except BaseException:
            host.del_link(index)
            raise

    def _enable_forwarding(self, network) -> None:
        if network.pools_of(4):
            _switch_on("net.ipv4.ip_forward")
        if network.pools_of(6):
            _switch_on("net.ipv6.conf.all.forwarding")

    def delete_network(self, network, host) -> None:
        host.del_link(bridge_name(network), missing_ok=True)

    def retire_network(self, network, host):
        """The contract's optional two-step delete_network: the bridge goes down (taking its routes
        along, so the IPAM may hand its subnet out again), drops its gateway addresses and takes a
        tombstone name within netctl's mark (nc-z + 11 hex), so that the name is free and `ip link show
        NAME` says it is gone, as after dockerd's rm. One write to the kernel: the agent measured ~0.75 ms
        of kernel time for the three, and five round trips took ~1.2 ms. Deleting it, ~40 ms of the
        kernel's time, is left to the caller's background thread; after a crash in between, doctor/gc
        find it by its mark."""
        index = host.index_of(bridge_name(network))
        if index is None:
            return None
        tombstone = TOMBSTONE_PREFIX + os.urandom(6).hex()[:IFNAMSIZ - len(TOMBSTONE_PREFIX)]
        try:
            with host.batch() as batch:  # in this order: a link is renamed down (before Linux 6.2)
                batch.set_link(index, up=False)
                for address in gateway_addresses(network):
                    batch.del_addr(index, address)
                batch.set_link(index, name=tombstone)
        except NetctlError:  # the kernel refused a step: delete it now, as delete_network does
            host.del_link(index, missing_ok=True)
            return None
        return lambda later: later.del_link(tombstone, missing_ok=True)

    def repair_network(self, network, host) -> list[str]:
        """A missing bridge is made again (create_network: MTU, MAC, gateways, up); a present one gets
        back a gateway address or its up flag that someone took away."""
        name = bridge_name(network)
        bridge = host.link(name)
        if bridge is None:
            self.create_network(network, host)
            return [f"bridge {name} recreated ({', '.join(gateway_addresses(network)) or 'no gateway'})"]
        if bridge.kind != "bridge":
            raise AlreadyExists(
                f"link {name} of network {network.name!r} is a {bridge.kind or 'plain'} link, not a bridge; "
                f"delete it (`ip link del {name}`), then restart the agent"
            )
        done = []
        have = {_normal(a.address) for a in host.addrs(bridge.index)}
        for address in gateway_addresses(network):
            if _normal(address) not in have:
                host.add_addr(bridge.index, address)
                done.append(f"gateway {address} restored on bridge {name}")
        if not bridge.up:
            host.set_link(bridge.index, up=True)
            done.append(f"bridge {name} set up again")
        return done

    # --- endpoints ------------------------------------------------------------------------------

    def join(self, network, endpoint, sandbox, host) -> None:
        bridge = host.link(bridge_name(network))
        if bridge is None:
            raise InvalidArgument(
                f"bridge {bridge_name(network)} of network {network.name!r} is missing; "
                "run `netctl doctor` to see what is out of step"
            )
        fd = netns.open_fd(sandbox.netns_path)
        try:
            host.add_veth(
                endpoint.host_ifname,
                endpoint.ifname,
                peer_netns_fd=fd,
                mtu=network.mtu,
                peer_mac=endpoint.mac,
                master=bridge.index,
                up=True,
            )
        finally:
            os.close(fd)
        try:
            self._configure_inside(network, endpoint, sandbox)
        except BaseException:
            host.del_link(endpoint.host_ifname, missing_ok=True)
            raise

    def _configure_inside(self, network, endpoint, sandbox) -> None:
        from libnetwork.netlink import Netlink

        with Netlink(sandbox.netns_path) as inside:
            link = inside.link(endpoint.ifname)
            if link is None:  # join made it a moment ago: only someone else's hand removes it
                raise KernelError(f"interface {endpoint.ifname} vanished from sandbox {sandbox.name!r} while joining")
            for address in endpoint.addresses:
                inside.add_addr(link.index, address)
            inside.set_link(link.index, up=True)
            if network.internal:
                return  # Docker's semantics: an internal network gives no default route.
            for pool_version in (4, 6):
                pools = network.pools_of(pool_version)
                if not pools or not endpoint.address_of(pool_version):
                    continue
                default = "0.0.0.0/0" if pool_version == 4 else "::/0"
                family = 2 if pool_version == 4 else 10
                # The first network that offers a way out provides the default route, as in Docker.
                if any(r.dst == default for r in inside.routes(family)):
                    continue
                inside.add_route(default, gateway=pools[0].gateway, oif=link.index)

    def leave(self, network, endpoint, sandbox, host) -> None:
        if not sandbox.external and not os.path.lexists(sandbox.netns_path):
            # The sandbox's own namespace was deleted before its endpoints (the container runner does
            # that once a container's cgroup is empty): the kernel destroys it, and every veth pair with
            # an end in it, off our path. Deleting the host end here would only wait for that: ~20 ms of
            # RCU barrier per link.
            return
        host.del_link(endpoint.host_ifname, missing_ok=True)

    def repair_endpoint(self, network, endpoint, sandbox, host) -> list[str]:
        """The sandbox is alive: a veth pair that is gone is made again (join), one that a recreated
        bridge lost is attached to it again."""
        veth = host.link(endpoint.host_ifname)
        if veth is None:
            self.join(network, endpoint, sandbox, host)
            return [f"veth {endpoint.host_ifname} recreated"]
        bridge = host.link(bridge_name(network))
        if bridge is not None and veth.master != bridge.index:
            host.set_link(veth.index, master=bridge.index, up=True)
            return [f"veth {endpoint.host_ifname} attached to bridge {bridge.name} again"]
        return []

    # --- what exists ----------------------------------------------------------------------------

    def network_present(self, network, host) -> bool:
        link = host.link(bridge_name(network))
        return link is not None and link.kind == "bridge"

    def endpoint_present(self, network, endpoint, host) -> bool:
        return host.link(endpoint.host_ifname) is not None

    def marked_objects(self, host) -> list[KernelObject]:
        found = []
        for link in host.links():
            if link.kind == "bridge" and link.name.startswith(TOMBSTONE_PREFIX):
                # the agent deletes it once it is quiet (cni_plugins/service.py); a crash leaves it to gc
                found.append(KernelObject("bridge", link.name, "a removed network's bridge, waiting for deletion"))
            elif link.kind == "bridge" and link.name.startswith(BRIDGE_PREFIX):
                found.append(KernelObject("bridge", link.name))
            elif link.kind == "veth" and link.name.startswith(VETH_PREFIX):
                found.append(KernelObject("veth", link.name))
        return found
