"""Host identity (issue 10, item 2): a host is its root's persistent id (ROOT/host-id), not its name.

Two hosts with one hostname (cloned machines) must not take each other's record in etcd: the second
daemon is refused with one line, the first goes on working; a restarted daemon of the same root takes
its own record over; a VTEP held by another host is refused the same way.

The decision itself (registration_clash) is pure and tested without etcd; everything else runs against
a real etcd inside the lab's switch, from inside the lab's throwaway hosts (the test process never
talks to etcd nor touches its own network namespace)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from libnetwork.store.etcd import HostRecord, HostTaken, registration_clash

A, B = "a" * 32, "b" * 32
DAEMON_TIMEOUT_S = 30  # bound of a daemon run that must be refused (it takes well under a second)
CONVERGE_S = 15.0
HOSTS = "/netctl/v1/hosts/"


def name_clash_line(name: str, holder_id: str, vtep: str) -> str:
    return (f"host name '{name}' is held by another host (host id {holder_id[:12]}, VTEP {vtep}) on a live lease "
            "in etcd; pass --host-name NAME (or stop the other host's daemon)")


def vtep_clash_line(vtep: str, holder: str, holder_id: str) -> str:
    return (f"VTEP address {vtep} is held by host '{holder}' (host id {holder_id[:12]}) on a live lease in etcd; "
            "pass --vtep ADDR (or stop the other host's daemon)")


# ---- the decision (pure) -------------------------------------------------------------------------


def record(name: str, vtep: str, host_id: str) -> HostRecord:
    return HostRecord(name, vtep, lease=7, registered=1.0, host_id=host_id)


def test_a_name_held_by_another_host_id_is_refused_naming_the_holder():
    clash = registration_clash("twin", "10.0.0.2", B, [record("twin", "10.0.0.1", A)])
    assert isinstance(clash, HostTaken) and clash.exit_code == 4  # AlreadyExists' exit code
    assert clash.message == name_clash_line("twin", A, "10.0.0.1")


def test_own_records_and_records_of_older_netctl_are_taken_over():
    # Same id: a restarted daemon of the same root (even with a new VTEP), or a lost lease.
    assert registration_clash("twin", "10.0.0.9", A, [record("twin", "10.0.0.1", A)]) is None
    # No id: written by a netctl older than host ids; taken over as it always was.
    assert registration_clash("twin", "10.0.0.2", A, [record("twin", "10.0.0.1", "")]) is None
    assert registration_clash("other", "10.0.0.1", A, [record("twin", "10.0.0.1", "")]) is None
    # Nothing registered, or only other names and addresses.
    assert registration_clash("twin", "10.0.0.2", A, []) is None
    assert registration_clash("twin", "10.0.0.2", A, [record("h3", "10.0.0.3", B)]) is None


def test_a_registrant_without_an_id_cannot_take_a_record_that_has_one():
    clash = registration_clash("twin", "10.0.0.2", "", [record("twin", "10.0.0.1", A)])
    assert clash is not None and clash.message == name_clash_line("twin", A, "10.0.0.1")


def test_a_vtep_held_by_another_host_id_is_refused_and_the_name_is_reported_first():
    assert registration_clash("h2", "10.0.0.1", B, [record("h1", "10.0.0.1", A)]).message == \
        vtep_clash_line("10.0.0.1", "h1", A)
    # The same address however it is written; the same host under a new name keeps its VTEP.
    assert registration_clash("h2", "fd00::0:1", B, [record("h1", "fd00::1", A)]).message == \
        vtep_clash_line("fd00::0:1", "h1", A)
    assert registration_clash("renamed", "10.0.0.1", A, [record("h1", "10.0.0.1", A)]) is None
    # Both clash: the name is what the user changes first (--host-name), so it is the one reported.
    both = registration_clash("h1", "10.0.0.2", B, [record("h1", "10.0.0.1", A), record("h3", "10.0.0.2", B + "x")])
    assert both.message == name_clash_line("h1", A, "10.0.0.1")


def test_host_records_read_with_or_without_an_id_and_with_fields_of_a_newer_netctl():
    old = HostRecord.from_dict({"name": "h1", "vtep": "10.0.0.1", "lease": 5, "registered": 1.0})
    assert old.host_id == "" and old.short_id == "none" and not old.held_by_another(A)
    newer = HostRecord.from_dict({"name": "h1", "vtep": "10.0.0.1", "lease": 5, "registered": 1.0, "host_id": A,
                                  "zone": "eu"})
    assert newer.host_id == A and newer.held_by_another(B) and not newer.held_by_another(A)


def test_a_refused_start_puts_global_json_back_as_it_was(tmp_path):
    from netctl import daemon

    root = str(tmp_path)
    before = {"store": "etcd://192.0.2.10:2379", "host": "web1", "vtep": "192.0.2.11"}
    daemon.write_global_config(root, daemon.GlobalConfig(**before))
    daemon.write_global_config(root, daemon.GlobalConfig("etcd://192.0.2.10:2379", "twin", "192.0.2.11"))
    daemon.restore_global_config(root, before)
    assert daemon.read_global_config(root) == before
    daemon.restore_global_config(root, None)  # there was none: there is none
    assert not os.path.exists(os.path.join(root, "global.json"))
    daemon.restore_global_config(root, None)  # idempotent


# ---- the store, against etcd (run inside a lab host) ---------------------------------------------

# Each scenario prints one JSON object; the store calls are the daemon's (register_host, keep-alive).
STORE_SCENARIOS = r"""
import json, sys, threading, time
from dataclasses import asdict
from libnetwork.errors import StoreError
from libnetwork.store.etcd import EtcdStore, HostTaken, Keys, _put_op

url, scenario = sys.argv[1], sys.argv[2]
A, B = "a" * 32, "b" * 32
WAIT_S = 10.0


def store(name, host_id):
    return EtcdStore(url, host=name, host_id=host_id)


def holder(s, name):
    with s.snapshot() as tx:
        r = tx.get_host(name)
    return None if r is None else asdict(r)


def refusal(s, vtep, ttl=30):
    try:
        s.register_host(vtep, ttl=ttl)
    except HostTaken as err:
        return err.message
    return None


def wait(condition, what):
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not happen within {WAIT_S} s")
        time.sleep(0.05)


out = {}
if scenario == "name":
    first, second = store("twin", A), store("twin", B)
    out["first"] = asdict(first.register_host("198.18.1.1", ttl=30))
    out["refused"] = refusal(second, "198.18.1.2")
    out["holder"] = holder(first, "twin")
    out["keepalive"] = first.keepalive()  # the first host's lease is untouched
    out["second_keepalive"] = second.keepalive()  # refreshes nothing of another host's
    second.unregister_host()  # revokes nothing of another host's either
    out["holder_after_unregister"] = holder(first, "twin")
    # The same root again (a restarted daemon): takes its own record over on a new lease.
    again = store("twin", A)
    out["again"] = asdict(again.register_host("198.18.1.9", ttl=30))
    out["first_lease_gone"] = first._etcd.keepalive(out["first"]["lease"]) <= 0
elif scenario == "vtep":
    first, second, third = store("h1", A), store("h2", B), store("h3", "")
    first.register_host("198.18.1.1", ttl=30)
    out["refused"] = refusal(second, "198.18.1.1")
    out["refused_no_id"] = refusal(third, "198.18.1.1")
    out["hosts"] = sorted(holder(first, n)["host_id"] if holder(first, n) else "" for n in ("h1", "h2", "h3"))
    out["other_vtep"] = refusal(second, "198.18.1.2")  # h2 on its own address is welcome
elif scenario == "legacy":
    # A record as a netctl older than host ids wrote it (no "host_id"), on a live lease.
    old = store("twin", "")
    lease, _ = old._etcd.grant(30)
    value = {"name": "twin", "vtep": "198.18.1.1", "lease": lease, "registered": 1.0}
    assert old._etcd.txn([], [_put_op(Keys.host("twin"), value, lease)], "an old record")[0]
    new = store("twin", A)
    out["record"] = asdict(new.register_host("198.18.1.2", ttl=30))
    out["old_lease_gone"] = old._etcd.keepalive(lease) <= 0
elif scenario == "race":
    # Eight daemons of eight roots start at once under one name: exactly one wins, in one transaction.
    ids = [f"{i:x}" * 32 for i in range(1, 9)]
    stores = [store("twin", i) for i in ids]
    barrier, results = threading.Barrier(len(stores)), {}

    def register(s):
        barrier.wait(timeout=WAIT_S)
        try:
            results[s.host_id] = s.register_host(f"198.18.2.{ids.index(s.host_id) + 1}", ttl=30).host_id
        except HostTaken as err:
            results[s.host_id] = err.message

    threads = [threading.Thread(target=register, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=WAIT_S * 3)
    out["results"] = results
    out["holder"] = holder(stores[0], "twin")["host_id"]
elif scenario == "keepalive":
    # Host A's keep-alives stop reaching etcd; its lease expires; host B takes the name; A's etcd
    # comes back: its keeper's re-registration is refused, reported once, and never retried.
    refused = []
    first = store("twin", A)
    first.start_keepalive("198.18.1.1", ttl=2, on_refused=refused.append)
    keeper = first._keeper
    real = keeper._etcd.keepalive

    def away(lease):
        raise StoreError("etcd is unreachable (this test)")

    keeper._etcd.keepalive = away
    second = store("twin", B)
    wait(lambda: holder(second, "twin") is None, "the expiry of A's lease")
    second.start_keepalive("198.18.1.2", ttl=30)
    keeper._etcd.keepalive = real
    wait(lambda: refused, "A's keeper to be refused")
    keeper._thread.join(timeout=WAIT_S)
    out["refused"] = [e.message for e in refused]
    out["keeper_running"] = keeper._thread.is_alive()
    out["holder"] = holder(second, "twin")
    first.close()
    second.unregister_host()
    second.close()
print(json.dumps(out))
"""


@pytest.fixture
def lab(overlay_lab):
    return overlay_lab(1, register=False)


def scenario(lab, name: str) -> dict:
    (h1,) = lab.hosts
    lab.etcd.wipe()
    proc = h1.run(sys.executable, "-c", STORE_SCENARIOS, lab.etcd_url, name, timeout=90)
    return json.loads(proc.stdout)


@pytest.mark.kernel
@pytest.mark.timeout(180)
def test_store_refuses_a_name_of_another_host_id_and_a_restart_takes_its_own_over(lab):
    got = scenario(lab, "name")
    first = got["first"]
    assert first["host_id"] == A
    assert got["refused"] == name_clash_line("twin", A, "198.18.1.1")
    assert got["holder"] == first and got["holder_after_unregister"] == first
    assert got["keepalive"] is True and got["second_keepalive"] is False
    assert got["again"]["host_id"] == A and got["again"]["vtep"] == "198.18.1.9"
    assert got["again"]["lease"] != first["lease"] and got["first_lease_gone"]


@pytest.mark.kernel
@pytest.mark.timeout(180)
def test_store_refuses_a_vtep_of_another_host(lab):
    got = scenario(lab, "vtep")
    assert got["refused"] == vtep_clash_line("198.18.1.1", "h1", A)
    assert got["refused_no_id"] == vtep_clash_line("198.18.1.1", "h1", A)
    assert got["hosts"] == ["", "", A]  # neither h2 nor h3 was written
    assert got["other_vtep"] is None


@pytest.mark.kernel
@pytest.mark.timeout(180)
def test_store_takes_over_a_record_of_an_older_netctl(lab):
    got = scenario(lab, "legacy")
    assert got["record"]["host_id"] == A and got["record"]["vtep"] == "198.18.1.2"
    assert got["old_lease_gone"]


@pytest.mark.kernel
@pytest.mark.timeout(180)
def test_store_lets_exactly_one_of_racing_hosts_have_a_name(lab):
    got = scenario(lab, "race")
    results = got["results"]
    assert len(results) == 8
    winners = [i for i, r in results.items() if r == i]
    assert winners == [got["holder"]]
    losers = {r for i, r in results.items() if r != i}
    assert len(losers) == 1 and losers.pop().startswith("host name 'twin' is held by another host (host id ")


@pytest.mark.kernel
@pytest.mark.timeout(180)
def test_a_keepalive_re_registration_does_not_take_back_a_name_another_host_took(lab):
    got = scenario(lab, "keepalive")
    assert got["refused"] == [name_clash_line("twin", B, "198.18.1.2")]
    assert got["keeper_running"] is False  # refused for good: no retry
    assert got["holder"]["host_id"] == B and got["holder"]["vtep"] == "198.18.1.2"


# ---- daemons: two hosts, one hostname -----------------------------------------------------------


def host_record(lab, name: str) -> dict | None:
    value = lab.etcd_dump().get(HOSTS + name)
    return json.loads(value) if value else None


def host_id_of(host) -> str:
    with open(host.path(f"{host.root}/host-id")) as f:
        return f.read().strip()


def start_plain_daemon(lab, host, log_dir: str, *args: str):
    """`netctl daemon --store URL ARGS` (no --host-name unless in ARGS: the name is the hostname),
    once it listens and is registered."""
    from e2e.conftest import command_pid
    from overlay.agent_helpers import START_TIMEOUT_S, Daemon, wait_for

    n = len([p for p in os.listdir(log_dir) if p.startswith(f"daemon-{host.name}-")])
    log_path = os.path.join(log_dir, f"daemon-{host.name}-{n}.log")
    argv = ["daemon", "--store", lab.etcd_url, *args]
    with open(log_path, "w") as log:
        proc = host.popen(sys.executable, "-m", "netctl", *argv, stdout=subprocess.DEVNULL, stderr=log)
    daemon = Daemon(host, proc, command_pid(proc), log_path, argv)
    try:
        wait_for(lambda: (daemon.lines("listening on") and daemon.lines("registered in")) or not daemon.alive,
                 START_TIMEOUT_S, f"the daemon on {host.name} to start")
    except AssertionError:
        daemon.stop(signal.SIGKILL)
        raise
    assert daemon.alive, daemon.log()
    return daemon


def attach(host, name: str, network: str) -> tuple[str, str]:
    """A sandbox on `host` connected to `network`, with netctl as the host's user runs it (its store
    and name from ROOT/global.json): (netns path, address)."""
    host.netctl("sandbox", "create", "--name", name)
    out = host.netctl("network", "connect", network, name).stdout.split()
    address = next(a.split("/")[0] for a in out[1:] if ":" not in a)
    netns = json.loads(host.netctl("sandbox", "inspect", name).stdout)[0]["netns_path"]
    return netns, address


def pings(host, netns: str, address: str) -> bool:
    return host.in_netns(netns, "ping", "-n", "-q", "-c", "1", "-W", "1", address, check=False,
                         timeout=30).returncode == 0


@pytest.mark.kernel
@pytest.mark.timeout(300)
def test_two_hosts_with_one_hostname_the_second_daemon_is_refused_and_distinct_names_both_work(overlay_lab, tmp_path):
    from overlay.agent_helpers import wait_for

    lab = overlay_lab(2, register=False)
    h1, h2 = lab.hosts
    for host in (h1, h2):  # cloned machines: one hostname (each harness host has its own UTS namespace)
        host.run("hostname", "twin")
    daemons = []
    try:
        daemons.append(start_plain_daemon(lab, h1, str(tmp_path)))
        first = host_record(lab, "twin")
        assert first["host_id"] == host_id_of(h1) and first["vtep"] == lab.vteps["h1"]

        # The second host's daemon: refused at start with one line, AlreadyExists' exit code.
        started = time.monotonic()
        second = h2.netctl("daemon", "--store", lab.etcd_url, check=False, timeout=DAEMON_TIMEOUT_S)
        took = time.monotonic() - started
        print(f"\nsecond daemon refused after {took:.2f} s (exit {second.returncode}); its stderr:\n{second.stderr}")
        refusal = "netctl: " + name_clash_line("twin", host_id_of(h1), lab.vteps["h1"])
        assert second.returncode == 4, second.stderr
        lines = second.stderr.splitlines()
        assert lines[-1] == refusal
        assert [line for line in lines if not line.startswith("netctl daemon: ")] == [refusal], second.stderr
        assert host_id_of(h2) != host_id_of(h1)
        # It left nothing behind: no socket, and no ROOT/global.json naming a host it is not.
        assert not os.path.exists(h2.path(f"{h2.root}/netctl.sock"))
        assert not os.path.exists(h2.path(f"{h2.root}/global.json"))

        # The first goes on: same record, same lease, and overlay commands work on it.
        assert daemons[0].alive and host_record(lab, "twin") == first
        assert not daemons[0].lines("overlay side stopped")
        h1.netctl("network", "create", "-d", "overlay", "--subnet", "10.81.0.0/24", "ov")
        a = attach(h1, "a", "ov")
        b = attach(h1, "b", "ov")
        assert pings(h1, a[0], b[1])

        # With a name of its own, the second host joins, and containers reach each other across.
        daemons.append(start_plain_daemon(lab, h2, str(tmp_path), "--host-name", "twin-2"))
        assert host_record(lab, "twin-2")["host_id"] == host_id_of(h2)
        c = attach(h2, "c", "ov")
        wait_for(lambda: pings(h1, a[0], c[1]), CONVERGE_S, "a on h1 to reach c on h2")
        wait_for(lambda: pings(h2, c[0], b[1]), CONVERGE_S, "c on h2 to reach b on h1")
        assert host_record(lab, "twin") == first

        # A restart of the first host's daemon (same root, same id) takes its own record over at once,
        # within the old lease's lifetime.
        assert daemons[0].stop() == 0
        daemons[0] = start_plain_daemon(lab, h1, str(tmp_path))
        renewed = host_record(lab, "twin")
        assert renewed["host_id"] == first["host_id"] and renewed["lease"] != first["lease"]
        assert not [line for line in daemons[0].log().splitlines() if "is held by" in line]
        wait_for(lambda: pings(h2, c[0], a[1]), CONVERGE_S, "c on h2 to reach a on h1 after the restart")
    finally:
        for host, names in ((h1, ("a", "b")), (h2, ("c",))):
            for name in names:
                host.netctl("sandbox", "rm", name, check=False)
        for daemon in daemons:
            if daemon.alive:
                daemon.stop()


@pytest.mark.kernel
@pytest.mark.timeout(300)
def test_a_daemon_that_lost_its_lease_to_a_host_of_the_same_name_stops_its_overlay_side(overlay_lab, tmp_path):
    """h1's daemon is frozen (SIGSTOP) past its lease; meanwhile h2, same hostname, registers the name.
    Thawed, h1's keep-alive finds its lease gone and registers again: refused, logged once at ERROR,
    the overlay side stopped; the name stays h2's and h1 still serves local commands."""
    from overlay.agent_helpers import wait_for

    lab = overlay_lab(2, register=False)
    h1, h2 = lab.hosts
    for host in (h1, h2):
        host.run("hostname", "twin")
    daemons = []
    try:
        daemons.append(start_plain_daemon(lab, h1, str(tmp_path), "--lease-ttl", "2"))
        lease = host_record(lab, "twin")["lease"]
        daemons[0].send(signal.SIGSTOP)
        lab.etcd.ctl("lease", "revoke", f"{lease:x}")  # as if the TTL ran out while h1 was away
        daemons.append(start_plain_daemon(lab, h2, str(tmp_path)))
        taken = host_record(lab, "twin")
        assert taken["host_id"] == host_id_of(h2)
        thaw(daemons[0])
        wait_for(lambda: daemons[0].lines("overlay side stopped"), CONVERGE_S, "h1's daemon to be refused")
        time.sleep(3)  # several keep-alive periods (TTL/3): a refused daemon must not try again
        (line,) = daemons[0].lines("overlay side stopped")
        assert line == "netctl daemon: overlay side stopped: " + name_clash_line("twin", host_id_of(h2),
                                                                                  lab.vteps["h2"])
        assert daemons[0].alive and host_record(lab, "twin") == taken
        assert h1.netctl("sandbox", "ls").returncode == 0  # local commands are still served
        assert daemons[0].stop() == 0
    finally:
        for daemon in daemons:
            if daemon.alive:
                thaw(daemon)
                daemon.stop()


def thaw(daemon) -> None:
    """SIGCONT the daemon and its nsenter: nsenter stops itself when its child stops, and resumes it
    when continued."""
    daemon.send(signal.SIGCONT)
    with contextlib.suppress(ProcessLookupError):
        os.kill(daemon.proc.pid, signal.SIGCONT)
