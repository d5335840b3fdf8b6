"""Healthchecks (Docker's HEALTHCHECK / --health-cmd), run by the monitor: every interval the test runs
in the container as an exec of the monitor's own (runner/monitor_exec.py), bounded by its timeout; the
result goes to the container's state (State.Health: Status starting/healthy/unhealthy, FailingStreak,
the last five results in Log), as dockerd keeps it.

    exit 0 -> healthy, streak 0          anything else -> streak + 1; unhealthy once streak >= retries
    failures within the start period do not count (unless a probe succeeded already), as dockerd's

The container's config holds the check: {"argv": [...], "interval", "timeout", "start_period",
"start_interval" (seconds), "retries"}.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from datetime import datetime, timezone

from runner.monitor_exec import Exec, ExecOps
from runner.monitor_watch import Live

log = logging.getLogger("netctl.monitor")

LOG_KEEP = 5
DEFAULTS = {"interval": 30.0, "timeout": 30.0, "start_period": 0.0, "start_interval": 5.0, "retries": 3}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def settings(check: dict) -> dict:
    return {key: (check.get(key) or default) for key, default in DEFAULTS.items()} | {"argv": check.get("argv", [])}


def judge(health: dict, result: dict, retries: int, in_start_period: bool) -> dict:
    """The next State.Health after one probe's result (pure)."""
    status, streak = health.get("Status", "starting"), int(health.get("FailingStreak", 0))
    if result["ExitCode"] == 0:
        status, streak = "healthy", 0
    elif not (in_start_period and status == "starting"):
        streak += 1
        if streak >= retries:
            status = "unhealthy"
    return {"Status": status, "FailingStreak": streak, "Log": (list(health.get("Log", [])) + [result])[-LOG_KEEP:]}


class HealthOps(ExecOps):
    def _health_start(self, live: Live) -> None:
        """A container just started: its first probe after the start interval (in a start period) or
        the interval."""
        check = live.container.config.healthcheck
        if not check or not check.get("argv"):
            return
        config = settings(check)
        first = config["start_interval"] if config["start_period"] else config["interval"]
        self.later(first, lambda: self._probe(live))

    def _probe(self, live: Live) -> None:
        if self.live.get(live.container.id) is not live or live.status is not None:
            return  # it exited (a restart has a Live of its own, and probes of its own)
        config = settings(live.container.config.healthcheck)
        if live.container.state.paused or live.pause_wanted:  # as dockerd: no probe (it would hang) while paused
            self.later(config["interval"], lambda: self._probe(live))
            return
        begun = _now()
        pauses = live.pauses

        def done(record: Exec) -> None:
            if live.pauses != pauses or live.container.state.paused:  # frozen mid-probe: its time says nothing
                if self.live.get(live.container.id) is live and live.status is None:
                    self.later(config["interval"], lambda: self._probe(live))
                return
            output = bytes(record.capture or b"").decode(errors="replace") or record.output_error
            code = record.exit_code if record.exit_code is not None else -1
            if timed_out[0]:
                code, output = -1, f"Health check exceeded timeout ({config['timeout']:g}s)"
            self._health_result(live, {"Start": begun, "End": _now(), "ExitCode": code, "Output": output},
                                config, time.monotonic() - live.since < config["start_period"])  # fmt: skip

        timed_out = [False]
        record = self._run_internal(live.container.id, list(config["argv"]), done)

        def timeout() -> None:
            if record.running and record.pid:
                timed_out[0] = True
                try:
                    os.kill(record.pid, signal.SIGKILL)  # the exec's parent; its status ends the probe
                except ProcessLookupError:
                    pass

        self.later(config["timeout"], timeout)

    def _health_result(self, live: Live, result: dict, config: dict, in_start_period: bool) -> None:
        state = live.container.state
        health = judge(state.health, result, int(config["retries"]), in_start_period)

        def write() -> None:  # on the worker, which writes every state record in turn
            if live.status is None and state.status == "running":
                state.health = health
                self.runtime.records.write_state(live.container.id, state)

        self.submit(write)
        if self.live.get(live.container.id) is live and live.status is None:
            healthy = health["Status"] == "healthy"
            delay = config["interval"] if healthy or not in_start_period else config["start_interval"]
            self.later(delay, lambda: self._probe(live))
