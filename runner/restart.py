"""Restart policies (Docker's `--restart`): whether a container that exited starts again, and when.

    no               never
    always           always, until stopped by hand (stop, kill)
    unless-stopped   the same (netctl keeps no daemon-restart case apart: see below)
    on-failure[:N]   after a non-zero exit code, at most N times (0: no bound)

A new monitor starts again the containers that ended while no monitor watched them (a reboot, a
killed monitor), by the same rule (runner/monitor_adopt.py), with the exit code lost (255). After a
reboot the host agent started by hand starts the monitor for that (netctl/agent_services.py).

Back-off as dockerd's restart manager: 100 ms before the first restart, doubled for each one after,
at most a minute; reset when the container ran for 10 s or more. Pure, so unit-tested directly.
"""

from __future__ import annotations

from runner.spec import parse_restart

BACKOFF_START_S = 0.1
BACKOFF_MAX_S = 60.0
RESET_AFTER_S = 10.0


def should_restart(policy: str, code: int, restart_count: int, manually_stopped: bool) -> bool:
    name, maximum = parse_restart(policy)
    if manually_stopped or name == "no":
        return False
    if name == "on-failure":
        return code != 0 and (maximum == 0 or restart_count < maximum)
    return True


def next_delay(previous: float, ran_for: float) -> float:
    """The wait before the next restart, given the previous wait (0 if none) and how long it ran."""
    if previous <= 0 or ran_for >= RESET_AFTER_S:
        return BACKOFF_START_S
    return min(previous * 2, BACKOFF_MAX_S)

