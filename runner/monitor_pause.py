"""pause and unpause (Docker's): every process of a running container frozen by its cgroup's freezer
(v1 freezer.state, v2 cgroup.freeze), and thawed again. The container stays "running" in its record,
with state.paused set; views show it as Docker's "paused".

A signal to a paused container (kill, stop, rm -f) is sent, then the container is thawed so that it
is delivered, as dockerd does; exec into a paused container is refused, and healthcheck probes are
skipped while it is paused (runner/monitor_exec.py, runner/monitor_health.py).
"""

from __future__ import annotations

import logging

from libnetwork.errors import InUse, NetctlError
from runner.monitor_clients import Client
from runner.monitor_loop import safely
from runner.monitor_ops import ContainerOps
from runner.monitor_watch import Live
from runner.state import RESTARTING, Container

log = logging.getLogger(__name__)


class PauseOps(ContainerOps):
    """pause, unpause, and the thaw after a signal; the Monitor (runner/monitor.py) is one of these."""

    def _op_pause(self, client: Client, container: Container, request: dict) -> None:
        self._freeze(client, container, True)

    def _op_unpause(self, client: Client, container: Container, request: dict) -> None:
        self._freeze(client, container, False)

    def _freeze(self, client: Client, container: Container, frozen: bool) -> None:
        """Checked here on the main thread against what the requests before it asked (`pause_wanted`),
        since their jobs may not have run yet; the freeze itself waits for the kernel on the worker."""
        live = self.live.get(container.id)
        if frozen and container.state.status == RESTARTING:
            raise InUse(f"container {container.name!r} is restarting, wait until the container is running")
        if live is None or live.status is not None:
            raise InUse(f"container {container.name!r} is " + ("not running" if frozen else "not paused"))
        wanted = live.pause_wanted if live.pause_wanted is not None else live.container.state.paused
        if wanted == frozen:
            raise InUse(f"container {container.name!r} is {'already paused' if frozen else 'not paused'}")
        if frozen and live.killed:
            raise InUse(f"container {container.name!r} is being killed; a pause would hold the kill back")
        live.pause_wanted = frozen
        if frozen:
            live.pauses += 1
        state = live.container.state

        def job() -> None:  # the worker runs jobs in order: a thaw after a signal comes after this
            if live.status is not None:
                raise InUse(f"container {container.name!r} is not running")
            self.runtime.freeze(live.container.config, frozen)
            state.paused = frozen
            self.runtime.records.write_state(container.id, state)

        def done() -> None:  # on the main thread, after the job, whichever way it went
            if live.pause_wanted == frozen:
                live.pause_wanted = None  # state.paused says it from here

        def answer(_) -> None:
            done()
            self._answer(client, {"event": "ok"})

        def failed(err: NetctlError) -> None:
            done()
            self._error(client, err)

        self._on_worker(client, job, answer, failed)

    def _thaw_after_signal(self, live: Live) -> None:
        """After a kill or stop signal: thaw the container, or the signal waits as long as the freeze.
        Always a job, even when it does not look paused: a pause accepted before the signal may not
        have frozen the cgroup yet, and the worker runs its job before this one."""
        if live.pause_wanted is None and not live.container.state.paused:
            return
        live.pause_wanted = None
        state = live.container.state

        def job() -> None:
            config = live.container.config
            try:
                if state.paused or self.runtime.frozen(config):
                    self.runtime.freeze(config, False)
            except NetctlError as err:  # state.paused stays true: the views keep saying so
                log.warning("container %s: cannot thaw it after a signal: %s", config.name, err.message)
                return
            state.paused = False
            safely(lambda: self.runtime.records.write_state(live.container.id, state))

        self.submit(job)
