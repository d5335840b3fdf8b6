"""kill -9 of `netctl network connect` at random and at chosen moments: doctor reports exactly what is
left, gc removes it, and no address stays allocated."""

import json
import random
import os
import signal
import subprocess
import sys
import time

import pytest

from e2e.conftest import command_pid

pytestmark = pytest.mark.kernel

TRIALS = 12


def marked_links(host) -> set[str]:
    return {n for n in host.ip_link_names() if n.startswith(("nv", "nc-"))}


def store_view(lab) -> tuple[set[str], set[str]]:
    """(host veths the store knows, addresses the store has allocated to endpoints)."""
    containers = lab.inspect("crash")["Containers"].values()
    return {c["HostInterface"] for c in containers}, {c["IPv4Address"] for c in containers}


def kill9(proc, pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # it finished before the chosen moment: a trial with nothing to clean up
    proc.wait(timeout=10)


def kill_connect(lab, sandbox: str, *, delay: float, pause_at: str = "") -> None:
    env = {"NETCTL_TEST_PAUSE": pause_at} if pause_at else None
    proc = lab.host.popen(
        sys.executable, "-m", "netctl", "network", "connect", "crash", sandbox,
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    pid = command_pid(proc)
    if pause_at:
        assert proc.stderr.readline().startswith("paused at"), "the fault point was not reached"
    else:
        time.sleep(delay)
    kill9(proc, pid)


def check_doctor_then_gc(lab) -> list[dict]:
    known_veths, _ = store_view(lab)
    leftover_links = {n for n in marked_links(lab.host) if n.startswith("nv")} - known_veths
    problems = json.loads(lab.netctl("doctor", "--format", "json", check=False).stdout)
    reported_links = {p["object"] for p in problems if p["kind"] == "orphan-link"}
    assert reported_links == leftover_links  # exactly what is left, nothing more, nothing less
    lab.netctl("gc")
    assert lab.netctl("doctor", check=False).returncode == 0
    known_veths, addresses = store_view(lab)
    assert {n for n in marked_links(lab.host) if n.startswith("nv")} == known_veths
    return problems


def test_kill_at_random_moments(lab):
    lab.network("crash", "--subnet", "10.40.0.0/24")
    rng = random.Random(4242)
    for i in range(TRIALS):
        lab.sandbox(f"s{i}")
    for i in range(TRIALS):
        kill_connect(lab, f"s{i}", delay=rng.uniform(0.02, 0.4))
    check_doctor_then_gc(lab)
    # Every address the store still holds belongs to a live endpoint: reconnecting everything works
    # and the /24's accounting is exact.
    for i in range(TRIALS):
        sandbox = f"s{i}"
        if not any(c["Name"] == sandbox for c in lab.inspect("crash")["Containers"].values()):
            lab.connect("crash", sandbox)
    _, addresses = store_view(lab)
    assert len(addresses) == TRIALS
    allocated = lab.host.py(
        "from libnetwork.controller import Controller\nfrom libnetwork import ipam\n"
        "c = Controller()\nwith c.store.snapshot() as tx: print(len(ipam.allocations(tx)))"
    ).stdout
    assert int(allocated) == TRIALS + 1  # the endpoints plus the gateway


@pytest.mark.parametrize("point", ["connect-before-join", "connect-after-join"])
def test_kill_at_chosen_steps(lab, point):
    lab.network("crash", "--subnet", "10.41.0.0/24")
    lab.sandbox("victim")
    kill_connect(lab, "victim", delay=0, pause_at=point)
    problems = check_doctor_then_gc(lab)
    if point == "connect-after-join":
        assert [p["kind"] for p in problems] == ["orphan-link"]
    else:
        assert problems == []
    assert lab.inspect("crash")["Containers"] == {}
    assert lab.connect("crash", "victim") == ["10.41.0.2"]  # its address was never kept


def test_kill_during_disconnect_leaves_a_stale_record_that_gc_removes(lab):
    lab.network("crash", "--subnet", "10.42.0.0/24")
    lab.sandbox("victim")
    lab.connect("crash", "victim")
    proc = lab.host.popen(
        sys.executable, "-m", "netctl", "network", "disconnect", "crash", "victim",
        env={"NETCTL_TEST_PAUSE": "disconnect-after-leave"},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    pid = command_pid(proc)
    assert proc.stderr.readline().startswith("paused at")
    kill9(proc, pid)
    problems = json.loads(lab.netctl("doctor", "--format", "json", check=False).stdout)
    assert [p["kind"] for p in problems] == ["stale-endpoint"]
    lab.netctl("gc")
    assert lab.inspect("crash")["Containers"] == {}
    assert lab.netctl("doctor", check=False).returncode == 0


def test_a_removed_networks_bridge_left_by_a_killed_agent_is_named_so_and_gc_removes_it(lab):
    """Between `network rm` and the bridge's deletion (once the agent is quiet), the bridge carries a
    tombstone name (drivers/bridge.py retire_network); an agent killed meanwhile leaves it behind."""
    lab.network("keep", "--subnet", "10.43.0.0/24")
    lab.host.run("ip", "link", "add", "nc-z0123456789a", "type", "bridge")
    problems = json.loads(lab.netctl("doctor", "--format", "json", check=False).stdout)
    assert [(p["kind"], p["object"]) for p in problems] == [("orphan-link", "nc-z0123456789a")]
    assert "a removed network's bridge, waiting for deletion" in problems[0]["detail"]
    lab.netctl("gc")
    assert "nc-z0123456789a" not in lab.host.ip_link_names()
    assert lab.netctl("doctor", check=False).returncode == 0
