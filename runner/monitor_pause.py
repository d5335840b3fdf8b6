"""pause and unpause (Docker's): every process of a running container frozen by its cgroup's freezer
(v1 freezer.state, v2 cgroup.freeze), and thawed again. The container stays "running" in its record,
with state.paused set; views show it as Docker's "paused".

A signal to a paused container (kill, stop, rm -f) is sent, then the container is thawed so that it
is delivered, as dockerd does; exec into a paused container is refused, and healthcheck probes are
skipped while it is paused (runner/monitor_exec.py, runner/monitor_health.py).
"""

from __future__ import annotations

from libnetwork.errors import InUse
from runner.monitor_clients import Client
from runner.monitor_ops import ContainerOps
from runner.monitor_watch import Live
from runner.state import Container


class PauseOps(ContainerOps):
    """pause, unpause, and the thaw after a signal; the Monitor (runner/monitor.py) is one of these."""

    def _op_pause(self, client: Client, container: Container, request: dict) -> None:
        self._freeze(client, container, True)

    def _op_unpause(self, client: Client, container: Container, request: dict) -> None:
        self._freeze(client, container, False)

    def _freeze(self, client: Client, container: Container, frozen: bool) -> None:
        live = self.live.get(container.id)
        if live is None or live.status is not None:
            raise InUse(f"container {container.name!r} is not running")
        state = live.container.state
        if state.paused == frozen:
            raise InUse(f"container {container.name!r} is {'already paused' if frozen else 'not paused'}")

        def job() -> None:  # on the worker: a freeze waits for the kernel (bounded), and writes the record
            if live.status is not None:
                raise InUse(f"container {container.name!r} is not running")
            self.runtime.freeze(live.container.config, frozen)
            state.paused = frozen
            self.runtime.records.write_state(container.id, state)

        self._on_worker(client, job, lambda _: self._answer(client, {"event": "ok"}))

    def _thaw_after_signal(self, live: Live) -> None:
        """After a signal to a paused container: thaw it, or the signal waits as long as the freeze."""
        state = live.container.state
        if not state.paused:
            return
        state.paused = False

        def job() -> None:
            self.runtime.freeze(live.container.config, False)
            self.runtime.records.write_state(live.container.id, state)

        self.submit(job)
