"""The overlay agent under faults: a daemon killed and restarted, etcd stopped and back, a host's lease
running out. Three hosts on the lab's underlay, a daemon on each, etcd inside the switch.

"Exact" below means: on every host, the VXLAN device's static FDB and neighbour entries equal the
desired set computed from the peers in etcd (no stale entry, no duplicate remote, nothing missing)."""

from __future__ import annotations

import json
import re
import signal
import time
from collections import Counter

import pytest

from overlay.agent_helpers import attach, pings, start_daemon, tables, wait_for

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(300)]

SUBNET = "10.78.0.0/24"
CONVERGE_S = 10.0  # bound of every wait for the daemons to converge (they take well under a second)
KEEPALIVE_S = 10.0  # bound of a wait for a keep-alive to fail or recover (one every lease TTL / 3 = 3.3 s)


def up(overlay_lab, tmp_path, *, lease_ttl: int = 10, resync: float = 30.0):
    lab = overlay_lab(3, register=False)
    extra = ("--resync-interval", str(resync))
    lab.daemons = {h.name: start_daemon(lab, h, str(tmp_path), lease_ttl=lease_ttl, extra=extra) for h in lab.hosts}
    lab.tmp = str(tmp_path)
    h1, h2, h3 = lab.hosts
    lab.netctl(h1, "network", "create", "-d", "overlay", "--subnet", SUBNET, "ov")
    lab.network_id = lab.netctl_json(h1, "network", "inspect", "ov")[0]["Id"]
    return lab, [attach(lab, h, f"a{i}", "ov") for i, h in enumerate(lab.hosts, start=1)]


def exact(lab, host) -> bool:
    t = tables(lab, host, lab.network_id)
    return t["have"] == t["want"] and all(len(v) == 1 for v in t["have"]["fdb"].values())


def converged(lab, hosts=None) -> bool:
    return all(exact(lab, h) for h in hosts or lab.hosts)


def all_pairs_ping(containers) -> bool:
    return all(pings(a, b) for a in containers for b in containers if a.host is not b.host)


def test_kill_9_of_a_daemon_keeps_traffic_and_a_restart_reconciles_exactly(overlay_lab, tmp_path):
    # A lease long enough for h2's daemon to come back before it runs out (see the lease test for after).
    lab, (a1, a2, a3) = up(overlay_lab, tmp_path, lease_ttl=60)
    h1, h2, h3 = lab.hosts
    wait_for(lambda: all_pairs_ping([a1, a2, a3]), CONVERGE_S, "every pair to ping")
    assert converged(lab)

    lab.daemons["h2"].stop(signal.SIGKILL)
    # The data plane does not depend on the daemon: everything keeps flowing, h2 included.
    assert all_pairs_ping([a1, a2, a3])

    # Change the world while h2 has no daemon: a3 leaves, a4 comes. h2's tables go stale.
    lab.netctl(h3, "network", "disconnect", "ov", "a3")
    a4 = attach(lab, h3, "a4", "ov")
    wait_for(lambda: converged(lab, [h1, h3]), CONVERGE_S, "h1 and h3 to follow the change")
    assert pings(a1, a4) and not exact(lab, h2)

    seen = {name: len(lab.daemons[name].log()) for name in ("h1", "h3")}
    lab.daemons["h2"] = start_daemon(lab, h2, lab.tmp)
    wait_for(lambda: converged(lab), CONVERGE_S, "h2's restarted daemon to make its tables exact")
    assert pings(a2, a4) and pings(a4, a2) and pings(a1, a2)
    # The restart re-published h2's peers on a new lease before dropping the old one: h1 and h3
    # never removed a2's entries (no flap).
    for name, offset in seen.items():
        assert "-fdb" not in lab.daemons[name].log()[offset:], lab.daemons[name].log()[offset:]


def test_etcd_away_keeps_containers_talking_and_refuses_new_ones_cleanly(overlay_lab, tmp_path):
    # A short resync interval: the daemons try (and fail) to reconcile while etcd is away.
    lab, (a1, a2, a3) = up(overlay_lab, tmp_path, resync=0.5)
    h1, h2, h3 = lab.hosts
    wait_for(lambda: all_pairs_ping([a1, a2, a3]), CONVERGE_S, "every pair to ping")
    before = {h.name: tables(lab, h, lab.network_id)["have"] for h in lab.hosts}
    lab.netctl(h1, "sandbox", "create", "--name", "late")
    snapshot = h1.snapshot()

    lab.etcd.stop()
    for daemon in lab.daemons.values():
        wait_for(lambda: daemon.lines("reconcile failed"), CONVERGE_S, f"{daemon.host.name} to try and fail")
        wait_for(lambda: daemon.lines("keep-alive of host"), KEEPALIVE_S, f"{daemon.host.name}'s keep-alive to fail")
    assert all_pairs_ping([a1, a2, a3])

    refused = lab.netctl(h1, "network", "connect", "ov", "late", check=False)
    assert refused.returncode != 0
    assert refused.stderr.count("\n") == 1 and "etcd" in refused.stderr and "unreachable" in refused.stderr, \
        refused.stderr
    assert h1.snapshot() == snapshot  # nothing half-made: no veth, no netns, no record
    assert all_pairs_ping([a1, a2, a3])  # still, after more failed reconciles

    time.sleep(KEEPALIVE_S / 2)  # long enough for every keep-alive to fail once more, quietly
    lab.etcd.start()
    for h in lab.hosts:  # the kernel entries were kept as they were all along
        assert tables(lab, h, lab.network_id)["have"] == before[h.name]
    late = wait_for(lambda: _connect(lab, h1, "late"), CONVERGE_S, "a connect to work again")
    wait_for(lambda: pings(a3, late) and pings(late, a2), CONVERGE_S, "the new container to reach the others")
    wait_for(lambda: converged(lab), CONVERGE_S, "every host's tables to be exact")
    for daemon in lab.daemons.values():
        wait_for(lambda: daemon.lines("reconcile works again"), CONVERGE_S, f"{daemon.host.name} to recover")
        recovered = f"keep-alive of host {daemon.host.name} works again"
        wait_for(lambda: daemon.lines(recovered), KEEPALIVE_S, f"{daemon.host.name}'s keep-alive to recover")
        # One line when the outage starts, one when it ends: the failures between them were quiet.
        said = daemon.lines("keep-alive of host")
        assert len(said) == 2 and "failure 1 in a row" in said[0] and recovered in said[1], said
        assert int(re.search(r"works again after (\d+) failure", said[1]).group(1)) >= 2, said


def _connect(lab, host, name):
    proc = lab.netctl(host, "network", "connect", "ov", name, check=False)
    if proc.returncode != 0:
        return None
    from overlay.agent_helpers import Attached, sandbox_netns

    address = next(a.split("/")[0] for a in proc.stdout.split()[1:] if ":" not in a)
    return Attached(host, name, sandbox_netns(lab, host, name), address)


def test_a_host_whose_lease_expires_disappears_from_the_others(overlay_lab, tmp_path):
    ttl = 3
    lab, (a1, a2, a3) = up(overlay_lab, tmp_path, lease_ttl=ttl)
    h1, h2, h3 = lab.hosts
    wait_for(lambda: all_pairs_ping([a1, a2, a3]), CONVERGE_S, "every pair to ping")
    mac2 = tables(lab, h1, lab.network_id)["want"]["neighbours"][a2.ip]

    killed = time.monotonic()
    lab.daemons["h2"].stop(signal.SIGKILL)

    def gone_everywhere() -> bool:
        return all(mac2 not in tables(lab, h, lab.network_id)["have"]["fdb"] for h in (h1, h3))

    wait_for(gone_everywhere, ttl + CONVERGE_S, "h2's entries to leave h1 and h3")
    print(f"\nlease expiry: h2's entries gone from h1 and h3 {time.monotonic() - killed:.2f} s after kill -9 "
          f"(lease TTL {ttl} s)")
    assert converged(lab, [h1, h3])
    assert not pings(a1, a2) and pings(a1, a3) and pings(a3, a1)


def test_a_daemon_that_missed_compacted_history_resyncs_in_full(overlay_lab, tmp_path):
    lab, (a1, a2, a3) = up(overlay_lab, tmp_path, lease_ttl=60)
    h1, h2, h3 = lab.hosts
    wait_for(lambda: all_pairs_ping([a1, a2, a3]), CONVERGE_S, "every pair to ping")
    mac3 = tables(lab, h1, lab.network_id)["want"]["neighbours"][a3.ip]
    frozen = lab.daemons["h1"]
    frozen.send(signal.SIGSTOP)
    try:
        # While h1's daemon sleeps: etcd restarts (its watch breaks), a3 leaves, and the history of
        # that is compacted away. Waking up, the daemon can only resume by re-reading everything.
        lab.etcd.stop()
        lab.etcd.start()
        lab.netctl(h3, "network", "disconnect", "ov", "a3")
        revision = json.loads(lab.etcd.ctl("endpoint", "status", "-w", "json"))[0]["Status"]["header"]["revision"]
        lab.etcd.ctl("compact", str(revision))
    finally:
        frozen.send(signal.SIGCONT)
    wait_for(lambda: frozen.lines("compacted history"), CONVERGE_S, "h1's daemon to notice the compaction")
    # (h3 has no endpoint left: its kernel side of the network is gone.)
    wait_for(lambda: converged(lab, [h1, h2]), CONVERGE_S, "h1's and h2's tables to be exact")
    assert mac3 not in tables(lab, h1, lab.network_id)["have"]["fdb"]
    assert pings(a1, a2) and pings(a2, a1)


def test_the_periodic_reconcile_repairs_entries_removed_behind_its_back(overlay_lab, tmp_path):
    lab, (a1, a2, a3) = up(overlay_lab, tmp_path, resync=0.5)
    h1, h2, h3 = lab.hosts
    wait_for(lambda: all_pairs_ping([a1, a2, a3]), CONVERGE_S, "every pair to ping")
    vxlan = "nx-" + lab.network_id[:12]
    netns = f"{h1.root}/overlay/{lab.network_id}"
    mac2 = tables(lab, h1, lab.network_id)["want"]["neighbours"][a2.ip]
    daemon, offset = lab.daemons["h1"], len(lab.daemons["h1"].log())
    h1.in_netns(netns, "sh", "-c", f"ip neigh flush dev {vxlan} nud permanent && bridge fdb del {mac2} dev {vxlan} self")
    # No event says so: only the periodic pass (every 0.5 s here) sees it, and puts back exactly that.
    # A pass may run between the two deletions (the flush's own netlink events can wake one): the
    # repairs are counted over every pass since, until they add up.
    def repairs() -> dict[str, int]:
        lines = [line for line in daemon.log()[offset:].splitlines() if "reconciled network" in line]
        counts: Counter[str] = Counter()
        for line in lines:
            for part in re.findall(r"([+-](?:fdb|neigh)) (\d+)", line):
                counts[part[0]] += int(part[1])
        return dict(counts)

    wait_for(lambda: repairs().get("+fdb", 0) >= 1 and repairs().get("+neigh", 0) >= 2, CONVERGE_S,
             "the periodic reconcile to put the entries back")
    assert repairs() == {"+fdb": 1, "+neigh": 2}, daemon.log()[offset:]
    assert exact(lab, h1)
    assert pings(a1, a2) and pings(a1, a3)


def test_a_daemon_whose_lease_was_lost_registers_again_and_republishes_its_peers(overlay_lab, tmp_path):
    lab, (a1, a2, a3) = up(overlay_lab, tmp_path, lease_ttl=3)
    h1, h2, h3 = lab.hosts
    wait_for(lambda: all_pairs_ping([a1, a2, a3]), CONVERGE_S, "every pair to ping")
    record = json.loads(lab.etcd_dump()["/netctl/v1/hosts/h2"])
    daemon = lab.daemons["h2"]
    registered = len(daemon.lines("registered in"))
    # As if etcd had lost it (or an operator revoked it): h2's record and peers vanish at once.
    lab.etcd.ctl("lease", "revoke", f"{record['lease']:x}")
    wait_for(lambda: len(daemon.lines("registered in")) > registered, CONVERGE_S, "h2 to register again")
    wait_for(lambda: converged(lab), CONVERGE_S, "every host's tables to be exact again")
    assert json.loads(lab.etcd_dump()["/netctl/v1/hosts/h2"])["lease"] != record["lease"]
    assert pings(a1, a2) and pings(a2, a3)
    # h1 saw the peer go (at most once: it may come back within one debounce) and nothing else go.
    removed = [line for line in lab.daemons["h1"].log().splitlines() if "-fdb" in line]
    assert len(removed) <= 1 and all(": -fdb 1, -neigh 1 " in line for line in removed), lab.daemons["h1"].log()


def test_a_network_deleted_from_etcd_is_removed_from_the_hosts_that_built_it(overlay_lab, tmp_path):
    # `network rm` refuses while any host has endpoints, so this is what an operator's etcdctl (or a
    # store restored from an older backup) does: the hosts follow the store.
    lab, (a1, a2, a3) = up(overlay_lab, tmp_path)
    wait_for(lambda: all_pairs_ping([a1, a2, a3]), CONVERGE_S, "every pair to ping")
    lab.etcd.ctl("del", f"/netctl/v1/networks/{lab.network_id}")
    for host in lab.hosts:
        wait_for(lambda: lab.network_id not in lab.overlay_netns(host), CONVERGE_S,
                 f"{host.name} to remove the network's kernel side")
        # The daemon logs the removal once its pass is over, a moment after the namespace went.
        daemon, line = lab.daemons[host.name], f"removed network {lab.network_id[:12]} from this host"
        wait_for(lambda: daemon.lines(line), CONVERGE_S, f"{host.name}'s daemon to log the removal")
