"""Endpoints: connect a sandbox to a network and disconnect it, with its addresses and published ports.

A connect to a local network is one transaction: the endpoint record, its addresses (IPAM), then the
driver's join, then the firewall when ports are published; any failure undoes the earlier steps (the
driver's leave, the transaction's rollback). A global network's connect is global_networks.py's.
"""

from __future__ import annotations

from collections.abc import Callable

from libnetwork import ipam
from libnetwork.errors import AlreadyExists, InvalidArgument, NotFound, PoolExhausted
from libnetwork.events import ENDPOINT_JOINED, ENDPOINT_LEFT
from libnetwork.faults import checkpoint
from libnetwork.global_networks import GlobalNetworks
from libnetwork.model import READY, Endpoint, Network, PortMapping, Sandbox
from libnetwork.records import check_address, check_mac, mac_for, new_endpoint


class Endpoints(GlobalNetworks):
    def connect(
        self,
        network_ref: str,
        sandbox_ref: str,
        *,
        ip: str = "",
        ip6: str = "",
        aliases: list[str] | None = None,
        ports: list[PortMapping] | None = None,
        ifname: str = "",
        mac: str = "",
    ) -> Endpoint:
        """Connect the sandbox to the network (each by name, id or id prefix): a new endpoint with its
        addresses (given or from the IPAM), its interface (ifname, default the next free ethN) and its
        published ports. Emits endpoint-joined and names-changed once committed."""
        with self.store.transaction() as tx:
            network = self._network(tx, network_ref)
            sandbox = self._sandbox(tx, sandbox_ref)
            endpoint = self._connect(tx, network, sandbox, ip=ip, ip6=ip6, aliases=aliases, ports=ports,
                                     ifname=ifname, mac=mac)
        self.events.endpoints_changed(ENDPOINT_JOINED, [endpoint])
        return endpoint

    def _connect(self, tx, network: Network, sandbox: Sandbox, *, ip: str, ip6: str, aliases: list[str] | None,
                 ports: list[PortMapping] | None, ifname: str, mac: str) -> Endpoint:
        """connect() inside the caller's transaction (CNI ADD records its sandbox in the same one)."""
        if network.scope == "global":
            return self._connect_global(tx, network, sandbox, ip=ip, ip6=ip6, aliases=aliases, ports=ports,
                                        ifname=ifname, mac=mac)
        ports = list(ports or [])
        driver = self.driver(network.driver)
        endpoint = new_endpoint(tx, network, sandbox, aliases=aliases, ifname=ifname, host_ifname=driver.host_ifname,
                                ports=ports, state=READY)
        self._check_ports(tx, network, endpoint)
        self._assign_addresses(tx, network, endpoint, ip, ip6)
        endpoint.mac = check_mac(mac) if mac else mac_for(endpoint)
        tx.put_endpoint(endpoint)
        checkpoint("connect-before-join")
        driver.join(network, endpoint, sandbox, self.host)
        checkpoint("connect-after-join")
        if self._firewall_follows(tx, [endpoint], joined=True):
            try:
                self._sync_firewall(tx)
            except BaseException:
                driver.leave(network, endpoint, sandbox, self.host)
                raise
        return endpoint

    def _assign_addresses(self, tx, network: Network, endpoint: Endpoint, ip: str, ip6: str) -> None:
        driver = self.driver(network.driver)
        if not driver.uses_ipam:
            if ip or ip6:
                raise InvalidArgument(f"network {network.name!r} (driver {network.driver}) gives no addresses; drop "
                                      "--ip/--ip6")
            return
        for version, wanted in ((4, ip), (6, ip6)):
            if wanted:
                check_address(wanted, version, "--ip" if version == 4 else "--ip6")
            if not network.pools_of(version):
                if wanted:
                    raise InvalidArgument(f"network {network.name!r} has no IPv{version} subnet for address {wanted}")
                continue
            endpoint.addresses.append(ipam.allocate_address(tx, network, version, endpoint.id, wanted))

    @staticmethod
    def _check_ports(tx, network: Network, endpoint: Endpoint) -> None:
        if not endpoint.ports:
            return
        if network.driver != "bridge":
            raise InvalidArgument(f"network {network.name!r} (driver {network.driver}) cannot publish ports")
        if network.internal:
            raise InvalidArgument(f"network {network.name!r} is internal: it has no way in, so ports cannot be "
                                  "published")
        if any(port.host_port == 0 for port in endpoint.ports):
            _choose_host_ports(tx, endpoint)
        for i, port in enumerate(endpoint.ports):
            if any(_same_host_port(port, other) for other in endpoint.ports[:i]):
                raise InvalidArgument(f"port {port} is given twice")
        for other in tx.list_endpoints():
            for taken in other.ports:
                for port in endpoint.ports:
                    if _same_host_port(port, taken):
                        raise AlreadyExists(
                            f"host port {port.host_port}/{port.protocol} is already published by endpoint "
                            f"{other.name!r} ({taken}); choose another host port"
                        )

    def disconnect(self, network_ref: str, sandbox_ref: str, *,
                   remove_links: Callable[[Network, Endpoint, Sandbox], None] | None = None) -> Endpoint:
        """Remove the sandbox's endpoint on the network. `remove_links`, as for a CNI DEL (see
        CniAttachments.detach_container), lets a long-running caller (the agent) answer once the records
        are gone and delete the veth pair afterwards: the kernel takes ~15-25 ms for that."""
        with self.store.transaction() as tx:
            network = self._network(tx, network_ref)
            sandbox = self._sandbox(tx, sandbox_ref)
            endpoint = tx.find_endpoint(network.id, sandbox.id)
            if endpoint is None:
                raise NotFound(f"sandbox {sandbox.name!r} is not connected to network {network.name!r}")
            if remove_links is not None and network.scope != "global" and endpoint.host_ifname:
                ipam.release_addresses(tx, endpoint.id)  # the kernel side goes after the commit
                tx.delete_endpoint(endpoint.id)
            else:
                remove_links = None
                self._remove_endpoint(tx, network, endpoint, self.driver(network.driver))
            checkpoint("disconnect-after-leave")
            if self._firewall_follows(tx, [endpoint], joined=False):
                self._sync_firewall(tx)
        if remove_links is not None:
            remove_links(network, endpoint, sandbox)
        self.events.endpoints_changed(ENDPOINT_LEFT, [endpoint])
        return endpoint

    def _remove_endpoint(self, tx, network: Network, endpoint: Endpoint, driver) -> None:
        if network.scope == "global":
            self._remove_global_endpoint(tx, network, endpoint, strict=True)
            return
        sandbox = tx.get_sandbox(endpoint.sandbox_id)
        if sandbox is not None:
            driver.leave(network, endpoint, sandbox, self.host)
        elif endpoint.host_ifname:
            self.host.del_link(endpoint.host_ifname, missing_ok=True)
        ipam.release_addresses(tx, endpoint.id)
        tx.delete_endpoint(endpoint.id)


def _choose_host_ports(tx, endpoint: Endpoint) -> None:
    """Host port 0 (the Docker API's `-p 80`, PublishAllPorts): a free port of the kernel's ephemeral
    range (ip_local_port_range, as dockerd's port allocator), not published by any endpoint."""
    import random

    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    taken = {(p.protocol, p.host_port) for other in tx.list_endpoints() for p in other.ports}
    taken |= {(p.protocol, p.host_port) for p in endpoint.ports}
    span = high - low + 1
    for port in endpoint.ports:
        if port.host_port != 0:
            continue
        first = random.randrange(span)
        for step in range(span):
            candidate = low + (first + step) % span
            if (port.protocol, candidate) not in taken:
                port.host_port = candidate
                taken.add((port.protocol, candidate))
                break
        else:
            raise PoolExhausted(f"no free host port left in {low}-{high} for {port.container_port}/{port.protocol}")


def _same_host_port(a: PortMapping, b: PortMapping) -> bool:
    """Two mappings collide on the same port and protocol unless both name different host addresses."""
    return (
        a.host_port == b.host_port
        and a.protocol == b.protocol
        and (not a.host_ip or not b.host_ip or a.host_ip == b.host_ip)
    )
