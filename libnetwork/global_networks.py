"""Global networks (the overlay driver's): create and delete them, connect to and leave them, keep their
forwarding tables in step with the global store, and remove what a crash left of their endpoints.

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
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from libnetwork import rootdir
from libnetwork.controller_base import ControllerBase, overlay_stand_in, warn
from libnetwork.errors import AlreadyExists, InUse, InvalidArgument, NetctlError, NotFound, StoreError
from libnetwork.events import NAMES_CHANGED, Event
from libnetwork.faults import checkpoint
from libnetwork.model import CREATING, READY, Endpoint, Network, NetworkSpec, PoolConfig, PortMapping, Sandbox
from libnetwork.records import check_address, check_mac, mac_for, new_endpoint, new_id, now

if TYPE_CHECKING:
    from drivers.base import ReconcileResult


class GlobalNetworks(ControllerBase):
    def _refuse_global_name(self, name: str) -> None:
        """A local network may not take the name of a global one. With etcd unreachable the check is
        skipped (a warning says so): a host must stay able to manage its own networks."""
        if not self.store_url:
            return
        try:
            with self._require_global_store("overlay networks").snapshot() as g:
                clash = g.network_named(name)
        except StoreError as err:
            warn(f"{err.message}; network name {name!r} was not checked against the global networks")
            return
        if clash is not None:
            raise AlreadyExists(f"network name {name!r} is already used by global network {clash.short_id}; choose "
                                "another name")

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
            raise InvalidArgument(f"network {spec.name!r}: address ranges that are not a CIDR are not supported by "
                                  "overlay networks; use --ip-range")
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
                requests: list[PoolConfig | None] = [p for p in spec.pools if p.version == version] or [None]
                for request in requests:
                    # No host routes: the segment lives in a namespace of its own on every host, so
                    # only other global networks can clash with it.
                    network.pools.append(g.allocate_pool(network, request, version, []))
            driver.plan_network(network, [], self.host)  # names and port; the MTU is set already
            g.put_network(network)

        store.atomic(allocate)
        return network

    def _overlay_default_mtu(self) -> int:
        """This host's underlay MTU minus VXLAN's 50 bytes (the driver's overhead); the uplink's when the
        VTEP is not on a link of this host (e.g. the store on loopback)."""
        vtep = self.vtep()
        if not vtep.startswith("127.") and vtep != "::1":
            try:
                return self._overlay_driver(vtep).default_mtu(self.host)
            except InvalidArgument:
                pass
        return self._uplink_mtu() - self._overlay_driver().overhead

    def _delete_global_network(self, tx, network: Network, force: bool) -> None:
        """Refused while any host has endpoints on it (-f disconnects this host's own first); then its
        VNI, subnets, addresses and name go in one etcd transaction, and its kernel side here, if any."""
        store = self._require_global_store(f"removing overlay network {network.name!r}")
        local = tx.list_endpoints(network_id=network.id)
        if local and not force:
            names = ", ".join(sorted(e.name for e in local))
            raise InUse(f"network {network.name!r} has active endpoints on this host ({names}); disconnect them "
                        "first or use -f")
        mine = {e.id for e in local}

        def refuse_if_used_elsewhere(g) -> None:
            others = [(host, e) for host, e in g.list_placed_endpoints(network_id=network.id) if e.id not in mine]
            if others:
                where = ", ".join(f"{e.name} on {host}" for host, e in others[:10])
                where += " and more" if len(others) > 10 else ""
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

    def _connect_global(self, tx, network: Network, sandbox: Sandbox, *, ip: str, ip6: str,
                        aliases: list[str] | None, ports: list[PortMapping] | None, ifname: str, mac: str) -> Endpoint:
        """Connect to an overlay network (see the module doc for the order). Inside the caller's SQLite
        transaction: this host's operations stay ordered; the local copy commits with it."""
        if ports:
            raise InvalidArgument(f"network {network.name!r} (driver {network.driver}) cannot publish ports")
        if ip:
            check_address(ip, 4, "--ip")
        if ip6:
            check_address(ip6, 6, "--ip6")
        store = self._require_global_store(f"connecting to overlay network {network.name!r}")
        endpoint = new_endpoint(tx, network, sandbox, aliases=aliases, ifname=ifname,
                                host_ifname=self._overlay_driver().host_ifname, state=CREATING,
                                op_pid=os.getpid())
        wanted_mac = check_mac(mac) if mac else ""
        registered: list[Any] = []  # the host's record in the store

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
                raise NotFound(f"network {network.name!r} was removed meanwhile; "
                               "`netctl network ls` lists the networks")
            endpoint.addresses = []
            for version, wanted in ((4, ip), (6, ip6)):
                if not current.pools_of(version):
                    if wanted:
                        raise InvalidArgument(f"network {network.name!r} has no IPv{version} subnet for address "
                                              f"{wanted}")
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
            warn(f"undoing the connect of {sandbox.name!r} to {network.name!r}: {err}; "
                 "`netctl gc` removes what is left")
        try:
            self._require_global_store("overlay endpoints").atomic(lambda g: _release_global_endpoint(g, endpoint))
        except StoreError as err:
            warn(f"{err.message}; endpoint {endpoint.short_id} stays in etcd until `netctl gc` removes it")

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
            warn(f"{err.message}; endpoint {endpoint.short_id} of {network.name!r} stays in etcd until `netctl gc` "
                 "removes it")
        tx.delete_endpoint(endpoint.id)
        self._drop_network_here_if_unused(tx, network, driver)

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
            warn(f"{err.message}; the records of endpoint {endpoint_id[:12]} in etcd wait for the next `netctl gc`")
        endpoint = copy or record
        if endpoint is None:
            return
        network = self._global_network_for(endpoint.network_id)
        driver = self._overlay_driver()
        driver.leave(network, endpoint, tx.get_sandbox(endpoint.sandbox_id), self.host)
        if record is not None and host == self.host_name:
            self._require_global_store("overlay endpoints").atomic(lambda g: _release_global_endpoint(g, endpoint))
        if copy is not None:
            tx.delete_endpoint(endpoint_id)
        self._drop_network_here_if_unused(tx, network, driver)

    def release_unrecorded_endpoints(self, network_name: str, matches: Callable[[str, str], bool], *,
                                     creating_only: bool = False) -> list[str]:
        """This host's endpoints of a global network that etcd holds with no local record — what an ADD
        or connect killed after its etcd allocation leaves — released with their kernel side, the
        ones `matches(endpoint name, ifname)` picks. Returns their ids. Under this host's store write
        lock no connect of this host is half-way (one holds it from start to commit), so such a
        record is certainly stale. creating_only: only records still in CREATING, so a record some
        other path of this host keeps without a local copy could never be taken for a killed one."""
        network = self.find_network(network_name)
        if network is None or network.scope != "global":
            return []
        released = []
        with self.store.transaction() as tx:
            with self._require_global_store(f"overlay network {network.name!r}").snapshot() as g:
                placed = g.list_placed_endpoints(network_id=network.id, host=self.host_name)
            for _, endpoint in placed:
                if creating_only and endpoint.state != CREATING:
                    continue
                if tx.get_endpoint(endpoint.id) is None and matches(endpoint.name, endpoint.ifname):
                    self._gc_overlay_endpoint(tx, endpoint.id)
                    released.append(endpoint.id)
        return released

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
        connect is building right now. A network that fails is logged and left out; the others go on.

        Then names-changed (remote endpoints may have come or gone) for the networks reconciled, or
        for any network (network_ids None) after a pass over all of them: subscribers re-derive."""
        from drivers.base import ReconcileResult

        store = self.global_store
        built = [n for n in self._overlay_dirs() if network_id is None or n == network_id]
        if store is None or not built:
            if store is not None and network_id is None:
                self.events.emit(Event(NAMES_CHANGED, None))
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
                    warn(f"reconciling overlay network {nid[:12]}: {err.message}")
        self.events.emit(Event(NAMES_CHANGED, None if network_id is None else frozenset(built)))
        return results

    def _remote_peers(self, g, network_id: str) -> list:
        return [p for p in g.list_peers(network_id) if p.host != self.host_name]

    def _reconcile_network(self, network: Network, driver) -> None:
        """One network, right after a local connect: the new container reaches the existing remote ones
        without waiting for a daemon. Best effort: the daemon's loop repairs whatever this misses."""
        try:
            with self._require_global_store("overlay networks").snapshot() as g:
                peers = self._remote_peers(g, network.id)
            driver.reconcile(network, peers, self.host)
        except NetctlError as err:
            warn(f"reconciling overlay network {network.name!r}: {err.message}; the daemon will retry")


def _release_global_endpoint(g, endpoint: Endpoint) -> None:
    """In one etcd transaction: the endpoint's addresses, its record, its name and its peer. Idempotent."""
    g.release_addresses(endpoint.id, endpoint.network_id)
    g.delete_endpoint(endpoint.id, endpoint.network_id)
