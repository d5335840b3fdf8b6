"""`logs --follow` (the CLI's and the Docker API's) ends when the container's output can no longer
grow: not when its init is gone, since the monitor reaps the init first, then drains the pipes into the
log, and only then records the exit. A follower that stopped at the reaping lost the last output (docker-py's
`containers.run` returned b'' for an `echo` under load)."""

from __future__ import annotations

import json
import os
import subprocess
import threading

import pytest

from runner import logs
from runner.state import EXITED, RESTARTING, RUNNING, ContainerState, output_may_grow, process_start_time

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


@pytest.mark.parametrize("status, init_alive, monitor, grows", [
    (RUNNING, True, "alive", True),
    (RUNNING, False, "alive", True),  # reaped, output still draining: the case that lost output
    (RUNNING, False, "alive, from an older record", True),
    (RUNNING, False, "gone", False),  # the monitor died and left the record running
    (RUNNING, False, "its pid reused", False),
    (RUNNING, False, "none", False),
    (RUNNING, True, "gone", True),  # adopted later by a new monitor: the init still writes
    (RESTARTING, False, "gone", True),
    (EXITED, False, "alive", False),
])  # fmt: skip
def test_output_may_grow(status, init_alive, monitor, grows):
    assert output_may_grow(state_with(status, init_alive=init_alive, monitor=monitor)) is grows


def test_a_follower_gets_the_output_drained_after_the_init_was_reaped(tmp_path):
    """The order the monitor keeps: init reaped (the record still says running), output written, exit
    recorded. The follower looks once in the middle and must still see the output."""
    path = str(tmp_path / "container.log")
    open(path, "w").close()
    state_file = tmp_path / "state.json"
    state_file.write_text(json.dumps(state_with(RUNNING, init_alive=False).to_dict()))
    looked = threading.Event()

    def still_running() -> bool:
        grows = output_may_grow(ContainerState.from_dict(json.loads(state_file.read_text())))
        looked.set()
        return grows

    got: list[str] = []
    follow = lambda: got.extend(r["d"] for r in logs.read(path, follow=True, still_running=still_running))  # noqa: E731
    follower = threading.Thread(target=follow)
    follower.start()
    try:
        assert looked.wait(BOUND_S), "the follower never asked whether the container still runs"
        with open(path, "a") as f:
            f.write(json.dumps({"t": 1.0, "s": 1, "d": "tagged\n"}) + "\n")
        exited = ContainerState.from_dict(json.loads(state_file.read_text()))
        exited.status, exited.exit_code = EXITED, 0
        state_file.write_text(json.dumps(exited.to_dict()))
    finally:
        follower.join(BOUND_S)
    assert not follower.is_alive(), "the follower did not end once the exit was recorded"
    assert got == ["tagged\n"]
