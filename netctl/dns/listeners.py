"""The server's sockets inside each sandbox: UDP and TCP on 127.0.0.11:53, made in the sandbox's
network namespace and used from the agent's.

A socket belongs to the namespace of the thread that created it, for its whole life; the thread that
makes them (the indexer's) enters the sandbox's namespace (libnetwork.netns.entered: setns on that
thread only), creates and binds both, and returns. No process runs per container: one thread serves
every sandbox's sockets, and the socket a query arrives on says which sandbox asked.

A socket holds a reference on its namespace: the server closes a sandbox's sockets as soon as the
sandbox leaves the store (the runner and the CNI plugins wait for that before they return), so a
deleted sandbox's namespace is not kept alive by the agent.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

ADDRESS = "127.0.0.11"  # Docker's: the address containers' resolv.conf names
PORT = 53
TCP_BACKLOG = 16
RECEIVE_BUFFER = 256 * 1024  # the kernel's queue for one sandbox: bounded, whatever it sends


@dataclass
class Sockets:
    sandbox_id: str
    udp: socket.socket
    tcp: socket.socket

    def close(self) -> None:
        self.udp.close()
        self.tcp.close()


class CannotOpen(Exception):
    """The sockets of a sandbox could not be made (why: one line for the log). Never taken as final:
    the indexer tries again (out of descriptors, lo not up yet in a CNI runtime's namespace...)."""


def open_in(sandbox_id: str, netns_path: str) -> Sockets:
    """Both sockets inside the namespace at `netns_path`. Raises CannotOpen."""
    from libnetwork import netns
    from libnetwork.errors import NetctlError

    try:
        with netns.entered(netns_path):
            return _bind(sandbox_id)
    except NetctlError as err:
        raise CannotOpen(err.message) from None
    except OSError as err:
        hint = ""
        if err.errno == errno.EADDRNOTAVAIL:
            hint = " (is lo up in it?)"
        elif err.errno == errno.EADDRINUSE:
            hint = " (something in the container listens there already)"
        raise CannotOpen(f"{ADDRESS}:{PORT}: {err.strerror}{hint}") from None


def _bind(sandbox_id: str) -> Sockets:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        udp.bind((ADDRESS, PORT))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((ADDRESS, PORT))
            tcp.listen(TCP_BACKLOG)
        except BaseException:
            tcp.close()
            raise
    except BaseException:
        udp.close()
        raise
    return Sockets(sandbox_id, udp, tcp)
