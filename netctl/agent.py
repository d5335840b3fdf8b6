"""The overlay agent of `netctl daemon`: keeps this host's VXLAN tables equal to the global store.

Three kinds of thread, each with its own connections (etcd HTTP sessions, netlink sockets and the
SQLite connection are not shared between threads):

- two watchers (etcd.PrefixMirror.follow) on /netctl/v1/peers/ and /netctl/v1/networks/: every batch
  of events marks the networks it touches as dirty; a full (re)read of a prefix — at start, after a
  compaction — marks everything dirty. A lost connection is re-watched from the last revision seen,
  so no change is missed while etcd restarts;
- one worker: waits for dirty networks, lets a burst of events settle (a few ms, bounded, so one
  `run` of ten containers elsewhere costs one reconcile, not ten), then calls
  Controller.reconcile_overlay() for them, whose names-changed event tells the agent's name server
  (netctl/names.py: runner.hosts.sync_names, answered once it serves the new peers) and refreshes
  the local containers' own hosts files;
  with nothing dirty it still reconciles everything every `resync_interval_s` as a safety net;
- the lease keeper (EtcdStore.start_keepalive), started by the daemon, not here.

What the agent never does: flush kernel entries because the store is unreachable. A reconcile that
cannot read the store raises before touching the kernel, the networks stay dirty, and the worker
retries with a capped backoff; meanwhile every FDB/neighbour entry stays as it was, so running
containers keep talking across hosts while etcd is away.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from libnetwork.store.etcd import EtcdStore, PrefixMirror, WatchEvent

log = logging.getLogger("netctl.agent")

EVERYTHING = None  # a dirty set of None means: every network on this host
DEBOUNCE_S = 0.005  # a burst of etcd events settles within this quiet time...
MAX_DELAY_S = 0.05  # ...but never delays a reconcile by more than this after the first event
RESYNC_INTERVAL_S = 30.0  # full reconcile with nothing dirty: repairs what the events could not say
RETRY_MIN_S, RETRY_MAX_S = 0.2, 5.0  # backoff after a failed reconcile (etcd away, kernel refused)
JOIN_TIMEOUT_S = 10.0


# --- pure logic ---------------------------------------------------------------------------------


def network_of_key(key: str, prefix: str) -> str | None:
    """The network id a key under peers/ (<prefix><network>/<endpoint>) or networks/ (<prefix><network>)
    belongs to; None for a key outside `prefix`."""
    if not key.startswith(prefix):
        return None
    network_id = key[len(prefix):].split("/", 1)[0]
    return network_id or None


def affected_networks(prefix: str, events: "Iterable[WatchEvent] | None") -> set[str] | None:
    """Networks touched by one batch of watch events; EVERYTHING after a full read (events None)."""
    if events is None:
        return EVERYTHING
    touched = set()
    for event in events:
        network_id = network_of_key(event.key, prefix)
        if network_id:
            touched.add(network_id)
    return touched


def merge(a: set[str] | None, b: set[str] | None) -> set[str] | None:
    """Union of two dirty sets, EVERYTHING absorbing."""
    if a is EVERYTHING or b is EVERYTHING:
        return EVERYTHING
    return a | b


class Dirty:
    """Networks waiting for a reconcile, coalesced; thread-safe.

    `mark()` from any thread; `take()` in the worker blocks until something is dirty, then waits until
    no new mark came for `debounce_s` or `max_delay_s` passed since the first one, and returns the
    union (EVERYTHING absorbing). `clock` and the condition's waits are injectable for tests."""

    def __init__(self, *, debounce_s: float = DEBOUNCE_S, max_delay_s: float = MAX_DELAY_S,
                 clock: Callable[[], float] = time.monotonic):
        self.debounce_s = debounce_s
        self.max_delay_s = max(max_delay_s, debounce_s)
        self._clock = clock
        self._cond = threading.Condition()
        self._pending: set[str] | None = set()
        self._any = False
        self._first = 0.0  # clock() of the first mark of the pending batch
        self._last = 0.0  # clock() of the latest mark
        self._closed = False
        self.taken_since = 0.0  # clock() of the first mark of the batch take() returned last (one consumer)

    def mark(self, networks: set[str] | None) -> None:
        if networks is not EVERYTHING and not networks:
            return
        with self._cond:
            now = self._clock()
            if not self._any:
                self._first = now
                self._pending = set()
            self._pending = merge(self._pending, networks)
            self._any = True
            self._last = now
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def take(self, timeout: float) -> tuple[bool, set[str] | None]:
        """(True, networks) once a batch settled; (False, set()) after `timeout` s with nothing dirty
        or when closed."""
        with self._cond:
            deadline = self._clock() + timeout
            while not self._any and not self._closed:
                left = deadline - self._clock()
                if left <= 0:
                    return False, set()
                self._cond.wait(left)
            while self._any and not self._closed:
                now = self._clock()
                settle = min(self._last + self.debounce_s, self._first + self.max_delay_s)
                if now >= settle:
                    break
                self._cond.wait(settle - now)
            if self._closed:
                return False, set()
            batch, self._pending, self._any = self._pending, set(), False
            self.taken_since = self._first
            return True, batch


@dataclass
class Backoff:
    """Capped exponential delay between failed attempts; reset by a success."""

    first: float = RETRY_MIN_S
    cap: float = RETRY_MAX_S
    current: float = 0.0

    def failed(self) -> float:
        self.current = self.first if self.current == 0 else min(self.current * 2, self.cap)
        return self.current

    def succeeded(self) -> None:
        self.current = 0.0


def describe(network_id: str, result: Any) -> str:
    """One log line for a reconcile that changed something."""
    parts = []
    for label, items in (("+fdb", result.fdb_added), ("-fdb", result.fdb_removed),
                         ("+neigh", result.neighbours_added), ("-neigh", result.neighbours_removed)):
        if items:
            parts.append(f"{label} {len(items)}")
    return f"reconciled network {network_id[:12]}: {', '.join(parts) or 'nothing changed'}"


# --- the agent ----------------------------------------------------------------------------------


@dataclass
class AgentSettings:
    root: str
    store_url: str
    host_name: str
    debounce_s: float = DEBOUNCE_S
    max_delay_s: float = MAX_DELAY_S
    resync_interval_s: float = RESYNC_INTERVAL_S


class OverlayAgent:
    """Start with `start()`, stop with `stop()` (bounded, idempotent). `mark_all()` asks for a full
    reconcile from any thread (the daemon calls it when the host registers again after losing its
    lease). Counters (`reconciles`, `failures`) are for tests and logs."""

    def __init__(self, settings: AgentSettings):
        from libnetwork.store.etcd import Keys

        self.settings = settings
        self.dirty = Dirty(debounce_s=settings.debounce_s, max_delay_s=settings.max_delay_s)
        self.reconciles = 0
        self.failures = 0
        self._stop = threading.Event()
        self._mirrors: list[PrefixMirror] = []
        self._threads: list[threading.Thread] = []
        self._prefixes = (Keys.PEERS, Keys.NETWORKS)

    # -- life cycle -------------------------------------------------------------------------------

    def start(self) -> None:
        from libnetwork.store.etcd import PrefixMirror

        self.dirty.mark(EVERYTHING)  # the start-up reconcile, even before etcd answers
        for prefix in self._prefixes:
            mirror = PrefixMirror(self.settings.store_url, prefix)
            self._mirrors.append(mirror)
            self._spawn(f"netctl-watch-{prefix.rstrip('/').rsplit('/', 1)[-1]}", self._follow, mirror)
        self._spawn("netctl-reconcile", self._work)

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for mirror in self._mirrors:
            mirror.stop()
        self.dirty.close()
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("thread %s did not stop within %.0f s", thread.name, JOIN_TIMEOUT_S)

    def mark_all(self) -> None:
        self.dirty.mark(EVERYTHING)

    # -- watchers ---------------------------------------------------------------------------------

    def _follow(self, mirror: "PrefixMirror") -> None:
        def on_change(m: "PrefixMirror", events: "list[WatchEvent] | None") -> None:
            self.dirty.mark(affected_networks(m.prefix, events))

        while not self._stop.is_set():
            try:
                mirror.follow(on_change)  # returns only once stopped; store errors it retries itself
            except Exception:  # a bug: say so loudly, then carry on from the last revision seen
                log.exception("watch on %s failed; watching again in %.0f s", mirror.prefix, RETRY_MAX_S)
                self.dirty.mark(EVERYTHING)  # whatever that batch said is lost: re-derive everything
                self._stop.wait(RETRY_MAX_S)

    # -- worker -----------------------------------------------------------------------------------

    def _work(self) -> None:
        controller = None
        backoff = Backoff()
        last_error = ""
        try:
            while not self._stop.is_set():
                got, networks = self.dirty.take(self.settings.resync_interval_s)
                if self._stop.is_set():
                    break
                since = self.dirty.taken_since if got else time.monotonic()
                if not got:
                    networks = EVERYTHING  # quiet for a while: the periodic safety net
                try:
                    if controller is None:
                        controller = self._controller()
                    self.reconcile(controller, networks, since=since)
                except Exception as err:  # etcd away, kernel refused, or a bug: keep the entries, retry
                    self.failures += 1
                    delay = backoff.failed()
                    if not _is_netctl_error(err):
                        log.exception("reconcile failed (a bug); retrying in %.1f s", delay)
                        _close(controller)  # start over with fresh connections
                        controller = None
                    elif _one_line(err) != last_error:  # one line per cause, not one per retry
                        log.warning("reconcile failed: %s; kernel entries kept as they are, retrying",
                                    _one_line(err))
                    last_error = _one_line(err)
                    self.dirty.mark(networks)
                    self._stop.wait(delay)
                    continue
                if last_error:
                    log.info("reconcile works again")
                    last_error = ""
                backoff.succeeded()
        finally:
            _close(controller)

    def _controller(self):
        from libnetwork.controller import Controller
        from netctl.names import keep_hosts_files_current

        s = self.settings
        controller = Controller(s.root, store_url=s.store_url, host_name=s.host_name)
        # Each reconcile emits names-changed (remote endpoints came or went): the name server follows.
        keep_hosts_files_current(controller, on_changed=_log_rewritten)
        return controller

    def reconcile(self, controller, networks: set[str] | None, *, since: float = 0.0) -> dict[str, Any]:
        """One pass: the kernel tables of `networks` (EVERYTHING: all built here) := the store's peers,
        then the hosts files of local containers on them. Raises on a store error, before any kernel
        change of the network it was reading. `since`: time.monotonic() of the event that asked for
        it (logged as the delay from event to kernel)."""
        before = self._built_here()
        if networks is EVERYTHING:
            results = controller.reconcile_overlay(None)
        else:
            results = {}
            for network_id in sorted(networks & before):  # events of networks not built here cost nothing
                results.update(controller.reconcile_overlay(network_id))
        self.reconciles += 1
        after = self._built_here()
        for network_id, result in sorted(results.items()):
            if network_id in before and network_id not in after:
                log.info("removed network %s from this host (deleted, or its last local endpoint left)",
                         network_id[:12])
            elif result.changed:
                delay = f" ({(time.monotonic() - since) * 1000:.0f} ms after the event)" if since else ""
                log.info("%s%s", describe(network_id, result), delay)
        # The controller logs a network it could not reconcile and goes on with the others; a network
        # still built here with no result failed: raise, so that the worker retries it.
        failed = (before if networks is EVERYTHING else networks & before) & after - results.keys()
        if failed:
            from libnetwork.errors import KernelError

            raise KernelError(f"could not reconcile network(s) {', '.join(sorted(n[:12] for n in failed))}")
        return results

    def _built_here(self) -> set[str]:
        """Networks whose kernel side exists on this host (drivers/overlay.py: ROOT/overlay/<id>);
        a directory listing, so events of networks this host does not use cost nothing."""
        from libnetwork.rootdir import OVERLAY_NETNS

        try:
            return set(os.listdir(os.path.join(self.settings.root, OVERLAY_NETNS)))
        except FileNotFoundError:
            return set()


def _log_rewritten(count: int) -> None:
    if count:
        log.info("rewrote %d hosts file(s)", count)


class HostLease:
    """This host's record in etcd on a lease kept alive (EtcdStore.start_keepalive, which registers
    again by itself if the lease was lost). Registration is retried in the background while etcd is
    unreachable, so a daemon started before etcd (or during its restart) joins when etcd comes.

    A refusal is final, never retried: another host (another host id) holds this host's name or VTEP
    on a live lease (etcd.HostTaken). Then `refused` holds the error and `on_refused(err)` is called,
    from this object's thread or the keep-alive's; whether that happens at the first registration or
    at a later one (the lease was lost and the other host took the name meanwhile), nothing of the
    other host's is touched. `stop()` stops refreshing and revokes nothing (see netctl/daemon.py)."""

    def __init__(self, store_url: str, host_name: str, vtep: str, ttl: int,
                 on_registered: Callable[[Any], None] | None = None, *, host_id: str = "",
                 on_refused: Callable[[Any], None] | None = None):
        self.store_url, self.host_name, self.vtep, self.ttl = store_url, host_name, vtep, ttl
        self.host_id = host_id
        self.on_registered = on_registered
        self.on_refused = on_refused
        self.registered = threading.Event()
        self.refused: Any = None  # the etcd.HostTaken that ended it, once refused
        self._stop = threading.Event()
        self._store: EtcdStore | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="netctl-register", daemon=True)

    def start(self) -> "HostLease":
        self._thread.start()
        return self

    def _registered(self, record: Any) -> None:
        log.info("host %s registered in %s (host id %s, vtep %s, lease %x, ttl %d s)", record.name, self.store_url,
                 record.short_id, record.vtep, record.lease, self.ttl)
        self.registered.set()
        if self.on_registered is not None:
            self.on_registered(record)

    def _refused(self, err: Any) -> None:
        self.refused = err
        if self.on_refused is not None:
            self.on_refused(err)
        else:
            log.error("%s", err.message)

    def _run(self) -> None:
        from libnetwork.errors import NetctlError
        from libnetwork.store.etcd import EtcdStore, HostTaken

        backoff, last_error = Backoff(first=0.2, cap=2.0), ""
        while not self._stop.is_set():
            store = None
            try:
                store = EtcdStore(self.store_url, host=self.host_name, host_id=self.host_id,
                                  timeout=max(1.0, min(5.0, self.ttl / 3)))
                store.start_keepalive(self.vtep, ttl=self.ttl, on_registered=self._registered,
                                      on_refused=self._refused)
            except HostTaken as err:  # final: retrying would only wait for the other host to die
                if store is not None:
                    store.close()
                self._refused(err)
                return
            except NetctlError as err:
                if store is not None:
                    store.close()
                if err.message != last_error:  # one line per distinct cause, not one per retry
                    log.warning("cannot register host %s yet: %s; retrying", self.host_name, err.message)
                    last_error = err.message
                self._stop.wait(backoff.failed())
                continue
            with self._lock:
                if self._stop.is_set():
                    store.close()
                else:
                    self._store = store
            return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=JOIN_TIMEOUT_S)
        with self._lock:
            store, self._store = self._store, None
        if store is not None:
            store.close()  # stops the keep-alive thread; the lease itself stays until its TTL runs out


def _is_netctl_error(err: BaseException) -> bool:
    from libnetwork.errors import NetctlError

    return isinstance(err, NetctlError)


def _one_line(err: BaseException) -> str:
    text = getattr(err, "message", None) or str(err) or type(err).__name__
    return text.splitlines()[0] if text else type(err).__name__


def _close(controller) -> None:
    if controller is not None:
        try:
            controller.close()
        except Exception as err:  # closing must not hide the error that got us here
            log.debug("closing the agent's controller: %s", err)
    return None
