"""The SQLite store: round trips, uniqueness, references, schema versioning, transactions."""

from __future__ import annotations

import sqlite3

import pytest

from libnetwork import ipam
from libnetwork.errors import AlreadyExists, InvalidArgument, StoreError
from libnetwork.model import READY, Endpoint, Network, PoolConfig, PortMapping, Sandbox
from libnetwork.store import SCHEMA_VERSION, SQLiteStore
from libnetwork.store import sqlite as sqlite_module


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(str(tmp_path))
    yield s
    s.close()


def network(id: str, name: str, created: str = "2024-01-01T00:00:00Z", **kw) -> Network:
    return Network(id=id, name=name, driver="bridge", created=created, **kw)


def endpoint(id: str, name: str, network_id: str, sandbox_id: str = "", created: str = "1") -> Endpoint:
    return Endpoint(id=id, name=name, network_id=network_id, sandbox_id=sandbox_id, created=created)


def sandbox(id: str, name: str, container_id: str = "", created: str = "1") -> Sandbox:
    return Sandbox(id=id, name=name, netns_path=f"/var/lib/netctl/netns/{id}", container_id=container_id,
                   created=created)


# -- opening -------------------------------------------------------------------------------------


def test_open_creates_a_wal_database_at_the_current_schema(tmp_path):
    root = tmp_path / "fresh" / "root"  # the root itself is created on first use
    with SQLiteStore(str(root)) as s:
        assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert (root / "netctl.db").exists()


def test_open_does_no_schema_work_when_current(tmp_path, monkeypatch):
    SQLiteStore(str(tmp_path)).close()
    holder = sqlite3.connect(str(tmp_path / "netctl.db"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process is writing
    monkeypatch.setattr(sqlite_module, "BUSY_TIMEOUT_S", 0.2)
    try:
        # Opening and reading must not wait for the write lock.
        with SQLiteStore(str(tmp_path)) as s, s.snapshot() as tx:
            assert tx.list_networks() == []
    finally:
        holder.rollback()
        holder.close()


def test_newer_schema_is_refused_naming_file_and_version(tmp_path):
    SQLiteStore(str(tmp_path)).close()
    conn = sqlite3.connect(str(tmp_path / "netctl.db"))
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 41}")
    conn.close()
    with pytest.raises(StoreError) as err:
        SQLiteStore(str(tmp_path))
    assert str(tmp_path / "netctl.db") in str(err.value)
    assert f"schema version {SCHEMA_VERSION + 41}" in str(err.value)
    assert "upgrade netctl" in str(err.value)


def test_empty_existing_file_is_migrated(tmp_path):
    (tmp_path / "netctl.db").touch()
    with SQLiteStore(str(tmp_path)) as s, s.transaction() as tx:
        tx.put_network(network("a" * 64, "n"))


def test_corrupt_file_is_a_store_error_saying_what_to_do(tmp_path):
    (tmp_path / "netctl.db").write_bytes(b"this is not sqlite" * 500)
    with pytest.raises(StoreError) as err:
        SQLiteStore(str(tmp_path))
    assert "corrupt" in str(err.value) and "move it aside" in str(err.value)


def test_writers_take_turns_on_the_lock_file_and_wait_boundedly(tmp_path, monkeypatch):
    import fcntl
    import threading

    SQLiteStore(str(tmp_path)).close()
    monkeypatch.setattr(sqlite_module, "BUSY_TIMEOUT_S", 0.3)
    turn = open(tmp_path / "netctl.db.lock", "w")  # another writer's turn (a separate open: flock excludes it)
    fcntl.flock(turn, fcntl.LOCK_EX)
    try:
        with SQLiteStore(str(tmp_path)) as s:
            with pytest.raises(StoreError, match="stayed locked for more than 0 s"):
                with s.transaction():
                    pass
            with s.snapshot() as tx:  # readers never wait for it
                assert tx.list_networks() == []
            threading.Timer(0.1, lambda: fcntl.flock(turn, fcntl.LOCK_UN)).start()
            with s.transaction():  # its turn comes once the other writer is done
                pass
    finally:
        turn.close()


def test_lock_held_too_long_is_a_store_error(tmp_path, monkeypatch):
    SQLiteStore(str(tmp_path)).close()
    monkeypatch.setattr(sqlite_module, "BUSY_TIMEOUT_S", 0.2)
    holder = sqlite3.connect(str(tmp_path / "netctl.db"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with SQLiteStore(str(tmp_path)) as s:
            with pytest.raises(StoreError, match="stayed locked"):
                with s.transaction():
                    pass
            assert not s.conn.in_transaction
    finally:
        holder.rollback()
        holder.close()


# -- transactions --------------------------------------------------------------------------------


def test_rollback_on_exception_leaves_nothing(store):
    n = network("a" * 64, "blue")
    with pytest.raises(RuntimeError, match="boom"):
        with store.transaction() as tx:
            config = ipam.allocate_pool(tx, n, PoolConfig("10.1.0.0/24"), 4, [])
            n.pools.append(config)
            tx.put_network(n)
            ipam.allocate_address(tx, n, 4, "e" * 64)
            tx.put_sandbox(sandbox("s" * 64, "box"))
            raise RuntimeError("boom")
    with store.snapshot() as tx:
        assert tx.list_networks() == [] and tx.list_sandboxes() == []
        assert ipam.allocations(tx) == []
        assert tx.conn.execute("SELECT COUNT(*) FROM ipam_pools").fetchone()[0] == 0


def test_a_netctl_error_inside_a_transaction_rolls_back_and_propagates(store):
    with store.transaction() as tx:
        tx.put_network(network("a" * 64, "blue"))
    with pytest.raises(AlreadyExists):
        with store.transaction() as tx:
            tx.put_sandbox(sandbox("s" * 64, "box"))
            tx.put_network(network("b" * 64, "blue"))
    with store.snapshot() as tx:
        assert tx.list_sandboxes() == []


def test_transactions_do_not_nest(store):
    with store.transaction():
        with pytest.raises(RuntimeError, match="do not nest"):
            with store.transaction():
                pass


def test_snapshot_has_no_write_methods(store):
    with store.snapshot() as tx:
        assert not hasattr(tx, "put_network")
        assert tx.list_endpoints() == []


def test_snapshot_is_consistent_while_another_process_writes(tmp_path):
    with SQLiteStore(str(tmp_path)) as reader, SQLiteStore(str(tmp_path)) as writer:
        with reader.snapshot() as snap:
            assert snap.list_networks() == []  # the snapshot starts at this read
            with writer.transaction() as tx:
                tx.put_network(network("a" * 64, "blue"))
            assert snap.list_networks() == []
        with reader.snapshot() as snap:
            assert [n.name for n in snap.list_networks()] == ["blue"]


# -- networks ------------------------------------------------------------------------------------


def test_network_round_trip_and_persistence_across_reopen(tmp_path):
    n = network(
        "0123456789ab" + "c" * 52,
        "blue",
        pools=[PoolConfig("10.1.0.0/16", "10.1.0.1", "10.1.1.0/24", {"printer": "10.1.0.9"})],
        options={"com.docker.network.bridge.name": "nc-blue"},
        labels={"team": "net"},
        internal=True,
        ipv6=True,
        mtu=1400,
        driver_state={"bridge": "nc-0123456789"},
    )
    with SQLiteStore(str(tmp_path)) as s, s.transaction() as tx:
        tx.put_network(n)
    with SQLiteStore(str(tmp_path)) as s, s.snapshot() as tx:
        assert tx.get_network("blue") == n
        assert tx.get_network(n.id) == n


def test_put_network_replaces_by_id(store):
    with store.transaction() as tx:
        tx.put_network(network("a" * 64, "blue"))
        tx.put_network(network("a" * 64, "green", mtu=1400))
    with store.snapshot() as tx:
        assert [(n.name, n.mtu) for n in tx.list_networks()] == [("green", 1400)]
        assert tx.get_network("blue") is None


def test_network_name_is_unique(store):
    with store.transaction() as tx:
        tx.put_network(network("1234567890abcdef" + "0" * 48, "blue"))
    with pytest.raises(AlreadyExists) as err:
        with store.transaction() as tx:
            tx.put_network(network("f" * 64, "blue"))
    assert str(err.value) == (
        "network name 'blue' is already used by network 1234567890ab; choose another name"
    )


def test_network_references_id_name_and_unique_prefix(store):
    with store.transaction() as tx:
        tx.put_network(network("abc111" + "0" * 58, "first", created="1"))
        tx.put_network(network("abc222" + "0" * 58, "second", created="2"))
        # A name that looks like the other network's id: the exact id still wins.
        tx.put_network(network("def333" + "0" * 58, "abc111" + "0" * 58, created="3"))
    with store.snapshot() as tx:
        assert tx.get_network("abc1").name == "first"
        assert tx.get_network("abc2").name == "second"
        assert tx.get_network("second").name == "second"
        assert tx.get_network("abc111" + "0" * 58).name == "first"
        assert tx.get_network("de") is None  # prefixes shorter than 3 are not references
        assert tx.get_network("def").name.startswith("abc111")
        assert tx.get_network("xyz") is None
        assert tx.get_network("") is None
        with pytest.raises(InvalidArgument) as err:
            tx.get_network("abc")
    message = str(err.value)
    assert "ambiguous" in message and "'first' (abc111000000)" in message and "'second' (abc222000000)" in message


def test_list_networks_is_ordered_by_created(store):
    with store.transaction() as tx:
        tx.put_network(network("c" * 64, "third", created="2024-03-01T00:00:00Z"))
        tx.put_network(network("a" * 64, "first", created="2024-01-01T00:00:00Z"))
        tx.put_network(network("b" * 64, "second", created="2024-02-01T00:00:00Z"))
    with store.snapshot() as tx:
        assert [n.name for n in tx.list_networks()] == ["first", "second", "third"]


def test_delete_network_is_idempotent(store):
    with store.transaction() as tx:
        tx.put_network(network("a" * 64, "blue"))
        tx.delete_network("a" * 64)
        tx.delete_network("a" * 64)
        assert tx.get_network("blue") is None


# -- endpoints -----------------------------------------------------------------------------------


def test_endpoint_round_trip(store):
    e = Endpoint(
        id="e" * 64,
        name="web",
        network_id="n" * 64,
        sandbox_id="s" * 64,
        addresses=["10.1.0.2/24", "fd00::2/64"],
        mac="02:42:0a:01:00:02",
        aliases=["www"],
        ports=[PortMapping(8080, 80), PortMapping(53, 53, "udp", "127.0.0.1")],
        ifname="eth0",
        host_ifname="nveeeeeeeeeee",
        state=READY,
        created="1",
    )
    with store.transaction() as tx:
        tx.put_endpoint(e)
    with store.snapshot() as tx:
        assert tx.get_endpoint(e.id) == e
        assert tx.find_endpoint("n" * 64, "s" * 64) == e
        assert tx.find_endpoint("n" * 64, "x" * 64) is None


def test_endpoint_name_is_unique_per_network(store):
    with store.transaction() as tx:
        tx.put_network(network("n" * 64, "blue"))
        tx.put_endpoint(endpoint("1" * 64, "web", "n" * 64))
        tx.put_endpoint(endpoint("2" * 64, "web", "m" * 64))  # other network: fine
        tx.put_endpoint(endpoint("1" * 64, "web", "n" * 64, sandbox_id="s"))  # same id: replace
    with pytest.raises(AlreadyExists) as err:
        with store.transaction() as tx:
            tx.put_endpoint(endpoint("3" * 64, "web", "n" * 64))
    assert str(err.value) == (
        "endpoint name 'web' is already used by endpoint 111111111111 in network 'blue'; choose another name"
    )


def test_list_endpoints_filters(store):
    with store.transaction() as tx:
        tx.put_endpoint(endpoint("1" * 64, "a", "n1", "s1", created="1"))
        tx.put_endpoint(endpoint("2" * 64, "b", "n1", "s2", created="2"))
        tx.put_endpoint(endpoint("3" * 64, "c", "n2", "s1", created="3"))
    with store.snapshot() as tx:
        assert [e.name for e in tx.list_endpoints()] == ["a", "b", "c"]
        assert [e.name for e in tx.list_endpoints(network_id="n1")] == ["a", "b"]
        assert [e.name for e in tx.list_endpoints(sandbox_id="s1")] == ["a", "c"]
        assert [e.name for e in tx.list_endpoints(network_id="n2", sandbox_id="s1")] == ["c"]
        assert tx.list_endpoints(network_id="n3") == []
    with store.transaction() as tx:
        tx.delete_endpoint("1" * 64)
        tx.delete_endpoint("1" * 64)
        assert tx.get_endpoint("1" * 64) is None


# -- sandboxes -----------------------------------------------------------------------------------


def test_sandbox_round_trip_name_uniqueness_and_prefix(store):
    s = sandbox("5ab" + "0" * 61, "box", container_id="ctr-1")
    s.labels = {"app": "web"}
    s.hostname = "web1"
    with store.transaction() as tx:
        tx.put_sandbox(s)
        tx.put_sandbox(sandbox("6cd" + "0" * 61, "other", created="2"))
    with store.snapshot() as tx:
        assert tx.get_sandbox("box") == s
        assert tx.get_sandbox("5ab") == s
        assert tx.get_sandbox(s.id) == s
        assert tx.find_sandbox_by_container("ctr-1") == s
        assert tx.find_sandbox_by_container("") is None
        assert [x.name for x in tx.list_sandboxes()] == ["box", "other"]
    with pytest.raises(AlreadyExists, match="sandbox name 'box' is already used by sandbox 5ab000000000"):
        with store.transaction() as tx:
            tx.put_sandbox(sandbox("7" * 64, "box"))
    with store.transaction() as tx:
        tx.delete_sandbox(s.id)
        tx.delete_sandbox(s.id)
        assert tx.get_sandbox("box") is None
