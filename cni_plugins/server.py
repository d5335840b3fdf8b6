"""The CNI service: the netctl plugins' code, kept warm in one process per state root.

    netctl-cni-server [--root DIR] [--workers N]        (or: python -m cni_plugins.server)

A plugin executable pays a Python start (~10 ms) and then, to run a request itself, the import of
libnetwork (~60 ms on a 2-vCPU machine) and the opening of the store and netlink sockets, all for
~3 ms of real work. When this service listens on ROOT/cni.sock, the executable forwards its raw
request instead (cni_plugins/launch.py) and pays only the start; the answer is byte for byte what
the in-process run would print (the same skel.run, the same plugin modules). Without the service,
every plugin still works, in-process.

Protocol, one request per connection, all lengths as fixed-width decimal:
    request  %010d %010d %010d (lengths of plugin name, environment, stdin), then the three:
             the name (bridge|overlay|null|ipam), the environment as KEY=VALUE\\0..., stdin verbatim
    answer   %03d status, %010d stdout length, %010d stderr length, stdout, stderr
Status 255 says "not my state root": the client then runs the request itself. Only the service's
own uid may connect (SO_PEERCRED); the socket is 0600 inside the 0700 root.

DEL answers once the records are gone and the container's interface has been renamed out of the way;
the veth itself, ~25 ms of kernel time to delete, goes in a background thread. A later ADD neither
waits for that nor collides with it (its name is free). If the service dies first, the orphan host
veth is what `netctl doctor` reports and `netctl gc` or a CNI GC removes.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import socket
import struct
import sys
import threading
import time

from cni_plugins import skel
from cni_plugins.launch import NOT_SERVED, SOCKET_NAME

PLUGINS = ("bridge", "overlay", "null", "ipam")
HEADER = 30
MAX_REQUEST = 16 << 20  # a CNI configuration is a few KiB; anything near this is not one
CONNECTION_TIMEOUT_S = 30.0  # for reading a request / writing an answer, not for the work itself
STOP_TIMEOUT_S = 30.0
DEFAULT_WORKERS = 8
_TOMBSTONE_PREFIX = "nd"  # a container interface on its way out: "nd" + 13 hex


class Service:
    def __init__(self, root: str, workers: int = DEFAULT_WORKERS, verbose: bool = False):
        self.root = os.path.abspath(root)
        self.verbose = verbose
        self.socket_path = os.path.join(self.root, SOCKET_NAME)
        self.workers = max(1, workers)
        self._connections: queue.Queue = queue.Queue()
        self._removals: queue.Queue = queue.Queue()
        self._stopping = threading.Event()

    # --- life cycle ---------------------------------------------------------------------------------

    def serve(self, ready=None) -> None:
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self._bind(listener)
            threads = [threading.Thread(target=self._work, name=f"cni-worker-{i}") for i in range(self.workers)]
            remover = threading.Thread(target=self._remove_links, name="cni-link-remover")
            for thread in threads + [remover]:
                thread.start()
            if ready is not None:
                ready(self.socket_path)
            listener.settimeout(0.5)  # bounds how long a stop request waits for the accept loop
            while not self._stopping.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    if self._stopping.is_set():
                        break
                    raise
                self._connections.put(conn)
        finally:
            listener.close()
            self._unlink_socket()
            for _ in range(self.workers):
                self._connections.put(None)
            self._removals.put(None)
            for thread in threading.enumerate():
                if thread.name.startswith("cni-"):
                    thread.join(STOP_TIMEOUT_S)

    def stop(self, *_: object) -> None:
        self._stopping.set()

    def _bind(self, listener: socket.socket) -> None:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            probe.connect(self.socket_path)
        except OSError:
            pass  # nobody answers: a stale socket file of a dead service, replaced below
        else:
            raise SystemExit(f"netctl-cni-server: a service already listens on {self.socket_path}; stop it first")
        finally:
            probe.close()
        self._unlink_socket()
        old_mask = os.umask(0o177)
        try:
            listener.bind(self.socket_path)
        finally:
            os.umask(old_mask)
        listener.listen(128)

    def _unlink_socket(self) -> None:
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass

    # --- requests -----------------------------------------------------------------------------------

    def _work(self) -> None:
        """One worker thread: its own controller (store connection, netlink socket), kept warm."""
        context = skel.Context(remove_links=self._defer_link_removal)
        try:
            while True:
                conn = self._connections.get()
                if conn is None:
                    return
                with conn:
                    try:
                        self._serve_one(conn, context)
                    except Exception as err:  # a broken connection must not end the worker
                        print(f"netctl-cni-server: request failed: {err}", file=sys.stderr, flush=True)
        finally:
            context.close()

    def _serve_one(self, conn: socket.socket, context: skel.Context) -> None:
        conn.settimeout(CONNECTION_TIMEOUT_S)
        if not self._trusted(conn):
            return
        data = _receive(conn)
        if len(data) < HEADER:
            return
        lengths = [int(data[i : i + 10]) for i in range(0, HEADER, 10)]
        name_end = HEADER + lengths[0]
        env_end = name_end + lengths[1]
        plugin = data[HEADER:name_end].decode(errors="replace")
        env = _environment(data[name_end:env_end])
        stdin = data[env_end : env_end + lengths[2]]
        if plugin not in PLUGINS or self._root_of(env, stdin) != self.root:
            conn.sendall(b"%03d%010d%010d" % (NOT_SERVED, 0, 0))
            return
        started = time.perf_counter()
        status, out, err = skel.run(skel.load_plugin(plugin), env, stdin, context)
        conn.sendall(b"%03d%010d%010d" % (status, len(out), len(err)) + out + err)
        if self.verbose:
            print(f"{env.get('CNI_COMMAND')} netctl-{plugin} {env.get('CNI_CONTAINERID')} {env.get('CNI_IFNAME')}: "
                  f"status {status} in {(time.perf_counter() - started) * 1000:.1f} ms", file=sys.stderr, flush=True)

    @staticmethod
    def _trusted(conn: socket.socket) -> bool:
        credentials = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", credentials)
        return uid in (0, os.getuid())

    def _root_of(self, env: dict[str, str], stdin: bytes) -> str:
        try:
            config = json.loads(stdin)
        except (ValueError, UnicodeDecodeError, RecursionError):
            config = None
        if not isinstance(config, dict):
            config = {}
        try:
            return os.path.abspath(skel.state_root(config, env))
        except skel.CNIError:
            return self.root  # a malformed root key: ours to refuse with a proper error

    # --- link removal in the background ---------------------------------------------------------------

    def _defer_link_removal(self, network, endpoint, sandbox) -> None:
        """Controller.detach_container's remove_links: free the container's interface name at once
        (a rename takes ~0.3 ms), delete the veth pair later (the kernel takes ~25 ms)."""
        if not endpoint.host_ifname:
            return  # null and external endpoints have no link of netctl's
        if not self._rename_out_of_the_way(sandbox.netns_path, endpoint.ifname):
            from libnetwork.controller import Controller
            from libnetwork.netlink import Netlink

            with Netlink() as host:  # could not rename (an old kernel refusing an up link): delete now
                Controller.driver(network.driver).leave(network, endpoint, sandbox, host)
            return
        self._removals.put((network, endpoint, sandbox))

    @staticmethod
    def _rename_out_of_the_way(netns_path: str, ifname: str) -> bool:
        from libnetwork.errors import NotFound
        from libnetwork.netlink import Netlink, NetlinkError

        try:
            with Netlink(netns_path) as inside:
                inside.set_link(ifname, name=_TOMBSTONE_PREFIX + os.urandom(7).hex()[:13])
        except NotFound:  # no namespace or no interface any more: nothing holds the name
            return True
        except NetlinkError:
            return False
        return True

    def _remove_links(self) -> None:
        from libnetwork.controller import Controller
        from libnetwork.netlink import Netlink

        with Netlink() as host:
            while True:
                item = self._removals.get()
                if item is None:
                    return
                network, endpoint, sandbox = item
                try:
                    Controller.driver(network.driver).leave(network, endpoint, sandbox, host)
                except Exception as err:  # left for doctor/gc; the service keeps going
                    print(f"netctl-cni-server: removing {endpoint.host_ifname}: {err}", file=sys.stderr, flush=True)


def _receive(conn: socket.socket) -> bytes:
    chunks, size = [], 0
    while size <= MAX_REQUEST:
        chunk = conn.recv(1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
    return b""  # too large to be a CNI request


def _environment(block: bytes) -> dict[str, str]:
    env = {}
    for item in block.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key:
            env[os.fsdecode(key)] = os.fsdecode(value)
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve netctl's CNI plugins from one warm process.")
    parser.add_argument("--root", default=os.environ.get("NETCTL_ROOT") or skel.DEFAULT_ROOT,
                        help="netctl state root (default: $NETCTL_ROOT or /var/lib/netctl)")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="requests served at once")
    parser.add_argument("--verbose", action="store_true", help="one line per request on stderr")
    args = parser.parse_args(argv)
    service = Service(args.root, args.workers, args.verbose)
    signal.signal(signal.SIGTERM, service.stop)
    signal.signal(signal.SIGINT, service.stop)
    service.serve(ready=lambda path: print(f"listening on {path}", flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
