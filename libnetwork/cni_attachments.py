"""CNI attachments: a CNI runtime's container attached to a network (ADD), checked (CHECK), detached
(DEL) and garbage-collected (GC).

A CNI runtime owns the container's network namespace. netctl records it as an external sandbox
keyed by the container id (made by the container's first attachment, dropped with its last), so
a CNI attachment is an ordinary endpoint: `network inspect`, doctor and gc see it like any other.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from libnetwork import ipam
from libnetwork.controller_base import is_global_copy
from libnetwork.errors import AlreadyExists, InvalidArgument, NotFound
from libnetwork.events import ENDPOINT_JOINED, ENDPOINT_LEFT
from libnetwork.model import Endpoint, Network, PortMapping, Sandbox
from libnetwork.networks import Networks
from libnetwork.records import container_sandbox_name, new_id, now


class CniAttachments(Networks):
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
        self.events.endpoints_changed(ENDPOINT_JOINED, [endpoint])
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
                    network = self._global_network_for(endpoint.network_id)
                    self._remove_global_endpoint(tx, network, endpoint, strict=False)
                elif network is not None:
                    self._remove_endpoint(tx, network, endpoint, self.driver(network.driver))
                else:
                    ipam.release_addresses(tx, endpoint.id)
                    tx.delete_endpoint(endpoint.id)
            if self._firewall_follows(tx, endpoints, joined=False):
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
            if self._firewall_follows(tx, [endpoint], joined=False):
                self._sync_firewall(tx)
        if remove_links is not None and network.scope != "global":
            remove_links(network, endpoint, sandbox)
        self.events.endpoints_changed(ENDPOINT_LEFT, [endpoint])
        return endpoint

    def detach_container_without_store(self, container_id: str, ifname: str = "") -> Endpoint | None:
        """CNI DEL of an overlay attachment while etcd is away: found in this host's own records by
        container and interface (the network's name would need etcd), then the etcd-tolerant removal
        (as delete_sandbox's) takes the kernel side and the local copy; its records in etcd wait for
        `netctl gc`. None if there is no such attachment."""
        with self.store.transaction() as tx:
            sandbox = tx.find_sandbox_by_container(container_id)
            if sandbox is None or not sandbox.external:
                return None
            endpoint = next((e for e in tx.list_endpoints(sandbox_id=sandbox.id)
                             if is_global_copy(e) and (not ifname or e.ifname == ifname)), None)
            if endpoint is None:
                return None
            network = self._global_network_for(endpoint.network_id)
            self._remove_global_endpoint(tx, network, endpoint, strict=False)
            if not tx.list_endpoints(sandbox_id=sandbox.id):
                tx.delete_sandbox(sandbox.id)
        self.events.endpoints_changed(ENDPOINT_LEFT, [endpoint])
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
            if self._firewall_follows(tx, removed, joined=False):
                self._sync_firewall(tx)
        self.events.endpoints_changed(ENDPOINT_LEFT, removed)
        return removed

    def _remove_unowned_ports(self, tx, network: Network) -> None:
        """Veths on the network's bridge that carry its driver's mark and belong to no endpoint."""
        prefix = self.driver(network.driver).host_ifname_prefix
        bridge = self.host.link(network.driver_state["bridge"])
        if bridge is None:
            return
        owned = {e.host_ifname for e in tx.list_endpoints()}
        for link in self.host.links():
            if link.master == bridge.index and link.kind == "veth" and link.name.startswith(prefix):
                if link.name not in owned:
                    self.host.del_link(link.index)


def _attachment(tx, network: Network | None, container_id: str,
                ifname: str) -> tuple[Network, Endpoint, Sandbox] | None:
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
