"""The client side of the host agent's embedded name server (netctl/dns/), for every layer above.

sync() is how a writer tells the server that names changed (after `run`, `rm`, connect, disconnect,
CNI ADD/DEL, an overlay reconcile): a datagram to ROOT/dns.sock, answered once the server has taken
the store's new state, so a container's first lookup never races the socket the server opens in
its namespace, and a removed sandbox's namespace is no longer held by the server's sockets. With no
agent, nothing waits. Here (not in netctl/) because the CNI plugins and the runner call it, and
both sit below the agent's package.
"""

from __future__ import annotations

import os
import socket

ADDRESS = "127.0.0.11"  # Docker's: what containers' resolv.conf names, inside their own namespace
DOMAIN = "netctl.internal"  # containers' first search domain; names under it are the server's alone
SYNC_TIMEOUT_S = 1.0  # a writer waits this long at most for the server (then goes on)


def control_path(root: str) -> str:
    from libnetwork import rootdir

    return rootdir.path(root, rootdir.DNS_SOCKET)


def sync(root: str, timeout: float = SYNC_TIMEOUT_S) -> bool:
    """Tell the server that names changed and wait (bounded) until it has the store's state.
    False when no agent serves names for `root`, or it did not answer in time."""
    path = control_path(root)
    if not os.path.exists(path):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.bind("")  # an autobound (abstract) address: where the server answers
            sock.settimeout(timeout)
            sock.sendto(b"sync", path)
            sock.recv(16)
        except OSError:  # no agent (ECONNREFUSED), not ours to write to, or no answer in time
            return False
    return True


def cni_dns() -> dict[str, list[str]]:
    """The `dns` of a netctl CNI plugin's result when its configuration names none: the agent's
    server, as netctl's own containers have it (podman writes it to the container's resolv.conf)."""
    return {"nameservers": [ADDRESS], "search": [DOMAIN]}
