"""`netctl daemon`: a warm process that runs CLI commands for thin clients (netctl/entry.py).

It listens on ROOT/netctl.sock (mode 0600, so only root talks to it) and runs each request through the
same click CLI a cold `netctl` process would, with stdout and stderr captured — one code path, so output
and exit codes cannot differ. Requests are served one at a time: every operation takes the store's
write lock anyway, so serving them in parallel would gain nothing. A client killed mid-request does not
stop the operation half-way: the daemon finishes it (or rolls it back) as a single transaction.

With a global store (`--store URL`, NETCTL_STORE, or ROOT/global.json from an earlier start) the
daemon is also this host's member of the overlay: it records {"store", "host", "vtep"} in
ROOT/global.json (what every netctl command on this host then uses), registers the host in etcd on a
lease it keeps alive, and runs the overlay agent (netctl/agent.py) beside the request server.

One daemon per root: ROOT/daemon.pid is held with flock(2) for the daemon's lifetime, so a second
daemon refuses at once, and the lock vanishes with the process however it dies.

Stopping (SIGTERM/SIGINT) stops the threads and leaves everything else as it is: the kernel entries,
and the host's lease, which is neither revoked nor kept alive any more. A daemon restarted within the
lease's TTL takes its record over without other hosts noticing (register_host re-publishes the peers
on the new lease before revoking the old one); one that stays away longer is a dead host to the others,
whose entries for its containers then go, exactly as after a crash. Revoking on a clean stop would make
every restart (an upgrade) cut this host's containers off from the others until it is back: Docker
likewise keeps its state on a clean stop. `kill -9` changes nothing in the kernel: containers keep
talking, with the tables as they were, until the lease runs out.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass

from libnetwork.errors import AlreadyExists, InvalidArgument
from netctl.entry import PROTOCOL, SOCKET_NAME, delegable, encode, read_message

log = logging.getLogger("netctl.daemon")
REQUEST_TIMEOUT_S = 30.0  # a client that connects and never sends is dropped after this
GLOBAL_CONFIG = "global.json"  # under ROOT: {"store", "host", "vtep"} of this host's overlay membership
PID_FILE = "daemon.pid"  # under ROOT: flock-ed by the running daemon
REGISTER_WAIT_S = 5.0  # requests wait this long at most for the host's registration at start
DEFAULT_LEASE_TTL_S = 10  # = libnetwork.store.etcd.DEFAULT_LEASE_TTL_S (not imported: it pulls in requests)


def socket_path(root: str) -> str:
    return os.path.join(os.path.abspath(root), SOCKET_NAME)


# --- one daemon per root -------------------------------------------------------------------------


def lock_root(root: str) -> int:
    """Hold ROOT/daemon.pid (flock, with our PID in it) for the life of the process; refuse when
    another daemon holds it. The file is never removed: removing a locked file lets a third daemon
    lock a new one while a second still waits on the old."""
    directory = os.path.abspath(root)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(directory, PID_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EACCES):
            raise AlreadyExists(f"a netctl daemon already serves {socket_path(root)}; stop it first") from None
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


# --- overlay membership ---------------------------------------------------------------------------


@dataclass
class GlobalOptions:
    """What `netctl daemon` was given (empty: not given)."""

    store: str = ""
    vtep: str = ""
    host_name: str = ""
    lease_ttl: int = DEFAULT_LEASE_TTL_S
    resync_interval: float = 30.0  # seconds between full reconciles when nothing changes


@dataclass
class GlobalConfig:
    """This host's membership of the overlay, as written to ROOT/global.json."""

    store: str
    host: str
    vtep: str

    def to_dict(self) -> dict[str, str]:
        return {"store": self.store, "host": self.host, "vtep": self.vtep}


def global_config_path(root: str) -> str:
    return os.path.join(os.path.abspath(root), GLOBAL_CONFIG)


def read_global_config(root: str) -> dict[str, str]:
    """ROOT/global.json, or {} when there is none (an unreadable one is an error: say where)."""
    path = global_config_path(root)
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise InvalidArgument(f"{path} is unreadable ({err}); fix or remove it, then start the daemon with --store") from None
    if not isinstance(data, dict):
        raise InvalidArgument(f"{path} is not a JSON object; fix or remove it, then start the daemon with --store")
    return {k: str(v) for k, v in data.items() if isinstance(v, (str, int))}


def write_global_config(root: str, config: GlobalConfig) -> None:
    """Atomically (write a temporary file, then rename), mode 0600."""
    path = global_config_path(root)
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(config.to_dict(), f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def resolve_global(root: str, options: GlobalOptions) -> GlobalConfig | None:
    """The membership to use: each field from the option, else the environment (NETCTL_STORE,
    NETCTL_HOST_NAME), else ROOT/global.json, else the default (host name: gethostname(); VTEP: the
    source address of the route towards etcd). None when no store is configured anywhere."""
    saved = read_global_config(root)
    store = options.store or os.environ.get("NETCTL_STORE", "") or saved.get("store", "")
    if not store:
        return None
    from libnetwork.store.etcd import parse_url  # lazy: only a daemon with a store pays for it

    url, etcd_host, etcd_port = parse_url(store)
    same_store = bool(saved.get("store")) and parse_url(saved["store"])[0] == url
    host = options.host_name or os.environ.get("NETCTL_HOST_NAME", "") or saved.get("host", "") or socket.gethostname()
    if not host or "/" in host:
        raise InvalidArgument(f"host name {host!r} cannot name this host in the overlay; pass --host-name NAME")
    vtep = options.vtep or (saved.get("vtep", "") if same_store else "") or route_source(etcd_host, etcd_port)
    check_local_address(vtep)
    if options.lease_ttl < 2:
        raise InvalidArgument(f"--lease-ttl {options.lease_ttl} is too short: etcd grants at least 2 s")
    return GlobalConfig(store=f"etcd://{url.split('://', 1)[1]}", host=host, vtep=vtep)


def route_source(host: str, port: int) -> str:
    """The address this host sends from towards host:port (a UDP connect: the kernel picks the route
    and source; nothing is sent)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        family, _, _, _, address = infos[0]
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(address)
            return probe.getsockname()[0]
    except OSError as err:
        raise InvalidArgument(
            f"cannot find this host's address towards etcd at {host}:{port} ({err.strerror or err}); pass --vtep ADDR"
        ) from None


def check_local_address(address: str) -> None:
    """Refuse a VTEP that is not an address of this host (binding to it is the kernel's own check)."""
    import ipaddress

    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise InvalidArgument(f"VTEP address {address!r} is not an IP address; pass --vtep ADDR") from None
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            raise InvalidArgument(
                f"VTEP address {address} is not configured on this host; pass --vtep with one of its underlay addresses"
            ) from None


# --- the request server ---------------------------------------------------------------------------


def bind(root: str) -> socket.socket:
    """Listen on ROOT/netctl.sock; refuse if another daemon already answers there."""
    path = socket_path(root)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        pass  # nobody there; a leftover file of a dead daemon is replaced below
    else:
        raise AlreadyExists(f"a netctl daemon already serves {path}; stop it first")
    finally:
        probe.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket file is created 0600: root only
    try:
        server.bind(path)
    finally:
        os.umask(old_umask)
    server.listen(64)
    return server


def run_captured(root: str, argv: list[str]) -> tuple[int, str, str]:
    """Run one command line through the CLI, returning (exit code, stdout, stderr)."""
    from netctl.cli import main as cli_main

    out, err = io.StringIO(), io.StringIO()
    # In-process, the library's warnings (e.g. "... stays in etcd until `netctl gc`") reach the user's
    # stderr through logging's last resort; here the daemon's own handler would keep them in its log.
    # Give the client what this request's thread warns, as the in-process run prints it.
    warnings = logging.StreamHandler(err)
    warnings.setLevel(logging.WARNING)
    serving = threading.get_ident()
    warnings.addFilter(lambda record: record.thread == serving)
    root_logger = logging.getLogger()
    root_logger.addHandler(warnings)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli_main(["--root", root, *argv])
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        root_logger.removeHandler(warnings)
    return code, out.getvalue(), err.getvalue()


def handle(conn: socket.socket, root: str) -> None:
    conn.settimeout(REQUEST_TIMEOUT_S)
    request = read_message(conn)
    if not request or request[0] != PROTOCOL:
        conn.sendall(encode(["2", "", "netctl: the daemon does not understand this client's protocol\n"]))
        return
    argv = request[1:]
    # The client chose this socket by its root (--root or NETCTL_ROOT, which the daemon's own
    # environment need not share); judge the command as if run with the daemon's root, which a
    # different --root in argv still overrides.
    if delegable(["--root", root, *argv]) != socket_path(root):
        # Never run what the client must run itself (exec would replace the daemon) or another root's.
        conn.sendall(encode(["2", "", "netctl: this command cannot run in the daemon\n"]))
        return
    conn.settimeout(None)
    code, out, err = run_captured(root, argv)
    log.info("served %s: exit %d", " ".join(argv[:3]), code)
    try:
        conn.sendall(encode([str(code), out, err]))
    except OSError:
        log.warning("client left before the answer to %s", argv[:3])


def serve(root: str, *, on_ready=None, options: GlobalOptions | None = None) -> None:
    """Serve until SIGTERM or SIGINT; removes the socket file on the way out. With a global store
    (see resolve_global) also register this host and run the overlay agent until then."""
    import netctl.cli  # noqa: F401  (warm up: the point of the daemon)
    from libnetwork import controller, firewall, ipam, netlink  # noqa: F401
    from libnetwork.store import sqlite  # noqa: F401

    lock = lock_root(root)
    overlay = None
    server = None
    stopping = threading.Event()
    previous = {}
    try:
        config = resolve_global(root, options or GlobalOptions())
        if config is not None:
            write_global_config(root, config)
        server = bind(root)

        def stop(signum, frame):
            stopping.set()
            server.close()  # wakes accept()

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        if config is not None:
            overlay = Overlay(root, config, options or GlobalOptions())
            overlay.start(stopping)
        _serve_requests(root, server, on_ready, stopping)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if overlay is not None:
            overlay.stop()
        if server is not None:
            server.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(socket_path(root))
        os.close(lock)


class Overlay:
    """The daemon's overlay side: the host's lease and the agent, started and stopped together."""

    def __init__(self, root: str, config: GlobalConfig, options: GlobalOptions):
        from netctl.agent import AgentSettings, HostLease, OverlayAgent

        self.config = config
        self.agent = OverlayAgent(AgentSettings(root=os.path.abspath(root), store_url=config.store,
                                                host_name=config.host, resync_interval_s=options.resync_interval))
        # After a re-registration (the lease was lost: etcd away too long) reconcile everything.
        self.lease = HostLease(config.store, config.host, config.vtep, options.lease_ttl,
                               on_registered=lambda record: self.agent.mark_all())

    def start(self, stopping: threading.Event) -> None:
        log.info("overlay member %s (vtep %s) of %s", self.config.host, self.config.vtep, self.config.store)
        self.lease.start()
        self.agent.start()
        # Serve requests once registered, so that a `run` right after the daemon started does not meet
        # an unregistered host; but not later than REGISTER_WAIT_S: local commands need no etcd.
        deadline = time.monotonic() + REGISTER_WAIT_S
        while not self.lease.registered.wait(0.05):
            if stopping.is_set():
                return
            if time.monotonic() > deadline:
                log.warning("serving requests before host %s is registered; overlay commands fail until it is",
                            self.config.host)
                return

    def stop(self) -> None:
        self.agent.stop()
        self.lease.stop()


def _serve_requests(root: str, server: socket.socket, on_ready, stopping: threading.Event) -> None:
    if stopping.is_set():
        return
    if on_ready is not None:
        on_ready(socket_path(root))
    while not stopping.is_set():
        try:
            conn, _ = server.accept()
        except OSError:
            if stopping.is_set():
                break
            raise
        with conn:
            try:
                handle(conn, root)
            except OSError as exc:  # a client that vanished must not take the daemon down
                log.warning("request failed: %s", exc)
