"""Local networks: create, delete, list, find by exact name, ensure (the CNI plugins' create-or-reuse),
prune, and how full their subnets are. A global (overlay) network's own steps are global_networks.py's;
these entry points dispatch to them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from socket import AF_INET
from typing import TYPE_CHECKING

from libnetwork import ipam
from libnetwork.endpoints import Endpoints
from libnetwork.errors import AlreadyExists, InUse, InvalidArgument, NotFound
from libnetwork.events import ENDPOINT_LEFT
from libnetwork.model import Endpoint, Network, NetworkSpec, PoolConfig, Sandbox
from libnetwork.records import new_id, now, validate_name

if TYPE_CHECKING:
    from libnetwork.netlink import Netlink


@dataclass
class NetworkMembers:
    """A network with its endpoints and their sandboxes (what `network inspect` shows). For a global
    network: every host's endpoints, `hosts` {endpoint id: host name}, and only this host's sandboxes."""

    network: Network
    endpoints: list[Endpoint]
    sandboxes: dict[str, Sandbox | None]
    hosts: dict[str, str] | None = None


class Networks(Endpoints):
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
        host_routes: list[tuple[str, str]] = []
        if driver.uses_ipam:  # one dump for both; IPv6 routes only for a network that has IPv6
            found = self.host.routes(0 if spec.ipv6 else AF_INET)
            host_routes = self._host_routes(found)
            network.mtu = spec.mtu or self._uplink_mtu(found)
        with self.store.transaction() as tx:
            clash = tx.get_network(spec.name)
            if clash is not None and clash.name == spec.name:
                raise AlreadyExists(f"network name {spec.name!r} is already used by network {clash.short_id}")
            self._refuse_global_name(spec.name)
            if driver.uses_ipam:
                network.pools = self._allocate_pools(tx, network, spec, host_routes)
                for subnet, (first, last) in spec.pool_ranges.items():
                    ipam.set_dynamic_range(tx, network, subnet, first, last)
            driver.plan_network(network, tx.list_networks(), self.host)
            tx.put_network(network)
            driver.create_network(network, self.host)  # no rules yet: it has no endpoints (firewall_networks)
        return network

    @staticmethod
    def _allocate_pools(tx, network: Network, spec: NetworkSpec, host_routes) -> list[PoolConfig]:
        pools = []
        for version in (4, 6):
            if version == 6 and not spec.ipv6:
                continue
            requested: list[PoolConfig | None] = [p for p in spec.pools if p.version == version] or [None]
            for request in requested:
                pools.append(ipam.allocate_pool(tx, network, request, version, host_routes))
        return pools

    def delete_network(self, ref: str, *, force: bool = False,
                       later: Callable[[Callable[[Netlink], object]], None] | None = None) -> Network | None:
        """Remove a network; InUse while it has endpoints, unless `force` disconnects them first (then
        endpoint-left and names-changed are emitted for them). None: missing, with `force`.
        `later` lets a long-running caller (the agent) run the slow part of a driver's deletion after it
        has answered (see retire_network in drivers/base.py): it is handed that step, after the commit."""
        finish = None
        with self.store.transaction() as tx:
            network = tx.get_network(ref) or self._global_network(ref)
            if network is None:
                if force:
                    return None
                self._network(tx, ref)
            assert network is not None  # self._network raised otherwise
            if network.scope == "global":
                removed = tx.list_endpoints(network_id=network.id)
                self._delete_global_network(tx, network, force)
            else:
                removed, finish = self._delete_local_network(tx, network, force, retire=later is not None)
        if finish is not None and later is not None:
            later(finish)
        self.events.endpoints_changed(ENDPOINT_LEFT, removed)
        return network

    def _delete_local_network(self, tx, network: Network, force: bool,
                              retire: bool = False) -> tuple[list[Endpoint], Callable[[Netlink], object] | None]:
        driver = self.driver(network.driver)
        endpoints = tx.list_endpoints(network_id=network.id)
        if endpoints and not force:
            names = ", ".join(sorted(e.name for e in endpoints))
            raise InUse(
                f"network {network.name!r} has active endpoints ({names}); disconnect them first or use -f"
            )
        for endpoint in endpoints:
            self._remove_endpoint(tx, network, endpoint, driver)
        retire_network = getattr(driver, "retire_network", None) if retire else None
        finish = None
        if retire_network is not None:
            finish = retire_network(network, self.host)
        else:
            driver.delete_network(network, self.host)
        ipam.release_pools(tx, network.id)
        tx.delete_network(network.id)
        if endpoints:  # an empty network had no rules (firewall_networks)
            self._sync_firewall(tx)
        return endpoints, finish

    def list_networks(self, *, local_only: bool = False) -> list[Network]:
        """This host's local networks, then the global ones (when a store is configured and wanted)."""
        with self.store.snapshot() as tx:
            local = tx.list_networks()
        return local if local_only else local + self._global_networks()

    def inspect_network(self, ref: str) -> NetworkMembers:
        """The network `ref` names (local or global) with its endpoints and their sandboxes."""
        with self.store.snapshot() as tx:
            network = self._network(tx, ref)
            if network.scope == "global":
                with self._require_global_store(f"overlay network {network.name!r}").snapshot() as g:
                    placed = g.list_placed_endpoints(network_id=network.id)
                endpoints = [e for _, e in placed]
                hosts = {e.id: host for host, e in placed}
                mine = [e for e in endpoints if hosts[e.id] == self.host_name]
                sandboxes = {e.sandbox_id: tx.get_sandbox(e.sandbox_id) for e in mine}
                return NetworkMembers(network, endpoints, sandboxes, hosts)
            endpoints = tx.list_endpoints(network_id=network.id)
            sandboxes = {e.sandbox_id: tx.get_sandbox(e.sandbox_id) for e in endpoints}
        return NetworkMembers(network, endpoints, sandboxes)

    def prune_networks(self, keep: Callable[[Network], bool] | None = None) -> list[str]:
        """Remove every network without endpoints, except those `keep` says to keep."""
        removed = []
        for network in self.list_networks():
            if keep is not None and keep(network):
                continue
            with self.store.snapshot() as tx:
                if tx.list_endpoints(network_id=network.id):
                    continue
            try:
                self.delete_network(network.id)
            except (InUse, NotFound):
                continue  # someone connected or removed it meanwhile
            removed.append(network.name)
        return removed

    # --- by exact name (the CNI plugins' networks; find_network is controller_base.py's) ----------

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
                with self._require_global_store(f"overlay network {network.name!r}").snapshot() as g:
                    return g.pool_usage(network)
            return ipam.pool_usage(tx, network.id) if network is not None else []

    def discard_network(self, network: Network) -> None:
        """Undo ensure_network's creation after the attachment that needed it failed; a network that
        someone attached to meanwhile stays."""
        try:
            self.delete_network(network.id)
        except (InUse, NotFound):
            pass


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

