"""The CNI plugins' code, kept warm in the host agent (`netctl daemon`, netctl/daemon.py).

A plugin executable pays a Python start (~10 ms) and then, to run a request itself, the import of
libnetwork (~60 ms on a 2-vCPU machine) and the opening of the store and netlink sockets, all for
~3 ms of real work. When the agent listens on ROOT/netctl.sock, the executable forwards its raw
request there instead (cni_plugins/launch.py) and pays only the start; the answer is byte for byte
what the in-process run would print (the same skel.run, the same plugin modules). Without the agent,
every plugin still works, in-process.

Requests from several connections run at once, each on a warm skel.Context (its own controller: store
connection and netlink socket) taken from a pool, so a slow request (a delegated IPAM plugin, etcd)
does not hold up the others.

DEL answers once the records are gone and the container's interface has been renamed out of the way;
the veth itself, ~25 ms of kernel time to delete, goes in a background thread. A later ADD neither
waits for that nor collides with it (its name is free). If the agent dies first, the orphan host
veth is what `netctl doctor` reports and `netctl gc` or a CNI GC removes.

A removed network's bridge (renamed out of the way, down, without addresses: drivers/bridge.py
retire_network) is deleted once the agent is quiet: no request in progress and none for QUIET_S. A
request counts until its answer is out, so a slow one (a delegated IPAM call, an image load) keeps
bridges waiting. Why: deleting a bridge holds the kernel's RTNL lock for ~20 ms of its ~40
(br_vlan_flush waits for an RCU grace period under it), and every link change on the host waits
behind it: a `docker network create` that came right after an rm waited those 20 ms. Bounded: at most
MAX_WAITING wait (beyond, the oldest goes at once), none longer than MAX_WAIT_S.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator

from cni_plugins import skel
from cni_plugins.plugins import load_plugin

log = logging.getLogger("netctl.cni")
PLUGINS = ("bridge", "overlay", "null", "ipam")
STOP_TIMEOUT_S = 30.0
FLUSH_TIMEOUT_S = 10.0
QUIET_S = 0.1  # no request for this long: a script's next command would have come (a CLI starts in ~15 ms)
MAX_WAITING = 16  # bridges waiting for a quiet agent; beyond this many, the oldest goes at once
MAX_WAIT_S = 10.0  # none waits longer, in an agent that is never quiet
_FLUSH = object()  # queued by flush_removals: the waiting steps run now
_LOOK = object()  # not queued: the background thread woke to look at the waiting steps
_TOMBSTONE_PREFIX = "nd"  # a container interface on its way out: "nd" + 13 hex


class NotMine(Exception):
    """The request names another state root (netctlRoot): the client runs it itself."""


class CniService:
    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        self._contexts: queue.SimpleQueue = queue.SimpleQueue()  # warm, idle
        self._all: list[skel.Context] = []
        self._lock = threading.Lock()
        self._removals: queue.Queue = queue.Queue()
        self._held = threading.local()  # holding(): this thread's steps, queued once its reply is out
        self._held_count = 0  # steps held by any thread: flush_removals and stop wait for them too
        self._serving = 0  # requests inside holding() whose reply is not out yet
        self._last_request = 0.0  # time.monotonic() of the last holding() entry or release
        self._flushing = 0  # flush_removals calls waiting: the agent counts as quiet (doctor/gc is a request)
        self._stopped = False  # set under _lock with the stop marker: nothing is queued behind it
        self._remover = threading.Thread(target=self._remove_links, name="cni-link-remover", daemon=True)

    def start(self) -> "CniService":
        self._remover.start()
        return self

    def stop(self) -> None:
        deadline = time.monotonic() + FLUSH_TIMEOUT_S
        while self._held_count and time.monotonic() < deadline:  # replies still being written
            time.sleep(0.002)
        with self._lock:
            self._stopped = True  # steps released from now on run in the releasing thread
            self._removals.put(None)
        self._remover.join(STOP_TIMEOUT_S)
        with self._lock:
            contexts, self._all = self._all, []
        for context in contexts:
            context.close()

    def handle(self, plugin: str, env: dict[str, str], stdin: bytes) -> tuple[int, bytes, bytes]:
        """(exit status, stdout, stderr) of one plugin invocation; NotMine for another root's."""
        if plugin not in PLUGINS or self._root_of(env, stdin) != self.root:
            raise NotMine(plugin)
        context = self._take()
        started = time.perf_counter()
        try:
            status, out, err = skel.run(load_plugin(plugin), env, stdin, context)
        finally:
            self._contexts.put(context)
        log.info("%s netctl-%s %s %s: status %d in %.1f ms", env.get("CNI_COMMAND"), plugin,
                 env.get("CNI_CONTAINERID"), env.get("CNI_IFNAME"), status, (time.perf_counter() - started) * 1000)
        return status, out, err

    def _take(self) -> skel.Context:
        try:
            return self._contexts.get_nowait()
        except queue.Empty:
            context = skel.Context(remove_links=self.defer_link_removal)
            with self._lock:
                self._all.append(context)
            return context

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

    def defer_link_removal(self, network, endpoint, sandbox) -> None:
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
        driver = type(self)._driver(network.driver)
        self.later(lambda host: driver.leave(network, endpoint, sandbox, host), endpoint.host_ifname)

    def later(self, step, what: str = "a network's devices", *, when_quiet: bool = False) -> None:
        """Run `step(host_netlink)` in the background thread: the kernel's slow deletions (a veth pair
        ~25 ms, a bridge ~40 ms) after the answer; `when_quiet`: once the agent is quiet (see the
        module's doc). Failures are logged; doctor/gc find the rest."""
        item = (step, what, when_quiet)
        held = getattr(self._held, "steps", None)
        if held is None:
            self._queue(item)
            return
        with self._lock:
            self._held_count += 1
        held.append(item)

    def _queue(self, item: tuple) -> None:
        """To the background thread; once it has stopped, run here and now."""
        with self._lock:
            if not self._stopped:
                self._removals.put(item)
                return
        self._run_now(*item[:2])

    def later_when_quiet(self, step, what: str = "a removed network's bridge") -> None:
        """Controller.delete_network's `later`: a retired bridge is deleted once the agent is quiet."""
        self.later(step, what, when_quiet=True)

    @contextlib.contextmanager
    def holding(self) -> Iterator[Callable[[], None]]:
        """Within the block, the steps this thread hands to later() wait until release() (yielded;
        the block's end calls it too). A request handler releases them once its reply is written:
        woken at once, the background thread took the interpreter for its first steps while the reply
        was still being made (0.2-0.6 ms of every `docker network rm` on a 2-vCPU VM). Until release(),
        the agent counts as busy: a removed network's bridge is not deleted meanwhile (later_when_quiet)."""
        steps: list = []
        self._held.steps = steps
        self._count_request(+1)
        served = False

        def release() -> None:
            nonlocal served
            if self._held.steps is steps:
                self._held.steps = None
            if not served:
                served = True
                self._count_request(-1)
            self._queue_held(steps)

        try:
            yield release
        finally:
            release()

    def _count_request(self, change: int) -> None:
        """A request starts (+1) or its reply is out (-1): either way the agent was busy just now."""
        with self._lock:
            self._serving += change
            self._last_request = time.monotonic()

    def _queue_held(self, steps: list) -> None:
        while steps:
            self._queue(steps.pop(0))  # counted as unfinished before it stops being held
            with self._lock:
                self._held_count -= 1

    @staticmethod
    def _run_now(step, what: str) -> None:
        from libnetwork.netlink import Netlink

        try:
            with Netlink() as host:
                step(host)
        except Exception as err:  # as in the background thread: left for doctor/gc
            log.warning("removing %s: %s; `netctl gc` removes it later", what, err)

    @staticmethod
    def _driver(name: str):
        from libnetwork.controller import Controller

        return Controller.driver(name)

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

    def flush_removals(self, timeout: float = FLUSH_TIMEOUT_S) -> None:
        """Wait (bounded) until the devices queued for deletion are gone: `doctor` and `gc` must not
        report, or remove, what the agent is about to delete anyway."""
        self._queue_held(getattr(self._held, "steps", None) or [])  # this thread's own: wanted now
        with self._lock:
            self._flushing += 1  # steps other requests release meanwhile do not wait for quiet either
            if not self._stopped and self._remover.is_alive():
                self._removals.put(_FLUSH)  # and the bridges waiting for a quiet agent
        try:
            deadline = time.monotonic() + timeout
            while (self._removals.unfinished_tasks or self._held_count) and time.monotonic() < deadline:
                time.sleep(0.002)
        finally:
            with self._lock:
                self._flushing -= 1

    def _remove_links(self) -> None:
        from libnetwork.netlink import Netlink

        waiting: list[tuple] = []  # when-quiet steps, oldest first: (step, what, time queued)
        with Netlink() as host:
            while True:
                try:
                    item = self._removals.get(timeout=self._next_look(waiting))
                except queue.Empty:
                    item = _LOOK
                if item is None or item is _FLUSH:  # stop, or doctor/gc: the waiting steps go now
                    for step, what, _ in waiting:
                        self._remove(host, step, what)
                    waiting.clear()
                    self._removals.task_done()
                    if item is None:
                        return
                    continue
                if item is not _LOOK:
                    step, what, when_quiet = item
                    if when_quiet:
                        waiting.append((step, what, time.monotonic()))
                    else:
                        self._remove(host, step, what)
                while waiting and self._due(waiting):  # one at a time: a request may come meanwhile
                    step, what, _ = waiting.pop(0)
                    self._remove(host, step, what)

    def _remove(self, host, step, what: str) -> None:
        try:
            step(host)
        except Exception as err:  # left for doctor/gc; the agent keeps going
            log.warning("removing %s: %s; `netctl gc` removes it later", what, err)
        finally:
            self._removals.task_done()

    def _due(self, waiting: list[tuple]) -> bool:
        """Whether the oldest waiting step runs now: the agent is quiet, or the wait is over its bounds."""
        now = time.monotonic()
        if len(waiting) > MAX_WAITING or now - waiting[0][2] >= MAX_WAIT_S:
            return True
        with self._lock:
            return self._flushing > 0 or (self._serving == 0 and now - self._last_request >= QUIET_S)

    def _next_look(self, waiting: list[tuple]) -> float | None:
        """How long the background thread may wait for the next step before it looks at the waiting."""
        if not waiting:
            return None
        now = time.monotonic()
        with self._lock:
            quiet_in = QUIET_S - (now - self._last_request) if self._serving == 0 else QUIET_S
        return max(0.001, min(quiet_in, MAX_WAIT_S - (now - waiting[0][2])))
