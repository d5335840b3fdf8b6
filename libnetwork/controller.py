"""The CNM controller: networks, endpoints and sandboxes, with ordering and rollback.

Every operation runs inside ONE write transaction of the store and does its kernel work while holding
it. That gives the crash-safety rule the rest of netctl relies on:

  * a failure raises, the driver undoes its own partial work, and the transaction rolls back, so a
    failed command leaves neither a record nor a kernel object;
  * a process killed half-way (kill -9) leaves no record — SQLite rolls the open transaction back —
    but possibly kernel objects carrying netctl's mark, or a committed record whose kernel object was
    already removed. `doctor` (which takes the same lock, so it never sees an operation in flight)
    reports exactly those, and `gc` removes them.

Concurrent processes serialise on the store's write lock; nothing depends on timing.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from libnetwork import ipam
from libnetwork.errors import AlreadyExists, InUse, InvalidArgument, NotFound
from libnetwork.model import READY, Endpoint, Network, PoolConfig, PortMapping, Sandbox

if TYPE_CHECKING:
    from collections.abc import Callable

    from libnetwork.netlink import Netlink

DEFAULT_ROOT = "/var/lib/netctl"
MAX_NAME = 64
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
GATEWAY_OWNER_PREFIXES = ("gateway:", "aux:")


def new_id() -> str:
    return os.urandom(32).hex()  # not `secrets`: its import (hashlib, random) costs ~10 ms per CLI call


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def validate_name(name: str, what: str) -> str:
    if not name or len(name) > MAX_NAME or not _NAME.match(name):
        raise InvalidArgument(
            f"invalid {what} name {name!r}: use 1-{MAX_NAME} characters of letters, digits, '_', '.' "
            "or '-', starting with a letter or digit"
        )
    return name


def checkpoint(name: str) -> None:
    """Fault-injection point for crash-safety tests, like the CNI plugins' debugPostIPAMError hook:
    NETCTL_TEST_PAUSE=<name> makes the process stop here (bounded: 60 s) so a test can kill -9 it at a
    known step. Costs one environment lookup otherwise."""
    if os.environ.get("NETCTL_TEST_PAUSE") == name:
        import sys
        import time

        print(f"paused at {name}", file=sys.stderr, flush=True)
        time.sleep(60)


def check_address(text: str, version: int, flag: str) -> None:
    import ipaddress

    try:
        ok = ipaddress.ip_address(text).version == version
    except ValueError:
        ok = False
    if not ok:
        raise InvalidArgument(f"{flag} {text!r} is not a valid IPv{version} address")


_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def check_mac(text: str) -> str:
    mac = text.strip().lower()
    if not _MAC.match(mac) or int(mac[:2], 16) & 1:
        raise InvalidArgument(f"MAC address {text!r} is not a unicast address of the form 02:42:ac:11:00:02")
    return mac


def mac_for(endpoint: Endpoint) -> str:
    """A locally administered MAC: 02:42 + the IPv4 address like Docker, else from the endpoint id."""
    v4 = endpoint.address_of(4)
    if v4:
        octets = [int(o) for o in v4.split("/")[0].split(".")]
        return "02:42:" + ":".join(f"{o:02x}" for o in octets)
    raw = bytes.fromhex(endpoint.id[:10])
    return "02:" + ":".join(f"{b:02x}" for b in raw)


@dataclass
class NetworkSpec:
    """What a user asks for in `network create`; the controller validates all of it."""

    name: str
    driver: str = "bridge"
    pools: list[PoolConfig] = field(default_factory=list)  # requested subnets (may be empty)
    ipv6: bool = False
    internal: bool = False
    mtu: int = 0
    options: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    # subnet -> (first, last): dynamic allocation limited to that span of addresses, like CNI
    # host-local's rangeStart/rangeEnd (which need not form a CIDR, so PoolConfig.ip_range cannot say it).
    pool_ranges: dict[str, tuple[str, str]] = field(default_factory=dict)


@dataclass
class Problem:
    """One thing `doctor` found out of step between the store and the kernel."""

    kind: str  # orphan-link | orphan-netns | stale-network | stale-endpoint | stale-sandbox | leaked-address | firewall
    object: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "object": self.object, "detail": self.detail}


class Controller:
    def __init__(self, root: str | None = None):
        self.root = root or os.environ.get("NETCTL_ROOT") or DEFAULT_ROOT
        self.netns_dir = os.path.join(self.root, "netns")
        self._store = None
        self._host: "Netlink | None" = None

    # --- plumbing -------------------------------------------------------------------------------

    @property
    def store(self):
        if self._store is None:
            from libnetwork.store.sqlite import SQLiteStore

            os.makedirs(self.root, mode=0o700, exist_ok=True)
            self._store = SQLiteStore(self.root)
        return self._store

    @property
    def host(self) -> "Netlink":
        """Netlink socket of the namespace netctl runs in (the host's)."""
        if self._host is None:
            from libnetwork.netlink import Netlink

            self._host = Netlink()
        return self._host

    def close(self) -> None:
        if self._host is not None:
            self._host.close()
            self._host = None
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> "Controller":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def driver(name: str):
        if name == "external":  # CNI: netctl hands out the addresses, another plugin makes the data plane
            from drivers.external import ExternalDriver

            return ExternalDriver()
        from drivers.base import load_driver

        return load_driver(name)

    @staticmethod
    def _network(tx, ref: str) -> Network:
        network = tx.get_network(ref)
        if network is None:
            raise NotFound(f"network {ref!r} not found; `netctl network ls` lists the networks")
        return network

    @staticmethod
    def _sandbox(tx, ref: str) -> Sandbox:
        sandbox = tx.get_sandbox(ref)
        if sandbox is None:
            raise NotFound(f"sandbox {ref!r} not found; `netctl sandbox ls` lists the sandboxes")
        return sandbox

    def _host_routes(self) -> list[tuple[str, str]]:
        names = {link.index: link.name for link in self.host.links()}
        routes = []
        for route in self.host.routes():
            if route.dst in ("0.0.0.0/0", "::/0") or route.dst.startswith("fe80:"):
                continue
            via = f" via {route.gateway}" if route.gateway else ""
            routes.append((route.dst, f"host route {route.dst}{via} dev {names.get(route.oif, route.oif)}"))
        return routes

    def _uplink_mtu(self) -> int:
        """MTU of the interface holding the default route: a bridge network inherits it, so a host on a
        1400-byte uplink (VPN, cloud) does not get containers that black-hole large packets."""
        for route in self.host.routes(2):
            if route.dst == "0.0.0.0/0" and route.oif:
                link = self.host.link(route.oif)
                if link is not None:
                    return link.mtu
        return 1500

    # --- networks -------------------------------------------------------------------------------

    def create_network(self, spec: NetworkSpec) -> Network:
        validate_name(spec.name, "network")
        driver = self.driver(spec.driver)
        options = driver.validate_options(spec.options)
        if "mtu" in options:
            spec.mtu = spec.mtu or int(options.pop("mtu"))
        if spec.mtu and not 68 <= spec.mtu <= 65535:
            raise InvalidArgument(f"MTU {spec.mtu} of network {spec.name!r} is out of range (68-65535)")
        if not driver.uses_ipam and (spec.pools or spec.ipv6):
            raise InvalidArgument(f"network {spec.name!r}: driver {spec.driver} takes no --subnet or --ipv6")
        if any(p.version == 6 for p in spec.pools):
            spec.ipv6 = True
        network = Network(
            id=new_id(),
            name=spec.name,
            driver=driver.name,
            scope=driver.scope,
            options=options,
            labels=dict(spec.labels),
            internal=spec.internal,
            ipv6=spec.ipv6,
            created=now(),
        )
        host_routes = self._host_routes() if driver.uses_ipam else []
        if driver.uses_ipam:
            network.mtu = spec.mtu or self._uplink_mtu()
        with self.store.transaction() as tx:
            clash = tx.get_network(spec.name)
            if clash is not None and clash.name == spec.name:
                raise AlreadyExists(f"network name {spec.name!r} is already used by network {clash.short_id}")
            if driver.uses_ipam:
                network.pools = self._allocate_pools(tx, network, spec, host_routes)
                for subnet, (first, last) in spec.pool_ranges.items():
                    _narrow_dynamic_range(tx, network, subnet, first, last)
            driver.plan_network(network, tx.list_networks(), self.host)
            tx.put_network(network)
            driver.create_network(network, self.host)
            try:
                self._sync_firewall(tx)
            except BaseException:
                driver.delete_network(network, self.host)
                raise
        return network

    @staticmethod
    def _allocate_pools(tx, network: Network, spec: NetworkSpec, host_routes) -> list[PoolConfig]:
        pools = []
        for version in (4, 6):
            if version == 6 and not spec.ipv6:
                continue
            requested = [p for p in spec.pools if p.version == version] or [None]
            for request in requested:
                pools.append(ipam.allocate_pool(tx, network, request, version, host_routes))
        return pools

    def delete_network(self, ref: str, *, force: bool = False) -> Network | None:
        with self.store.transaction() as tx:
            network = tx.get_network(ref)
            if network is None:
                if force:
                    return None
                self._network(tx, ref)
            driver = self.driver(network.driver)
            endpoints = tx.list_endpoints(network_id=network.id)
            if endpoints and not force:
                names = ", ".join(sorted(e.name for e in endpoints))
                raise InUse(
                    f"network {network.name!r} has active endpoints ({names}); disconnect them first or use -f"
                )
            for endpoint in endpoints:
                self._remove_endpoint(tx, network, endpoint, driver)
            driver.delete_network(network, self.host)
            ipam.release_pools(tx, network.id)
            tx.delete_network(network.id)
            self._sync_firewall(tx)
        return network

    def list_networks(self) -> list[Network]:
        with self.store.snapshot() as tx:
            return tx.list_networks()

    def inspect_network(self, ref: str) -> dict[str, Any]:
        with self.store.snapshot() as tx:
            network = self._network(tx, ref)
            endpoints = tx.list_endpoints(network_id=network.id)
            sandboxes = {e.sandbox_id: tx.get_sandbox(e.sandbox_id) for e in endpoints}
        return network_view(network, endpoints, sandboxes)

    def prune_networks(self) -> list[str]:
        removed = []
        for network in self.list_networks():
            with self.store.snapshot() as tx:
                if tx.list_endpoints(network_id=network.id):
                    continue
            try:
                self.delete_network(network.id)
            except (InUse, NotFound):
                continue  # someone connected or removed it meanwhile
            removed.append(network.name)
        return removed

    # --- sandboxes ------------------------------------------------------------------------------

    def create_sandbox(
        self,
        name: str = "",
        *,
        hostname: str = "",
        labels: dict[str, str] | None = None,
        netns_path: str = "",
        container_id: str = "",
    ) -> Sandbox:
        """A sandbox with a namespace of its own (ROOT/netns/<id>), or — given netns_path — one that
        adopts an existing namespace (a CNI runtime's) without ever creating or deleting it."""
        from libnetwork import netns

        sandbox_id = new_id()
        name = validate_name(name, "sandbox") if name else "sb-" + sandbox_id[:12]
        if netns_path and not netns.is_netns(netns_path):
            raise InvalidArgument(f"{netns_path} is not a network namespace; pass a path like /run/netns/NAME")
        sandbox = Sandbox(
            id=sandbox_id,
            name=name,
            netns_path=netns_path or os.path.join(self.netns_dir, sandbox_id),
            hostname=hostname or name,
            labels=dict(labels or {}),
            container_id=container_id,
            created=now(),
            external=bool(netns_path),
        )
        with self.store.transaction() as tx:
            clash = tx.get_sandbox(name)
            if clash is not None and clash.name == name:
                raise AlreadyExists(f"sandbox name {name!r} is already used by sandbox {clash.short_id}")
            tx.put_sandbox(sandbox)
            if not sandbox.external:
                netns.create(sandbox.netns_path)
        return sandbox

    def delete_sandbox(self, ref: str, *, force: bool = False) -> Sandbox | None:
        from libnetwork import netns

        with self.store.transaction() as tx:
            sandbox = tx.get_sandbox(ref)
            if sandbox is None:
                if force:
                    return None
                self._sandbox(tx, ref)
            endpoints = tx.list_endpoints(sandbox_id=sandbox.id)
            for endpoint in endpoints:
                network = tx.get_network(endpoint.network_id)
                if network is None:
                    ipam.release_addresses(tx, endpoint.id)
                    tx.delete_endpoint(endpoint.id)
                    continue
                self._remove_endpoint(tx, network, endpoint, self.driver(network.driver))
            if not sandbox.external:
                netns.delete(sandbox.netns_path)
            tx.delete_sandbox(sandbox.id)
            if any(e.ports for e in endpoints):
                self._sync_firewall(tx)
        return sandbox

    def list_sandboxes(self) -> list[tuple[Sandbox, list[Endpoint]]]:
        with self.store.snapshot() as tx:
            return [(s, tx.list_endpoints(sandbox_id=s.id)) for s in tx.list_sandboxes()]

    def get_sandbox(self, ref: str) -> Sandbox:
        with self.store.snapshot() as tx:
            return self._sandbox(tx, ref)

    def inspect_sandbox(self, ref: str) -> dict[str, Any]:
        with self.store.snapshot() as tx:
            sandbox = self._sandbox(tx, ref)
            endpoints = tx.list_endpoints(sandbox_id=sandbox.id)
            networks = {e.network_id: tx.get_network(e.network_id) for e in endpoints}
        view = sandbox.to_dict()
        view["endpoints"] = [
            dict(endpoint_view(e), network=networks[e.network_id].name if networks[e.network_id] else "")
            for e in endpoints
        ]
        return view

    # --- endpoints ------------------------------------------------------------------------------

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
        with self.store.transaction() as tx:
            network = self._network(tx, network_ref)
            sandbox = self._sandbox(tx, sandbox_ref)
            return self._connect(tx, network, sandbox, ip=ip, ip6=ip6, aliases=aliases, ports=ports,
                                 ifname=ifname, mac=mac)

    def _connect(self, tx, network: Network, sandbox: Sandbox, *, ip: str, ip6: str, aliases: list[str] | None,
                 ports: list[PortMapping] | None, ifname: str, mac: str) -> Endpoint:
        """connect() inside the caller's transaction (CNI ADD records its sandbox in the same one)."""
        from drivers.bridge import host_veth_name, validate_ifname

        ports = list(ports or [])
        driver = self.driver(network.driver)
        if tx.find_endpoint(network.id, sandbox.id) is not None:
            raise AlreadyExists(f"sandbox {sandbox.name!r} is already connected to network {network.name!r}")
        endpoint_id = new_id()
        endpoint = Endpoint(
            id=endpoint_id,
            name=sandbox.name,
            network_id=network.id,
            sandbox_id=sandbox.id,
            aliases=[validate_name(a, "alias") for a in aliases or []],
            ports=ports,
            ifname=validate_ifname(ifname, "interface") if ifname else self._next_ifname(tx, sandbox),
            host_ifname=host_veth_name(endpoint_id) if driver.name == "bridge" else "",
            state=READY,
            created=now(),
        )
        self._check_ports(tx, network, endpoint)
        self._assign_addresses(tx, network, endpoint, ip, ip6)
        endpoint.mac = check_mac(mac) if mac else mac_for(endpoint)
        tx.put_endpoint(endpoint)
        checkpoint("connect-before-join")
        driver.join(network, endpoint, sandbox, self.host)
        checkpoint("connect-after-join")
        if endpoint.ports:
            try:
                self._sync_firewall(tx)
            except BaseException:
                driver.leave(network, endpoint, sandbox, self.host)
                raise
        return endpoint

    @staticmethod
    def _next_ifname(tx, sandbox: Sandbox) -> str:
        taken = {e.ifname for e in tx.list_endpoints(sandbox_id=sandbox.id)}
        index = 0
        while f"eth{index}" in taken:
            index += 1
        return f"eth{index}"

    def _assign_addresses(self, tx, network: Network, endpoint: Endpoint, ip: str, ip6: str) -> None:
        driver = self.driver(network.driver)
        if not driver.uses_ipam:
            if ip or ip6:
                raise InvalidArgument(f"network {network.name!r} (driver {network.driver}) gives no addresses; drop --ip/--ip6")
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
            raise InvalidArgument(f"network {network.name!r} is internal: it has no way in, so ports cannot be published")
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

    def disconnect(self, network_ref: str, sandbox_ref: str) -> Endpoint:
        with self.store.transaction() as tx:
            network = self._network(tx, network_ref)
            sandbox = self._sandbox(tx, sandbox_ref)
            endpoint = tx.find_endpoint(network.id, sandbox.id)
            if endpoint is None:
                raise NotFound(f"sandbox {sandbox.name!r} is not connected to network {network.name!r}")
            self._remove_endpoint(tx, network, endpoint, self.driver(network.driver))
            checkpoint("disconnect-after-leave")
            if endpoint.ports:
                self._sync_firewall(tx)
        return endpoint

    def _remove_endpoint(self, tx, network: Network, endpoint: Endpoint, driver) -> None:
        sandbox = tx.get_sandbox(endpoint.sandbox_id)
        if sandbox is not None:
            driver.leave(network, endpoint, sandbox, self.host)
        elif endpoint.host_ifname:
            self.host.del_link(endpoint.host_ifname, missing_ok=True)
        ipam.release_addresses(tx, endpoint.id)
        tx.delete_endpoint(endpoint.id)

    # --- CNI attachments ------------------------------------------------------------------------
    # A CNI runtime owns the container's network namespace. netctl records it as an external sandbox
    # keyed by the container id (made by the container's first attachment, dropped with its last), so
    # a CNI attachment is an ordinary endpoint: `network inspect`, doctor and gc see it like any other.

    def find_network(self, name: str) -> Network | None:
        """The network called exactly `name` (never an id or id prefix, which a CNI name must not hit)."""
        with self.store.snapshot() as tx:
            return _network_named(tx, name)

    def ensure_network(self, spec: NetworkSpec, *, exact_pools: bool = True) -> tuple[Network, bool]:
        """The network called spec.name, created from spec if there is none (True: created by this call).

        An existing network must have spec's settings: the CNI configuration is the source of truth,
        and a network silently reused with other subnets would hand out wrong addresses. Concurrent
        callers serialise on the store; the loser of a creation race re-reads and compares.
        exact_pools=False accepts a network with more subnets than spec names (a delegated IPAM
        plugin reveals the subnets one address at a time)."""
        existing = self.find_network(spec.name)
        if existing is None:
            try:
                return self.create_network(spec), True
            except AlreadyExists:
                existing = self.find_network(spec.name)
                if existing is None:
                    raise  # not a lost race: something else is taken (a bridge or link name)
        _require_same_settings(existing, spec, exact_pools)
        return existing, False

    def pool_usage(self, network_name: str) -> list[ipam.PoolUsage]:
        """How full each subnet of a network is (CNI STATUS); empty for an unknown network."""
        with self.store.snapshot() as tx:
            network = _network_named(tx, network_name)
            return ipam.pool_usage(tx, network.id) if network is not None else []

    def discard_network(self, network: Network) -> None:
        """Undo ensure_network's creation after the attachment that needed it failed; a network that
        someone attached to meanwhile stays."""
        try:
            self.delete_network(network.id)
        except (InUse, NotFound):
            pass

    def attach_container(
        self,
        network_name: str,
        container_id: str,
        netns_path: str,
        ifname: str,
        *,
        ip: str = "",
        ip6: str = "",
        mac: str = "",
        ports: list[PortMapping] | None = None,
        aliases: list[str] | None = None,
        labels: dict[str, str] | None = None,
    ) -> tuple[Network, Endpoint]:
        """CNI ADD: connect the runtime's namespace at netns_path to a network.

        The container's sandbox is found or recorded in the same transaction as the endpoint, so a
        failure, or a kill -9, leaves no half-recorded attachment; the kernel leftovers of a kill are
        what a CNI DEL, CNI GC or `netctl gc` remove."""
        from libnetwork import netns

        if not netns.is_netns(netns_path):
            raise InvalidArgument(f"{netns_path} is not a network namespace; pass the path of the container's one")
        with self.store.transaction() as tx:
            network = _network_named(tx, network_name)
            if network is None:
                raise NotFound(f"network {network_name!r} not found; `netctl network ls` lists the networks")
            sandbox = self._container_sandbox(tx, container_id, netns_path, labels or {})
            endpoint = self._connect(tx, network, sandbox, ip=ip, ip6=ip6, aliases=aliases, ports=ports,
                                     ifname=ifname, mac=mac)
        return network, endpoint

    def _container_sandbox(self, tx, container_id: str, netns_path: str, labels: dict[str, str]) -> Sandbox:
        from libnetwork import netns

        sandbox = tx.find_sandbox_by_container(container_id)
        if sandbox is None:
            sandbox = Sandbox(
                id=new_id(),
                name=container_sandbox_name(container_id),
                netns_path=netns_path,
                labels=dict(labels),
                container_id=container_id,
                created=now(),
                external=True,
            )
            tx.put_sandbox(sandbox)
            return sandbox
        if not sandbox.external:
            raise AlreadyExists(
                f"container id {container_id!r} belongs to netctl sandbox {sandbox.name!r}, not to a CNI runtime; "
                "use another container id"
            )
        if sandbox.netns_path != netns_path and not _same_netns(sandbox.netns_path, netns_path):
            # The runtime restarted the container in a new namespace under the same id. A record still
            # attached in another live namespace is a conflict, not something to overwrite; records of
            # a namespace that is gone (no DEL came: a crash, a reboot) are stale and go now.
            endpoints = tx.list_endpoints(sandbox_id=sandbox.id)
            if endpoints and netns.is_netns(sandbox.netns_path):
                raise AlreadyExists(
                    f"container {container_id!r} is attached in network namespace {sandbox.netns_path}, not "
                    f"{netns_path}; detach it there first (CNI DEL)"
                )
            for endpoint in endpoints:
                network = tx.get_network(endpoint.network_id)
                if network is not None:
                    self._remove_endpoint(tx, network, endpoint, self.driver(network.driver))
                else:
                    ipam.release_addresses(tx, endpoint.id)
                    tx.delete_endpoint(endpoint.id)
            if any(e.ports for e in endpoints):
                self._sync_firewall(tx)
            sandbox.netns_path = netns_path
            tx.put_sandbox(sandbox)
        return sandbox

    def detach_container(
        self,
        network_name: str,
        container_id: str,
        ifname: str = "",
        *,
        remove_links: Callable[[Network, Endpoint, Sandbox], None] | None = None,
    ) -> Endpoint | None:
        """CNI DEL: remove the container's attachment to a network; None if there is none (idempotent).

        The container's sandbox record goes with its last attachment (its namespace is the runtime's).
        By default the driver removes the kernel objects inside the transaction; `remove_links`, called
        after the commit instead, lets a long-running caller answer first and pay the kernel's ~25 ms
        per deleted link afterwards (a crash in between leaves an orphan link that gc removes)."""
        with self.store.transaction() as tx:
            found = _attachment(tx, network_name, container_id, ifname)
            if found is None:
                return None
            network, endpoint, sandbox = found
            if remove_links is None:
                self._remove_endpoint(tx, network, endpoint, self.driver(network.driver))
            else:
                ipam.release_addresses(tx, endpoint.id)
                tx.delete_endpoint(endpoint.id)
            if not tx.list_endpoints(sandbox_id=sandbox.id):
                tx.delete_sandbox(sandbox.id)
            if endpoint.ports:
                self._sync_firewall(tx)
        if remove_links is not None:
            remove_links(network, endpoint, sandbox)
        return endpoint

    def find_attachment(
        self, network_name: str, container_id: str, ifname: str = ""
    ) -> tuple[Network, Endpoint, Sandbox] | None:
        """CNI CHECK: the records of a container's attachment, or None."""
        with self.store.snapshot() as tx:
            return _attachment(tx, network_name, container_id, ifname)

    def gc_attachments(self, network_name: str, valid: set[tuple[str, str]]) -> list[Endpoint]:
        """CNI GC: detach every runtime attachment of the network whose (container id, ifname) is not
        in `valid`, then delete ports of its bridge that no record owns (an ADD killed half-way).
        Endpoints of netctl's own sandboxes are never touched. Returns the detached endpoints."""
        removed = []
        with self.store.transaction() as tx:
            network = _network_named(tx, network_name)
            if network is None:
                return []
            driver = self.driver(network.driver)
            for endpoint in tx.list_endpoints(network_id=network.id):
                sandbox = tx.get_sandbox(endpoint.sandbox_id)
                if sandbox is None or not sandbox.external or not sandbox.container_id:
                    continue
                if (sandbox.container_id, endpoint.ifname) in valid:
                    continue
                self._remove_endpoint(tx, network, endpoint, driver)
                if not tx.list_endpoints(sandbox_id=sandbox.id):
                    tx.delete_sandbox(sandbox.id)
                removed.append(endpoint)
            if network.driver == "bridge":
                self._remove_unowned_ports(tx, network)
            if any(e.ports for e in removed):
                self._sync_firewall(tx)
        return removed

    def _remove_unowned_ports(self, tx, network: Network) -> None:
        from drivers.bridge import VETH_PREFIX

        bridge = self.host.link(network.driver_state["bridge"])
        if bridge is None:
            return
        owned = {e.host_ifname for e in tx.list_endpoints()}
        for link in self.host.links():
            if link.master == bridge.index and link.kind == "veth" and link.name.startswith(VETH_PREFIX):
                if link.name not in owned:
                    self.host.del_link(link.index)

    # --- firewall -------------------------------------------------------------------------------

    def sync_firewall(self) -> None:
        with self.store.transaction() as tx:
            self._sync_firewall(tx)

    def _sync_firewall(self, tx) -> None:
        """Re-derive netctl's nftables tables from the store and apply them atomically. Called inside
        the write transaction, so concurrent processes apply in commit order and never regress."""
        from libnetwork import firewall

        nets = firewall_networks(tx, self.driver("bridge"))
        if nets:
            firewall.sync(nets)
        else:
            firewall.remove()

    def _firewall_drift(self, tx) -> list[Problem]:
        from libnetwork import firewall

        nets = firewall_networks(tx, self.driver("bridge"))
        return [Problem("firewall", "nftables", line + "; `netctl firewall sync` rebuilds it") for line in firewall.drift(nets)]

    # --- doctor and gc --------------------------------------------------------------------------

    def doctor(self) -> list[Problem]:
        with self.store.transaction() as tx:
            return self._diagnose(tx)

    def _diagnose(self, tx) -> list[Problem]:
        from libnetwork import netns

        problems: list[Problem] = []
        networks = tx.list_networks()
        endpoints = tx.list_endpoints()
        sandboxes = {s.id: s for s in tx.list_sandboxes()}
        by_id = {n.id: n for n in networks}
        bridge = self.driver("bridge")

        known_links = {n.driver_state.get("bridge") for n in networks} | {e.host_ifname for e in endpoints}
        for obj in bridge.marked_objects(self.host):
            if obj.name not in known_links:
                problems.append(Problem("orphan-link", obj.name, f"{obj.kind} {obj.name} has no record in the store"))
        for network in networks:
            if not self.driver(network.driver).network_present(network, self.host):
                problems.append(Problem("stale-network", network.name, f"network {network.name!r} has no {network.driver} device in the kernel"))
        for endpoint in endpoints:
            network = by_id.get(endpoint.network_id)
            sandbox = sandboxes.get(endpoint.sandbox_id)
            what = f"endpoint {endpoint.short_id} ({endpoint.name})"
            if network is None:
                problems.append(Problem("stale-endpoint", endpoint.id, f"{what} belongs to no network"))
            elif sandbox is None:
                problems.append(Problem("stale-endpoint", endpoint.id, f"{what} of network {network.name!r} belongs to no sandbox"))
            elif not self.driver(network.driver).endpoint_present(network, endpoint, self.host):
                problems.append(Problem("stale-endpoint", endpoint.id, f"{what} of network {network.name!r} has no {endpoint.host_ifname} in the kernel"))
        for sandbox in sandboxes.values():
            if not netns.is_netns(sandbox.netns_path):
                problems.append(Problem("stale-sandbox", sandbox.name, f"sandbox {sandbox.name!r} has no network namespace at {sandbox.netns_path}"))
        known_handles = {os.path.basename(s.netns_path) for s in sandboxes.values() if os.path.dirname(s.netns_path) == self.netns_dir}
        if os.path.isdir(self.netns_dir):
            for entry in sorted(os.listdir(self.netns_dir)):
                if entry not in known_handles:
                    problems.append(Problem("orphan-netns", os.path.join(self.netns_dir, entry), "network namespace handle with no sandbox record"))
        problems += self._firewall_drift(tx)
        endpoint_ids = {e.id for e in endpoints}
        for network_id, address, owner in ipam.allocations(tx):
            if owner.startswith(GATEWAY_OWNER_PREFIXES):
                if network_id not in by_id:
                    problems.append(Problem("leaked-address", address, f"address {address} reserved for a network that no longer exists"))
            elif owner not in endpoint_ids:
                problems.append(Problem("leaked-address", address, f"address {address} allocated to endpoint {owner[:12]} which does not exist"))
        return problems

    def gc(self) -> list[Problem]:
        """Remove everything doctor reports, in an order that never strands anything."""
        from libnetwork import netns

        with self.store.transaction() as tx:
            problems = self._diagnose(tx)
            for problem in problems:
                if problem.kind == "orphan-link":
                    self.host.del_link(problem.object, missing_ok=True)
                elif problem.kind == "stale-endpoint":
                    endpoint = tx.get_endpoint(problem.object)
                    network = tx.get_network(endpoint.network_id) if endpoint else None
                    if endpoint is None:
                        continue
                    if network is not None:
                        self._remove_endpoint(tx, network, endpoint, self.driver(network.driver))
                    else:
                        ipam.release_addresses(tx, endpoint.id)
                        tx.delete_endpoint(endpoint.id)
                elif problem.kind == "stale-sandbox":
                    sandbox = tx.get_sandbox(problem.object)
                    if sandbox is None:
                        continue
                    for endpoint in tx.list_endpoints(sandbox_id=sandbox.id):
                        network = tx.get_network(endpoint.network_id)
                        if endpoint.host_ifname:
                            self.host.del_link(endpoint.host_ifname, missing_ok=True)
                        ipam.release_addresses(tx, endpoint.id)
                        tx.delete_endpoint(endpoint.id)
                    if not sandbox.external:
                        netns.delete(sandbox.netns_path)
                    tx.delete_sandbox(sandbox.id)
                elif problem.kind == "orphan-netns":
                    netns.delete(problem.object)
                elif problem.kind == "stale-network":
                    network = tx.get_network(problem.object)
                    if network is None:
                        continue
                    driver = self.driver(network.driver)
                    for endpoint in tx.list_endpoints(network_id=network.id):
                        self._remove_endpoint(tx, network, endpoint, driver)
                    driver.delete_network(network, self.host)
                    ipam.release_pools(tx, network.id)
                    tx.delete_network(network.id)
            # Leaked addresses last: removing stale records above may already have freed them.
            for network_id, address, owner in ipam.allocations(tx):
                if owner.startswith(GATEWAY_OWNER_PREFIXES):
                    if tx.get_network(network_id) is None:
                        ipam.release_addresses(tx, owner)
                elif tx.get_endpoint(owner) is None:
                    ipam.release_addresses(tx, owner)
            self._sync_firewall(tx)
        return problems


def container_sandbox_name(container_id: str) -> str:
    """The sandbox name of a CNI runtime's container: its id (podman's and containerd's 64 hex digits
    fit), so `podman ps --no-trunc` and `netctl network inspect` name it alike. A longer id is cut and
    suffixed with its checksum, so two ids sharing a long prefix still get two names."""
    import zlib

    if len(container_id) <= MAX_NAME:
        return container_id
    return f"{container_id[: MAX_NAME - 9]}-{zlib.crc32(container_id.encode()):08x}"


def _network_named(tx, name: str) -> Network | None:
    """By exact name: tx.get_network also resolves ids and id prefixes, which a CNI name must never hit."""
    try:
        network = tx.get_network(name)
    except InvalidArgument:  # an ambiguous id prefix: certainly not this name
        return None
    return network if network is not None and network.name == name else None


def _attachment(tx, network_name: str, container_id: str, ifname: str) -> tuple[Network, Endpoint, Sandbox] | None:
    network = _network_named(tx, network_name)
    sandbox = tx.find_sandbox_by_container(container_id)
    if network is None or sandbox is None or not sandbox.external:
        return None
    endpoint = tx.find_endpoint(network.id, sandbox.id)
    if endpoint is None or (ifname and endpoint.ifname != ifname):
        return None
    return network, endpoint, sandbox


def _same_netns(a: str, b: str) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _require_same_settings(existing: Network, spec: NetworkSpec, exact_pools: bool) -> None:
    differences = []
    if existing.driver != spec.driver:
        differences.append(f"driver {existing.driver}, not {spec.driver}")
    wanted_bridge = spec.options.get("bridge")
    if wanted_bridge and existing.driver_state.get("bridge") != wanted_bridge:
        differences.append(f"bridge {existing.driver_state.get('bridge')}, not {wanted_bridge}")
    have = {p.subnet: p.gateway for p in existing.pools}
    for pool in spec.pools:
        if pool.subnet not in have:
            differences.append(f"no subnet {pool.subnet}")
        elif pool.gateway and have[pool.subnet] != pool.gateway:
            differences.append(f"gateway {have[pool.subnet]} of {pool.subnet}, not {pool.gateway}")
    if exact_pools and spec.pools and len(have) != len(spec.pools):
        differences.append(f"subnets {', '.join(have) or 'none'}, not {', '.join(p.subnet for p in spec.pools)}")
    if "masquerade" in spec.options and existing.options.get("masquerade", "true") != spec.options["masquerade"]:
        differences.append(f"masquerade {existing.options.get('masquerade', 'true')}, not {spec.options['masquerade']}")
    if spec.mtu and existing.mtu != spec.mtu:
        differences.append(f"MTU {existing.mtu}, not {spec.mtu}")
    if differences:
        raise InvalidArgument(
            f"network {existing.name!r} already exists with other settings ({'; '.join(differences)}); give the "
            f"CNI network another name, or remove the old one with `netctl network rm {existing.name}`"
        )


def _narrow_dynamic_range(tx, network: Network, subnet: str, first: str, last: str) -> None:
    """Limit dynamic allocation in one pool of a network being created to [first, last].

    This is IPAM bookkeeping and belongs in libnetwork/ipam.py beside _dynamic_range (it writes that
    module's ipam_pools columns and keeps its counters exact); it sits here only until ipam.py grows a
    `set_dynamic_range`. Called in create_network's transaction, before any address is handed out.
    """
    import ipaddress

    net = ipaddress.ip_network(subnet)
    span = []
    for label, text in (("start", first), ("end", last)):
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            raise InvalidArgument(f"range {label} {text!r} of subnet {subnet} is not an IP address") from None
        if address.version != net.version or address not in net:
            raise InvalidArgument(f"range {label} {address} is outside its subnet {subnet}; pick an address inside it")
        if address == net.network_address or (net.version == 4 and address == net.broadcast_address):
            raise InvalidArgument(f"range {label} {address} is not a host address of subnet {subnet}")
        span.append(int(address).to_bytes(16, "big"))
    if span[0] > span[1]:
        raise InvalidArgument(f"range start {first} of subnet {subnet} is after its end {last}; swap them")
    row = tx.conn.execute("SELECT id FROM ipam_pools WHERE network_id = ? AND subnet = ?", (network.id, str(net))).fetchone()
    if row is None:
        raise InvalidArgument(f"range {first}-{last} is of subnet {subnet}, which network {network.name!r} does not have")
    in_span = "SELECT COUNT(*) FROM ipam_addresses a WHERE a.pool_id = ? AND a.addr BETWEEN ? AND ?"
    reserved = " AND (a.owner LIKE 'gateway:%' OR a.owner LIKE 'aux:%')"
    tx.conn.execute(
        f"UPDATE ipam_pools SET range_first = ?, range_last = ?, range_used = ({in_span}), "
        f"reserved_in_range = ({in_span}{reserved}) WHERE id = ?",
        (span[0], span[1], row[0], span[0], span[1], row[0], span[0], span[1], row[0]),
    )


def firewall_networks(tx, bridge_driver) -> list:
    from libnetwork.firewall import BridgeNet, PublishedEndpoint

    nets = []
    for network in tx.list_networks():
        if network.driver != "bridge":
            continue
        published = [
            PublishedEndpoint(addresses=[a.split("/")[0] for a in e.addresses], ports=e.ports)
            for e in tx.list_endpoints(network_id=network.id)
            if e.ports
        ]
        nets.append(
            BridgeNet(
                name=network.name,
                bridge=network.driver_state["bridge"],
                subnets=[p.subnet for p in network.pools],
                gateways=[p.gateway for p in network.pools],
                internal=network.internal,
                icc=bridge_driver.icc(network),
                masquerade=bridge_driver.masquerade(network),
                endpoints=published,
            )
        )
    return nets


def _same_host_port(a: PortMapping, b: PortMapping) -> bool:
    """Two mappings collide on the same port and protocol unless both name different host addresses."""
    return (
        a.host_port == b.host_port
        and a.protocol == b.protocol
        and (not a.host_ip or not b.host_ip or a.host_ip == b.host_ip)
    )


def endpoint_view(endpoint: Endpoint) -> dict[str, Any]:
    return {
        "EndpointID": endpoint.id,
        "Name": endpoint.name,
        "Interface": endpoint.ifname,
        "HostInterface": endpoint.host_ifname,
        "MacAddress": endpoint.mac,
        "IPv4Address": endpoint.address_of(4),
        "IPv6Address": endpoint.address_of(6),
        "Aliases": list(endpoint.aliases),
        "Ports": [str(p) for p in endpoint.ports],
    }


def network_view(network: Network, endpoints: list[Endpoint], sandboxes: dict[str, Sandbox | None]) -> dict[str, Any]:
    """`network inspect` output, shaped like `docker network inspect` so existing habits carry over."""
    return {
        "Name": network.name,
        "Id": network.id,
        "Created": network.created,
        "Scope": network.scope,
        "Driver": network.driver,
        "EnableIPv6": network.ipv6,
        "IPAM": {
            "Driver": "default",
            "Config": [
                {
                    "Subnet": p.subnet,
                    "Gateway": p.gateway,
                    **({"IPRange": p.ip_range} if p.ip_range else {}),
                    **({"AuxiliaryAddresses": p.aux_addresses} if p.aux_addresses else {}),
                }
                for p in network.pools
            ],
        },
        "Internal": network.internal,
        "MTU": network.mtu,
        "Bridge": network.driver_state.get("bridge", ""),
        "Options": dict(network.options),
        "Labels": dict(network.labels),
        "Containers": {
            e.sandbox_id: endpoint_view(e) | {"Sandbox": (sandboxes.get(e.sandbox_id).name if sandboxes.get(e.sandbox_id) else "")}
            for e in endpoints
        },
    }
