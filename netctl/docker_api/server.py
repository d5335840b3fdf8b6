"""The Docker Engine API's socket: HTTP/1.1 over a Unix socket, served by the host agent.

The framing (request line, header fields, keep-alive, Expect: 100-continue, the reply's head) is
http1.py's; this module adds what Docker clients need on top: chunked request bodies (`docker load`
streams its tarball chunked), chunked replies (events, progress, logs), connection hijacking (attach,
exec), version prefixes and dockerd's error shape.

The socket is 0600 root, or 0660 root:GROUP with the agent's --group, and every connection's peer
credentials are checked again (libnetwork/ipc.authorized): root, the agent's uid or the group. No TCP.
At most MAX_CONNECTIONS connections are served at once (one thread each; more wait in the backlog);
an idle keep-alive connection is dropped after IDLE_TIMEOUT_S.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from libnetwork import ipc, rootdir
from libnetwork.errors import InvalidArgument, NetctlError
from netctl.docker_api import http1
from netctl.docker_api.api import Api
from netctl.docker_api.http import (
    ApiError,
    BodyReader,
    Empty,
    Hijack,
    Json,
    Raw,
    Request,
    Stream,
    status_of,
)
from netctl.docker_api.routing import MAX_VERSION, Router, split_version

log = logging.getLogger("netctl.docker_api")

MAX_CONNECTIONS = 128  # connections served at once: compose and testcontainers keep several open
SPARE_ACCEPTORS = 2  # threads waiting in accept() for the next connection
IDLE_TIMEOUT_S = 120.0  # an idle keep-alive connection (or a client that stalls mid-request) goes
STOP_WAIT_S = 10.0  # a stopping agent waits this long for requests in flight
DRAIN_LIMIT = 1 << 20  # bytes a closing connection reads of what the client sent unread (_close)
SERVER_NAME = "netctl"
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE")


def _nothing() -> None:
    pass


class _SocketWriter:
    """The connection's write side: every write is sent whole at once (nothing is buffered)."""

    def __init__(self, sock: socket.socket):
        self._sock = sock

    def write(self, data: bytes) -> int:
        self._sock.sendall(data)
        return len(data)


def default_socket(root: str) -> str:
    return rootdir.path(root, rootdir.DOCKER_SOCKET)


class DockerApiServer:
    """Serves the socket from a pool of threads (_acceptor); stop() closes it and ends the connections."""

    def __init__(self, root: str, path: str = "", *, group: str = "", deferred: object | None = None,
                 agent_stopping: threading.Event | None = None):
        self.root = os.path.abspath(root)
        self.path = path or default_socket(self.root)
        self.group = group
        self.api = Api(self.root, gid=ipc.group_id(group) if group else -1, deferred=deferred,
                       agent_stopping=agent_stopping)
        self.router = Router()
        self.stopping = self.api.stopping
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._waiting = 0  # threads in accept()
        self._inode = 0

    def start(self) -> DockerApiServer:
        import stat

        if os.path.lexists(self.path):
            if not stat.S_ISSOCK(os.lstat(self.path).st_mode):  # never unlink a file that is not a socket
                raise InvalidArgument(f"{self.path} exists and is not a socket; pass another --docker-socket")
            probe = ipc.try_connect(self.path)
            if probe is not None:
                probe.close()
                raise InvalidArgument(f"{self.path} is served by another process (dockerd?); stop it or pass "
                                      "another --docker-socket")
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._listener = ipc.listen(self.path, group=self.group)
        self._inode = os.stat(self.path).st_ino
        for _ in range(SPARE_ACCEPTORS):
            self._spawn_acceptor()
        log.info("Docker Engine API on %s", self.path)
        return self

    def stop(self) -> None:
        self.stopping.set()
        listener = self._listener
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
        with self._lock:
            connections = list(self._connections)
        for conn in connections:  # streams and hijacked connections end with their socket
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + STOP_WAIT_S
        for _ in range(MAX_CONNECTIONS):
            if not self._slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
                log.warning("Docker API stopping with requests still running")
                break
        if listener is not None:
            listener.close()
            with contextlib.suppress(OSError):
                if os.stat(self.path).st_ino == self._inode:  # still ours, not a successor's
                    os.unlink(self.path)
        self.api.close()

    def _spawn_acceptor(self) -> None:
        if not self._slots.acquire(blocking=False):
            return  # MAX_CONNECTIONS threads already: the next connection waits in the backlog
        threading.Thread(target=self._acceptor, name="docker-api-conn", daemon=True).start()

    def _acceptor(self) -> None:
        """Wait in accept() and serve what comes, in turn, while at most SPARE_ACCEPTORS wait. The
        thread the kernel wakes serves the connection itself: no thread to start and hand it to, which
        cost each new connection ~0.1 ms and a switch (every docker CLI call opens one)."""
        try:
            while True:
                with self._lock:
                    if self._waiting >= SPARE_ACCEPTORS:
                        return
                    self._waiting += 1
                try:
                    conn = self._accept()
                finally:
                    with self._lock:
                        self._waiting -= 1
                        nobody_left = self._waiting == 0
                if conn is None:
                    return
                if nobody_left:  # keep one waiting while this thread serves
                    self._spawn_acceptor()
                self._serve(conn)
        finally:
            self._slots.release()

    def _accept(self) -> socket.socket | None:
        """The next connection; None once the server stops."""
        assert self._listener is not None
        while not self.stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError as err:
                if self.stopping.is_set():
                    return None
                log.warning("Docker API accept: %s", err)
                time.sleep(0.1)
                continue
            if self.stopping.is_set():
                conn.close()
                return None
            return conn
        return None

    def _serve(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.add(conn)
        try:
            ConnectionHandler(conn, self)
        except OSError as err:
            log.debug("Docker API connection: %s", err)
        except Exception:  # a bug: logged, the server goes on
            log.exception("Docker API connection failed")
        finally:
            with self._lock:
                self._connections.discard(conn)
            _close(conn)


def _close(conn: socket.socket) -> None:
    """Close a connection after reading what the client sent and no one read (a body of a request
    answered before it was read, input to a hijacked stream that ended). On a Unix socket, a close with
    unread bytes makes the client's next read fail with ECONNRESET where it expected the end of the
    reply: under load, http.client lost an attach's output so. After SHUT_RDWR the client reads the end
    and can send nothing more (EPIPE), and what it had sent is still queued here: read it out (at most
    DRAIN_LIMIT bytes), then close."""
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)  # already shut down after a hijacked stream: fine
    with contextlib.suppress(OSError):
        drained = 0
        while drained < DRAIN_LIMIT:
            data = conn.recv(65536, socket.MSG_DONTWAIT)  # b"" once the queue is empty (or BlockingIOError)
            if not data:
                break
            drained += len(data)
    with contextlib.suppress(OSError):
        conn.close()


class ConnectionHandler:
    """One connection: requests in turn while the client keeps it alive (the framing: http1.py)."""

    def __init__(self, conn: socket.socket, server: DockerApiServer):
        self.connection = conn
        self.server = server
        self.authorized = ipc.authorized(conn, server.api.gid)
        self.command = self.path = ""
        self.headers = http1.Headers()
        self.close_connection = False
        self._release: Callable[[], None] = _nothing  # the request's held kernel deletions (Api.replying)
        conn.settimeout(IDLE_TIMEOUT_S)
        self.rfile = conn.makefile("rb")
        self.wfile = _SocketWriter(conn)
        try:
            while not self.close_connection:
                self._one_request()
        finally:
            self.rfile.close()

    def _one_request(self) -> None:
        self.command = self.path = ""
        try:
            head = http1.read_head(self.rfile)
        except http1.BadRequest as err:
            self.close_connection = True
            self._send_error(err.status, err.message)
            return
        except TimeoutError:  # idle past IDLE_TIMEOUT_S, or stalled mid-head
            self.close_connection = True
            return
        if head is None:
            self.close_connection = True
            return
        self.command, self.path, self.headers = head.method, head.target, head.headers
        self.close_connection = not head.keep_alive
        if self.command not in METHODS:
            self.close_connection = True
            self._send_error(501, f"unsupported method {self.command[:20]!r}")
            return
        if head.expects_continue:
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._dispatch()

    def _replied(self, status: int) -> None:
        """The reply's head is out: the request's held deletions may start, and a change is logged
        (both after the write, off the client's wait)."""
        self._release()
        # A line per change (as the netctl protocol's "served ..."), none per read: `docker ps` in a
        # loop must not fill the log.
        if self.command not in ("GET", "HEAD"):
            log.info("docker api: %s %s: %s", self.command or "(unparsable request)", self.path.split("?", 1)[0],
                     status)

    # --- one request -------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        reader = self._body_reader()
        with self.server.api.replying() as self._release:
            reply = self._handle(reader)
            if reply is not None:
                self._send_reply(reply)
        self._release = _nothing
        if not self.close_connection and not reader.drain():
            self.close_connection = True

    def _handle(self, reader: BodyReader) -> Any:
        """The handler's reply; None once an error has been answered (or the client has left)."""
        server: DockerApiServer = self.server
        try:
            if self._bad_length:
                raise ApiError(400, f"invalid Content-Length header: {self.headers.get('Content-Length')!r}")
            split = urllib.parse.urlsplit(self.path)
            raw_path = urllib.parse.unquote(split.path)
            if not self.authorized:
                self.close_connection = True  # one answer, then the connection (and its slot) goes
                _, uid, _ = ipc.peer_credentials(self.connection)
                log.warning("Docker API refused a client with uid %d: neither root nor in the agent's group", uid)
                raise ApiError(403, "permission denied: the netctl Docker API serves root and the members of its "
                                    "group only")
            version, path = split_version(raw_path)
            request = Request(method=self.command, path=path, version=version,
                              query=urllib.parse.parse_qs(split.query, keep_blank_values=True),
                              headers=self.headers, sock=self.connection, rfile=self.rfile, reader=reader)
            handler, groups = server.router.find(self.command, path)
            return handler(server.api, request, **groups)
        except ApiError as err:
            self._send_error(err.status, err.message)
        except NetctlError as err:
            self._send_error(status_of(err), err.message)
        except (ConnectionError, TimeoutError) as err:
            log.info("Docker API client left: %s", err)
            self.close_connection = True
        except Exception as err:  # a bug: the client gets a 500 with one line, the log the traceback
            log.exception("Docker API %s %s failed", self.command, self.path)
            self._send_error(500, f"internal error: {err}")
        return None

    def _body_reader(self) -> BodyReader:
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        length = self.headers.get("Content-Length")
        self._bad_length = False
        try:
            size = int(length) if length is not None and not chunked else None
        except ValueError:
            size = None
        if length is not None and not chunked and (size is None or size < 0):
            # neither a length nor a chunked body: a reader would wait for the client's close (-1 reads
            # to the end); refused, and the connection closed (where the next request starts is unknown)
            size, self._bad_length = None, True
            self.close_connection = True
        return BodyReader(self.rfile, size, chunked)

    def _head(self, status: int, content_type: str | None, extra: dict[str, str] | None = None,
              length: int | None = None) -> bytes:
        fields = [("Server", SERVER_NAME), ("Date", http1.http_date()), ("Api-Version", MAX_VERSION),
                  ("Docker-Experimental", "false"), ("Ostype", "linux")]
        if content_type:
            fields.append(("Content-Type", content_type))
        fields += (extra or {}).items()
        if length is not None:
            fields.append(("Content-Length", str(length)))
        if self.close_connection:
            fields.append(("Connection", "close"))
        return http1.reply_head(status, fields)

    def _send_error(self, status: int, message: str) -> None:
        if status in (204, 304):
            self.wfile.write(self._head(status, None))
            self._replied(status)
            return
        body = json.dumps({"message": message}).encode() + b"\n"
        self._send_body(status, body, "application/json")

    def _send_body(self, status: int, body: bytes, content_type: str | None,
                   extra: dict[str, str] | None = None) -> None:
        head = self._head(status, content_type, extra, len(body))
        # Head and body in one write: two let a client's single read see the head alone, and cost a
        # syscall per answer.
        self.wfile.write(head if self.command == "HEAD" else head + body)
        self._replied(status)

    def _send_reply(self, reply: Any) -> None:
        if isinstance(reply, Json):
            self._send_body(reply.status, json.dumps(reply.obj).encode() + b"\n", "application/json", reply.headers)
        elif isinstance(reply, Empty):
            length = None if reply.status in (204, 304) else 0
            self.wfile.write(self._head(reply.status, None, reply.headers, length))
            self._replied(reply.status)
        elif isinstance(reply, Raw) and isinstance(reply.data, bytes):
            self._send_body(reply.status, reply.data, reply.content_type, reply.headers)
        elif isinstance(reply, (Stream, Raw)):
            chunks = reply.chunks if isinstance(reply, Stream) else _chunks_of(reply.data)
            self._send_chunked(reply.status, reply.content_type, chunks, reply.headers,
                               owner=None if isinstance(reply, Stream) else reply.data)
        elif isinstance(reply, Hijack):
            self._hijack(reply)
        else:
            raise TypeError(f"a Docker API handler returned {type(reply).__name__}")

    def _send_chunked(self, status: int, content_type: str, chunks: Any, extra: dict[str, str],
                      owner: Any = None) -> None:
        """`owner`: what `chunks` reads (a Raw reply's file or stream), closed here too: a client gone
        before the first chunk leaves a generator unstarted, and closing that runs none of its code."""
        try:
            self.wfile.write(self._head(status, content_type, {**extra, "Transfer-Encoding": "chunked"}))
            self._replied(status)
            self.connection.settimeout(None)  # a stream lasts as long as its producer (events, logs -f)
            for chunk in chunks:
                if chunk and self.command != "HEAD":
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # the client went: the producer is closed below
        except Exception:  # after the headers, an error can only end the connection
            log.exception("Docker API stream of %s %s failed", self.command, self.path)
            self.close_connection = True
        finally:
            for producer in (chunks, owner):
                close = getattr(producer, "close", None)
                if close is not None:
                    with contextlib.suppress(Exception):
                        close()
            self.connection.settimeout(IDLE_TIMEOUT_S)

    def _hijack(self, reply: Hijack) -> None:
        content_type = ("application/vnd.docker.multiplexed-stream" if reply.multiplexed
                        else "application/vnd.docker.raw-stream")
        upgrade = self.headers.get("Upgrade", "").lower() == "tcp"
        if upgrade:
            head = (f"HTTP/1.1 101 UPGRADED\r\nContent-Type: {content_type}\r\nConnection: Upgrade\r\n"
                    "Upgrade: tcp\r\n")
        else:
            head = f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n"
        head += f"Api-Version: {MAX_VERSION}\r\nDocker-Experimental: false\r\nOstype: linux\r\n\r\n"
        self.close_connection = True
        self.wfile.write(head.encode())
        self._replied(101 if upgrade else 200)
        self.connection.settimeout(None)
        try:
            reply.run(self.connection, self.rfile)
        except (ConnectionError, TimeoutError) as err:
            log.info("Docker API hijacked connection ended: %s", err)


def _chunks_of(data: Any):
    if hasattr(data, "read"):
        try:
            while True:
                chunk = data.read(1 << 16)
                if not chunk:
                    return
                yield chunk
        finally:
            with contextlib.suppress(Exception):
                data.close()
    else:
        yield from data


def start(root: str, options: Any, stopping: threading.Event) -> DockerApiServer:
    """The agent's starter (netctl/agent_services.py): serve on --docker-socket or ROOT/docker.sock."""
    path = getattr(options, "docker_socket", "") or ""
    group = getattr(options, "group", "") or ""
    return DockerApiServer(root, path, group=group, deferred=getattr(options, "deferred", None),
                           agent_stopping=stopping).start()
