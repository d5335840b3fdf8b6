"""`netctl pause` / `unpause`: every process of a container frozen by its cgroup's freezer, and thawed."""

from __future__ import annotations

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
