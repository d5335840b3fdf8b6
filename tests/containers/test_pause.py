"""`netctl pause` / `unpause`: every process of a container frozen by its cgroup's freezer, and thawed."""

from __future__ import annotations

import sys
import time

import pytest

from containers.conftest import wait_for

pytestmark = pytest.mark.kernel

TICKER = ("sh", "-c", "while :; do echo tick >> /tmp/ticks; sleep 0.05; done")


def _ticks(rhost, cid: str) -> int:
    """Lines the loop wrote, read from the container's upper directory (exec is refused while paused)."""
    out = rhost.run("sh", "-c", f"cat {rhost.host.root}/containers/{cid}/upper/tmp/ticks 2>/dev/null | wc -l")
    return int(out.stdout.strip())


def test_pause_freezes_every_process_until_unpause(rhost):
    cid = rhost.start("ticker", command=TICKER)
    wait_for(lambda: _ticks(rhost, cid) > 0, what="the first ticks")
    assert rhost.netctl("pause", "ticker").stdout.strip() == "ticker"
    state = rhost.inspect("ticker")["State"]
    assert state["Status"] == "paused" and state["Paused"] and state["Running"]
    assert "(Paused)" in rhost.netctl("ps").stdout
    assert rhost.cgroup_file("freezer", cid, "freezer.state").strip() == "FROZEN"
    frozen = _ticks(rhost, cid)
    time.sleep(0.5)  # ten ticks' time
    assert _ticks(rhost, cid) == frozen

    refused = rhost.netctl("exec", "ticker", "true", check=False)
    assert refused.returncode != 0 and "is paused; unpause it before exec" in refused.stderr, refused.stderr
    again = rhost.netctl("pause", "ticker", check=False)
    assert again.returncode != 0 and "is already paused" in again.stderr, again.stderr

    rhost.netctl("unpause", "ticker")
    wait_for(lambda: _ticks(rhost, cid) > frozen + 2, what="ticks after unpause")
    assert rhost.inspect("ticker")["State"]["Status"] == "running"
    not_paused = rhost.netctl("unpause", "ticker", check=False)
    assert not_paused.returncode != 0 and "is not paused" in not_paused.stderr, not_paused.stderr
    rhost.exec("ticker", "true")


def test_a_paused_container_stops_and_is_removed(rhost):
    """The signal is sent, then the container thawed so it gets it (as dockerd does)."""
    rhost.start("frozen-stop", command=("sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.05; done"))
    rhost.netctl("pause", "frozen-stop")
    started = time.monotonic()
    rhost.netctl("stop", "-t", "10", "frozen-stop")
    assert time.monotonic() - started < 5  # the TERM got through (its trap exits 0): no wait for a KILL
    state = rhost.inspect("frozen-stop")["State"]
    assert state["Status"] == "exited" and state["ExitCode"] == 0 and not state["Paused"]

    rhost.start("frozen-rm", command=TICKER)
    rhost.netctl("pause", "frozen-rm")
    rhost.netctl("rm", "-f", "frozen-rm")  # killed, thawed, its cgroup removed (the fixture checks none is left)
    assert "frozen-rm" not in rhost.netctl("ps", "-a").stdout
    stopped = rhost.netctl("pause", "frozen-stop", check=False)
    assert stopped.returncode != 0 and "is not running" in stopped.stderr, stopped.stderr


# Requests on their way to the monitor together: a removal that keeps its worker busy, the pause
# (queued behind it), and a kill sent before the pause's answer.
PAUSE_THEN_KILL = """
import sys
from runner import client
from runner.paths import Layout

layout = Layout.of(sys.argv[1])
busy = client.Session(layout, {"op": "rm", "ref": sys.argv[3], "force": True})
pause = client.Session(layout, {"op": "pause", "ref": sys.argv[2]})
kill = client.Session(layout, {"op": "kill", "ref": sys.argv[2], "signal": 9})
for name, session in (("pause", pause), ("kill", kill)):
    try:
        print(name, session.reply()["event"])
    except Exception as err:
        print(name, "refused:", err)
"""


def test_a_kill_right_after_a_pause_is_not_held_back(rhost):
    """The kill arrives while the pause's freeze is still queued on the monitor's worker: the kill
    ends the container all the same, and nothing is left frozen (the thaw it asks for is queued
    after that freeze). Sequence check, not a timing reproduction: a SIGKILL sent before the freeze
    usually ends the process before the freeze can hold it."""
    for round_ in range(3):
        name = f"racer{round_}"
        rhost.start(name, command=TICKER)
        rhost.start(f"ballast{round_}", network=None)
        out = rhost.run(sys.executable, "-c", PAUSE_THEN_KILL, rhost.host.root, name, f"ballast{round_}", timeout=30)
        assert "kill ok" in out.stdout, out.stdout + out.stderr
        waited = rhost.netctl("wait", name, timeout=20)  # hangs (then fails) if left frozen
        assert waited.stdout.strip() == "137"
        state = rhost.inspect(name)["State"]
        assert state["Status"] == "exited" and not state["Paused"]
        rhost.netctl("rm", name)


def test_only_a_kill_or_stop_signal_thaws(rhost):
    """As dockerd: another signal waits, queued, until unpause."""
    cid = rhost.start("hup", command=("sh", "-c", "trap 'echo hup >> /tmp/hups' HUP; while :; do sleep 0.05; done"))
    rhost.netctl("pause", "hup")
    rhost.netctl("kill", "-s", "HUP", "hup")
    time.sleep(0.3)
    assert rhost.inspect("hup")["State"]["Paused"]
    hups = f"{rhost.host.root}/containers/{cid}/upper/tmp/hups"
    assert rhost.run("sh", "-c", f"cat {hups} 2>/dev/null | wc -l").stdout.strip() == "0"
    rhost.netctl("unpause", "hup")
    wait_for(lambda: rhost.run("sh", "-c", f"cat {hups} 2>/dev/null | wc -l").stdout.strip() == "1",
             what="the HUP delivered after unpause")
