"""`logs --follow` (the CLI's and the Docker API's) ends when the container's output can no longer
grow: not when its init is gone, since the monitor reaps the init first, then drains the pipes into the
log, and only then records the exit. A follower that stopped at the reaping lost the last output (docker-py's
`containers.run` returned b'' for an `echo` under load)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import pytest

from runner import logs
from runner.paths import Layout
from runner.state import (
    DONE, DRAINING, EXITED, GROWING, RESTARTING, RUNNING, ContainerState, Records, output_phase, process_start_time,
)  # fmt: skip

BOUND_S = 10.0


def a_gone_pid() -> tuple[int, int]:
    """The pid and starttime of a process that has ended and been reaped."""
    child = subprocess.Popen(["sleep", "30"])
    start = process_start_time(child.pid)
    child.kill()
    child.wait(BOUND_S)
    return child.pid, start


def state_with(status: str = RUNNING, *, init_alive: bool = False, monitor: str = "alive") -> ContainerState:
    pid, start = (os.getpid(), process_start_time(os.getpid())) if init_alive else a_gone_pid()
    me, my_start = os.getpid(), process_start_time(os.getpid())
    monitor_pid, monitor_start = {
        "alive": (me, my_start),
        "alive, from an older record": (me, 0),
        "gone": a_gone_pid(),
        "its pid reused": (me, my_start + 1),
        "none": (0, 0),
    }[monitor]
    return ContainerState(status=status, pid=pid, pid_start=start, monitor_pid=monitor_pid, monitor_start=monitor_start)


@pytest.mark.parametrize("status, init_alive, monitor, phase", [
    (RUNNING, True, "alive", GROWING),
    (RUNNING, False, "alive", DRAINING),  # reaped, output still draining: the case that lost output
    (RUNNING, False, "alive, from an older record", DONE),  # cannot tell: as before the starttime was kept
    (RUNNING, False, "gone", DONE),  # the monitor died and left the record running
    (RUNNING, False, "its pid reused", DONE),
    (RUNNING, False, "none", DONE),
    (RUNNING, True, "gone", GROWING),  # adopted later by a new monitor: the init still writes
    (RESTARTING, False, "alive", GROWING),
    (RESTARTING, False, "gone", DONE),  # no monitor will start it again
    (EXITED, False, "alive", DONE),
])  # fmt: skip
def test_output_phase(status, init_alive, monitor, phase):
    assert output_phase(state_with(status, init_alive=init_alive, monitor=monitor)) == phase


@pytest.fixture
def records(tmp_path) -> Records:
    """The runner's own records, for container c1."""
    made = Records(Layout(str(tmp_path)))
    os.makedirs(made.directory("c1"))
    return made


def test_a_follower_gets_the_output_drained_after_the_init_was_reaped(tmp_path, records):
    """The order the monitor keeps: init reaped (the record still says running), output written, exit
    recorded. The output is written only once the follower has asked twice whether to go on (or has
    ended, as it did before the fix): it must still get it, then end at the exit's record."""
    path = str(tmp_path / "container.log")
    open(path, "w").close()
    records.write_state("c1", state_with(RUNNING, init_alive=False))
    asked = [threading.Event(), threading.Event()]
    calls = [0]
    condition = logs.follow_condition(lambda: records.state("c1"))

    def still_running() -> bool:
        answer = condition()
        calls[0] += 1
        asked[min(calls[0], 2) - 1].set()
        return answer

    got: list[str] = []
    follow = lambda: got.extend(r["d"] for r in logs.read(path, follow=True, still_running=still_running))  # noqa: E731
    follower = threading.Thread(target=follow)
    follower.start()
    try:
        deadline = time.monotonic() + BOUND_S
        while not asked[1].wait(0.01) and follower.is_alive() and time.monotonic() < deadline:
            pass
        assert asked[0].is_set(), "the follower never asked whether the container still runs"
        with open(path, "a") as f:
            f.write(json.dumps({"t": 1.0, "s": 1, "d": "tagged\n"}) + "\n")
        exited = records.state("c1")
        assert exited is not None
        exited.status, exited.exit_code = EXITED, 0
        records.write_state("c1", exited)
    finally:
        follower.join(BOUND_S)
    assert not follower.is_alive(), "the follower did not end once the exit was recorded"
    assert got == ["tagged\n"]


def test_a_record_left_running_ends_the_follow_after_the_drain_bound(tmp_path, records, monkeypatch):
    """The exit's record failed (the monitor lives on): the follow ends DRAIN_WAIT_S after the init is
    seen gone, not never."""
    monkeypatch.setattr(logs, "DRAIN_WAIT_S", 0.3)
    path = str(tmp_path / "container.log")
    with open(path, "w") as f:
        f.write(json.dumps({"t": 1.0, "s": 1, "d": "last\n"}) + "\n")
    records.write_state("c1", state_with(RUNNING, init_alive=False))
    began = time.monotonic()
    condition = logs.follow_condition(lambda: records.state("c1"))
    got = [r["d"] for r in logs.read(path, follow=True, still_running=condition)]
    assert got == ["last\n"]
    assert 0.3 <= time.monotonic() - began < BOUND_S


def test_a_monitor_that_adopts_a_container_names_itself_in_its_record():
    """An adopted container's record named the monitor that died; once the new one claims it, a
    restart by the new one is followed (runner/monitor_adopt.py)."""
    from runner.lifecycle import Runtime

    state = state_with(RESTARTING, monitor="gone")
    assert output_phase(state) == DONE
    assert Runtime.claim(state) is True and Runtime.claim(state) is False
    assert output_phase(state) == GROWING
