"""Reading what the Index is built from: the local store, other hosts' endpoints, containers' --dns.

Called by the indexer's thread only, with its own Controller (its own SQLite connection). Change
detection without timers on the answer path: SQLite's `PRAGMA data_version` changes whenever another
connection committed to the database (any process: the agent's requests, an in-process
NETCTL_NO_DAEMON=1 command, a library user), and reading it is one statement on an open connection
(no file read, no transaction). The indexer reads it when poked and once a second as a safety net;
pokes (runner/hosts.sync_names) make it prompt.

Other hosts' endpoints (overlay) come from the global store, read only when a sandbox here is on a
global network; if etcd cannot be read, the names it gave last time are kept (stale names beat
none) and the next rebuild tries again.
"""

from __future__ import annotations

import json
import logging
import os

from netctl.dns import index as dns_index

log = logging.getLogger("netctl.dns")


class Source:
    def __init__(self, root: str):
        from libnetwork.controller import Controller

        self.root = root
        self.controller = Controller(root)
        self._remote: dict[str, list] = {}  # network id -> other hosts' endpoints, as last read
        self._dns_servers: dict[str, tuple[str, ...]] = {}  # container id -> its --dns (config is immutable)
        self._remote_failed = ""

    def close(self) -> None:
        self.controller.close()

    def data_version(self) -> int:
        return self.controller.store.conn.execute("PRAGMA data_version").fetchone()[0]

    def load(self) -> dns_index.Index:
        from libnetwork.controller_base import is_global_copy

        with self.controller.store.snapshot() as tx:
            sandboxes = tx.list_sandboxes()
            endpoints = tx.list_endpoints()
            on_global = {e.network_id for e in endpoints if is_global_copy(e)}
            if on_global:
                on_global -= {n.id for n in tx.list_networks()}
        remote = self._remote_endpoints(on_global)
        servers = {}
        for sandbox in sandboxes:
            if sandbox.container_id and not sandbox.external:
                found = self._container_dns(sandbox.container_id)
                if found:
                    servers[sandbox.id] = found
        self.forget_containers({s.container_id for s in sandboxes if s.container_id})
        return dns_index.build(sandboxes, endpoints, remote, servers)

    def _remote_endpoints(self, network_ids: set[str]) -> list:
        from libnetwork.errors import NetctlError
        from runner.hosts import remote_endpoints

        for gone in set(self._remote) - network_ids:
            del self._remote[gone]
        if not network_ids:
            return []
        try:
            found = remote_endpoints(self.controller, network_ids)
        except NetctlError as err:
            if err.message != self._remote_failed:
                log.warning("names of other hosts kept as they were: %s", err.message)
                self._remote_failed = err.message
            return [e for n in network_ids for e in self._remote.get(n, [])]
        self._remote_failed = ""
        self._remote = {n: [e for e in found if e.network_id == n] for n in network_ids}
        return found

    def _container_dns(self, container_id: str) -> tuple[str, ...]:
        if container_id in self._dns_servers:
            return self._dns_servers[container_id]
        from runner.paths import Layout

        path = os.path.join(Layout.of(self.root).container(container_id), "config.json")
        try:
            with open(path) as f:
                servers = tuple(str(s) for s in (json.load(f).get("dns") or []))
        except (OSError, ValueError, AttributeError):
            return ()  # not (yet) there: asked again next time
        self._dns_servers[container_id] = servers
        return servers

    def forget_containers(self, keep: set[str]) -> None:
        """Drop what was read of containers no longer here (else it grows with every container run)."""
        for container_id in set(self._dns_servers) - keep:
            del self._dns_servers[container_id]
