"""`netctl daemon`: the host agent, one warm process per host and root.

It serves ROOT/netctl.sock (netctl/service.py): the netctl CLI's commands (netctl/entry.py, the thin
client) and the CNI plugins' requests (cni_plugins/launch.py), each through the same code a cold
process would run, so output and exit codes cannot differ. The socket is 0600, or 0660 with
`--group NAME`; every connection is checked by its peer's credentials (root or that group).

Started by hand (`netctl daemon`, a systemd unit) or on first use: a CLI command or CNI call that finds
no agent runs in-process and starts one (`--auto`) for the next. An agent started by hand replaces an
auto-started one (which then stops cleanly); a second agent started by hand is refused.

With a global store (`--store URL`, NETCTL_STORE, or ROOT/global.json from an earlier start) the
agent is also this host's member of the overlay: it records {"store", "host", "vtep"} in
ROOT/global.json (what every netctl command on this host then uses), registers the host in etcd on a
lease it keeps alive, and runs the overlay reconciler (netctl/agent.py) beside the request server.
An auto-started agent never joins an overlay by itself: commands it serves reach etcd as in-process
ones do, while registration and the reconciler need an agent started by hand (or by systemd).

One agent per root: ROOT/daemon.pid is held with flock(2) for the agent's lifetime, and the lock
vanishes with the process however it dies.

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
import json
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field

from libnetwork import ipc, rootdir
from libnetwork.errors import AlreadyExists, InvalidArgument

log = logging.getLogger("netctl.daemon")
GLOBAL_CONFIG = rootdir.GLOBAL_CONFIG  # under ROOT: {"store", "host", "vtep"} of this host's overlay membership
REGISTER_WAIT_S = 5.0  # requests wait this long at most for the host's registration at start
DEFAULT_LEASE_TTL_S = 10  # = libnetwork.store.etcd.DEFAULT_LEASE_TTL_S (not imported: it pulls in requests)
REPLACE_TIMEOUT_S = 15.0  # an auto-started agent asked to make way has this long to stop
AUTO = "auto"  # the note an auto-started agent leaves in ROOT/daemon.pid


def socket_path(root: str) -> str:
    return rootdir.path(root, rootdir.AGENT_SOCKET)


# --- one agent per root ---------------------------------------------------------------------------


def lock_root(root: str, *, auto: bool = False) -> int | None:
    """Hold ROOT/daemon.pid for the life of the process. Another agent holding it: an auto-started
    one is asked to make way (SIGTERM, bounded wait) for an agent started by hand; otherwise refuse
    (AlreadyExists), or None for an auto-started agent, which then just leaves."""
    path = rootdir.path(root, rootdir.AGENT_LOCK)
    fd = ipc.lock_instance(path, AUTO if auto else "")
    if fd is not None or auto:
        return fd
    pid, note = ipc.lock_holder(path)
    if note == AUTO and pid > 0:
        log.info("replacing the agent started on first use (pid %d)", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + REPLACE_TIMEOUT_S
        while time.monotonic() < deadline:
            fd = ipc.lock_instance(path)
            if fd is not None:
                return fd
            time.sleep(0.02)
    raise AlreadyExists(f"a netctl daemon already serves {socket_path(root)}; stop it first")


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
    # What ROOT/global.json held before (None: no file), put back if etcd refuses this membership:
    # commands on this host must not go on using a host name another host holds.
    previous: dict[str, str] | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, str]:
        return {"store": self.store, "host": self.host, "vtep": self.vtep}


def global_config_path(root: str) -> str:
    return rootdir.global_config_path(root)


def read_global_config(root: str) -> dict[str, str]:
    """ROOT/global.json, or {} when there is none (an unreadable one is an error: say where)."""
    try:
        return rootdir.read_global_config(root)
    except rootdir.UnreadableConfig as err:
        raise InvalidArgument(f"{err.path} is unreadable ({err.reason}); fix or remove it, then start the daemon "
                              "with --store") from None


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


def restore_global_config(root: str, previous: dict[str, str] | None) -> None:
    """Put ROOT/global.json back as it was before this start (None: remove it)."""
    if previous is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(global_config_path(root))
        return
    write_global_config(root, GlobalConfig(previous.get("store", ""), previous.get("host", ""),
                                           previous.get("vtep", "")))


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
    return GlobalConfig(store=f"etcd://{url.split('://', 1)[1]}", host=host, vtep=vtep, previous=saved or None)


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


# --- the agent -----------------------------------------------------------------------------------


@dataclass
class AgentOptions:
    """How the agent serves (besides its overlay membership)."""

    group: str = ""  # socket 0660 for this group, whose members may then use the agent
    auto: bool = False  # started on first use by a command, not by hand
    docker_socket: str = ""  # the Docker Engine API's socket path ("" = its default under ROOT)
    deferred: object | None = None  # set by serve(): the request server's later(step), defer_link_removal(...)


def serve(root: str, *, on_ready=None, options: GlobalOptions | None = None,
          agent: AgentOptions | None = None) -> None:
    """Serve until SIGTERM or SIGINT; removes the socket file on the way out. With a global store
    (see resolve_global) also register this host and run the overlay reconciler until then."""
    agent = agent or AgentOptions()
    root = os.path.abspath(root)
    lock = lock_root(root, auto=agent.auto)
    if lock is None:
        return  # auto-started while another agent runs: nothing to do
    gid = ipc.group_id(agent.group) if agent.group else -1
    overlay = None
    listener = None
    services: list = []
    stopping = threading.Event()
    previous = {}
    try:
        _warm_up()
        # Joining an overlay (a lease in etcd, a name among the hosts) is decided by hand: `netctl
        # daemon --store`, or its systemd unit. An agent started on first use serves requests only;
        # with ROOT/global.json they reach etcd as an in-process command would.
        config = None if agent.auto else resolve_global(root, options or GlobalOptions())
        if config is not None:
            write_global_config(root, config)
        # The kernel back in line with the store before anything is served (after a reboot: bridges,
        # gateways, nftables, overlay segments; endpoints of vanished namespaces released). After
        # global.json: overlay endpoints need the global store. See libnetwork/repair.py.
        from libnetwork.repair import repair_root

        report = repair_root(root)
        for line in report.actions:
            log.info("repair: %s", line)
        for line in report.failures:
            log.warning("repair: %s", line)
        listener = ipc.listen(socket_path(root), group=agent.group)

        def stop(signum, frame):
            stopping.set()
            listener.shutdown(socket.SHUT_RDWR)  # wakes accept()

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        if config is not None:
            overlay = Overlay(root, config, options or GlobalOptions())
            overlay.start(stopping)
        if stopping.is_set():
            return
        from netctl import agent_services
        from netctl.service import RequestServer

        server = RequestServer(root, listener, gid=gid)
        # The services' slow kernel deletions (a bridge, a veth pair) go after their answers through the
        # request server's queue, which `doctor` and `gc` wait for.
        agent.deferred = server.cni
        services = agent_services.start_all(root, agent, stopping)

        if on_ready is not None:
            on_ready(socket_path(root))
        server.serve(stopping)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if services:
            from netctl import agent_services

            agent_services.stop_all(services)
        if overlay is not None:
            overlay.stop()
        if listener is not None:
            listener.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(socket_path(root))
        os.close(lock)


def _warm_up() -> None:
    """Import what requests use, before the first one comes: the point of the agent."""
    import netctl.cli  # noqa: F401
    from cni_plugins import bridge, skel  # noqa: F401
    from libnetwork import controller, firewall, ipam, netlink  # noqa: F401
    from libnetwork.store import sqlite  # noqa: F401


class Overlay:
    """The daemon's overlay side: the host's lease and the agent, started and stopped together.

    The lease registers this host under its root's persistent host id (ROOT/host-id). If another host
    (another id) holds the host name or the VTEP on a live lease, registration is refused (etcd.HostTaken)
    and never retried: during start() the refusal is raised, so the daemon exits with its one line and
    the other host keeps its name; later (the lease was lost and the other host took the name meanwhile)
    it is logged at ERROR and the overlay side stops, while local commands are still served."""

    def __init__(self, root: str, config: GlobalConfig, options: GlobalOptions):
        from netctl.agent import AgentSettings, HostLease, OverlayAgent

        self.root = root
        self.config = config
        self.agent = OverlayAgent(AgentSettings(root=os.path.abspath(root), store_url=config.store,
                                                host_name=config.host, resync_interval_s=options.resync_interval))
        self._lock = threading.Lock()
        self._starting = True  # a refusal now is start()'s to raise; after start() it is logged
        self._refusal = None
        # After a re-registration (the lease was lost: etcd away too long) reconcile everything.
        self.lease = HostLease(config.store, config.host, config.vtep, options.lease_ttl,
                               on_registered=lambda record: self.agent.mark_all(),
                               host_id=rootdir.host_id(root), on_refused=self._refused)

    def start(self, stopping: threading.Event) -> None:
        log.info("overlay member %s (vtep %s) of %s", self.config.host, self.config.vtep, self.config.store)
        self.lease.start()
        # Serve requests once registered, so that a `run` right after the daemon started does not meet
        # an unregistered host; but not later than REGISTER_WAIT_S: local commands need no etcd.
        registered, late = self._wait_registered(stopping, time.monotonic() + REGISTER_WAIT_S)
        if self._refusal is not None:
            self.stop()
            restore_global_config(self.root, self.config.previous)
            raise self._refusal  # the CLI prints its one line and exits with AlreadyExists' code
        if stopping.is_set():
            return
        # The agent starts only now: a daemon refused its name never reconciles under it.
        self.agent.start()
        if late and not registered:
            log.warning("serving requests before host %s is registered; overlay commands fail until it is",
                        self.config.host)

    def _wait_registered(self, stopping: threading.Event, deadline: float) -> tuple[bool, bool]:
        """Until registered, refused, stopping or past `deadline`; (registered, past the deadline).
        Ends the start phase under the lock, so that a refusal is either raised by start() or
        handled by _refused(), never both nor neither."""
        while True:
            with self._lock:
                registered = self.lease.registered.is_set()
                late = time.monotonic() > deadline
                if registered or late or self._refusal is not None or stopping.is_set():
                    self._starting = False
                    return registered, late
            self.lease.registered.wait(0.05)

    def _refused(self, err) -> None:
        """From the lease's thread: another host holds this host's name or VTEP."""
        with self._lock:
            if self._starting:
                self._refusal = err
                return
        log.error("overlay side stopped: %s", err.message)
        self.agent.stop()  # the lease's own thread has ended already; stop() (at exit) closes its store

    def stop(self) -> None:
        self.agent.stop()
        self.lease.stop()
