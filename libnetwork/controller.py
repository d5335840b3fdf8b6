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

Global networks (scope "global": the overlay driver) live in the global store (etcd, see
store/etcd.py), which every host shares; local ones stay in SQLite, and a name is unique across both.
The SQLite write transaction still wraps every operation — it orders the operations of THIS host —
while etcd's compare-and-swap (EtcdStore.atomic) orders hosts. Kernel work never happens inside an
atomic() body, which may run more than once: an overlay connect is

    atomic(allocate addresses, endpoint CREATING on this host) -> build the network here if needed
    -> join -> atomic(endpoint READY, which publishes its peer on this host's lease)
    -> local copy of the endpoint in SQLite -> reconcile this network's FDB/ARP entries once

and every step is undone on failure. The local copy (same endpoints table, network_id of the global
network) is what makes a host's own view — its sandboxes' interfaces, `rm`, doctor — work without
asking etcd; doctor compares it with etcd's records of this host. A kill -9 half-way leaves an etcd
record in CREATING (or READY) with no local copy: doctor reports it, gc releases it.

Nothing of this costs a local-only host anything: with no store configured (no --store, no
NETCTL_STORE, no ROOT/global.json) the etcd client is never imported.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from libnetwork import ipam, rootdir
from libnetwork.errors import AlreadyExists, InUse, InvalidArgument, NetctlError, NotFound, StoreError
from libnetwork.model import CREATING, READY, Endpoint, Network, PoolConfig, PortMapping, Sandbox

if TYPE_CHECKING:
    from collections.abc import Callable

    from drivers.overlay import OverlayDriver, ReconcileResult
    from libnetwork.netlink import Netlink
    from libnetwork.repair import RepairReport
    from libnetwork.store.etcd import EtcdStore

DEFAULT_ROOT = "/var/lib/netctl"
GLOBAL_CONFIG = "global.json"  # under ROOT: {"store", "host", "vtep"}, written by `netctl daemon --store`
OVERLAY_NETNS_DIR = "overlay"  # under ROOT: drivers/overlay.py's per-network namespaces
OVERLAY_VETH_PREFIX = "ny"  # drivers/overlay.py's host-side veth names: marks a local copy of a global endpoint
STORE_RETRY_S = 1.0  # after etcd failed to open, fail at once for this long (one removal may ask several times)
MAX_NAME = 64
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
GATEWAY_OWNER_PREFIXES = ("gateway:", "aux:")


def _warn(message: str) -> None:
    import logging  # lazy: the local hot path never warns, and never pays for the import

    logging.getLogger(__name__).warning("%s", message)


def overlay_stand_in(network_id: str) -> Network:
    """A global network known only by its id: the device names drivers/overlay.py derives from it."""
    from drivers.overlay import BRIDGE_PREFIX, IFNAMSIZ, VXLAN_PREFIX

    suffix = network_id[: IFNAMSIZ - len(BRIDGE_PREFIX)]
    return Network(id=network_id, name=network_id[:12], driver="overlay", scope="global",
                   driver_state={"bridge": BRIDGE_PREFIX + suffix, "vxlan": VXLAN_PREFIX + suffix})


def is_global_copy(endpoint: Endpoint) -> bool:
    """Whether a local endpoint record is this host's copy of an endpoint of a global network."""
    return endpoint.host_ifname.startswith(OVERLAY_VETH_PREFIX)


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

        # sys.__stderr__: in the agent, sys.stderr is the request's captured output until it ends.
        print(f"paused at {name}", file=sys.__stderr__, flush=True)
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

    # orphan-link | orphan-netns | stale-network | stale-endpoint | stale-sandbox | leaked-address | firewall;
    # global networks: stale-overlay-endpoint | orphan-overlay-netns | orphan-overlay-link | stale-peer |
    # leaked-global-address | store (etcd unreachable: the global part was not checked)
    kind: str
    object: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "object": self.object, "detail": self.detail}


class Controller:
    """`store_url` (etcd://HOST:PORT) and `host_name` select the global store and this host's name in
    it; each defaults to NETCTL_STORE / NETCTL_HOST_NAME, then to ROOT/global.json (written by
    `netctl daemon --store`), and the host name finally to socket.gethostname()."""

    def __init__(self, root: str | None = None, *, store_url: str | None = None, host_name: str | None = None,
                 find_global: bool = True):
        self.root = root or os.environ.get("NETCTL_ROOT") or DEFAULT_ROOT
        # False: networks looked up by exact name (the CNI calls) are this host's local ones only, so
        # the local plugins' DEL, CHECK, GC and STATUS never wait for etcd.
        self._find_global = find_global
        self.netns_dir = os.path.join(self.root, "netns")
        self._store = None
        self._host: "Netlink | None" = None
        self._store_url = store_url
        self._host_name = host_name
        self._global_config: dict[str, str] | None = None
        self._global_store: "EtcdStore | None" = None
        self._store_failure: tuple[float, str] = (0.0, "")  # (retry after, message) of the last failed open

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
        if self._global_store is not None:
            self._global_store.close()
            self._global_store = None

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

    def _network(self, tx, ref: str) -> Network:
        """A network by name, id or id prefix: this host's local networks first, then the global ones."""
        network = tx.get_network(ref)
        if network is None:
            network = self._global_network(ref)
        if network is None:
            raise NotFound(f"network {ref!r} not found; `netctl network ls` lists the networks")
        return network

    def resolve_network(self, ref: str) -> Network:
        """The network `ref` names (local or global), or NotFound."""
        with self.store.snapshot() as tx:
            return self._network(tx, ref)

    # --- the global store -----------------------------------------------------------------------

    def _global_file(self) -> dict[str, str]:
        """ROOT/global.json, read once ({} when there is none: a host that never ran a daemon with a store)."""
        if self._global_config is None:
            import json

            path = os.path.join(self.root, GLOBAL_CONFIG)
            try:
                with open(path) as f:
                    data = json.load(f)
            except FileNotFoundError:
                data = {}
            except (OSError, ValueError) as err:
                raise StoreError(f"{path} is unreadable ({err}); restart `netctl daemon --store URL` to rewrite it") from None
            self._global_config = {k: str(v) for k, v in data.items()} if isinstance(data, dict) else {}
        return self._global_config

    @property
    def store_url(self) -> str:
        """The global store's URL, "" when none is configured (a local-only host)."""
        if self._store_url is None:
            self._store_url = os.environ.get("NETCTL_STORE") or self._global_file().get("store", "")
        return self._store_url

    @property
    def host_name(self) -> str:
        """This host's name in the global store."""
        if not self._host_name:
            self._host_name = os.environ.get("NETCTL_HOST_NAME") or self._global_file().get("host", "")
            if not self._host_name:
                import socket

                self._host_name = socket.gethostname()
        return self._host_name

    @property
    def global_store(self) -> "EtcdStore | None":
        """The global store (opened on first use), or None when none is configured."""
        if self._global_store is None and self.store_url:
            import time

            from libnetwork.store.etcd import EtcdStore

            retry_after, message = self._store_failure
            if time.monotonic() < retry_after:
                raise StoreError(message)  # an unreachable etcd can cost a timeout per try: not twice in a row
            try:
                self._global_store = EtcdStore(self.store_url, host=self.host_name)
            except StoreError as err:
                self._store_failure = (time.monotonic() + STORE_RETRY_S, err.message)
                raise
        return self._global_store

    def _require_global_store(self, what: str) -> "EtcdStore":
        store = self.global_store
        if store is None:
            raise InvalidArgument(
                f"{what} needs a global store; pass --store etcd://HOST:PORT (or set NETCTL_STORE), or start "
                "`netctl daemon --store etcd://HOST:PORT` on this host"
            )
        return store

    def _global_network(self, ref: str) -> Network | None:
        if not self.store_url:
            return None
        with self.global_store.snapshot() as g:
            return g.get_network(ref)

    def _global_networks(self) -> list[Network]:
        if not self.store_url:
            return []
        with self.global_store.snapshot() as g:
            return g.list_networks()

    def vtep(self) -> str:
        """This host's underlay address: the daemon's (ROOT/global.json), else the source address of
        the route towards the store's host (a UDP connect sends nothing; it only asks the routing table)."""
        configured = self._global_file().get("vtep", "")
        if configured:
            return configured
        import socket

        from libnetwork.store.etcd import parse_url

        _, address, port = parse_url(self.store_url)
        try:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect((address, port))
                return probe.getsockname()[0]
        except OSError as err:
            raise StoreError(
                f"cannot tell this host's VTEP address: no route to the store's host {address} ({err.strerror}); "
                "start `netctl daemon --store URL --vtep ADDR`"
            ) from None

    def _overlay_driver(self, vtep: str = "") -> "OverlayDriver":
        from drivers.overlay import OverlayDriver

        return OverlayDriver(vtep, self.root)

    def _overlay_dirs(self) -> list[str]:
        """Ids of the global networks whose kernel side is built on this host (ROOT/overlay/<id>)."""
        try:
            return sorted(os.listdir(os.path.join(self.root, OVERLAY_NETNS_DIR)))
        except FileNotFoundError:
            return []

    def _global_network_for(self, network_id: str) -> Network:
        """The global network record, or — when etcd cannot say (unreachable, or the network is gone) —
        a stand-in carrying the names the overlay driver derives from the id, enough to remove its
        kernel side."""
        network = None
        if self.store_url:
            try:
                network = self._global_network(network_id)
            except StoreError as err:
                _warn(err.message)
        return network if network is not None and network.id == network_id else overlay_stand_in(network_id)

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
        if spec.driver == "overlay":
            return self._create_global_network(spec)
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
            self._refuse_global_name(spec.name)
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

    def _refuse_global_name(self, name: str) -> None:
        """A local network may not take the name of a global one. With etcd unreachable the check is
        skipped (a warning says so): a host must stay able to manage its own networks."""
        if not self.store_url:
            return
        try:
            with self.global_store.snapshot() as g:
                clash = g.network_named(name)
        except StoreError as err:
            _warn(f"{err.message}; network name {name!r} was not checked against the global networks")
            return
        if clash is not None:
            raise AlreadyExists(f"network name {name!r} is already used by global network {clash.short_id}; choose another name")

    def _create_global_network(self, spec: NetworkSpec) -> Network:
        """An overlay network: VNI, subnets and name in ONE etcd transaction, planned on this host
        (device names, MTU from this host's underlay). Nothing is built in the kernel: a host builds
        the network when its first local endpoint joins. A failure leaves nothing in etcd."""
        store = self._require_global_store(f"overlay network {spec.name!r}")
        driver = self._overlay_driver()
        options = driver.validate_options(spec.options)
        vni = int(options.pop("vni", "0"))
        if "mtu" in options:
            spec.mtu = spec.mtu or int(options.pop("mtu"))
        if spec.mtu and not 68 <= spec.mtu <= 65535:
            raise InvalidArgument(f"MTU {spec.mtu} of network {spec.name!r} is out of range (68-65535)")
        if spec.pool_ranges:
            raise InvalidArgument(f"network {spec.name!r}: address ranges that are not a CIDR are not supported by overlay networks; use --ip-range")
        if any(p.version == 6 for p in spec.pools):
            spec.ipv6 = True
        with self.store.snapshot() as tx:
            clash = tx.get_network(spec.name)
            if clash is not None and clash.name == spec.name:
                raise AlreadyExists(f"network name {spec.name!r} is already used by local network {clash.short_id}")
        network = Network(
            id=new_id(),
            name=spec.name,
            driver="overlay",
            scope="global",
            options=options,
            labels=dict(spec.labels),
            internal=spec.internal,
            ipv6=spec.ipv6,
            created=now(),
        )
        network.mtu = spec.mtu or self._overlay_default_mtu()

        def allocate(g) -> None:
            # Runs again on a conflict: starts from scratch each time, and touches nothing outside etcd.
            network.driver_state = {"vni": str(g.allocate_vni(network, vni))}
            network.pools = []
            for version in (4, 6):
                if version == 6 and not spec.ipv6:
                    continue
                for request in [p for p in spec.pools if p.version == version] or [None]:
                    # No host routes: the segment lives in a namespace of its own on every host, so
                    # only other global networks can clash with it.
                    network.pools.append(g.allocate_pool(network, request, version, []))
            driver.plan_network(network, [], self.host)  # names and port; the MTU is set already
            g.put_network(network)

        store.atomic(allocate)
        return network

    def _overlay_default_mtu(self) -> int:
        """This host's underlay MTU minus VXLAN's 50 bytes; the uplink's when the VTEP is not on a
        link of this host (e.g. the store on loopback)."""
        from drivers.overlay import VXLAN_OVERHEAD

        vtep = self.vtep()
        if not vtep.startswith("127.") and vtep != "::1":
            try:
                return self._overlay_driver(vtep).default_mtu(self.host)
            except InvalidArgument:
                pass
        return self._uplink_mtu() - VXLAN_OVERHEAD

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
            network = tx.get_network(ref) or self._global_network(ref)
            if network is None:
                if force:
                    return None
                self._network(tx, ref)
            if network.scope == "global":
                self._delete_global_network(tx, network, force)
                return network
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

    def _delete_global_network(self, tx, network: Network, force: bool) -> None:
        """Refused while any host has endpoints on it (-f disconnects this host's own first); then its
        VNI, subnets, addresses and name go in one etcd transaction, and its kernel side here, if any."""
        store = self._require_global_store(f"removing overlay network {network.name!r}")
        local = tx.list_endpoints(network_id=network.id)
        if local and not force:
            names = ", ".join(sorted(e.name for e in local))
            raise InUse(f"network {network.name!r} has active endpoints on this host ({names}); disconnect them first or use -f")
        mine = {e.id for e in local}

        def refuse_if_used_elsewhere(g) -> None:
            others = [(host, e) for host, e in g.list_placed_endpoints(network_id=network.id) if e.id not in mine]
            if others:
                where = ", ".join(f"{e.name} on {host}" for host, e in others[:10]) + (" and more" if len(others) > 10 else "")
                raise InUse(f"network {network.name!r} has endpoints elsewhere ({where}); disconnect them there first")

        # Checked before -f touches this host's endpoints: their kernel side and etcd records cannot
        # come back with the SQLite rollback of a refusal. Checked again in the deleting transaction.
        with store.snapshot() as g:
            refuse_if_used_elsewhere(g)
        for endpoint in local:
            self._remove_global_endpoint(tx, network, endpoint, strict=True)

        def remove(g) -> None:
            refuse_if_used_elsewhere(g)
            g.delete_network(network.id)

        store.atomic(remove)
        self._overlay_driver().delete_network(network, self.host)  # a leftover of a crash, if any

    def list_networks(self, *, local_only: bool = False) -> list[Network]:
        """This host's local networks, then the global ones (when a store is configured and wanted)."""
        with self.store.snapshot() as tx:
            local = tx.list_networks()
        return local if local_only else local + self._global_networks()

    def inspect_network(self, ref: str) -> dict[str, Any]:
        with self.store.snapshot() as tx:
            network = self._network(tx, ref)
            if network.scope == "global":
                with self.global_store.snapshot() as g:
                    placed = g.list_placed_endpoints(network_id=network.id)
                endpoints = [e for _, e in placed]
                hosts = {e.id: host for host, e in placed}
                mine = [e for e in endpoints if hosts[e.id] == self.host_name]
                sandboxes = {e.sandbox_id: tx.get_sandbox(e.sandbox_id) for e in mine}
                return network_view(network, endpoints, sandboxes, hosts)
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
                if network is None and is_global_copy(endpoint):
                    # Removing a sandbox must work while etcd is away: its records there are then
                    # left for `netctl gc` (doctor reports them), the kernel side goes now.
                    network = self._global_network_for(endpoint.network_id)
                    self._remove_global_endpoint(tx, network, endpoint, strict=False)
                    continue
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
        for network_id in [n for n, network in networks.items() if network is None and self.store_url]:
            with contextlib.suppress(StoreError):
                networks[network_id] = self._global_network(network_id)
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
        from drivers.bridge import host_veth_name

        if network.scope == "global":
            return self._connect_global(tx, network, sandbox, ip=ip, ip6=ip6, aliases=aliases, ports=ports,
                                        ifname=ifname, mac=mac)
        ports = list(ports or [])
        driver = self.driver(network.driver)
        endpoint = self._new_endpoint(tx, network, sandbox, aliases=aliases, ifname=ifname,
                                      host_ifname=host_veth_name if driver.name == "bridge" else None,
                                      ports=ports, state=READY)  # fmt: skip
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

    def _new_endpoint(self, tx, network: Network, sandbox: Sandbox, *, aliases: list[str] | None, ifname: str,
                      host_ifname: Callable[[str], str] | None, **fields) -> Endpoint:
        """A new endpoint record of sandbox on network (not stored yet); AlreadyExists if it is on it.
        `host_ifname` names the host side of the veth after the endpoint id (None: the driver has none)."""
        from drivers.bridge import validate_ifname

        if tx.find_endpoint(network.id, sandbox.id) is not None:
            raise AlreadyExists(f"sandbox {sandbox.name!r} is already connected to network {network.name!r}")
        endpoint_id = new_id()
        return Endpoint(
            id=endpoint_id,
            name=sandbox.name,
            network_id=network.id,
            sandbox_id=sandbox.id,
            aliases=[validate_name(a, "alias") for a in aliases or []],
            ifname=validate_ifname(ifname, "interface") if ifname else self._next_ifname(tx, sandbox),
            host_ifname=host_ifname(endpoint_id) if host_ifname else "",
            created=now(),
            **fields,
        )

    def _connect_global(self, tx, network: Network, sandbox: Sandbox, *, ip: str, ip6: str,
                        aliases: list[str] | None, ports: list[PortMapping] | None, ifname: str, mac: str) -> Endpoint:
        """Connect to an overlay network (see the module doc for the order). Inside the caller's SQLite
        transaction: this host's operations stay ordered; the local copy commits with it."""
        from drivers.overlay import host_veth_name

        if ports:
            raise InvalidArgument(f"network {network.name!r} (driver {network.driver}) cannot publish ports")
        if ip:
            check_address(ip, 4, "--ip")
        if ip6:
            check_address(ip6, 6, "--ip6")
        store = self._require_global_store(f"connecting to overlay network {network.name!r}")
        endpoint = self._new_endpoint(tx, network, sandbox, aliases=aliases, ifname=ifname,
                                      host_ifname=host_veth_name, state=CREATING, op_pid=os.getpid())  # fmt: skip
        wanted_mac = check_mac(mac) if mac else ""
        registered = []

        def allocate(g) -> None:
            host = g.get_host(self.host_name)
            if host is None:
                raise NotFound(
                    f"host {self.host_name!r} is not registered in the global store at {self.store_url}; start "
                    f"`netctl daemon --store {self.store_url}` on this host first"
                )
            if host.held_by_another(rootdir.host_id(self.root)):
                # This root's agent was refused its name after losing its lease (another host took it
                # meanwhile): an endpoint here must not be published under the other host's record.
                raise AlreadyExists(
                    f"host name {self.host_name!r} is held by another host (host id {host.short_id}) in the global "
                    f"store at {self.store_url}; restart `netctl daemon --store {self.store_url}` with "
                    "--host-name NAME on this host"
                )
            current = g.get_network(network.id)
            if current is None:
                raise NotFound(f"network {network.name!r} was removed meanwhile; `netctl network ls` lists the networks")
            endpoint.addresses = []
            for version, wanted in ((4, ip), (6, ip6)):
                if not current.pools_of(version):
                    if wanted:
                        raise InvalidArgument(f"network {network.name!r} has no IPv{version} subnet for address {wanted}")
                    continue
                endpoint.addresses.append(g.allocate_address(current, version, endpoint.id, wanted))
            endpoint.mac = wanted_mac or mac_for(endpoint)
            g.put_endpoint(endpoint)
            registered[:] = [host]

        store.atomic(allocate)
        driver = self._overlay_driver(registered[0].vtep)
        try:
            checkpoint("connect-overlay-after-allocate")
            driver.ensure_network(network, self.host)
            driver.join(network, endpoint, sandbox, self.host)
            checkpoint("connect-overlay-after-join")
            endpoint.state, endpoint.op_pid = READY, 0
            store.atomic(lambda g: g.put_endpoint(endpoint))  # publishes the peer on this host's lease
        except BaseException:
            self._undo_global_connect(tx, network, endpoint, sandbox, driver)
            raise
        tx.put_endpoint(endpoint)
        self._reconcile_network(network, driver)
        return endpoint

    def _undo_global_connect(self, tx, network: Network, endpoint: Endpoint, sandbox: Sandbox, driver) -> None:
        """Every step of a failed overlay connect, undone as far as possible; what cannot be (etcd gone
        meanwhile) is left as a CREATING record of this host, which doctor reports and gc removes."""
        try:
            driver.leave(network, endpoint, sandbox, self.host)
            self._drop_network_here_if_unused(tx, network, driver)
        except Exception as err:  # noqa: BLE001 - the original error is what the user must see
            _warn(f"undoing the connect of {sandbox.name!r} to {network.name!r}: {err}; `netctl gc` removes what is left")
        try:
            self.global_store.atomic(lambda g: _release_global_endpoint(g, endpoint))
        except StoreError as err:
            _warn(f"{err.message}; endpoint {endpoint.short_id} stays in etcd until `netctl gc` removes it")

    def _drop_network_here_if_unused(self, tx, network: Network, driver) -> None:
        """Remove the network's kernel side from this host once no local endpoint uses it."""
        if not tx.list_endpoints(network_id=network.id):
            driver.delete_network(network, self.host)

    def _remove_global_endpoint(self, tx, network: Network, endpoint: Endpoint, *, strict: bool) -> None:
        """leave -> release in etcd -> drop the local copy -> the network's kernel side if it was the
        last. strict: an etcd failure raises (the caller's transaction rolls back; retrying is safe,
        leave is idempotent); otherwise it is logged and left for gc."""
        driver = self._overlay_driver()
        sandbox = tx.get_sandbox(endpoint.sandbox_id)
        driver.leave(network, endpoint, sandbox, self.host)  # needs only the network's namespace
        try:
            store = self._require_global_store(f"disconnecting from overlay network {network.name!r}")
            store.atomic(lambda g: _release_global_endpoint(g, endpoint))
        except (StoreError, InvalidArgument) as err:
            if strict:
                raise
            _warn(f"{err.message}; endpoint {endpoint.short_id} of {network.name!r} stays in etcd until `netctl gc` removes it")
        tx.delete_endpoint(endpoint.id)
        self._drop_network_here_if_unused(tx, network, driver)

    # --- overlay: what the daemon calls ---------------------------------------------------------

    def overlay_networks_here(self) -> list[Network]:
        """Global networks whose kernel side is built on this host (and still exist in etcd)."""
        built = set(self._overlay_dirs())
        if not built or not self.store_url:
            return []
        return [n for n in self._global_networks() if n.id in built]

    def reconcile_overlay(self, network_id: str | None = None) -> "dict[str, ReconcileResult]":
        """Make every network built here (or just `network_id`) agree with etcd: FDB and neighbour
        entries := the peers of the other hosts; the kernel side of a network deleted from etcd, or with
        no local endpoint left, is removed (its result is then empty). Returns {network id: result}.

        Reads etcd first, then applies under this host's store lock, so it never removes a network a
        connect is building right now. A network that fails is logged and left out; the others go on."""
        from drivers.overlay import ReconcileResult

        store = self.global_store
        built = [n for n in self._overlay_dirs() if network_id is None or n == network_id]
        if store is None or not built:
            return {}
        with store.snapshot() as g:
            networks = {n.id: n for n in g.list_networks() if n.id in built}
            peers = {nid: self._remote_peers(g, nid) for nid in networks}
            host = g.get_host(self.host_name)
        driver = self._overlay_driver(host.vtep if host is not None else "")
        results: dict[str, ReconcileResult] = {}
        with self.store.transaction() as tx:
            for nid in built:
                network = networks.get(nid)
                try:
                    if network is None or not tx.list_endpoints(network_id=nid):
                        driver.delete_network(network or overlay_stand_in(nid), self.host)
                        results[nid] = ReconcileResult()
                    else:
                        results[nid] = driver.reconcile(network, peers[nid], self.host)
                except NetctlError as err:
                    _warn(f"reconciling overlay network {nid[:12]}: {err.message}")
        return results

    def _remote_peers(self, g, network_id: str) -> list:
        return [p for p in g.list_peers(network_id) if p.host != self.host_name]

    def _reconcile_network(self, network: Network, driver) -> None:
        """One network, right after a local connect: the new container reaches the existing remote ones
        without waiting for a daemon. Best effort: the daemon's loop repairs whatever this misses."""
        try:
            with self.global_store.snapshot() as g:
                peers = self._remote_peers(g, network.id)
            driver.reconcile(network, peers, self.host)
        except NetctlError as err:
            _warn(f"reconciling overlay network {network.name!r}: {err.message}; the daemon will retry")

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

    # --- CNI attachments ------------------------------------------------------------------------
    # A CNI runtime owns the container's network namespace. netctl records it as an external sandbox
    # keyed by the container id (made by the container's first attachment, dropped with its last), so
    # a CNI attachment is an ordinary endpoint: `network inspect`, doctor and gc see it like any other.

    def find_network(self, name: str) -> Network | None:
        """The network called exactly `name` (never an id or id prefix, which a CNI name must not hit)."""
        with self.store.snapshot() as tx:
            return self._network_named(tx, name)

    def _network_named(self, tx, name: str) -> Network | None:
        """By exact name: this host's local networks, then the global ones."""
        network = _network_named(tx, name)
        if network is None and self._find_global and self.store_url:
            with self.global_store.snapshot() as g:
                network = g.network_named(name)
        return network

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
            network = self._network_named(tx, network_name)
            if network is not None and network.scope == "global":
                with self.global_store.snapshot() as g:
                    return g.pool_usage(network)
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
            network = self._network_named(tx, network_name)
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
                if network is None and is_global_copy(endpoint):
                    self._remove_global_endpoint(tx, self._global_network_for(endpoint.network_id), endpoint, strict=False)
                elif network is not None:
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
            found = _attachment(tx, self._network_named(tx, network_name), container_id, ifname)
            if found is None:
                return None
            network, endpoint, sandbox = found
            if network.scope == "global":  # etcd holds its records: always the whole removal here
                self._remove_endpoint(tx, network, endpoint, None)
                remove_links = None
            elif remove_links is None:
                self._remove_endpoint(tx, network, endpoint, self.driver(network.driver))
            else:
                ipam.release_addresses(tx, endpoint.id)
                tx.delete_endpoint(endpoint.id)
            if not tx.list_endpoints(sandbox_id=sandbox.id):
                tx.delete_sandbox(sandbox.id)
            if endpoint.ports:
                self._sync_firewall(tx)
        if remove_links is not None and network.scope != "global":
            remove_links(network, endpoint, sandbox)
        return endpoint

    def find_attachment(
        self, network_name: str, container_id: str, ifname: str = ""
    ) -> tuple[Network, Endpoint, Sandbox] | None:
        """CNI CHECK: the records of a container's attachment, or None."""
        with self.store.snapshot() as tx:
            return _attachment(tx, self._network_named(tx, network_name), container_id, ifname)

    def gc_attachments(self, network_name: str, valid: set[tuple[str, str]]) -> list[Endpoint]:
        """CNI GC: detach every runtime attachment of the network whose (container id, ifname) is not
        in `valid`, then delete ports of its bridge that no record owns (an ADD killed half-way).
        Endpoints of netctl's own sandboxes are never touched. Returns the detached endpoints."""
        removed = []
        with self.store.transaction() as tx:
            network = self._network_named(tx, network_name)
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
            if network is None and is_global_copy(endpoint):
                continue  # checked against etcd below
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
        problems += self._diagnose_global(tx, [e for e in endpoints if e.network_id not in by_id and is_global_copy(e)], sandboxes)
        endpoint_ids = {e.id for e in endpoints}
        for network_id, address, owner in ipam.allocations(tx):
            if owner.startswith(GATEWAY_OWNER_PREFIXES):
                if network_id not in by_id:
                    problems.append(Problem("leaked-address", address, f"address {address} reserved for a network that no longer exists"))
            elif owner not in endpoint_ids:
                problems.append(Problem("leaked-address", address, f"address {address} allocated to endpoint {owner[:12]} which does not exist"))
        return problems

    def _diagnose_global(self, tx, copies: list[Endpoint], sandboxes: dict[str, Sandbox]) -> list[Problem]:
        """This host's part of the global networks: its endpoints in etcd against its local copies,
        sandboxes and kernel; the networks built here; peers and addresses nobody owns. Runs under the
        store's write lock, so no connect of this host is half-way while it looks."""
        built = self._overlay_dirs()
        if not copies and not built and not self.store_url:
            return []
        if not self.store_url:
            return [Problem("store", "global store", "overlay state exists on this host but no global store is "
                            "configured; pass --store or start `netctl daemon --store URL`")]
        try:
            with self.global_store.snapshot() as g:
                networks = {n.id: n for n in g.list_networks()}
                placed = g.list_placed_endpoints()
                peers = g.list_peers()
                allocations = g.allocations()
        except StoreError as err:
            return [Problem("store", self.store_url, f"{err.message}; the overlay part was not checked")]
        problems: list[Problem] = []
        mine = {e.id: e for host, e in placed if host == self.host_name}
        every = {e.id for _, e in placed}
        copy_ids = {e.id for e in copies}
        flagged: set[str] = set()

        def stale(endpoint: Endpoint, why: str) -> None:
            if endpoint.id not in flagged:
                flagged.add(endpoint.id)
                problems.append(Problem("stale-overlay-endpoint", endpoint.id,
                                        f"endpoint {endpoint.short_id} ({endpoint.name}) of overlay network {why}"))

        for endpoint in mine.values():
            name = networks[endpoint.network_id].name if endpoint.network_id in networks else endpoint.network_id[:12]
            if endpoint.id not in copy_ids:
                state = "is stuck in creating (a connect was interrupted)" if endpoint.state == CREATING else "has no record"
                stale(endpoint, f"{name!r} {state} on this host")
        for endpoint in copies:
            network = networks.get(endpoint.network_id)
            if network is None:
                stale(endpoint, f"{endpoint.network_id[:12]} belongs to a network gone from the global store")
            elif endpoint.id not in mine:
                stale(endpoint, f"{network.name!r} has no record of this host in the global store")
            elif endpoint.sandbox_id not in sandboxes:
                stale(endpoint, f"{network.name!r} belongs to no sandbox")
            elif not self._overlay_driver().endpoint_present(network, endpoint):
                stale(endpoint, f"{network.name!r} has no {endpoint.host_ifname} in the kernel")
        users = {e.network_id for e in copies if e.id not in flagged}
        for network_id in built:
            if network_id not in networks:
                problems.append(Problem("orphan-overlay-netns", network_id, f"namespace of overlay network {network_id[:12]} "
                                        "which is gone from the global store"))
            elif network_id not in users:
                problems.append(Problem("orphan-overlay-netns", network_id, f"namespace of overlay network "
                                        f"{networks[network_id].name!r} with no endpoint on this host"))
            else:
                problems += self._orphan_overlay_links(networks[network_id], {e.host_ifname for e in copies} | {
                    e.host_ifname for e in mine.values()})
        for peer in peers:
            if peer.host == self.host_name and peer.endpoint_id not in every:
                problems.append(Problem("stale-peer", f"{peer.network_id}/{peer.endpoint_id}",
                                        f"peer record of endpoint {peer.endpoint_id[:12]} ({peer.name}) which no longer exists"))
        for network_id, address, owner in allocations:
            if ipam.is_reserved_owner(owner):
                if network_id not in networks:
                    problems.append(Problem("leaked-global-address", f"{network_id}/{owner}",
                                            f"global address {address} reserved for a network that no longer exists"))
            elif owner not in every:
                problems.append(Problem("leaked-global-address", f"{network_id}/{owner}",
                                        f"global address {address} allocated to endpoint {owner[:12]} which does not exist"))
        return problems

    def _orphan_overlay_links(self, network: Network, known: set[str]) -> list[Problem]:
        from libnetwork.netlink import Netlink

        driver = self._overlay_driver()
        try:
            with Netlink(driver.netns_path(network)) as inside:
                links = inside.links()
        except NetctlError:
            return []
        return [Problem("orphan-overlay-link", f"{network.id}/{link.name}",
                        f"veth {link.name} in overlay network {network.name!r} has no endpoint")
                for link in links if link.name.startswith(OVERLAY_VETH_PREFIX) and link.name not in known]

    def _gc_global(self, tx, problems: list[Problem]) -> None:
        """Remove what _diagnose_global reported: endpoints first (kernel, etcd, local copy), then stray
        links and namespaces, then records nobody owns. etcd failures stop it with a clear error."""
        from libnetwork.netlink import Netlink

        driver = self._overlay_driver()
        for problem in problems:
            if problem.kind == "stale-overlay-endpoint":
                self._gc_overlay_endpoint(tx, problem.object)
        for problem in problems:
            if problem.kind == "orphan-overlay-link":
                network_id, name = problem.object.split("/", 1)
                with contextlib.suppress(NetctlError), Netlink(driver.netns_path(overlay_stand_in(network_id))) as inside:
                    inside.del_link(name, missing_ok=True)
            elif problem.kind == "orphan-overlay-netns":
                if not tx.list_endpoints(network_id=problem.object):
                    driver.delete_network(self._global_network_for(problem.object), self.host)
            elif problem.kind == "stale-peer":
                network_id, endpoint_id = problem.object.split("/", 1)
                self.global_store.atomic(lambda g: g.delete_peer(network_id, endpoint_id))
            elif problem.kind == "leaked-global-address":
                network_id, owner = problem.object.split("/", 1)

                def release(g, network_id=network_id, owner=owner) -> None:
                    if ipam.is_reserved_owner(owner) or g.get_endpoint(owner, network_id) is None:
                        g.release_addresses(owner, network_id)

                self.global_store.atomic(release)

    def _gc_overlay_endpoint(self, tx, endpoint_id: str) -> None:
        """An endpoint of a global network that this host holds, half or wholly: its kernel side, its
        etcd records (when they are this host's) and its local copy. With etcd away the local part
        still goes; doctor then reports the etcd part for a later gc."""
        copy = tx.get_endpoint(endpoint_id)
        record, host = None, ""
        try:
            store = self._require_global_store("removing an overlay endpoint")
            with store.snapshot() as g:
                record = g.get_endpoint(endpoint_id)
                host = g.endpoint_host(endpoint_id) if record is not None else ""
        except (StoreError, InvalidArgument) as err:
            if copy is None:
                raise
            _warn(f"{err.message}; the records of endpoint {endpoint_id[:12]} in etcd wait for the next `netctl gc`")
        endpoint = copy or record
        if endpoint is None:
            return
        network = self._global_network_for(endpoint.network_id)
        driver = self._overlay_driver()
        driver.leave(network, endpoint, tx.get_sandbox(endpoint.sandbox_id), self.host)
        if record is not None and host == self.host_name:
            self.global_store.atomic(lambda g: _release_global_endpoint(g, endpoint))
        if copy is not None:
            tx.delete_endpoint(endpoint_id)
        self._drop_network_here_if_unused(tx, network, driver)

    def _release_sandbox(self, tx, sandbox: Sandbox) -> list[Endpoint]:
        """A sandbox whose namespace is gone: its endpoints with their addresses (and their records in
        etcd), its handle and its record. Returns the endpoints released. The caller syncs the firewall."""
        from libnetwork import netns

        endpoints = tx.list_endpoints(sandbox_id=sandbox.id)
        for endpoint in endpoints:
            network = tx.get_network(endpoint.network_id)
            if network is None and is_global_copy(endpoint):
                self._gc_overlay_endpoint(tx, endpoint.id)
                continue
            if endpoint.host_ifname:
                self.host.del_link(endpoint.host_ifname, missing_ok=True)
            ipam.release_addresses(tx, endpoint.id)
            tx.delete_endpoint(endpoint.id)
        if not sandbox.external:
            netns.delete(sandbox.netns_path)
        tx.delete_sandbox(sandbox.id)
        return endpoints

    def repair(self) -> "RepairReport":
        """Bring the kernel back in line with the store after an agent restart or a reboot (the agent
        calls it at start); see libnetwork/repair.py."""
        from libnetwork.repair import repair

        return repair(self)

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
                    if sandbox is not None:
                        self._release_sandbox(tx, sandbox)
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
            self._gc_global(tx, problems)
            # Leaked addresses last: removing stale records above may already have freed them.
            for network_id, address, owner in ipam.allocations(tx):
                if owner.startswith(GATEWAY_OWNER_PREFIXES):
                    if tx.get_network(network_id) is None:
                        ipam.release_addresses(tx, owner)
                elif tx.get_endpoint(owner) is None:
                    ipam.release_addresses(tx, owner)
            self._sync_firewall(tx)
        for problem in problems:
            if problem.kind == "store":  # nothing was removed there: say so instead of listing it as removed
                _warn(f"{problem.detail}; run `netctl gc` again once the global store answers")
        return [p for p in problems if p.kind != "store"]


def container_sandbox_name(container_id: str) -> str:
    """The sandbox name of a CNI runtime's container: its id (podman's and containerd's 64 hex digits
    fit), so `podman ps --no-trunc` and `netctl network inspect` name it alike. A longer id is cut and
    suffixed with its checksum, so two ids sharing a long prefix still get two names."""
    import zlib

    if len(container_id) <= MAX_NAME:
        return container_id
    return f"{container_id[: MAX_NAME - 9]}-{zlib.crc32(container_id.encode()):08x}"


def _release_global_endpoint(g, endpoint: Endpoint) -> None:
    """In one etcd transaction: the endpoint's addresses, its record, its name and its peer. Idempotent."""
    g.release_addresses(endpoint.id, endpoint.network_id)
    g.delete_endpoint(endpoint.id, endpoint.network_id)


def _network_named(tx, name: str) -> Network | None:
    """By exact name: tx.get_network also resolves ids and id prefixes, which a CNI name must never hit."""
    try:
        network = tx.get_network(name)
    except InvalidArgument:  # an ambiguous id prefix: certainly not this name
        return None
    return network if network is not None and network.name == name else None


def _attachment(tx, network: Network | None, container_id: str, ifname: str) -> tuple[Network, Endpoint, Sandbox] | None:
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


def network_view(network: Network, endpoints: list[Endpoint], sandboxes: dict[str, Sandbox | None],
                 hosts: dict[str, str] | None = None) -> dict[str, Any]:
    """`network inspect` output, shaped like `docker network inspect` so existing habits carry over.
    `hosts` ({endpoint id: host name}, global networks): each endpoint also says where it lives and
    its state; a sandbox of another host is named by its endpoint."""
    def container(e: Endpoint) -> dict[str, Any]:
        sandbox = sandboxes.get(e.sandbox_id)
        view = endpoint_view(e) | {"Sandbox": sandbox.name if sandbox else (e.name if hosts is not None else "")}
        if hosts is not None:
            view |= {"Host": hosts.get(e.id, ""), "State": e.state}
        return view

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
        **({"VNI": int(network.driver_state["vni"])} if network.driver_state.get("vni", "").isdigit() else {}),
        "Options": dict(network.options),
        "Labels": dict(network.labels),
        "Containers": {e.sandbox_id: container(e) for e in endpoints},
    }
