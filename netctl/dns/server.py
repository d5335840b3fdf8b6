"""The serving thread: every sandbox's sockets in one epoll loop, answers from the current Index.

One thread reads all UDP listeners, the forwarder's upstream sockets (through its own epoll) and a
wake-up pipe through which the indexer hands over new Indexes and sockets (netctl/dns/service.py).
The Index is only swapped, never changed in place, so a query reads no store and takes no lock: its
answer is the View's prepared bytes with the query's ID put in.

Fairness and bounds: a readable socket is read at most BATCH times per turn of the loop, so a
container flooding its socket gets its turn like the others and no more; what it sends beyond that
waits in its own socket's kernel queue (SO_RCVBUF, bounded) and is dropped by the kernel when full.
Forwarded queries are bounded per sandbox and in all (netctl/dns/upstream.py). TCP connections are
served by a pool of threads, at most TCP_MAX at once and TCP_PER_SANDBOX for one sandbox (more are
closed at accept, so one container holding connections open cannot take the pool), each for at most
TCP_QUERIES queries, TCP_IDLE_S of silence and TCP_LIFE_S in all.
"""

from __future__ import annotations

import array
import fcntl
import logging
import os
import queue
import select
import socket
import struct
import termios
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from netctl.dns import upstream, wire
from netctl.dns.index import Index, View
from netctl.dns.listeners import Sockets

log = logging.getLogger("netctl.dns")
BATCH = 32  # datagrams read from one socket per turn
MAX_QUERY = 4096  # bytes read of one datagram (EDNS0 clients send less; more is truncated, then FORMERR)
UDP_LIMIT = 512  # a larger local answer is sent truncated (TC): the asker retries over TCP
TCP_MAX = 32
TCP_PER_SANDBOX = 3
# A worker for every connection allowed: with fewer, connections of a few containers sending slowly
# held them all and the others' waited in the pool's queue (tests/dns/test_fuzz.py).
TCP_WORKERS = TCP_MAX
TCP_QUERIES = 64
TCP_IDLE_S = 5.0
TCP_LIFE_S = 10.0  # a connection's whole life: a byte now and then (each under TCP_IDLE_S) ends there too
LOG_EVERY_S = 60.0  # an unexpected error is logged at most this often (never a traceback per packet)


@dataclass
class Update:
    """What the indexer hands over: the new Index, sockets opened for new sandboxes, sandboxes gone,
    the host's upstreams, and who waits to hear that it applied (control socket addresses)."""

    index: Index
    opened: list[Sockets] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    host_servers: tuple[str, ...] = ()
    done: threading.Event | None = None


class Slot:
    """One sandbox's listeners with what its queries see."""

    __slots__ = ("sockets", "view", "servers", "sandbox_id", "tcp_open")

    def __init__(self, sockets: Sockets, view: View, servers: tuple[str, ...]):
        self.sockets = sockets
        self.view = view
        self.servers = servers
        self.sandbox_id = sockets.sandbox_id
        self.tcp_open = 0  # its TCP connections being served (changed under Server._tcp_lock)


_UDP, _TCP, _UPSTREAM, _WAKE = range(4)


class Server:
    def __init__(self) -> None:
        # select.epoll, not selectors: its select() costs 1.5 us per wake-up with a socket ready,
        # epoll.poll() 0.67 us (timeit on this machine), on a path of ~10 us per query.
        self.epoll = select.epoll()
        self.handlers: dict[int, tuple[int, object]] = {}  # fd -> (kind, slot or socket)
        self.slots: dict[str, Slot] = {}
        self.updates: queue.SimpleQueue[Update] = queue.SimpleQueue()
        self.forwarder = upstream.Forwarder()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._watch(self._wake_r, _WAKE, None)
        self._watch(self.forwarder.epoll.fileno(), _UPSTREAM, None)  # readable: an upstream answered
        self._tcp_pool = ThreadPoolExecutor(max_workers=TCP_WORKERS, thread_name_prefix="netctl-dns-tcp")
        self._tcp_lock = threading.Lock()
        self._tcp_open = 0
        self._last_error = 0.0
        self._queued = array.array("i", [0])
        self.errors = 0  # unexpected errors seen (logged at most every LOG_EVERY_S)

    def _watch(self, fd: int, kind: int, thing: object) -> None:
        self.epoll.register(fd, select.EPOLLIN)
        self.handlers[fd] = (kind, thing)

    def _unwatch(self, fd: int) -> None:
        self.epoll.unregister(fd)
        del self.handlers[fd]

    # -- from other threads ----------------------------------------------------------------------

    def post(self, update: Update) -> None:
        self.updates.put(update)
        self.wake()

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass  # a wake-up is pending already

    # -- the loop --------------------------------------------------------------------------------

    def run(self, stopping: threading.Event) -> None:
        poll = self.epoll.poll
        handlers = self.handlers
        forwarder = self.forwarder
        serve_udp = self._serve_udp
        try:
            while not stopping.is_set():
                timeout = 1.0
                if forwarder.pending:
                    deadline = forwarder.expire(time.monotonic())
                    if deadline is not None:
                        timeout = max(0.0, min(1.0, deadline - time.monotonic()))
                for fd, _ in poll(timeout):
                    entry = handlers.get(fd)
                    if entry is None:
                        continue  # closed by an update earlier in this batch
                    kind, thing = entry
                    try:
                        if kind == _UDP:
                            serve_udp(thing)  # type: ignore[arg-type]
                        elif kind == _UPSTREAM:
                            forwarder.receive()
                        elif kind == _TCP:
                            self._accept(thing)  # type: ignore[arg-type]
                        else:
                            self._apply_updates()
                    except Exception as err:  # noqa: BLE001  one bad packet must not stop the server
                        self._unexpected(err)
        finally:
            self._close()

    def _serve_udp(self, slot: Slot) -> None:
        """Up to BATCH datagrams of one sandbox. Whether another is queued is asked with FIONREAD
        (0.37 us), not by a recvfrom that fails with EAGAIN (2.1 us: the exception)."""
        sock = slot.sockets.udp
        recvfrom, sendto = sock.recvfrom, sock.sendto
        view = slot.view
        queued, ioctl, fd = self._queued, fcntl.ioctl, sock.fileno()
        for _ in range(BATCH):
            try:
                data, client = recvfrom(MAX_QUERY)
            except (BlockingIOError, InterruptedError):
                return
            try:
                reply = view.answer(data)
                if reply.__class__ is bytes:
                    if len(reply) > UDP_LIMIT:
                        reply = _truncated(data)
                    sendto(reply, client)
                elif reply == wire.FORWARD:
                    immediate = self.forwarder.start(sock, client, data, slot.servers, slot.sandbox_id)
                    if immediate is not None:
                        sendto(immediate, client)
            except OSError:
                pass  # the asker went away (ECONNREFUSED...) or its namespace is being deleted
            except Exception as err:  # noqa: BLE001
                self._unexpected(err)
            ioctl(fd, termios.FIONREAD, queued, True)
            if not queued[0]:
                return  # (a queued empty datagram also reads 0: epoll reports the socket again)

    def _accept(self, slot: Slot) -> None:
        try:
            conn, _ = slot.sockets.tcp.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        with self._tcp_lock:
            full = self._tcp_open >= TCP_MAX or slot.tcp_open >= TCP_PER_SANDBOX
            if not full:
                self._tcp_open += 1
                slot.tcp_open += 1
        if full:
            conn.close()  # at a limit: the asker retries or gives up; the others are served
            return
        conn.setblocking(True)
        conn.settimeout(TCP_IDLE_S)
        self._tcp_pool.submit(self._serve_tcp, conn, slot)

    def _serve_tcp(self, conn: socket.socket, slot: Slot) -> None:
        deadline = time.monotonic() + TCP_LIFE_S
        try:
            with conn:
                for _ in range(TCP_QUERIES):
                    query = upstream.read_tcp_message(conn, deadline)
                    if query is None:
                        return
                    reply = slot.view.answer(query)
                    if reply == wire.DROP:
                        return
                    if reply == wire.FORWARD:
                        reply = upstream.forward_tcp(query, slot.servers)
                    assert isinstance(reply, bytes)
                    conn.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError:
            pass
        except Exception as err:  # noqa: BLE001
            self._unexpected(err)
        finally:
            with self._tcp_lock:
                self._tcp_open -= 1
                slot.tcp_open -= 1

    def _apply_updates(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                update = self.updates.get_nowait()
            except queue.Empty:
                return
            self._apply(update)

    def _apply(self, update: Update) -> None:
        for sandbox_id in update.closed:
            slot = self.slots.pop(sandbox_id, None)
            if slot is not None:
                for sock in (slot.sockets.udp, slot.sockets.tcp):
                    self._unwatch(sock.fileno())
                slot.sockets.close()
        index = update.index
        for sockets in update.opened:
            listener = index.listeners.get(sockets.sandbox_id)
            if listener is None or sockets.sandbox_id in self.slots:
                sockets.close()
                continue
            slot = Slot(sockets, index.views[listener.networks], ())
            self.slots[sockets.sandbox_id] = slot
            self._watch(sockets.udp.fileno(), _UDP, slot)
            self._watch(sockets.tcp.fileno(), _TCP, slot)
        for sandbox_id, slot in self.slots.items():
            listener = index.listeners.get(sandbox_id)
            if listener is not None:
                slot.view = index.views[listener.networks]
                slot.servers = listener.upstreams or update.host_servers
        if update.done is not None:
            update.done.set()

    def _unexpected(self, err: Exception) -> None:
        self.errors += 1
        now = time.monotonic()
        if now - self._last_error >= LOG_EVERY_S:
            self._last_error = now
            log.warning("name server: unexpected %s: %s (%d so far; logged once a minute)",
                        type(err).__name__, err, self.errors)

    def _close(self) -> None:
        self._tcp_pool.shutdown(wait=False, cancel_futures=True)
        for slot in self.slots.values():
            slot.sockets.close()
        self.slots.clear()
        self.forwarder.close()
        self.epoll.close()
        os.close(self._wake_r)
        os.close(self._wake_w)


def _truncated(query: bytes) -> bytes:
    """TC set, no records: the asker asks again over TCP (RFC 1035 4.2.1)."""
    return wire.truncated(query, wire.read_question(query))
