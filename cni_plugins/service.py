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
        self._stopped = False
        self._remover = threading.Thread(target=self._remove_links, name="cni-link-remover", daemon=True)

    def start(self) -> "CniService":
        self._remover.start()
        return self

    def stop(self) -> None:
        deadline = time.monotonic() + FLUSH_TIMEOUT_S
        while self._held_count and time.monotonic() < deadline:  # replies still being written
            time.sleep(0.002)
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

    def later(self, step, what: str = "a network's devices") -> None:
        """Run `step(host_netlink)` in the background thread: the kernel's slow deletions (a veth pair
        ~25 ms, a bridge ~40 ms) after the answer. Failures are logged; doctor/gc find the rest."""
        held = getattr(self._held, "steps", None)
        if held is None:
            self._removals.put((step, what))
            return
        with self._lock:
            self._held_count += 1
        held.append((step, what))

    @contextlib.contextmanager
    def holding(self) -> Iterator[Callable[[], None]]:
        """Within the block, the steps this thread hands to later() wait until release() (yielded;
        the block's end calls it too). A request handler releases them once its reply is written:
        woken at once, the background thread took the interpreter for its first steps while the reply
        was still being made (0.2-0.6 ms of every `docker network rm` on a 2-vCPU VM)."""
        steps: list = []
        self._held.steps = steps

        def release() -> None:
            if self._held.steps is steps:
                self._held.steps = None
            self._queue_held(steps)

        try:
            yield release
        finally:
            release()

    def _queue_held(self, steps: list) -> None:
        while steps:
            item = steps.pop(0)
            if self._stopped:
                self._run_now(*item)
            else:
                self._removals.put(item)  # counted as unfinished before it stops being held
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
        deadline = time.monotonic() + timeout
        while (self._removals.unfinished_tasks or self._held_count) and time.monotonic() < deadline:
            time.sleep(0.002)

    def _remove_links(self) -> None:
        from libnetwork.netlink import Netlink

        with Netlink() as host:
            while True:
                item = self._removals.get()
                if item is None:
                    return
                step, what = item
                try:
                    step(host)
                except Exception as err:  # left for doctor/gc; the agent keeps going
                    log.warning("removing %s: %s; `netctl gc` removes it later", what, err)
                finally:
                    self._removals.task_done()
