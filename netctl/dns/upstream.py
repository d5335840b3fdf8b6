"""Forwarding: the names the embedded server does not own go to upstream resolvers, from the host side.

The upstreams are the host's: the name servers of the agent's /etc/resolv.conf, loopback ones
included (127.0.0.53 of systemd-resolved, a local dnsmasq): the agent forwards from the host's own
network namespace, where they are reachable, which a container's namespace never was. A container
run with --dns has its own list instead.

What goes upstream is the query rebuilt from its question and EDNS (wire.forwardable), never the
asker's bytes. UDP: each forwarded query goes from its own socket in the agent's namespace,
connected to the upstream (a random source port), under a random ID; the answer, matched by socket
and ID, goes back to the asker with its own ID, through the socket the query came in on (so from
127.0.0.11:53 inside the asker's namespace). An upstream that refuses, or does not answer within UPSTREAM_TIMEOUT_S,
hands the query to the next; when none is left the asker gets SERVFAIL. Answers are relayed as they
come, TC bit included: the asker's resolver then asks again over TCP, which the server forwards over
TCP (forward_tcp).

Bounds: PENDING_MAX queries in flight in all, PENDING_PER_SANDBOX for one sandbox: past them a
query is answered SERVFAIL at once, so one container cannot fill the table for the others.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import select
import socket
import struct
import time
from dataclasses import dataclass

from netctl.dns import wire

log = logging.getLogger("netctl.dns")
HOST_RESOLV_CONF = "/etc/resolv.conf"
PORT = 53
UPSTREAM_TIMEOUT_S = 2.0
PENDING_MAX = 1024  # a descriptor each (its own socket); moby's resolver allows as many concurrent forwards
PENDING_PER_SANDBOX = 256
TCP_TIMEOUT_S = 4.0
MAX_MESSAGE = 65535


def parse_resolv_conf(text: str) -> list[str]:
    """The name servers of a resolv.conf, in order (invalid addresses skipped)."""
    servers = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            address = parts[1].split("%", 1)[0]
            try:
                ipaddress.ip_address(address)
            except ValueError:
                continue
            servers.append(parts[1])
    return servers


class HostServers:
    """The host's resolv.conf name servers, re-read when the file changes (checked by the indexer)."""

    def __init__(self, path: str = HOST_RESOLV_CONF):
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self.servers: tuple[str, ...] = ()
        self._read = False

    def changed(self) -> bool:
        """Re-read if the file's identity or time changed; True if the list is different."""
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = (0, 0, 0)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            with open(self.path) as f:
                servers = tuple(parse_resolv_conf(f.read()))
        except OSError:
            servers = ()
        if servers == self.servers:
            return False
        # A change is news; the first read is not (the agent's first line says it is listening).
        log.log(logging.INFO if self._read else logging.DEBUG, "upstream name servers: %s",
                ", ".join(servers) or "none")
        self._read = True
        self.servers = servers
        return True


def sockaddr(server: str) -> tuple:
    """The socket address of a name server ("fe80::1%eth0" keeps its scope)."""
    address, _, scope = server.partition("%")
    if ":" in address:
        scope_id = socket.if_nametoindex(scope) if scope else 0
        return (address, PORT, 0, scope_id)
    return (address, PORT)


@dataclass
class Pending:
    reply: socket.socket  # the listener socket the query came in on
    client: tuple  # the asker's address there
    client_id: bytes  # the asker's ID, put back into the answer
    query: bytes  # as sent upstream (our ID)
    servers: tuple[str, ...]
    tried: int  # index into servers of the one asked now
    deadline: float
    sandbox_id: str
    sock: socket.socket | None = None  # its own socket to the server asked now


class Forwarder:
    """Forwarded UDP queries in flight. Used by the server's thread only, which watches `epoll`'s
    descriptor and calls receive() when it is readable.

    Every query asks from its own socket, connect()ed to the server asked: the kernel gives it a
    random source port (RFC 5452) and accepts only that server's datagrams on it, so a spoofed answer
    must guess the port as well as the random ID. With one shared socket the port was fixed for the
    agent's life, which a container could find (the socket listened on every host address, the
    bridge's gateway included) and then race others' answers with only 65536 IDs to try."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.pending: dict[int, Pending] = {}  # its socket's descriptor -> query
        self.per_sandbox: dict[str, int] = {}

    def close(self) -> None:
        for entry in list(self.pending.values()):
            self._drop_socket(entry)
        self.pending.clear()
        self.epoll.close()

    def start(self, reply: socket.socket, client: tuple, query: bytes, servers: tuple[str, ...],
              sandbox_id: str) -> bytes | None:
        """Send `query` to the first of `servers`; an immediate answer (SERVFAIL) if it cannot be."""
        if not servers:
            return wire.error(query, wire.SERVFAIL)
        if len(self.pending) >= PENDING_MAX or self.per_sandbox.get(sandbox_id, 0) >= PENDING_PER_SANDBOX:
            return wire.error(query, wire.SERVFAIL)
        clean = wire.forwardable(query)
        if clean is None:
            return wire.error(query, wire.FORMERR)
        entry = Pending(reply, client, query[:2], clean, servers, -1, 0.0, sandbox_id)
        self.per_sandbox[sandbox_id] = self.per_sandbox.get(sandbox_id, 0) + 1
        if not self._send_next(entry):
            self._forget(entry)
            return wire.error(query, wire.SERVFAIL)
        return None

    def _send_next(self, entry: Pending) -> bool:
        while entry.tried + 1 < len(entry.servers):
            entry.tried += 1
            try:
                address = sockaddr(entry.servers[entry.tried])
                sock = socket.socket(socket.AF_INET6 if len(address) == 4 else socket.AF_INET,
                                     socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
            except OSError:  # no such scope interface, no IPv6, out of descriptors
                continue
            entry.query = os.urandom(2) + entry.query[2:]
            try:
                sock.connect(address)
                sock.send(entry.query)
                self.epoll.register(sock.fileno(), select.EPOLLIN)
            except OSError:
                sock.close()
                continue
            entry.sock = sock
            entry.deadline = time.monotonic() + UPSTREAM_TIMEOUT_S
            self.pending[sock.fileno()] = entry
            return True
        return False

    def receive(self) -> None:
        """Relay what came back to the queries whose sockets are readable (a bounded batch)."""
        for fd, _ in self.epoll.poll(0, 64):
            entry = self.pending.get(fd)
            if entry is None or entry.sock is None:
                continue
            try:
                data = entry.sock.recv(MAX_MESSAGE)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:  # the server refused (ICMP port unreachable): the next one at once
                self._next_or_fail(entry)
                continue
            if len(data) < wire.HEADER or data[:2] != entry.query[:2]:
                continue  # not the answer to this query (a late one to an earlier ID cannot come here)
            self._drop_socket(entry)
            self._forget(entry)
            try:
                entry.reply.sendto(entry.client_id + data[2:], entry.client)
            except OSError:
                pass  # the asker's namespace or socket went away

    def expire(self, now: float) -> float | None:
        """Move timed-out queries to their next server (or SERVFAIL); the next deadline, if any."""
        for entry in [e for e in self.pending.values() if e.deadline <= now]:
            self._next_or_fail(entry)
        return min((e.deadline for e in self.pending.values()), default=None)

    def _next_or_fail(self, entry: Pending) -> None:
        self._drop_socket(entry)
        if self._send_next(entry):
            return
        self._forget(entry)
        try:
            entry.reply.sendto(wire.error(entry.client_id + entry.query[2:], wire.SERVFAIL), entry.client)
        except OSError:
            pass

    def _drop_socket(self, entry: Pending) -> None:
        sock, entry.sock = entry.sock, None
        if sock is None:
            return
        fd = sock.fileno()
        self.pending.pop(fd, None)
        with contextlib.suppress(OSError, ValueError):
            self.epoll.unregister(fd)
        sock.close()

    def _forget(self, entry: Pending) -> None:
        left = self.per_sandbox.get(entry.sandbox_id, 1) - 1
        if left > 0:
            self.per_sandbox[entry.sandbox_id] = left
        else:
            self.per_sandbox.pop(entry.sandbox_id, None)


def forward_tcp(query: bytes, servers: tuple[str, ...]) -> bytes:
    """One query over TCP to the first server that answers (blocking, bounded): for the TCP path."""
    clean = wire.forwardable(query)
    if clean is None:
        return wire.error(query, wire.FORMERR)
    for server in servers:
        try:
            address = sockaddr(server)
            family = socket.AF_INET6 if len(address) == 4 else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
                sock.settimeout(TCP_TIMEOUT_S)
                sock.connect(address)
                sock.sendall(struct.pack("!H", len(clean)) + clean)
                answer = read_tcp_message(sock)
            if answer is not None:
                return answer
        except OSError:
            continue
    return wire.error(query, wire.SERVFAIL)


def read_tcp_message(sock: socket.socket, deadline: float | None = None) -> bytes | None:
    """One length-prefixed DNS message, or None at EOF. With `deadline` (time.monotonic()), TimeoutError
    once it passed, however the bytes trickle in (the socket's own timeout bounds each recv only)."""
    head = _read_exactly(sock, 2, deadline)
    if head is None:
        return None
    return _read_exactly(sock, struct.unpack("!H", head)[0], deadline)


def _read_exactly(sock: socket.socket, size: int, deadline: float | None) -> bytes | None:
    chunks, left = [], size
    idle = sock.gettimeout()
    while left:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the connection's time is up")
            sock.settimeout(remaining if idle is None else min(idle, remaining))
        chunk = sock.recv(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
