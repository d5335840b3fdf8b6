"""Adoption: what a new monitor does with the containers an earlier monitor left (it was killed or
restarted). Alive ones are watched by pidfd (their exit code cannot be had any more: they are not
our children), dead ones are marked "exit status lost" (code 255) and torn down, half-made ones
removed. An exit code the earlier monitor had already recorded is never lost.

Runs once, on the worker thread, when the monitor starts (runner/monitor.py: _reconcile).
"""

from __future__ import annotations

import functools
import os
from typing import Callable

from runner.lifecycle import Runtime
from runner.monitor_loop import safely
from runner.monitor_watch import EXIT_LOST
from runner.state import RUNNING, Container, is_alive


def adopt_or_finish_all(runtime: Runtime, call_soon: Callable[[Callable[[], None]], None],
                        adopt: Callable[[Container, int], None]) -> list[Container]:
    """Worker: `adopt(container, pidfd)` runs on the main thread for each container still alive.
    Returns the containers whose restart policy starts them again: those that ended while no monitor
    watched them, and those an earlier monitor was about to restart."""
    from runner import restart
    from runner.state import RESTARTING

    again = []
    for container in runtime.records.all():
        if container.state.status == RESTARTING:
            again.append(container)
            continue
        state = container.state
        if state.status == RUNNING and is_alive(state):
            try:
                pidfd = os.pidfd_open(state.pid)
            except OSError:
                pidfd = -1
            if pidfd >= 0:
                paused = runtime.frozen(container.config)  # paused or unpaused while no monitor ran
                claimed = runtime.claim(state)  # this monitor now records its exit (logs --follow asks)
                if paused != state.paused or claimed:
                    state.paused = paused
                    safely(functools.partial(runtime.records.write_state, container.id, state))
                call_soon(functools.partial(adopt, container, pidfd))
                continue
        if state.status == RUNNING:
            finish_lost(runtime, container)
            if not container.config.auto_remove and restart.should_restart(
                    container.config.restart, EXIT_LOST, state.restart_count, state.manually_stopped):
                again.append(container)
        elif state.status == "removing" or (state.status == "created" and not container.config.docker):
            # half-made by `netctl run`; a container created through the Docker API stays, as dockerd's
            safely(functools.partial(runtime.remove, container))
    return again


def finish_lost(runtime: Runtime, container: Container) -> None:
    def work() -> None:
        oom = runtime.oom_killed(container.config)
        lost = "exit status lost: the monitor was restarted"
        runtime.record_exit(container.id, container.state, EXIT_LOST, oom, lost)
        runtime.teardown(container.config)
        if container.config.auto_remove:
            runtime.remove(container)

    safely(work)
