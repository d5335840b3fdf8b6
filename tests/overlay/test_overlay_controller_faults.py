"""Overlay networks when things go wrong: bad input, no store, etcd unreachable, an unregistered host,
a connect killed half-way. Each failure must be one clear line with a non-zero exit and leave the host
(host.snapshot(), its overlay namespaces) and etcd (a dump of /netctl/) exactly as they were; what a
crash leaves behind, doctor reports and gc removes, on the host and in etcd."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys

import pytest

from overlay.lab import netctl_lab

pytestmark = pytest.mark.kernel

PAUSE_WAIT_S = 30


def _require_lab() -> None:
    import harness

    from overlay.conftest import _require_etcd

    missing = harness.missing_host_prerequisites()
    if missing:
        pytest.skip(missing)
    _require_etcd()


@pytest.fixture(scope="module")
def lab():
    """h1 registered (its daemon's part done), h2 NOT registered and without ROOT/global.json. Overlay g
    (10.30.0.0/24, VNI 4000) and a local bridge network `loc` on h1; a sandbox `s` on each host."""
    _require_lab()
    with netctl_lab(2, register=False) as lab:
        h1, h2 = lab.hosts
        lab.register(h1)
        lab.netctl(h1, "network", "create", "-d", "overlay", "--subnet", "10.30.0.0/24", "-o", "vni=4000", "g")
        lab.netctl(h1, "network", "create", "--subnet", "10.98.0.0/24", "loc")
        for host in (h1, h2):
            lab.netctl(host, "sandbox", "create", "--name", "s")
        yield lab


@contextlib.contextmanager
def nothing_changes(lab, host):
    before = (host.snapshot(), lab.overlay_netns(host), lab.etcd_dump())
    yield
    if not lab.etcd.running:
        lab.etcd.start()
    assert (host.snapshot(), lab.overlay_netns(host), lab.etcd_dump()) == before


def etcd_state(lab) -> dict[str, str]:
    """The etcd dump without the IPAM's round-robin cursors: a hint that moves on by design (an address
    just released is not handed out again at once), not state anything depends on."""
    return {k: v for k, v in lab.etcd_dump().items() if not k.startswith("/netctl/v1/ipam/cursors/")}


def fails(lab, host, *args, code: int, says: str, env: dict | None = None) -> str:
    proc = lab.netctl(host, *args, check=False, env=env)
    assert proc.returncode == code, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("netctl: "), proc.stderr
    assert says in lines[0], lines[0]
    return lines[0]


def test_without_a_store_overlay_commands_say_how_to_get_one(lab):
    h2 = lab.hosts[1]
    no_store = {"NETCTL_STORE": ""}  # and h2 has no ROOT/global.json
    with nothing_changes(lab, h2):
        line = fails(lab, h2, "network", "create", "-d", "overlay", "x", code=2, says="needs a global store", env=no_store)
        assert "--store" in line and "netctl daemon --store" in line
        fails(lab, h2, "network", "connect", "g", "s", code=3, says="network 'g' not found", env=no_store)


def test_an_unknown_network_is_not_found(lab):
    h1 = lab.hosts[0]
    with nothing_changes(lab, h1):
        fails(lab, h1, "network", "connect", "nope", "s", code=3, says="network 'nope' not found")
        fails(lab, h1, "network", "rm", "nope", code=3, says="network 'nope' not found")


def test_a_subnet_overlapping_another_global_network_is_refused(lab):
    h1 = lab.hosts[0]
    with nothing_changes(lab, h1):
        fails(lab, h1, "network", "create", "-d", "overlay", "--subnet", "10.30.0.128/25", "y", code=2, says="10.30.0.0/24")


def test_a_vni_out_of_range_or_in_use_is_refused(lab):
    h1 = lab.hosts[0]
    with nothing_changes(lab, h1):
        fails(lab, h1, "network", "create", "-d", "overlay", "-o", "vni=5", "y", code=2, says="out of range (256-16777215)")
        fails(lab, h1, "network", "create", "-d", "overlay", "-o", "vni=16777216", "y", code=2, says="out of range")
        fails(lab, h1, "network", "create", "-d", "overlay", "-o", "vni=4000", "y", code=4, says="VNI 4000 is already used by network 'g'")
        fails(lab, h1, "network", "create", "-d", "overlay", "-o", "colour=blue", "y", code=2, says="unknown option 'colour'")


def test_a_name_is_unique_across_local_and_global_networks(lab):
    h1 = lab.hosts[0]
    with nothing_changes(lab, h1):
        fails(lab, h1, "network", "create", "--subnet", "10.97.0.0/24", "g", code=4, says="already used by global network")
        fails(lab, h1, "network", "create", "-d", "overlay", "loc", code=4, says="already used by local network")


def test_an_overlay_network_publishes_no_ports(lab):
    h1 = lab.hosts[0]
    with nothing_changes(lab, h1):
        fails(lab, h1, "network", "connect", "-p", "8080:80", "g", "s", code=2, says="cannot publish ports")


def test_an_unregistered_host_is_told_to_start_its_daemon(lab):
    h2 = lab.hosts[1]
    with nothing_changes(lab, h2):
        line = fails(lab, h2, "network", "connect", "g", "s", code=3, says="host 'h2' is not registered")
        assert f"netctl daemon --store {lab.etcd_url}" in line


def test_with_etcd_unreachable_overlay_commands_fail_clearly_and_change_nothing(lab):
    h1 = lab.hosts[0]
    with nothing_changes(lab, h1):
        lab.etcd.stop()
        try:
            for args in (("network", "create", "-d", "overlay", "z"), ("network", "connect", "g", "s"),
                         ("network", "ls"), ("network", "rm", "g")):
                line = fails(lab, h1, *args, code=8, says="etcd at http://198.18.0.254:2379 is unreachable")
                assert "start it or pass --store" in line
            partial = lab.netctl(h1, "network", "ls", check=False)  # the local networks, and exit 8
            assert partial.returncode == 8 and "global networks not listed" in partial.stderr
            assert [row.split()[1] for row in partial.stdout.splitlines()[1:]] == ["loc"], partial.stdout
        finally:
            lab.etcd.start()


# ---- crashes and outages: labs of their own ----------------------------------------------------


def start_paused(lab, host, pause: str, *args: str) -> subprocess.Popen:
    proc = host.popen(sys.executable, "-m", "netctl", *args, env=lab.env(host, NETCTL_TEST_PAUSE=pause),
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ready, _, _ = select.select([proc.stderr], [], [], PAUSE_WAIT_S)
    line = proc.stderr.readline() if ready else ""
    if line.strip() != f"paused at {pause}":
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"netctl {' '.join(args)} did not pause at {pause}: {line!r} {proc.stderr.read() if proc.poll() is not None else ''}")
    return proc


def kill_9(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)  # nsenter and netctl: one process group, started by this test
    proc.wait(timeout=10)


@pytest.mark.parametrize("pause", ["connect-overlay-after-allocate", "connect-overlay-after-join"])
def test_a_connect_killed_half_way_is_reported_by_doctor_and_removed_by_gc(overlay_lab, pause):
    lab = overlay_lab(2)
    h1, h2 = lab.hosts
    lab.netctl(h1, "network", "create", "-d", "overlay", "--subnet", "10.40.0.0/24", "k")
    for host, name in ((h1, "s1"), (h2, "s2")):
        lab.netctl(host, "sandbox", "create", "--name", name)
    lab.netctl(h2, "network", "connect", "k", "s2")
    before = (h1.snapshot(), lab.overlay_netns(h1), etcd_state(lab))

    kill_9(start_paused(lab, h1, pause, "network", "connect", "k", "s1"))
    stuck = [k for k, v in lab.etcd_dump().items() if "/endpoints/" in k and '"creating"' in v]
    assert len(stuck) == 1  # the CREATING record of h1's killed connect
    doctor = lab.netctl(h1, "doctor", check=False)
    assert doctor.returncode == 1
    assert "stale-overlay-endpoint" in doctor.stdout and "stuck in creating" in doctor.stdout, doctor.stdout
    assert lab.netctl(h2, "doctor").returncode == 0  # the other host has nothing to do with it

    gc = lab.netctl(h1, "gc")
    assert "removed stale-overlay-endpoint" in gc.stdout, gc.stdout
    assert lab.netctl(h1, "doctor").stdout.strip() == "no problems found"
    assert (h1.snapshot(), lab.overlay_netns(h1), etcd_state(lab)) == before

    # And the network works for it afterwards.
    address = lab.netctl(h1, "network", "connect", "k", "s1").stdout.split()[1].split("/")[0]
    lab.reconcile(h2)
    s2 = lab.netctl_json(h2, "sandbox", "inspect", "s2")[0]["endpoints"][0]["IPv4Address"].split("/")[0]
    assert lab.ping(h1, "s1", s2) and lab.ping(h2, "s2", address)


def test_with_etcd_stopped_containers_keep_talking_a_connect_fails_cleanly_and_rm_is_cleaned_up_later(overlay_lab):
    lab = overlay_lab(2)
    h1, h2 = lab.hosts
    lab.netctl(h1, "network", "create", "-d", "overlay", "--subnet", "10.50.0.0/24", "o")
    for host, name in ((h1, "s1"), (h2, "s2"), (h1, "s3")):
        lab.netctl(host, "sandbox", "create", "--name", name)
    a1 = lab.netctl(h1, "network", "connect", "o", "s1").stdout.split()[1].split("/")[0]
    a2 = lab.netctl(h2, "network", "connect", "o", "s2").stdout.split()[1].split("/")[0]
    lab.reconcile_all()
    network_id = lab.netctl_json(h1, "network", "inspect", "o")[0]["Id"]
    etcd_before = lab.etcd_dump()
    host_before = (h1.snapshot(), lab.overlay_netns(h1))

    lab.etcd.stop()
    try:
        assert lab.ping(h1, "s1", a2) and lab.ping(h2, "s2", a1)  # the data plane needs no store
        fails(lab, h1, "network", "connect", "o", "s3", code=8, says="is unreachable")
        assert (h1.snapshot(), lab.overlay_netns(h1)) == host_before
        # A sandbox can still be removed: its kernel side goes now, its records wait for gc.
        removed = lab.netctl(h1, "sandbox", "rm", "s1")
        assert removed.stdout.strip() == "s1" and "stays in etcd until `netctl gc`" in removed.stderr
        assert lab.overlay_netns(h1) == []
    finally:
        lab.etcd.start()
    assert lab.etcd_dump() == etcd_before  # nothing was written while it was away
    doctor = lab.netctl(h1, "doctor", check=False)
    assert doctor.returncode == 1 and "has no record on this host" in doctor.stdout, doctor.stdout
    lab.netctl(h1, "gc")
    assert lab.netctl(h1, "doctor").stdout.strip() == "no problems found"
    left = lab.etcd_dump()
    assert not any(a1 in v for k, v in left.items() if k.startswith(f"/netctl/v1/ipam/addresses/{network_id}/"))
    assert not any(k.startswith(f"/netctl/v1/peers/{network_id}/") and '"h1"' in v for k, v in left.items())
    assert lab.netctl(h1, "network", "connect", "o", "s3").returncode == 0  # and it works again
