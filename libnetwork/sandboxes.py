"""Sandboxes: network namespaces (ROOT/netns/<id>), or a runtime's namespace adopted as is; their
creation, removal (which disconnects them first) and release once their namespace is gone."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from libnetwork import ipam
from libnetwork.controller_base import is_global_copy
from libnetwork.endpoints import Endpoints
from libnetwork.errors import AlreadyExists, InvalidArgument, StoreError
from libnetwork.events import ENDPOINT_LEFT
from libnetwork.model import Endpoint, Network, Sandbox
from libnetwork.records import new_id, now, validate_name


@dataclass
class SandboxMembers:
    """A sandbox with its endpoints and their networks (None: a network that could not be read)."""

    sandbox: Sandbox
    endpoints: list[Endpoint]
    networks: dict[str, Network | None]


class Sandboxes(Endpoints):
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

    def rename_sandbox(self, ref: str, name: str) -> Sandbox:
        """A new name for a sandbox (`docker rename` of a running container): its local endpoints carry
        it too, and names-changed tells the name server and the hosts files. A global network's copy in
        etcd keeps the old name until the endpoint is made again."""
        from libnetwork.events import NAMES_CHANGED, Event

        name = validate_name(name, "sandbox")
        with self.store.transaction() as tx:
            sandbox = self._sandbox(tx, ref)
            clash = tx.get_sandbox(name)
            if clash is not None and clash.id != sandbox.id and clash.name == name:
                raise AlreadyExists(f"sandbox name {name!r} is already used by sandbox {clash.short_id}")
            old, sandbox.name = sandbox.name, name
            tx.put_sandbox(sandbox)
            endpoints = tx.list_endpoints(sandbox_id=sandbox.id)
            for endpoint in endpoints:
                if endpoint.name == old and not is_global_copy(endpoint):
                    endpoint.name = name
                    tx.put_endpoint(endpoint)
        if endpoints and self.events.wanted():
            self.events.emit(Event(NAMES_CHANGED, frozenset(e.network_id for e in endpoints),
                                   frozenset({sandbox.id}), tuple(endpoints)))  # fmt: skip
        return sandbox

    def delete_sandbox(self, ref: str, *, force: bool = False) -> Sandbox | None:
        """Disconnect the sandbox from every network, then remove it (and its namespace, unless it is
        a runtime's). None: missing, with `force`."""
        from libnetwork import netns

        with self.store.transaction() as tx:
            sandbox = tx.get_sandbox(ref)
            if sandbox is None:
                if force:
                    return None
                sandbox = self._sandbox(tx, ref)
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
            if self._firewall_follows(tx, endpoints, joined=False):
                self._sync_firewall(tx)
        self.events.endpoints_changed(ENDPOINT_LEFT, endpoints)
        return sandbox

    def list_sandboxes(self) -> list[tuple[Sandbox, list[Endpoint]]]:
        with self.store.snapshot() as tx:
            return [(s, tx.list_endpoints(sandbox_id=s.id)) for s in tx.list_sandboxes()]

    def get_sandbox(self, ref: str) -> Sandbox:
        with self.store.snapshot() as tx:
            return self._sandbox(tx, ref)

    def inspect_sandbox(self, ref: str) -> SandboxMembers:
        """The sandbox `ref` names with its endpoints and their networks (a global one's from etcd;
        None when etcd cannot say)."""
        with self.store.snapshot() as tx:
            sandbox = self._sandbox(tx, ref)
            endpoints = tx.list_endpoints(sandbox_id=sandbox.id)
            networks = {e.network_id: tx.get_network(e.network_id) for e in endpoints}
        for network_id in [n for n, network in networks.items() if network is None and self.store_url]:
            with contextlib.suppress(StoreError):
                networks[network_id] = self._global_network(network_id)
        return SandboxMembers(sandbox, endpoints, networks)

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
