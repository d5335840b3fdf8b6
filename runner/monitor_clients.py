"""The monitor's clients: connections on ROOT/monitor.sock (accepted only from root or the monitor's
own user, libnetwork/ipc.py), the frames they send read into requests, and what the monitor sends
them buffered and flushed without ever blocking the loop; a client that reads too slowly is detached.

Separate from the requests themselves (runner/monitor.py) and from the containers' output
(runner/monitor_watch.py): this layer knows frames and sockets, not what they carry.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import socket
from dataclasses import dataclass, field
from typing import cast

from libnetwork import ipc
from libnetwork.errors import InvalidArgument
from runner import protocol
from runner.monitor_loop import EventLoop

log = logging.getLogger("netctl.monitor")

CLIENT_BUFFER_MAX = 8 << 20  # a client that reads slower than this much output is detached


@dataclass(eq=False)  # compared and hashed by identity
class Client:
    sock: socket.socket
    reader: protocol.FrameReader = field(default_factory=protocol.FrameReader)
    out: bytearray = field(default_factory=bytearray)
    attached: str = ""  # container id whose output this client receives
    closed: bool = False


class ClientServer(EventLoop):
    """The event loop, serving framed clients on `listener`. Layers above implement _request() (a
    JSON request with the descriptors passed along with it) and _client_gone()."""

    def __init__(self) -> None:
        super().__init__()
        self.listener: socket.socket | None = None

    def _event(self, kind: str, obj: object, fd: int, events: int) -> None:
        if kind == "accept":
            self._accept()
        elif kind == "client":
            client = cast(Client, obj)
            if events & selectors.EVENT_READ:
                self._client_readable(client)
            if events & selectors.EVENT_WRITE and not client.closed:
                self._flush(client)
        else:
            super()._event(kind, obj, fd, events)

    def _drop_failed(self, kind: str, obj: object, fd: int) -> None:
        if kind == "client":
            self._drop(cast(Client, obj))
        else:
            super()._drop_failed(kind, obj, fd)

    def _request(self, client: Client, request: dict, fds: list[int]) -> None:
        raise NotImplementedError

    def _client_gone(self, client: Client) -> None:
        """`client` was dropped: forget it wherever it was waiting or attached."""

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, _ = cast(socket.socket, self.listener).accept()
            except BlockingIOError:
                return
            if not ipc.authorized(sock):  # a socket passed to another user must not let it in
                log.warning("refused a client that is neither root nor the monitor's user")
                sock.close()
                continue
            sock.setblocking(False)
            client = Client(sock)
            self.selector.register(sock, selectors.EVENT_READ, ("client", client))

    def _client_readable(self, client: Client) -> None:
        try:
            alive = protocol.receive(client.sock, client.reader)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            alive = False
        if not alive:
            self._drop(client)
            return
        try:
            for kind, payload in client.reader.frames():
                if kind == protocol.JSON:
                    self._request(client, json.loads(payload), client.reader.take_fds())
        except (ValueError, KeyError, TypeError) as err:
            self._send(client, protocol.error_event(InvalidArgument(f"bad request to the monitor: {err}")))
            self._drop(client)

    def _send(self, client: Client, event: dict, fds: list[int] | None = None) -> None:
        self._send_raw(client, protocol.message(event), fds)

    def _send_raw(self, client: Client, data: bytes, fds: list[int] | None = None) -> None:
        if client.closed:
            return
        if fds:
            self._flush(client)
            if not client.out:
                try:
                    protocol.send_with_fds(client.sock, data, fds)
                    return
                except OSError:
                    self._drop(client)
                    return
        client.out += data
        if len(client.out) > CLIENT_BUFFER_MAX:
            log.warning("client too slow; detaching it")
            self._drop(client)
            return
        self._flush(client)

    def _flush(self, client: Client) -> None:
        while client.out and not client.closed:
            try:
                sent = client.sock.send(client.out)
            except BlockingIOError:
                break
            except OSError:
                self._drop(client)
                return
            del client.out[:sent]
        if not client.closed:
            mask = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.out else 0)
            self.selector.modify(client.sock, mask, ("client", client))

    def _close_after_flush(self, client: Client) -> None:
        """Send what is queued, then close (bounded: the socket is closed after at most 5 s)."""
        if not client.out:
            self._drop(client)
        else:
            self.later(5.0, lambda: self._drop(client))

    def _drop(self, client: Client) -> None:
        if client.closed:
            return
        client.closed = True
        try:
            self.selector.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        client.sock.close()
        for fd in client.reader.take_fds():
            os.close(fd)
        self._client_gone(client)
