"""The embedded name server as an agent service: the indexer's thread, the server's thread, and the
control socket ROOT/dns.sock through which writers say "names changed".

The indexer owns the store connection. It rebuilds the Index when
- a writer pokes ROOT/dns.sock (runner/hosts.sync_names: after `run`, `rm`, connect/disconnect,
  `network rm -f`, CNI ADD/DEL, an overlay reconcile; every names-changed event of the library goes
  there through netctl/names.py), answering each poke once the server applied the rebuild, so a
  container's first lookup never races its socket's creation, and a removed sandbox's namespace is
  no longer held by the server when its remover goes on;
- PRAGMA data_version moved (any commit of another connection; checked once a second: the safety
  net for writers that did not poke, e.g. a library user), or the host's resolv.conf changed.
It then opens sockets in sandboxes that appeared (netctl/dns/listeners.py) and hands all of it to the
server (netctl/dns/server.py), which closes the sockets of sandboxes that left.

At start the first rebuild opens every existing sandbox's sockets: resolution is back within the
time of one store read and one setns per sandbox after the agent (re)starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time

from netctl.dns import listeners
from netctl.dns.index import Index
from netctl.dns.server import Server, Update
from netctl.dns.upstream import HostServers

log = logging.getLogger("netctl.dns")
SAFETY_POLL_S = 1.0
RETRY_S = 1.0  # sockets that could not be made are tried again this often
APPLY_TIMEOUT_S = 2.0
JOIN_TIMEOUT_S = 5.0
ACK = b"ok"


def control_path(root: str) -> str:
    from libnetwork.name_server import control_path as path

    return path(root)


class DnsService:
    def __init__(self, root: str, *, resolv_conf: str | None = None):
        self.root = root
        self.server = Server()
        self.host = HostServers(resolv_conf) if resolv_conf else HostServers()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._control = _control_socket(control_path(root))
        self._threads = [
            threading.Thread(target=self._serve, name="netctl-dns", daemon=True),
            threading.Thread(target=self._index, name="netctl-dns-index", daemon=True),
        ]
        self._open: dict[str, str] = {}  # sandbox id -> netns path, as the server has them
        # Sandboxes whose sockets could not be made: id -> (netns path, why, last try). Tried again at
        # every rebuild and every RETRY_S between them: the causes pass (descriptors run out, lo not up
        # yet in a runtime's namespace), and nothing in the store changes when they do.
        self._unopened: dict[str, tuple[str, str, float]] = {}
        self._index_now: Index | None = None  # the Index the server has, for sockets opened later
        self.rebuilds = 0

    def start(self) -> "DnsService":
        for thread in self._threads:
            thread.start()
        self._ready.wait(APPLY_TIMEOUT_S)
        return self

    def stop(self) -> None:
        self._stop.set()
        self.server.wake()
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as waker:
            waker.sendto(b"stop", control_path(self.root))  # the indexer waits in recvfrom: wake it
        for thread in self._threads:
            thread.join(JOIN_TIMEOUT_S)
        self._control.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(control_path(self.root))

    def _serve(self) -> None:
        try:
            self.server.run(self._stop)
        except Exception:  # a bug in the loop itself: say so once, the agent's other services go on
            log.exception("name server stopped")

    # -- the indexer ---------------------------------------------------------------------------

    def _index(self) -> None:
        """Rebuild when poked or when the store changed; a failed rebuild (the store unreadable, a
        bug) is logged once per cause, the old index keeps serving, and the next turn tries again."""
        source = None
        version = None
        failed = ""
        try:
            while not self._stop.is_set():
                waiting = self._wait_for_pokes(SAFETY_POLL_S if version is not None and not failed else 0.2)
                if self._stop.is_set():
                    return
                try:
                    if source is None:
                        from netctl.dns.source import Source

                        source = Source(self.root)
                    now_version = source.data_version()
                    host_changed = self.host.changed()
                    if waiting is None and now_version == version and not host_changed and not failed:
                        self._retry_unopened()
                        continue
                    self._rebuild(source)
                    version = now_version
                    if failed:
                        log.info("name server's index is current again")
                    failed = ""
                except Exception as err:  # noqa: BLE001  the old index goes on serving
                    cause = f"{type(err).__name__}: {getattr(err, 'message', None) or err}"
                    if cause != failed:
                        log.warning("name server's index not rebuilt (%s); old names kept, retrying", cause)
                    failed = cause
                    if source is not None:  # start over with a fresh store connection
                        with contextlib.suppress(Exception):
                            source.close()
                        source = None
                finally:
                    self._ready.set()
                for address in waiting or ():  # answered either way: a writer never waits for nothing
                    with contextlib.suppress(OSError):
                        self._control.sendto(ACK, address)
        finally:
            self._ready.set()
            if source is not None:
                source.close()

    def _wait_for_pokes(self, timeout: float) -> list | None:
        """Addresses of pokers waiting for an answer ([] for pokes that wait for none); None: no poke
        within `timeout`."""
        self._control.settimeout(timeout if timeout > 0 else 0.0)
        waiting: list | None = None
        try:
            while True:
                _, address = self._control.recvfrom(64)
                waiting = waiting if waiting is not None else []
                if address:
                    waiting.append(address)
                self._control.settimeout(0.0)  # drain what else came, then rebuild once for all
        except (BlockingIOError, TimeoutError, socket.timeout):
            return waiting
        except OSError:
            return waiting  # shut down by stop()

    def _rebuild(self, source) -> None:
        index = source.load()
        opened = []
        for sandbox_id, listener in index.listeners.items():
            if sandbox_id in self._open:  # the same namespace, or a new one (closed below, then reopened)
                continue
            sockets = self._try_open(sandbox_id, listener.netns_path)
            if sockets is not None:
                opened.append(sockets)
        closed = [s for s, path in self._open.items()
                  if s not in index.listeners or index.listeners[s].netns_path != path]
        for sandbox_id in closed:
            del self._open[sandbox_id]
        for sandbox_id in set(self._unopened) - set(index.listeners):
            del self._unopened[sandbox_id]
        self._hand_over(index, opened, closed)
        if closed:  # a sandbox that moved to a new namespace (a runtime restarted it) gets sockets there now
            again = [self._try_open(s, index.listeners[s].netns_path) for s in closed if s in index.listeners]
            self._hand_over(index, [s for s in again if s is not None], [])
        self.rebuilds += 1
        self._ready.set()

    def _hand_over(self, index: Index, opened: list[listeners.Sockets], closed: list[str]) -> None:
        """Give the server `index` with the sockets opened and the sandboxes closed; wait (bounded)."""
        self._index_now = index
        done = threading.Event()
        self.server.post(Update(index, opened, closed, self.host.servers, done))
        done.wait(APPLY_TIMEOUT_S)

    def _try_open(self, sandbox_id: str, netns_path: str) -> listeners.Sockets | None:
        """The sandbox's sockets (recorded as open), or None: recorded to be tried again, logged once
        per cause."""
        try:
            sockets = listeners.open_in(sandbox_id, netns_path)
        except listeners.CannotOpen as err:
            why = str(err)
            known = self._unopened.get(sandbox_id)
            if known is None or known[:2] != (netns_path, why):
                log.warning("no name server in sandbox %s yet: %s; tried again every %g s",
                            sandbox_id[:12], why, RETRY_S)
            self._unopened[sandbox_id] = (netns_path, why, time.monotonic())
            return None
        if self._unopened.pop(sandbox_id, None) is not None:
            log.info("name server in sandbox %s now", sandbox_id[:12])
        self._open[sandbox_id] = netns_path
        return sockets

    def _retry_unopened(self) -> None:
        """Between rebuilds: try again the sandboxes whose sockets could not be made (RETRY_S apart)."""
        index = self._index_now
        if not self._unopened or index is None:
            return
        now = time.monotonic()
        opened = []
        for sandbox_id, (netns_path, _, tried) in list(self._unopened.items()):
            listener = index.listeners.get(sandbox_id)
            if listener is None or listener.netns_path != netns_path:
                del self._unopened[sandbox_id]  # gone, or moved: the next rebuild sees to it
            elif now - tried >= RETRY_S:
                sockets = self._try_open(sandbox_id, netns_path)
                if sockets is not None:
                    opened.append(sockets)
        if opened:
            self._hand_over(index, opened, [])


def _control_socket(path: str) -> socket.socket:
    """ROOT/dns.sock, 0600: only root pokes (a poke only makes the indexer re-read the store)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a previous agent's (the root's lock says no other agent runs)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind(path)
        os.chmod(path, 0o600)  # not umask: process-wide, and the agent has other threads
    except BaseException:
        sock.close()
        raise
    return sock


def start(root: str, options, stopping: threading.Event) -> DnsService:
    """The agent's starter (netctl/agent_services.py)."""
    _raise_open_files()
    service = DnsService(os.path.abspath(root)).start()
    log.debug("name server on %s:%d in every sandbox (%d now)", listeners.ADDRESS, listeners.PORT,
             len(service.server.slots))
    return service


def _raise_open_files(wanted: int = 65536) -> None:
    """Two sockets per sandbox: 500 containers would exhaust the usual soft limit of 1024 open files.
    Raise the agent's soft limit towards its hard one (as dockerd and containerd run)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as err:
            log.warning("name server: open files stay limited to %d (%s); sandboxes past ~%d get no sockets",
                        soft, err, soft // 2)
