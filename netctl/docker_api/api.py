"""The context every Docker API handler gets: the state root, the event bus, the library.

Handlers reach networks, endpoints and sandboxes through api.controller(): the same libnetwork
Controller (and the same hooks, e.g. containers' hosts files following names-changed) the CLI uses,
one warm instance shared by the API's requests in turn. Its store connection and netlink socket are
not for two threads at once, so a request holds it only for its library calls. Processes outside the
agent (a cold `netctl` command) are kept apart by the library's own file locks.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from netctl.docker_api.events import EventBus

if TYPE_CHECKING:
    from libnetwork.controller import Controller
    from runner.paths import Layout

log = logging.getLogger("netctl.docker_api")


class Api:
    def __init__(self, root: str, *, gid: int = -1, deferred: object | None = None,
                 agent_stopping: threading.Event | None = None):
        """`deferred`: the agent's queue of slow kernel deletions (cni_plugins/service.py CniService:
        later_when_quiet, defer_link_removal, holding), so that `network rm` and `disconnect` answer
        before the kernel has deleted the bridge or the veth pair, as the CLI's requests do; None:
        delete at once.
        `agent_stopping`: set when the agent stops, whose queue may then no longer be worked off."""
        from runner.paths import Layout

        self.root = root
        self.gid = gid
        self._deferred = deferred
        self._agent_stopping = agent_stopping or threading.Event()
        self.layout: Layout = Layout(root)
        self.events = EventBus()
        self.stopping = threading.Event()  # set when this service stops: streams end
        self._controller: Controller | None = None
        self._controller_lock = threading.RLock()
        self._mutation = threading.RLock()

    @property
    def later(self):
        """Controller.delete_network's `later`, or None (delete now) once the agent is stopping."""
        return None if self._agent_stopping.is_set() else getattr(self._deferred, "later_when_quiet", None)

    @contextlib.contextmanager
    def replying(self) -> Iterator[Callable[[], None]]:
        """One request's block: the kernel deletions it hands to the agent's background thread (`later`,
        `remove_links`) start once release() is called, after the reply is written, or at the block's
        end, so that the thread does not take the interpreter from the reply."""
        holding = getattr(self._deferred, "holding", None)
        if holding is None:
            yield lambda: None
            return
        with holding() as release:
            yield release

    @property
    def remove_links(self):
        """Controller.disconnect's `remove_links`, or None (delete now) once the agent is stopping."""
        return None if self._agent_stopping.is_set() else getattr(self._deferred, "defer_link_removal", None)

    @contextlib.contextmanager
    def controller(self) -> Iterator[Controller]:
        """The warm controller, for this thread alone until the block ends. A block that fails with
        an unexpected error closes it: the next request starts on fresh connections."""
        with self._controller_lock:
            if self._controller is None:
                from libnetwork.controller import Controller
                from netctl.names import keep_hosts_files_current

                controller = Controller(self.root)
                keep_hosts_files_current(controller)
                self._controller = controller
            try:
                yield self._controller
            except Exception as err:
                from libnetwork.errors import NetctlError, StoreError

                if not isinstance(err, NetctlError) or isinstance(err, StoreError):
                    self._close_controller()
                raise

    @contextlib.contextmanager
    def mutation(self) -> Iterator[None]:
        """Serialise the API's state-changing calls that read, decide and then write (a name's
        uniqueness, an image's users) so two requests do not both decide on the same state."""
        with self._mutation:
            yield

    def _close_controller(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            with contextlib.suppress(Exception):
                controller.close()

    def close(self) -> None:
        with self._controller_lock:
            self._close_controller()
