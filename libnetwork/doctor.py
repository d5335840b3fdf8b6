"""doctor and gc: what is out of step between the store and the kernel, and its removal.

A process killed half-way (kill -9) leaves no record — SQLite rolls the open transaction back — but
possibly kernel objects carrying netctl's mark, or a committed record whose kernel object was already
removed. `doctor` (which takes the store's write lock, so it never sees an operation in flight) reports
exactly those, and `gc` removes them. `repair` (libnetwork/repair.py) is the agent's start-up
counterpart: it rebuilds the kernel side of what the store holds instead (libnetwork.repair.repair(controller)).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from libnetwork import ipam
from libnetwork.controller_base import (
    GATEWAY_OWNER_PREFIXES,
    OVERLAY_VETH_PREFIX,
    firewall_networks,
    is_global_copy,
    overlay_stand_in,
    warn,
)
from libnetwork.errors import NetctlError, StoreError
from libnetwork.model import CREATING, Endpoint, Network, Sandbox
from libnetwork.sandboxes import Sandboxes


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


class Doctor(Sandboxes):
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
                note = f" ({obj.note})" if obj.note else ""
                problems.append(Problem("orphan-link", obj.name,
                                        f"{obj.kind} {obj.name} has no record in the store{note}"))
        for network in networks:
            if not self.driver(network.driver).network_present(network, self.host):
                problems.append(Problem("stale-network", network.name, f"network {network.name!r} has no "
                                                                       f"{network.driver} device in the kernel"))
        for endpoint in endpoints:
            network = by_id.get(endpoint.network_id)
            sandbox = sandboxes.get(endpoint.sandbox_id)
            what = f"endpoint {endpoint.short_id} ({endpoint.name})"
            if network is None and is_global_copy(endpoint):
                continue  # checked against etcd below
            if network is None:
                problems.append(Problem("stale-endpoint", endpoint.id, f"{what} belongs to no network"))
            elif sandbox is None:
                problems.append(Problem("stale-endpoint", endpoint.id, f"{what} of network {network.name!r} belongs "
                                                                       "to no sandbox"))
            elif not self.driver(network.driver).endpoint_present(network, endpoint, self.host):
                problems.append(Problem("stale-endpoint", endpoint.id, f"{what} of network {network.name!r} has no "
                                                                       f"{endpoint.host_ifname} in the kernel"))
        for sandbox in sandboxes.values():
            if not netns.is_netns(sandbox.netns_path):
                problems.append(Problem("stale-sandbox", sandbox.name, f"sandbox {sandbox.name!r} has no network "
                                                                       f"namespace at {sandbox.netns_path}"))
        known_handles = {os.path.basename(s.netns_path) for s in sandboxes.values()
                         if os.path.dirname(s.netns_path) == self.netns_dir}
        if os.path.isdir(self.netns_dir):
            for entry in sorted(os.listdir(self.netns_dir)):
                if entry not in known_handles:
                    problems.append(Problem("orphan-netns", os.path.join(self.netns_dir, entry),
                                            "network namespace handle with no sandbox record"))
        problems += self._firewall_drift(tx)
        copies = [e for e in endpoints if e.network_id not in by_id and is_global_copy(e)]
        problems += self._diagnose_global(tx, copies, sandboxes)
        endpoint_ids = {e.id for e in endpoints}
        for network_id, address, owner in ipam.allocations(tx):
            if owner.startswith(GATEWAY_OWNER_PREFIXES):
                if network_id not in by_id:
                    problems.append(Problem("leaked-address", address, f"address {address} reserved for a network "
                                                                       "that no longer exists"))
            elif owner not in endpoint_ids:
                problems.append(Problem("leaked-address", address, f"address {address} allocated to endpoint "
                                                                   f"{owner[:12]} which does not exist"))
        return problems

    def _firewall_drift(self, tx) -> list[Problem]:
        from libnetwork import firewall

        nets = firewall_networks(tx, self.driver("bridge"))
        return [Problem("firewall", "nftables", line + "; `netctl firewall sync` rebuilds it")
                for line in firewall.drift(nets)]

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
            with self._require_global_store("the overlay part of doctor").snapshot() as g:
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
                interrupted = endpoint.state == CREATING
                state = "is stuck in creating (a connect was interrupted)" if interrupted else "has no record"
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
                problems.append(Problem("orphan-overlay-netns", network_id,
                                        f"namespace of overlay network {network_id[:12]} "
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
                                        f"peer record of endpoint {peer.endpoint_id[:12]} ({peer.name}) "
                                        "which no longer exists"))
        for network_id, address, owner in allocations:
            if ipam.is_reserved_owner(owner):
                if network_id not in networks:
                    problems.append(Problem("leaked-global-address", f"{network_id}/{owner}",
                                            f"global address {address} reserved for a network "
                                            "that no longer exists"))
            elif owner not in every:
                problems.append(Problem("leaked-global-address", f"{network_id}/{owner}",
                                        f"global address {address} allocated to endpoint {owner[:12]} "
                                        "which does not exist"))
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
                segment = driver.netns_path(overlay_stand_in(network_id))
                with contextlib.suppress(NetctlError), Netlink(segment) as inside:
                    inside.del_link(name, missing_ok=True)
            elif problem.kind == "orphan-overlay-netns":
                if not tx.list_endpoints(network_id=problem.object):
                    driver.delete_network(self._global_network_for(problem.object), self.host)
            elif problem.kind == "stale-peer":
                network_id, endpoint_id = problem.object.split("/", 1)

                def delete_peer(g, network_id: str = network_id, endpoint_id: str = endpoint_id) -> None:
                    g.delete_peer(network_id, endpoint_id)

                self._require_global_store("gc of overlay records").atomic(delete_peer)
            elif problem.kind == "leaked-global-address":
                network_id, owner = problem.object.split("/", 1)

                def release(g, network_id=network_id, owner=owner) -> None:
                    if ipam.is_reserved_owner(owner) or g.get_endpoint(owner, network_id) is None:
                        g.release_addresses(owner, network_id)

                self._require_global_store("gc of overlay records").atomic(release)

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
            for network_id, _address, owner in ipam.allocations(tx):
                if owner.startswith(GATEWAY_OWNER_PREFIXES):
                    if tx.get_network(network_id) is None:
                        ipam.release_addresses(tx, owner)
                elif tx.get_endpoint(owner) is None:
                    ipam.release_addresses(tx, owner)
            self._sync_firewall(tx)
        for problem in problems:
            if problem.kind == "store":  # nothing was removed there: say so instead of listing it as removed
                warn(f"{problem.detail}; run `netctl gc` again once the global store answers")
        return [p for p in problems if p.kind != "store"]
