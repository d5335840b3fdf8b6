"""The server's sockets inside each sandbox: what containers send to 127.0.0.11:53 (UDP and TCP)
reaches them, made in the sandbox's network namespace and used from the agent's.

A socket belongs to the namespace of the thread that created it, for its whole life; the thread that
makes them (the indexer's) enters the sandbox's namespace (libnetwork.netns.entered: setns on that
thread only), creates and binds both, and returns. No process runs per container: one thread serves
every sandbox's sockets, and the socket a query arrives on says which sandbox asked.

Port 53 stays the container's: a name server in it (dnsmasq, CoreDNS) binds 0.0.0.0:53, which a
socket on 127.0.0.11:53 would make fail (EADDRINUSE). So, as Docker's resolver, the sockets take
ports the kernel picks on 127.0.0.11, and a table in the namespace (TABLE, nftables, at the output
hook) rewrites the port: 127.0.0.11:53 -> the socket's port on the way in, back to 53 on the way out.
Stateless (no conntrack, unlike Docker's DNAT): the rules are simply replaced when a new agent binds
new ports, and no tracked flow keeps pointing at an old one. Cost measured: +0.8 us a packet.

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
TABLE = "netctl_dns"  # in each sandbox's namespace: 127.0.0.11:53 <-> the sockets' own ports
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
        hint = " (is lo up in it?)" if err.errno == errno.EADDRNOTAVAIL else ""
        raise CannotOpen(f"{ADDRESS}: {err.strerror}{hint}") from None


def _bind(sandbox_id: str) -> Sockets:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        udp.bind((ADDRESS, 0))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            tcp.bind((ADDRESS, 0))
            tcp.listen(TCP_BACKLOG)
            _redirect(udp.getsockname()[1], tcp.getsockname()[1])
        except BaseException:
            tcp.close()
            raise
    except BaseException:
        udp.close()
        raise
    return Sockets(sandbox_id, udp, tcp)


def _redirect(udp_port: int, tcp_port: int) -> None:
    """TABLE in the current namespace, replacing an earlier agent's in one transaction: 53 <-> the
    sockets' ports for 127.0.0.11. Raises KernelError."""
    from libnetwork import nftables

    table = {"family": "ip", "name": TABLE}
    chain = {"family": "ip", "table": TABLE, "name": "output", "type": "filter", "hook": "output",
             "prio": -300, "policy": "accept"}  # raw priority: before conntrack, if the container uses it
    commands: list[dict] = [{"add": {"table": table}}, {"delete": {"table": table}}, {"add": {"table": table}},
                            {"add": {"chain": chain}}]
    for protocol, port in (("udp", udp_port), ("tcp", tcp_port)):
        for address, field, match, value in (("daddr", "dport", PORT, port), ("saddr", "sport", port, PORT)):
            expr = [_equal("ip", address, ADDRESS), _equal(protocol, field, match),
                    {"mangle": {"key": {"payload": {"protocol": protocol, "field": field}}, "value": value}}]
            commands.append({"add": {"rule": {"family": "ip", "table": TABLE, "chain": "output", "expr": expr}}})
    nftables.run(commands, doing=f"redirect {ADDRESS}:{PORT} to the name server")


def _equal(protocol: str, field: str, value: object) -> dict:
    return {"match": {"op": "==", "left": {"payload": {"protocol": protocol, "field": field}}, "right": value}}
