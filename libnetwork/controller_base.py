"""What every controller operation stands on: the state root, the stores, the host's netlink socket,
drivers by name, lookups of networks and sandboxes, the global store's configuration, the firewall's
sync and the events. The operations themselves live in networks.py, sandboxes.py, endpoints.py,
global_networks.py, cni_attachments.py and doctor.py; controller.py puts them together.

Configuration: `root` is the state root (libnetwork/rootdir.py); the global store's URL and this host's
name in it come from the arguments, else from `env` (NETCTL_STORE, NETCTL_HOST_NAME; the process's
environment unless the caller passes its own mapping, e.g. {} for none), else from ROOT/global.json
(written by `netctl daemon --store`), and the host name finally from socket.gethostname().

Nothing of this costs a local-only host anything: with no store configured (no --store, no
NETCTL_STORE, no ROOT/global.json) the etcd client is never imported.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, cast

from libnetwork import rootdir
from libnetwork.errors import InvalidArgument, NotFound, StoreError
from libnetwork.events import Events
from libnetwork.model import Endpoint, Network, Sandbox

if TYPE_CHECKING:
    from drivers.base import Driver, GlobalDriver
    from libnetwork.events import Event
    from libnetwork.netlink import Netlink
    from libnetwork.store.etcd import EtcdStore
    from libnetwork.store.sqlite import SQLiteStore

DEFAULT_ROOT = rootdir.DEFAULT_ROOT
GLOBAL_CONFIG = rootdir.GLOBAL_CONFIG  # under ROOT: {"store", "host", "vtep"}, written by `netctl daemon --store`
OVERLAY_NETNS_DIR = rootdir.OVERLAY_NETNS  # under ROOT: the overlay driver's per-network namespaces
# The overlay driver's host-side veth names: marks a local copy of a global endpoint. Known here without
# importing the driver, so that telling a copy apart costs a local-only host nothing.
OVERLAY_VETH_PREFIX = "ny"
OVERLAY_DRIVER = "overlay"  # the global-scope driver (drivers/registry.py)
STORE_RETRY_S = 1.0  # after etcd failed to open, fail at once for this long (one removal may ask several times)
GATEWAY_OWNER_PREFIXES = ("gateway:", "aux:")


def warn(message: str) -> None:
    import logging  # lazy: the local hot path never warns, and never pays for the import

    logging.getLogger("libnetwork.controller").warning("%s", message)


def overlay_stand_in(network_id: str) -> Network:
    """A global network known only by its id: the device names its driver derives from it."""
    from drivers import registry

    driver = cast("GlobalDriver", registry.get(OVERLAY_DRIVER))
    return Network(id=network_id, name=network_id[:12], driver=OVERLAY_DRIVER, scope="global",
                   driver_state=driver.derived_state(network_id))


def is_global_copy(endpoint: Endpoint) -> bool:
    """Whether a local endpoint record is this host's copy of an endpoint of a global network."""
    return endpoint.host_ifname.startswith(OVERLAY_VETH_PREFIX)


class ControllerBase:
    """`root`: the state root. `store_url` (etcd://HOST:PORT) and `host_name` select the global store
    and this host's name in it (see the module doc for their defaults). `env`: where NETCTL_* settings
    are read (None: the process's environment, as the front ends want; {}: nowhere)."""

    def __init__(self, root: str | None = None, *, store_url: str | None = None, host_name: str | None = None,
                 find_global: bool = True, env: Mapping[str, str] | None = None):
        self._env: Mapping[str, str] = os.environ if env is None else env
        self.root = root or self._env.get("NETCTL_ROOT") or DEFAULT_ROOT
        # False: networks looked up by exact name (the CNI calls) are this host's local ones only, so
        # the local plugins' DEL, CHECK, GC and STATUS never wait for etcd.
        self._find_global = find_global
        self.netns_dir = os.path.join(self.root, rootdir.NETNS)
        self._store: "SQLiteStore | None" = None
        self._host: "Netlink | None" = None
        self._store_url = store_url
        self._host_name = host_name
        self._global_config: dict[str, str] | None = None
        self._global_store: "EtcdStore | None" = None
        self._store_failure: tuple[float, str] = (0.0, "")  # (retry after, message) of the last failed open
        self.events = Events()

    # --- plumbing -------------------------------------------------------------------------------

    @property
    def store(self) -> "SQLiteStore":
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

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def subscribe(self, kind: str, callback: "Callable[[Event], None]") -> Callable[[], None]:
        """Call `callback(event)` after each operation that emits `kind` (libnetwork/events.py);
        returns a function that unsubscribes."""
        return self.events.subscribe(kind, callback)

    @staticmethod
    def driver(name: str) -> "Driver":
        """The driver registered as `name` (drivers/registry.py); "external" is CNI's: netctl hands out
        the addresses, another plugin makes the data plane."""
        from drivers import registry

        return registry.get(name)

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

    def find_network(self, name: str) -> Network | None:
        """The network called exactly `name` (never an id or id prefix, which a CNI name must not hit)."""
        with self.store.snapshot() as tx:
            return self._network_named(tx, name)

    def _network_named(self, tx, name: str) -> Network | None:
        """By exact name: this host's local networks, then the global ones."""
        network = _network_named(tx, name)
        if network is None and self._find_global and self.store_url:
            with self._require_global_store("a global network").snapshot() as g:
                network = g.network_named(name)
        return network

    # --- the global store -----------------------------------------------------------------------

    def _global_file(self) -> dict[str, str]:
        """ROOT/global.json, read once ({} when there is none: a host that never ran a daemon with a store)."""
        if self._global_config is None:
            try:
                self._global_config = rootdir.read_global_config(self.root)
            except rootdir.UnreadableConfig as err:
                raise StoreError(f"{err.path} is unreadable ({err.reason}); restart `netctl daemon --store URL` "
                                 "to rewrite it") from None
        return self._global_config

    @property
    def store_url(self) -> str:
        """The global store's URL, "" when none is configured (a local-only host)."""
        if self._store_url is None:
            self._store_url = self._env.get("NETCTL_STORE") or self._global_file().get("store", "")
        return self._store_url

    @property
    def host_name(self) -> str:
        """This host's name in the global store."""
        if not self._host_name:
            self._host_name = self._env.get("NETCTL_HOST_NAME") or self._global_file().get("host", "")
            if not self._host_name:
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
        with self._require_global_store("a global network").snapshot() as g:
            return g.get_network(ref)

    def _global_networks(self) -> list[Network]:
        if not self.store_url:
            return []
        with self._require_global_store("the global networks").snapshot() as g:
            return g.list_networks()

    def vtep(self) -> str:
        """This host's underlay address: the daemon's (ROOT/global.json), else the source address of
        the route towards the store's host (a UDP connect sends nothing; it only asks the routing table)."""
        configured = self._global_file().get("vtep", "")
        if configured:
            return configured
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

    def _overlay_driver(self, vtep: str = "") -> "GlobalDriver":
        from drivers import registry

        return cast("GlobalDriver", registry.get(OVERLAY_DRIVER, vtep=vtep, root=self.root))

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
                warn(err.message)
        return network if network is not None and network.id == network_id else overlay_stand_in(network_id)

    @staticmethod
    def _sandbox(tx, ref: str) -> Sandbox:
        sandbox = tx.get_sandbox(ref)
        if sandbox is None:
            raise NotFound(f"sandbox {ref!r} not found; `netctl sandbox ls` lists the sandboxes")
        return sandbox

    def _host_routes(self, found: list) -> list[tuple[str, str]]:
        """Of the routes `found` (a dump; one family is enough for a network of that family alone), those
        an IPAM pool must not overlap, each with the words that name it."""
        routes = []
        for route in found:
            if route.dst in ("0.0.0.0/0", "::/0") or route.dst.startswith("fe80:"):
                continue
            via = f" via {route.gateway}" if route.gateway else ""
            routes.append((route.dst, f"host route {route.dst}{via} dev {_link_name(route.oif)}"))
        return routes

    def _uplink_mtu(self, found: list | None = None) -> int:
        """MTU of the interface holding the default route: a bridge network inherits it, so a host on a
        1400-byte uplink (VPN, cloud) does not get containers that black-hole large packets. `found`: a
        dump of the IPv4 routes (at least) already made."""
        for route in self.host.routes(socket.AF_INET) if found is None else found:
            if route.dst == "0.0.0.0/0" and route.oif:
                link = self.host.link(route.oif)
                if link is not None:
                    return link.mtu
        return 1500

    # --- firewall -------------------------------------------------------------------------------

    def sync_firewall(self) -> None:
        with self.store.transaction() as tx:
            self._sync_firewall(tx)

    def _firewall_follows(self, tx, endpoints, *, joined: bool) -> bool:
        """Whether endpoints just added (joined) or removed change netctl's firewall: published ports
        do, and so do a bridge network's first endpoint and its last. A network's rules exist while it
        has endpoints (firewall_networks), so creating or removing an empty network leaves nftables
        alone: ~2 ms of libnftables each, where podman's network create only writes a file."""
        if any(e.ports for e in endpoints):
            return True
        left = 1 if joined else 0
        for network_id in {e.network_id for e in endpoints}:
            network = tx.get_network(network_id)
            if network is not None and network.driver == "bridge" and tx.count_endpoints(network_id) == left:
                return True
        return False

    def _sync_firewall(self, tx) -> None:
        """Re-derive netctl's nftables tables from the store and apply them atomically. Called inside
        the write transaction, so concurrent processes apply in commit order and never regress."""
        from libnetwork import firewall

        nets = firewall_networks(tx, self.driver("bridge"))
        if nets:
            firewall.sync(nets)
        else:
            firewall.remove()


def _link_name(index: int) -> str:
    """A link's name in the namespace netctl runs in, for the words of an IPAM clash: the kernel's
    SIOCGIFNAME (~10 us) where a link dump parsed in Python took 0.77 ms of every network create."""
    import socket

    try:
        return socket.if_indextoname(index)
    except (OSError, ValueError, OverflowError):
        return str(index)


def _network_named(tx, name: str) -> Network | None:
    """By exact name: tx.get_network also resolves ids and id prefixes, which a CNI name must never hit."""
    try:
        network = tx.get_network(name)
    except InvalidArgument:  # an ambiguous id prefix: certainly not this name
        return None
    return network if network is not None and network.name == name else None

def firewall_networks(tx, bridge_driver) -> list:
    from libnetwork.firewall import BridgeNet, PublishedEndpoint

    nets = []
    for network in tx.list_networks():
        if network.driver != "bridge":
            continue
        endpoints = tx.list_endpoints(network_id=network.id)
        if not endpoints:  # nothing to forward, isolate or masquerade yet (see _firewall_follows)
            continue
        published = [
            PublishedEndpoint(addresses=[a.split("/")[0] for a in e.addresses], ports=e.ports)
            for e in endpoints
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
