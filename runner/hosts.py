"""A container's /etc/hosts and /etc/resolv.conf, and the client side of the agent's name server.

Names of other containers come from the host agent's embedded DNS server (netctl/dns/), which every
container on a netctl network reaches at 127.0.0.11, as Docker's: the resolv.conf written here names
it. The hosts file keeps only what Docker's keeps: localhost, the container's own name and hostname
with its addresses, and its --add-host lines (EXTRA_HOSTS beside it). So a container resolves its
own name even while no agent runs, and nothing else then (README, "Names").

The files are bind-mounted on the container's /etc, so they are rewritten in place (a rename would not
be seen): once when the container's endpoints exist, and again when its own endpoints or name change
(connect/disconnect/rename of that container), from the committed state under the store's write lock.
Peers' changes never touch them: those are the name server's.

sync_names() tells the agent's name server that names changed (libnetwork/name_server.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

from libnetwork import name_server
from libnetwork.agent_spawn import spawn_agent
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
EXTRA_HOSTS = "extra-hosts"  # beside the hosts file: the container's --add-host lines, kept on rewrites
NAME_SERVER = name_server.ADDRESS
AGENT_START_WAIT_S = 3.0  # the first container on a host without agent waits this long at most for names
DNS_DOMAIN = name_server.DOMAIN


def render(own: list[tuple[str, list[str]]]) -> str:
    """The hosts file: the fixed header, then the container's own addresses and names (pure)."""
    lines = [HOSTS_HEADER]
    for address, names in own:
        unique = list(dict.fromkeys(n for n in names if n))
        if unique:
            lines.append(f"{address}\t{' '.join(unique)}\n")
    return "".join(lines)


def plan(sandboxes, endpoints, containers: set[str]) -> dict[str, str]:
    """{sandbox id: hosts content} for the sandboxes in `containers` (pure: model objects in, text out)."""
    result = {}
    for sandbox in sandboxes:
        if sandbox.id not in containers:
            continue
        own = []
        for endpoint in endpoints:
            if endpoint.sandbox_id == sandbox.id:
                for address in endpoint.addresses:
                    own.append((address.split("/")[0], [sandbox.hostname, sandbox.name]))
        result[sandbox.id] = render(own)
    return result


def refresh(controller, layout: Layout, *, sandboxes: Iterable[str] = (), start_agent: bool = False) -> int:
    """Rewrite the hosts files of the containers in `sandboxes` (those whose own endpoints changed:
    a file holds only its container's names, so a peer's change never alters it) under the store's
    write lock, then tell the agent's name server (sync_names; start_agent: start one if none runs).
    Returns how many files changed. No store read when `sandboxes` is empty."""
    wanted = set(sandboxes)
    changed = _rewrite(controller, layout, wanted) if wanted and os.path.isdir(layout.containers) else 0
    sync_names(controller.root, start_agent=start_agent)
    return changed


def _rewrite(controller, layout: Layout, wanted: set[str]) -> int:
    changed = 0
    with controller.store.transaction() as tx:
        records = [s for s in tx.list_sandboxes() if s.id in wanted and s.container_id
                   and os.path.exists(_hosts_path(layout, s.container_id))]  # fmt: skip
        if not records:
            return 0
        endpoints = [e for e in tx.list_endpoints() if e.sandbox_id in wanted]
        by_id = {s.id: s for s in records}
        for sandbox_id, content in plan(records, endpoints, set(by_id)).items():
            path = _hosts_path(layout, by_id[sandbox_id].container_id)
            if write_in_place(path, content + extra_hosts(path)):
                changed += 1
    return changed


def sync_names(root: str, *, start_agent: bool = False) -> bool:
    """Tell the agent's name server that names changed, and wait (bounded) until it has them.
    start_agent (the monitor, attaching a container): with no agent for `root`, start one as a CLI
    command does on first use, and wait (AGENT_START_WAIT_S at most) until its name server runs,
    so the container's first lookup finds it; NETCTL_NO_DAEMON=1 in our environment: never."""
    if name_server.sync(root):
        return True
    if not start_agent or os.environ.get("NETCTL_NO_DAEMON") or not spawn_agent(root):
        return False
    # No answer: no agent, a dead one's socket, or one too busy to answer in time. The agent just
    # spawned leaves quietly if another holds the root; either way, ask until one answers (bounded).
    deadline = time.monotonic() + AGENT_START_WAIT_S
    while time.monotonic() < deadline:
        if os.path.exists(name_server.control_path(root)) and name_server.sync(root):
            return True
        time.sleep(0.02)
    return False


def remote_endpoints(controller, network_ids: set[str]) -> list:
    """Endpoints of other hosts on the global networks `network_ids` (StoreError if etcd cannot say)."""
    if not network_ids or not controller.store_url:
        return []
    found = []
    with controller.global_store.snapshot() as g:
        for network_id in sorted(network_ids):
            found += [e for host, e in g.list_placed_endpoints(network_id=network_id) if host != controller.host_name]
    return found


def networks_of(controller, sandbox_ref: str) -> set[str]:
    """Ids of the networks a sandbox is on (empty if it does not exist)."""
    with controller.store.snapshot() as tx:
        sandbox = tx.get_sandbox(sandbox_ref)
        if sandbox is None:
            return set()
        return {e.network_id for e in tx.list_endpoints(sandbox_id=sandbox.id)}


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
    """The host's resolv.conf without loopback name servers (unreachable from a container's netns):
    for containers on no netctl network (--network none)."""
    kept = []
    for line in _lines(host_file):
        parts = line.split()
        if parts[:1] == ["nameserver"] and len(parts) > 1 and (parts[1].startswith("127.") or parts[1] == "::1"):
            continue
        kept.append(line)
    return "\n".join(kept) + ("\n" if kept else "")


def container_resolv_conf(search: list[str] | None = None, options: list[str] | None = None,
                          host_file: str = "/etc/resolv.conf") -> str:
    """A netctl-networked container's resolv.conf: the agent's name server, which forwards what it
    does not own (to the host's name servers, or the container's --dns); search: DNS_DOMAIN, then
    --dns-search or the host's; options: --dns-option or the host's."""
    host_search: list[str] = []
    host_options: list[str] = []
    for line in _lines(host_file):
        parts = line.split()
        if parts[:1] in (["search"], ["domain"]):
            host_search = parts[1:]  # the last search/domain line wins (resolv.conf(5))
        elif parts[:1] == ["options"]:
            host_options += parts[1:]
    domains = list(dict.fromkeys([DNS_DOMAIN, *(search if search else host_search)]))
    if search == ["."]:  # Docker's --dns-search . : no search domains of the host
        domains = [DNS_DOMAIN]
    chosen = options if options else host_options
    text = f"nameserver {NAME_SERVER}\nsearch {' '.join(domains)}\n"
    if chosen:
        text += f"options {' '.join(chosen)}\n"
    return text


def _lines(path: str) -> list[str]:
    try:
        with open(path) as f:
            return f.read().splitlines()
    except OSError:
        return []

