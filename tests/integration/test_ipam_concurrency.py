"""Many processes allocating from one store at once: every address handed out exactly once.

No kernel objects: this is the store's transactions under real contention between OS processes
(as with parallel CNI ADDs), which threads in one interpreter would not reproduce.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from libnetwork import ipam
from libnetwork.model import Network, PoolConfig
from libnetwork.store import SCHEMA_VERSION, SQLiteStore

PROCESS_TIMEOUT_S = 120

# Each worker opens the store, waits at a barrier (the "go" file) so they all contend at once, then
# allocates COUNT addresses, one transaction each, and prints them.
ALLOCATOR = textwrap.dedent(
    """
    import os, sys, time
    from libnetwork import ipam
    from libnetwork.store import SQLiteStore

    root, network_ref, go, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    store = SQLiteStore(root)
    deadline = time.monotonic() + 60
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.005)
    for i in range(count):
        owner = f"proc-{os.getpid()}" if count == 1 else f"proc-{os.getpid()}-{i}"
        with store.transaction() as tx:
            print(ipam.allocate_address(tx, tx.get_network(network_ref), 4, owner), owner, flush=True)
    store.close()
    """
)

# Each worker creates a brand-new store (racing on schema creation) and one network in it.
CREATOR = textwrap.dedent(
    """
    import os, sys, time
    from libnetwork.model import Network
    from libnetwork.store import SQLiteStore

    root, go, name = sys.argv[1], sys.argv[2], sys.argv[3]
    deadline = time.monotonic() + 60
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.005)
    store = SQLiteStore(root)
    with store.transaction() as tx:
        tx.put_network(Network(id=(name * 64)[:64], name=name, driver="null", created=name))
    store.close()
    """
)


def create_network(root: Path, subnet: str) -> Network:
    n = Network(id="c0ffee" + "0" * 58, name="race", driver="bridge", created="1")
    with SQLiteStore(str(root)) as store, store.transaction() as tx:
        n.pools.append(ipam.allocate_pool(tx, n, PoolConfig(subnet), 4, []))
        tx.put_network(n)
    return n


def run_together(script: str, argvs: list[list[str]], go: Path) -> list[str]:
    """Start one process per argv, release them together, return their stdout lines."""
    procs = [
        subprocess.Popen([sys.executable, "-c", script, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for argv in argvs
    ]
    try:
        time.sleep(0.3)  # let most of them reach the barrier
        go.touch()
        lines = []
        for p in procs:
            out, err = p.communicate(timeout=PROCESS_TIMEOUT_S)
            assert p.returncode == 0, err
            lines += out.splitlines()
        return lines
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_50_processes_get_50_distinct_addresses(tmp_path):
    n = create_network(tmp_path, "10.7.0.0/24")
    lines = run_together(ALLOCATOR, [[str(tmp_path), "race", str(tmp_path / "go"), "1"]] * 50, tmp_path / "go")
    addresses = [line.split()[0] for line in lines]
    assert len(addresses) == 50 and len(set(addresses)) == 50
    with SQLiteStore(str(tmp_path)) as store, store.snapshot() as tx:
        (usage,) = ipam.pool_usage(tx, n.id)
        assert usage.allocated == 50
        stored = {owner: address for _, address, owner in ipam.allocations(tx, n.id)}
    assert {line.split()[1]: line.split()[0] for line in lines} == {
        o: a for o, a in stored.items() if not ipam.is_reserved_owner(o)
    }
    # Round robin from an empty pool hands out a contiguous run after the gateway.
    assert sorted(int(a.split("/")[0].rsplit(".", 1)[1]) for a in addresses) == list(range(2, 52))


def test_two_processes_racing_200_allocations_each(tmp_path):
    n = create_network(tmp_path, "10.8.0.0/16")
    argv = [str(tmp_path), "race", str(tmp_path / "go"), "200"]
    lines = run_together(ALLOCATOR, [argv, argv], tmp_path / "go")
    addresses = [line.split()[0] for line in lines]
    assert len(addresses) == 400 and len(set(addresses)) == 400
    with SQLiteStore(str(tmp_path)) as store, store.snapshot() as tx:
        assert ipam.pool_usage(tx, n.id)[0].allocated == 400
        assert len(ipam.allocations(tx, n.id)) == 401  # + the gateway


def test_20_processes_creating_a_fresh_store_at_once(tmp_path):
    root = tmp_path / "root"
    names = [f"n{i:02}" for i in range(20)]
    run_together(CREATOR, [[str(root), str(tmp_path / "go"), name] for name in names], tmp_path / "go")
    with SQLiteStore(str(root)) as store, store.snapshot() as tx:
        assert [n.name for n in tx.list_networks()] == names
        assert tx.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert tx.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
