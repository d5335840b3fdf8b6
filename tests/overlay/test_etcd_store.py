"""The global store against a real etcd (on 127.0.0.1): schema, CAS between processes, leases, watches.

No kernel objects here; the data plane is in test_overlay_dataplane.py.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from libnetwork.errors import AlreadyExists, InvalidArgument, Overlap, PoolExhausted, StoreError
from libnetwork.model import CREATING, READY, Endpoint, Network, PoolConfig
from libnetwork.store.etcd import hosts
from libnetwork.store.etcd import (
    VNI_FIRST,
    Compacted,
    EtcdStore,
    Keys,
    StoreConflict,
    parse_url,
)
from overlay.etcd_server import etcdctl, free_port

PROCESS_TIMEOUT_S = 120
WAIT_S = 10.0  # upper bound for anything that should happen "soon" (lease expiry, watch delivery)


def ident(tag: str) -> str:
    return (tag * 64)[:64]


def new_network(name: str, tag: str, created: str = "1") -> Network:
    return Network(id=ident(tag), name=name, driver="overlay", scope="global", created=created)


def create_network(store: EtcdStore, name: str, tag: str, subnet: str = "", vni: int = 0) -> Network:
    network = new_network(name, tag)

    def body(tx):
        network.driver_state = {"vni": str(tx.allocate_vni(network, vni))}
        network.pools = [tx.allocate_pool(network, PoolConfig(subnet) if subnet else None, 4, [])]
        tx.put_network(network)

    store.atomic(body)
    return network


def new_endpoint(network: Network, name: str, tag: str, state: str = READY) -> Endpoint:
    return Endpoint(id=ident(tag), name=name, network_id=network.id, sandbox_id=ident("s" + tag), state=state,
                    created=tag, mac="02:42:0a:00:00:" + f"{len(name):02x}")


def connect(store: EtcdStore, network: Network, endpoint: Endpoint) -> Endpoint:
    def body(tx):
        endpoint.addresses = [tx.allocate_address(network, 4, endpoint.id)]
        tx.put_endpoint(endpoint)

    store.atomic(body)
    return endpoint


def wait_for(condition, what: str, timeout: float = WAIT_S) -> float:
    """Poll until condition() is true; return the seconds it took. Bounded."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            pytest.fail(f"{what} did not happen within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - start


@pytest.fixture
def store(etcd):
    with EtcdStore(etcd, host="h1") as s:
        yield s


# ---- schema, names, records ---------------------------------------------------------------------


def test_url_forms_and_schema_marker(etcd):
    assert parse_url("etcd://10.1.2.3:2400")[0] == "http://10.1.2.3:2400"
    assert parse_url("127.0.0.1")[0] == "http://127.0.0.1:2379"
    with pytest.raises(InvalidArgument, match="etcd://HOST:PORT"):
        parse_url("https://x/y")
    EtcdStore(etcd).close()
    assert '"version":1' in etcdctl(etcd, "get", "/netctl/schema", "--print-value-only")


def test_newer_schema_is_refused_with_what_to_do(etcd):
    etcdctl(etcd, "put", "/netctl/schema", '{"version":2,"prefix":"/netctl/v2/"}')
    with pytest.raises(StoreError, match="schema version 2, newer than this netctl understands .1.; upgrade"):
        EtcdStore(etcd)


def test_unreachable_etcd_is_one_clear_line():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(StoreError) as err:
        EtcdStore(url)
    assert str(err.value) == f"etcd at {url} is unreachable: connection refused; start it or pass --store"


def test_networks_by_id_name_and_prefix_and_a_clean_delete(store):
    a = create_network(store, "alpha", "abc1")
    b = create_network(store, "beta", "abc2")
    with store.snapshot() as tx:
        assert tx.get_network(a.id).name == "alpha"
        assert tx.get_network("beta").id == b.id
        assert tx.get_network("abc1a").id == a.id
        assert tx.get_network("nope") is None
        with pytest.raises(InvalidArgument, match=r"'abc' is ambiguous: it matches 'alpha' \(abc1abc1abc1\), 'beta'"):
            tx.get_network("abc")
    with pytest.raises(AlreadyExists, match="network name 'alpha' is already used by network abc1abc1abc1"):
        store.atomic(lambda tx: tx.put_network(new_network("alpha", "zz")))
    with pytest.raises(InvalidArgument, match="only global networks belong in etcd"):
        store.atomic(lambda tx: tx.put_network(Network(id=ident("l"), name="loc", driver="bridge")))

    a.name = "gamma"  # a rename frees the old name
    store.atomic(lambda tx: tx.put_network(a))
    store.atomic(lambda tx: tx.put_network(new_network("alpha", "a3")))

    store.atomic(lambda tx: tx.delete_network(b.id))
    store.atomic(lambda tx: tx.delete_network(b.id))  # idempotent
    keys = etcdctl(store.url, "get", "--prefix", "/netctl/v1/", "--keys-only").split()
    assert not [k for k in keys if b.id in k or k.endswith("/beta")], keys
    assert Keys.vni(int(a.driver_state["vni"])) in keys


def test_endpoint_names_are_unique_per_network_and_peers_follow_readiness(store):
    net = create_network(store, "ov", "n1")
    other = create_network(store, "ov2", "n2")
    store.register_host("198.18.0.1", ttl=30)
    e1 = connect(store, net, new_endpoint(net, "web", "e1", state=CREATING))
    with store.snapshot() as tx:
        assert tx.list_peers(net.id) == []  # not ready: nobody should send to it yet
    e1.state = READY
    store.atomic(lambda tx: tx.put_endpoint(e1))
    with store.snapshot() as tx:
        (peer,) = tx.list_peers(net.id)
        assert (peer.endpoint_id, peer.host, peer.vtep, peer.mac, peer.addresses) == (
            e1.id, "h1", "198.18.0.1", e1.mac, e1.addresses)
        assert tx.endpoint_host(e1.id) == "h1"
        assert tx.find_endpoint(net.id, e1.sandbox_id).id == e1.id
        assert tx.get_endpoint(e1.id).addresses == e1.addresses
    taken = "endpoint name 'web' is already used by endpoint e1e1e1e1e1e1 in network 'ov'"
    with pytest.raises(AlreadyExists, match=taken):
        connect(store, net, new_endpoint(net, "web", "e2"))
    connect(store, other, new_endpoint(other, "web", "e3"))  # same name, other network: fine
    store.atomic(lambda tx: tx.delete_endpoint(e1.id))
    with store.snapshot() as tx:
        assert tx.list_peers(net.id) == [] and tx.get_endpoint(e1.id) is None
    connect(store, net, new_endpoint(net, "web", "e4"))  # the name is free again


# ---- global IPAM and VNIs -----------------------------------------------------------------------


def test_global_subnets_never_overlap_and_refusals_name_the_culprit(store):
    a = create_network(store, "a", "a1")
    b = create_network(store, "b", "b1")
    assert [a.pools[0].subnet, b.pools[0].subnet] == ["10.0.0.0/24", "10.0.1.0/24"]
    with pytest.raises(Overlap, match=r"subnet 10.0.0.0/16 overlaps 10.0.0.0/24 of network 'a'"):
        create_network(store, "c", "c1", subnet="10.0.0.0/16")
    with store.snapshot() as tx:
        assert tx.get_network("c") is None and tx.vni_owner(VNI_FIRST + 2) == ""  # nothing half-made
    routes = [("10.0.2.0/23", "route 10.0.2.0/23 dev eth0")]
    n = new_network("d", "d1")
    config = store.atomic(lambda tx: tx.allocate_pool(n, None, 4, routes))
    assert config.subnet == "10.0.4.0/24"  # skips the host's route as well as other networks


def test_addresses_are_round_robin_static_and_exhaust_clearly(store):
    net = create_network(store, "small", "s1", subnet="192.168.77.0/29")  # .1 gateway, .2-.6 usable
    got = [store.atomic(lambda tx, i=i: tx.allocate_address(net, 4, ident(f"o{i}"))) for i in range(3)]
    assert got == ["192.168.77.2/29", "192.168.77.3/29", "192.168.77.4/29"]
    store.atomic(lambda tx: tx.release_addresses(ident("o0"), net.id))
    # Round robin: the freed .2 is not handed out again before the rest of the range.
    assert store.atomic(lambda tx: tx.allocate_address(net, 4, ident("o3"))) == "192.168.77.5/29"
    taken = "192.168.77.3 of network 'small' is already in use by endpoint o1o1o1o1o1o1"
    with pytest.raises(AlreadyExists, match=taken):
        store.atomic(lambda tx: tx.allocate_address(net, 4, ident("o4"), "192.168.77.3"))
    with pytest.raises(InvalidArgument, match="broadcast address"):
        store.atomic(lambda tx: tx.allocate_address(net, 4, ident("o4"), "192.168.77.7"))
    assert store.atomic(lambda tx: tx.allocate_address(net, 4, ident("o4"), "192.168.77.2")) == "192.168.77.2/29"
    assert store.atomic(lambda tx: tx.allocate_address(net, 4, ident("o5"))) == "192.168.77.6/29"
    with pytest.raises(PoolExhausted, match=r"'small' \(192.168.77.0/29\) is exhausted: 5 of 5 addresses in use"):
        store.atomic(lambda tx: tx.allocate_address(net, 4, ident("o6")))
    with pytest.raises(AlreadyExists, match="already holds address 192.168.77.6/29"):
        store.atomic(lambda tx: tx.allocate_address(net, 4, ident("o5")))


def test_vnis_lowest_free_requested_and_released(store):
    a = create_network(store, "a", "a1")
    b = create_network(store, "b", "b1", vni=5000)
    c = create_network(store, "c", "c1")
    assert [int(x.driver_state["vni"]) for x in (a, b, c)] == [VNI_FIRST, 5000, VNI_FIRST + 1]
    with pytest.raises(AlreadyExists, match="VNI 5000 is already used by network 'b'"):
        create_network(store, "d", "d1", vni=5000)
    with pytest.raises(InvalidArgument, match=r"out of range \(256-16777215\)"):
        create_network(store, "d", "d1", vni=255)
    store.atomic(lambda tx: tx.delete_network(a.id))
    assert int(create_network(store, "e", "e1").driver_state["vni"]) == VNI_FIRST


def test_a_conflicting_transaction_writes_nothing(store):
    net = create_network(store, "n", "n1")
    with pytest.raises(StoreConflict):
        with store.transaction() as slow:
            seen = slow.get_network("n")
            store.atomic(lambda tx: tx.put_network(net))  # someone else writes the same key meanwhile
            seen.labels = {"stale": "yes"}
            slow.put_network(seen)
    with store.snapshot() as tx:
        assert tx.get_network("n").labels == {}


# ---- races between processes --------------------------------------------------------------------

# Each worker opens the store once, then for each job: says "ready JOB", waits for the go-JOB file (so
# that all contend at once), runs COUNT transactions and prints "JOB RESULT" lines.
RACER = textwrap.dedent(
    """
    import os, sys, time
    from libnetwork.errors import AlreadyExists
    from libnetwork.model import Network
    from libnetwork.store.etcd import EtcdStore

    url, barrier_dir, network_id, jobs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    store = EtcdStore(url, host=f"h{os.getpid()}")

    def body_for(job, me, name):
        if job == "address":
            return lambda tx: tx.allocate_address(tx.get_network(network_id), 4, me)
        if job == "vni":
            return lambda tx: str(tx.allocate_vni(Network(id=me, name=name, driver="overlay", scope="global")))
        if job == "subnet":
            def body(tx):
                n = Network(id=me, name=name, driver="overlay", scope="global")
                n.pools = [tx.allocate_pool(n, None, 4, [])]
                tx.put_network(n)
                return n.pools[0].subnet
            return body
        return lambda tx: tx.put_network(Network(id=me, name="contested", driver="overlay", scope="global")) or "won"

    for spec in jobs:
        job, count = spec.split(":")
        print("ready", job, flush=True)
        deadline = time.monotonic() + 60
        while not os.path.exists(os.path.join(barrier_dir, "go-" + job)) and time.monotonic() < deadline:
            time.sleep(0.002)
        before = store.conflicts
        for i in range(int(count)):
            me = f"{os.getpid():08d}{job}{i:04d}".ljust(64, "0")
            try:
                print(job, store.atomic(body_for(job, me, f"n{os.getpid()}-{job}-{i}")), flush=True)
            except AlreadyExists:
                print(job, "lost", flush=True)
        print("conflicts", job, store.conflicts - before, flush=True)
    print("ready end", flush=True)
    store.close()
    """
)


def race(url: str, tmp_path: Path, jobs: list[tuple[str, int]], processes: int,
         network_id: str) -> dict[str, list[str]]:
    """Run the jobs in `processes` racing workers, released together job by job; results per job."""
    argv = [sys.executable, "-c", RACER, url, str(tmp_path), network_id] + [f"{job}:{n}" for job, n in jobs]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(processes)]
    results: dict[str, list[str]] = {job: [] for job, _ in jobs}
    conflicts = dict.fromkeys(results, 0)
    try:
        for job in [job for job, _ in jobs] + ["end"]:
            for p in procs:  # read each worker up to its "ready JOB": the previous job's output
                for line in iter(p.stdout.readline, ""):
                    kind, _, value = line.strip().partition(" ")
                    if kind == "ready":
                        assert value == job
                        break
                    if kind == "conflicts":
                        conflicts[value.split()[0]] += int(value.split()[1])
                    else:
                        results[kind].append(value)
                else:
                    pytest.fail(f"racer died: {p.stderr.read()}")
            if job != "end":
                (tmp_path / f"go-{job}").touch()
        for p in procs:
            assert p.wait(timeout=PROCESS_TIMEOUT_S) == 0, p.stderr.read()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    for job, count in jobs:
        print(f"{job}: {processes} processes x {count}, {conflicts[job]} commits retried after a conflict")
    return results


def test_processes_racing_for_addresses_vnis_subnets_and_a_name_never_collide(store, tmp_path):
    net = create_network(store, "shared", "f1", subnet="10.200.0.0/24")
    got = race(store.url, tmp_path, [("address", 8), ("vni", 5), ("subnet", 3), ("name", 1)], processes=6,
               network_id=net.id)
    addresses = got["address"]
    assert len(addresses) == 48 and len(set(addresses)) == 48
    assert all(ipaddress.ip_interface(a) in ipaddress.ip_network("10.200.0.0/24") for a in addresses)
    # VNIs are only claimed here (no network record), so each process's VNIs stay taken: all distinct.
    vnis = [int(v) for v in got["vni"]]
    assert len(set(vnis)) == 30 and VNI_FIRST not in vnis  # 256 is the 'shared' network's
    assert all(VNI_FIRST < v < VNI_FIRST + 31 + 6 * 40 for v in vnis)  # low: retries jump only a few ahead
    subnets = [ipaddress.ip_network(s) for s in got["subnet"]]
    assert len(subnets) == 18
    assert not any(a.overlaps(b) for i, a in enumerate(subnets) for b in subnets[i + 1:])
    assert sorted(got["name"]) == ["lost"] * 5 + ["won"]


# ---- leases -------------------------------------------------------------------------------------


def test_a_dead_hosts_record_and_peers_expire_but_its_configuration_stays(store, etcd):
    net = create_network(store, "ov", "n1")
    store.register_host("198.18.0.1", ttl=2)
    connect(store, net, new_endpoint(net, "web", "e1"))
    with EtcdStore(etcd, host="h2") as h2:
        h2.start_keepalive("198.18.0.2", ttl=2)
        connect(h2, net, new_endpoint(net, "db", "e2"))
        # h1 never refreshes its lease, as if its daemon were killed; h2 keeps its own alive.
        took = wait_for(lambda: [p.host for p in h2.atomic(lambda tx: tx.list_peers(net.id))] == ["h2"],
                        "expiry of h1's peers")
        with h2.snapshot() as tx:
            assert [h.name for h in tx.list_hosts()] == ["h2"]
            assert len(tx.list_endpoints(network_id=net.id)) == 2  # configuration is not leased
            assert len([a for a in tx.allocations(net.id) if not a[2].startswith("gateway:")]) == 2
        time.sleep(2.5)  # longer than the TTL: the keep-alive thread holds h2's lease
        with h2.snapshot() as tx:
            assert [p.host for p in tx.list_peers(net.id)] == ["h2"]
        # h1 comes back: registering again re-publishes the peers of its ready endpoints.
        store.register_host("198.18.0.1", ttl=30)
        with h2.snapshot() as tx:
            assert sorted(p.host for p in tx.list_peers(net.id)) == ["h1", "h2"]
        h2.unregister_host()
        with store.snapshot() as tx:
            assert [p.host for p in tx.list_peers(net.id)] == ["h1"]
    assert took < 2 + 3  # the TTL, etcd's expiry check (every 0.5 s), our polling, a loaded machine


def test_registering_again_moves_peers_to_the_new_lease_without_a_flap(store):
    net = create_network(store, "ov", "n1")
    first = store.register_host("198.18.0.1", ttl=30)
    connect(store, net, new_endpoint(net, "web", "e1"))
    revision = store.current_revision()
    second = store.register_host("198.18.0.9", ttl=30)  # a restarted daemon, even with a new address
    assert second.lease != first.lease
    with store.watch(Keys.PEERS, revision + 1, idle_timeout=1) as watch:
        kinds = [(e.kind, e.value["vtep"] if e.value else None) for batch in watch for e in batch]
    assert kinds == [("put", "198.18.0.9")]  # updated in place: never deleted, so no host saw it vanish
    lease_of_peer = etcdctl(store.url, "get", Keys.peer(net.id, ident("e1")), "-w", "json")
    assert f'"lease":{second.lease}' in lease_of_peer.replace(" ", "")
    assert store.keepalive() is True


def test_an_endpoint_removed_while_peers_are_republished_does_not_get_its_peer_back(store, monkeypatch):
    net = create_network(store, "ov", "n2")
    store.register_host("198.18.0.1", ttl=30)
    connect(store, net, new_endpoint(net, "web", "r1"))
    connect(store, net, new_endpoint(net, "db", "r2"))
    etcd = store._etcd
    real_range = etcd.range
    reads = []

    def range_then_remove_r1(key, *args, **kw):
        found = real_range(key, *args, **kw)
        if key == Keys.ENDPOINTS:  # the re-publication's read of every endpoint
            reads.append(key)
            if len(reads) == 1:  # right after it: a `netctl rm` of r1 commits
                store.atomic(lambda tx: tx.delete_endpoint(ident("r1"), net.id))
        return found

    monkeypatch.setattr(etcd, "range", range_then_remove_r1)
    with store.snapshot() as tx:
        record = tx.get_host("h1")
    hosts.republish_peers(etcd, record)
    monkeypatch.undo()
    with store.snapshot() as tx:
        peers = {p.endpoint_id for p in tx.list_peers(net.id)}
    assert peers == {ident("r2")}  # r1's peer stays gone; r2's was re-published on the second read


# ---- watches ------------------------------------------------------------------------------------


def test_a_watch_resumes_from_a_revision_and_a_mirror_survives_an_etcd_restart(etcd_server):
    server = etcd_server()
    with EtcdStore(server.url, host="h1") as store:
        net = create_network(store, "ov", "n1")
        store.register_host("198.18.0.1", ttl=60)
        connect(store, net, new_endpoint(net, "a", "e1"))
        _, revision = store.read_prefix(Keys.PEERS)
        connect(store, net, new_endpoint(net, "b", "e2"))
        connect(store, net, new_endpoint(net, "c", "e3"))
        # Resuming from a past revision replays exactly what happened since.
        with store.watch(Keys.PEERS, revision + 1, idle_timeout=1) as watch:
            replay = [e.value["name"] for batch in watch for e in batch]
        assert replay == ["b", "c"]

        mirror = store.mirror(Keys.peers_of(net.id), idle_timeout=2, retry_max_s=0.5)
        changes = []
        thread = threading.Thread(target=mirror.follow, args=(lambda m, events: changes.append(events),), daemon=True)
        thread.start()
        try:
            wait_for(lambda: len(mirror.items) == 3, "the mirror's first read")
            server.kill()  # SIGKILL: the watch stream breaks without a goodbye
            time.sleep(0.5)
            server.start()  # same data directory and address: same revisions
            connect(store, net, new_endpoint(net, "d", "e4"))
            store.atomic(lambda tx: tx.delete_endpoint(ident("e1")))
            wait_for(lambda: sorted(v["name"] for v in mirror.items.values()) == ["b", "c", "d"],
                     "the mirror catching up after the restart")
            assert mirror.reconnects >= 1 and mirror.resyncs == 1  # resumed, not re-read
            assert mirror.items == store.read_prefix(Keys.peers_of(net.id))[0]
        finally:
            mirror.stop()
            thread.join(timeout=WAIT_S)
        assert not thread.is_alive()


def test_after_a_compaction_the_mirror_rereads_and_misses_no_delete(etcd):
    with EtcdStore(etcd, host="h1") as store:
        net = create_network(store, "ov", "n1")
        store.register_host("198.18.0.1", ttl=60)
        for i in range(3):
            connect(store, net, new_endpoint(net, f"c{i}", f"e{i}"))
        mirror = store.mirror(Keys.peers_of(net.id), idle_timeout=2)
        mirror.resync()
        assert len(mirror.items) == 3
        # While the mirror is not watching: a delete and an add, then history is compacted away.
        store.atomic(lambda tx: tx.delete_endpoint(ident("e0")))
        connect(store, net, new_endpoint(net, "c9", "e9"))
        store.compact(store.current_revision())
        with pytest.raises(Compacted, match="re-read everything"), \
                store.watch(Keys.peers_of(net.id), mirror.revision + 1) as watch:
            list(watch)
        thread = threading.Thread(target=mirror.follow, args=(lambda m, e: None,), daemon=True)
        thread.start()  # continues from the stale revision, is told it was compacted, re-reads
        try:
            wait_for(lambda: sorted(v["name"] for v in mirror.items.values()) == ["c1", "c2", "c9"],
                     "the resync after compaction")
        finally:
            mirror.stop()
            thread.join(timeout=WAIT_S)
        assert mirror.resyncs == 2 and not thread.is_alive()
