"""Name resolution for containers: a per-container /etc/hosts, regenerated from the store.

Design (instead of an embedded DNS server): every container gets ROOT/containers/<id>/hosts bind-mounted
on its /etc/hosts. The file lists the container itself and, for every network it is on, every other
endpoint of that network under its name and aliases, with its address on that network. So a name
resolves exactly within the networks two containers share, and never across networks.

The files are rewritten while holding the store's write lock, after every change that can alter them
(run, rm, network connect/disconnect, network rm), from the committed state: concurrent changes are
applied in lock order and the last writer always writes the latest truth. A file is rewritten in place
(one write of the whole content) because a bind mount pins the inode: a rename would not be seen.

Why not a resolver: no process to run and keep alive per host or per network, no extra hop per lookup,
nothing to configure in resolv.conf, and it works for static binaries (busybox) with no NSS plugins.
The cost is O(peers) small writes per change, fine for the hundreds of containers per network a
single host runs; an embedded resolver (DESIGN.md) can replace it behind the same refresh() calls.

Global (overlay) networks span hosts: their peers on other hosts come from the global store's
endpoint records (named by their endpoint, which carries the remote sandbox's name and aliases). The
daemon calls refresh(networks={ids}) when peers change. etcd is read only when a container here is
on a global network; if it cannot be read, those containers' files are left as they are (stale
names beat no names) and the next refresh catches up.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable

from runner.paths import Layout

HOSTS_HEADER = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)
CONTAINER_LABEL = "netctl.container"


def render(own: list[tuple[str, list[str]]], peers: list[tuple[str, list[str]]]) -> str:
    """The hosts file: the fixed header, then the container's own addresses, then its peers' (pure)."""
    lines = [HOSTS_HEADER]
    for address, names in own + peers:
        unique = list(dict.fromkeys(n for n in names if n))
        if unique:
            lines.append(f"{address}\t{' '.join(unique)}\n")
    return "".join(lines)


def plan(sandboxes, endpoints, containers: set[str]) -> dict[str, str]:
    """{sandbox id: hosts content} for the sandboxes in `containers` (pure: model objects in, text out)."""
    by_network = defaultdict(list)
    for endpoint in endpoints:
        by_network[endpoint.network_id].append(endpoint)
    by_sandbox = defaultdict(list)
    for endpoint in endpoints:
        by_sandbox[endpoint.sandbox_id].append(endpoint)
    names = {s.id: s for s in sandboxes}
    result = {}
    for sandbox in sandboxes:
        if sandbox.id not in containers:
            continue
        own, peers = [], []
        for endpoint in by_sandbox.get(sandbox.id, []):
            for address in endpoint.addresses:
                own.append((address.split("/")[0], [sandbox.hostname, sandbox.name]))
            for peer in by_network[endpoint.network_id]:
                if peer.sandbox_id == sandbox.id:
                    continue
                owner = names.get(peer.sandbox_id)
                peer_names = [owner.name if owner else peer.name, *peer.aliases]
                for address in peer.addresses:
                    peers.append((address.split("/")[0], peer_names))
        result[sandbox.id] = render(own, peers)
    return result


def remote_endpoints(controller, network_ids: set[str]) -> list:
    """Endpoints of other hosts on the global networks `network_ids` (StoreError if etcd cannot say)."""
    if not network_ids or not controller.store_url:
        return []
    found = []
    with controller.global_store.snapshot() as g:
        for network_id in sorted(network_ids):
            found += [e for host, e in g.list_placed_endpoints(network_id=network_id) if host != controller.host_name]
    return found


def refresh(controller, layout: Layout, *, networks: Iterable[str] | None = None, sandboxes: Iterable[str] = ()) -> int:
    """Rewrite the hosts files of containers on `networks` (ids; None: every container) and of
    `sandboxes` (ids: e.g. one just disconnected) under the store's write lock. Returns how many files
    changed. Cheap when the host runs no container."""
    if not os.path.isdir(layout.containers):
        return 0
    wanted = set(networks) if networks is not None else None
    also = set(sandboxes)
    changed = 0
    with controller.store.transaction() as tx:
        records = tx.list_sandboxes()
        endpoints = tx.list_endpoints()
        containers = set()
        for sandbox in records:
            if not sandbox.container_id or not os.path.exists(_hosts_path(layout, sandbox.container_id)):
                continue
            if wanted is not None and sandbox.id not in also and not any(
                e.sandbox_id == sandbox.id and e.network_id in wanted for e in endpoints
            ):
                continue
            containers.add(sandbox.id)
        endpoints += _remote_peers_of(controller, tx, endpoints, containers)
        by_id = {s.id: s for s in records}
        for sandbox_id, content in plan(records, endpoints, containers).items():
            path = _hosts_path(layout, by_id[sandbox_id].container_id)
            if write_in_place(path, content + extra_hosts(path)):
                changed += 1
    return changed


def _remote_peers_of(controller, tx, endpoints, containers: set[str]) -> list:
    """Remote endpoints of the global networks the `containers` are on; on a store failure those
    containers are dropped from `containers` (their files stay as they are)."""
    from libnetwork.controller import is_global_copy

    local_networks = None
    on_global: dict[str, set[str]] = defaultdict(set)  # network id -> sandboxes here
    for endpoint in endpoints:
        if endpoint.sandbox_id in containers and is_global_copy(endpoint):
            if local_networks is None:
                local_networks = {n.id for n in tx.list_networks()}
            if endpoint.network_id not in local_networks:
                on_global[endpoint.network_id].add(endpoint.sandbox_id)
    if not on_global:
        return []
    from libnetwork.errors import NetctlError

    try:
        return remote_endpoints(controller, set(on_global))
    except NetctlError as err:
        import logging

        logging.getLogger(__name__).warning("names of other hosts not refreshed: %s", err.message)
        for sandbox_ids in on_global.values():
            containers.difference_update(sandbox_ids)
        return []


def networks_of(controller, sandbox_ref: str) -> set[str]:
    """Ids of the networks a sandbox is on (empty if it does not exist)."""
    with controller.store.snapshot() as tx:
        sandbox = tx.get_sandbox(sandbox_ref)
        if sandbox is None:
            return set()
        return {e.network_id for e in tx.list_endpoints(sandbox_id=sandbox.id)}


EXTRA_HOSTS = "extra-hosts"  # beside the hosts file: the container's --add-host lines, kept on rewrites


def extra_hosts(hosts_path: str) -> str:
    try:
        with open(os.path.join(os.path.dirname(hosts_path), EXTRA_HOSTS)) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def _hosts_path(layout: Layout, container_id: str) -> str:
    return os.path.join(layout.container(container_id), "hosts")


def write_in_place(path: str, content: str) -> bool:
    """Overwrite `path` keeping its inode (bind mounts see the change); False if already equal."""
    data = content.encode()
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False  # the container was removed meanwhile
    try:
        current = os.read(fd, len(data) + 1)
        if current == data:
            return False
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, data)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)
    return True


def resolv_conf(host_file: str = "/etc/resolv.conf") -> str:
    """The host's resolv.conf without loopback name servers (unreachable from a container's netns)."""
    try:
        with open(host_file) as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    kept = []
    for line in lines:
        parts = line.split()
        if parts[:1] == ["nameserver"] and len(parts) > 1 and (parts[1].startswith("127.") or parts[1] == "::1"):
            continue
        kept.append(line)
    return "\n".join(kept) + ("\n" if kept else "")
