"""The local IPAM: pools and addresses of a host's own networks, in its SQLite store's ipam_* tables.

Every function runs inside a store transaction (`with store.transaction() as tx`) and uses `tx.conn`;
atomicity and mutual exclusion between processes come from that transaction (BEGIN IMMEDIATE), not
from locks here. Addresses are integers, stored as 16-byte big-endian BLOBs (see store/sqlite.py for
the tables). Allocation is round robin from a per-pool cursor, like CNI host-local's
last_reserved_ip, so a released address is not handed out again at once; a per-pool counter answers
"exhausted?" without counting rows.

This module is the only writer of the ipam_* tables; the rules (what a request comes to, how a
refusal is worded) are ipam/rules.py's, shared with the global IPAM in etcd.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from libnetwork.errors import AlreadyExists, InvalidArgument, StoreError
from libnetwork.ipam import rules
from libnetwork.model import Network, PoolConfig

if TYPE_CHECKING:
    from libnetwork.store.sqlite import ReadTxn, Txn


@dataclass
class PoolUsage:
    """How full one pool is, for `network inspect`, CNI STATUS and tests (either store)."""

    network_id: str
    subnet: str
    allocated: int  # endpoint addresses anywhere in the subnet (gateway/aux not counted)
    in_use: int  # endpoint addresses inside the dynamic range
    capacity: int  # addresses the dynamic range can hand out (gateway/aux excluded)


# ---------------------------------------------------------------------------------------------------
# Pools
# ---------------------------------------------------------------------------------------------------


def allocate_pool(
    tx: Txn,
    network: Network,
    requested: PoolConfig | None,
    version: int,
    host_routes: list[tuple[str, str]],
) -> PoolConfig:
    """Give `network` one subnet of family `version`, reserve its gateway and aux addresses.

    `requested` None or with an empty subnet picks the first free default subnet; otherwise the
    request is validated and checked for overlaps. `host_routes` are (cidr, description) pairs such
    as ("10.0.0.0/8", "route 10.0.0.0/8 dev eth0"); default routes never clash.
    """
    rules.check_version(version)
    clashes = _existing_pools(tx, version) + rules.route_clashes(host_routes, version)
    config = rules.plan_pool(network, requested, version, clashes)
    _insert_pool(tx, network, ipaddress.ip_network(config.subnet), config)
    return config


def set_dynamic_range(tx: Txn, network: Network, subnet: str, first: str, last: str) -> None:
    """Limit dynamic allocation in pool `subnet` of `network` to the addresses [first, last] (a CNI
    range's rangeStart/rangeEnd). Call it in the transaction that created the pool, before any address
    is handed out; the pool's counters are recounted from its rows, so they stay exact."""
    net = ipaddress.ip_network(subnet)
    start = _range_bound(net, subnet, "start", first)
    end = _range_bound(net, subnet, "end", last)
    if start > end:
        raise InvalidArgument(f"range start {first} of subnet {subnet} is after its end {last}; swap them")
    found = tx.conn.execute(
        "SELECT id FROM ipam_pools WHERE network_id = ? AND subnet = ?", (network.id, str(net))
    ).fetchone()
    if found is None:
        raise InvalidArgument(
            f"range {first}-{last} is of subnet {subnet}, which network {network.name!r} does not have"
        )
    _move_range(tx, found[0], start, end)


def _range_bound(net: rules.IPNetwork, subnet: str, label: str, text: str) -> int:
    """One end ("start" or "end") of a dynamic range: a host address of `net` (written `subnet`)."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidArgument(f"range {label} {text!r} of subnet {subnet} is not an IP address") from None
    if address.version != net.version or address not in net:
        raise InvalidArgument(f"range {label} {address} is outside its subnet {subnet}; pick an address inside it")
    if rules.special_address_kind(int(address), net):
        raise InvalidArgument(f"range {label} {address} is not a host address of subnet {subnet}")
    return int(address)


def _move_range(tx: Txn, pool_id: int, first: int, last: int) -> None:
    """Set a pool's dynamic range to [first, last] and count its address rows inside it again."""
    inside = "SELECT COUNT(*) FROM ipam_addresses a WHERE a.pool_id = :pool AND a.addr BETWEEN :first AND :last"
    reserved = f"a.owner LIKE '{rules.GATEWAY_OWNER_PREFIX}%' OR a.owner LIKE '{rules.AUX_OWNER_PREFIX}%'"
    tx.conn.execute(
        f"UPDATE ipam_pools SET range_first = :first, range_last = :last, range_used = ({inside}), "
        f"reserved_in_range = ({inside} AND ({reserved})) WHERE id = :pool",
        {"pool": pool_id, "first": _blob(first), "last": _blob(last)},
    )


def release_pools(tx: Txn, network_id: str) -> None:
    """Free the pools of a network and every address in them. Idempotent."""
    tx.conn.execute(
        "DELETE FROM ipam_addresses WHERE pool_id IN (SELECT id FROM ipam_pools WHERE network_id = ?)",
        (network_id,),
    )
    tx.conn.execute("DELETE FROM ipam_pools WHERE network_id = ?", (network_id,))


def pool_usage(tx: ReadTxn, network_id: str) -> list[PoolUsage]:
    """How full each pool of a local network is, in the network's order."""
    rows = tx.conn.execute(
        f"SELECT {_POOL_COLUMNS}, p.allocated FROM ipam_pools p WHERE p.network_id = ? ORDER BY p.seq",
        (network_id,),
    )
    usage = []
    for row in rows:
        pool = _pool_from_row(row[:-1])
        usage.append(PoolUsage(network_id, pool.subnet, row[-1], pool.in_use, pool.capacity))
    return usage


def _existing_pools(tx: Txn, version: int) -> list[rules.Clash]:
    rows = tx.conn.execute(
        "SELECT p.net_first, p.net_last, p.subnet, COALESCE(n.name, p.network_name) "
        "FROM ipam_pools p LEFT JOIN networks n ON n.id = p.network_id WHERE p.version = ? ORDER BY p.net_first",
        (version,),
    )
    return [rules.Clash(_int(first), _int(last), f"{subnet} of network '{name}'") for first, last, subnet, name in rows]


def _insert_pool(tx: Txn, network: Network, subnet: rules.IPNetwork, config: PoolConfig) -> None:
    ip_range = ipaddress.ip_network(config.ip_range) if config.ip_range else None
    range_first, range_last = rules.dynamic_range(subnet, ip_range)
    reserved = rules.reserved_addresses(network.id, config)
    in_range = sum(1 for n, _ in reserved if range_first <= n <= range_last)
    (seq,) = tx.conn.execute(
        "SELECT COALESCE(MAX(seq) + 1, 0) FROM ipam_pools WHERE network_id = ?", (network.id,)
    ).fetchone()
    cursor = tx.conn.execute(
        "INSERT INTO ipam_pools (network_id, network_name, seq, version, subnet, prefixlen, net_first, net_last, "
        "range_first, range_last, range_used, reserved_in_range, config) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            network.id,
            network.name,
            seq,
            subnet.version,
            str(subnet),
            subnet.prefixlen,
            _blob(int(subnet.network_address)),
            _blob(int(subnet.broadcast_address)),
            _blob(range_first),
            _blob(range_last),
            in_range,
            in_range,
            json.dumps(asdict(config), sort_keys=True),
        ),
    )
    tx.conn.executemany(
        "INSERT INTO ipam_addresses (pool_id, addr, owner) VALUES (?, ?, ?)",
        [(cursor.lastrowid, _blob(n), owner) for n, owner in reserved],
    )


# ---------------------------------------------------------------------------------------------------
# Addresses
# ---------------------------------------------------------------------------------------------------


@dataclass
class _Pool:
    """One ipam_pools row as allocation needs it."""

    id: int
    subnet: str
    version: int
    prefixlen: int
    net_first: int
    net_last: int
    range_first: int
    range_last: int
    cursor: int | None
    range_used: int
    reserved_in_range: int

    @property
    def range_size(self) -> int:
        return self.range_last - self.range_first + 1

    @property
    def capacity(self) -> int:
        """Addresses dynamic allocation can hand out: the range minus gateway/aux inside it."""
        return self.range_size - self.reserved_in_range

    @property
    def in_use(self) -> int:
        return self.range_used - self.reserved_in_range

    def contains(self, n: int) -> bool:
        return self.net_first <= n <= self.net_last

    def in_range(self, n: int) -> bool:
        return self.range_first <= n <= self.range_last

    def format(self, n: int) -> str:
        return rules.format_address(n, self.version, self.prefixlen)


def allocate_address(tx: Txn, network: Network, version: int, owner: str, address: str = "") -> str:
    """Give `owner` (an endpoint id) one address of family `version` in `network`: "ip/prefixlen".

    `address` given: that one, if it is in one of the network's subnets and free. Otherwise the next
    free address after the pool's cursor (round robin), trying the network's subnets in order.
    """
    rules.check_version(version)
    rules.check_owner(network, owner)
    pools = _pools_of(tx, network, version)
    _refuse_second_address(tx, network, version, owner)
    if address:
        return _allocate_static(tx, network, pools, version, owner, address)
    for pool in pools:
        if pool.range_used >= pool.range_size:
            continue  # exhausted, known from the counter without touching the addresses
        n = _next_free(tx, pool)
        _insert_address(tx, pool, n, owner, move_cursor=True)
        return pool.format(n)
    raise rules.pool_exhausted(network, [p.subnet for p in pools], sum(p.in_use for p in pools),
                         sum(p.capacity for p in pools))


def release_addresses(tx: Txn, owner: str) -> list[str]:
    """Free every address `owner` holds, in any network. Idempotent; returns what was freed."""
    freed = []
    for pool, n in _held_by(tx, owner):
        tx.conn.execute("DELETE FROM ipam_addresses WHERE pool_id = ? AND addr = ?", (pool.id, _blob(n)))
        _count(tx, pool, n, owner, -1)
        freed.append(pool.format(n))
    return freed


def addresses_of(tx: ReadTxn, owner: str) -> list[str]:
    """Addresses `owner` holds, as "ip/prefixlen"."""
    return [pool.format(n) for pool, n in _held_by(tx, owner)]


def allocations(tx: ReadTxn, network_id: str | None = None) -> list[tuple[str, str, str]]:
    """(network_id, "ip/prefixlen", owner) for every allocated address, gateway and aux included."""
    query = (
        "SELECT p.network_id, p.version, p.prefixlen, a.addr, a.owner FROM ipam_pools p "
        "JOIN ipam_addresses a ON a.pool_id = p.id"
    )
    args: tuple[Any, ...] = ()
    if network_id is not None:
        query += " WHERE p.network_id = ?"
        args = (network_id,)
    rows = tx.conn.execute(query + " ORDER BY p.network_id, p.seq, a.addr", args)
    return [(nid, rules.format_address(_int(addr), v, plen), owner) for nid, v, plen, addr, owner in rows]


_POOL_COLUMNS = (
    "p.id, p.subnet, p.version, p.prefixlen, p.net_first, p.net_last, p.range_first, p.range_last, "
    "p.cursor, p.range_used, p.reserved_in_range"
)


def _pool_from_row(row: tuple[Any, ...]) -> _Pool:
    pid, subnet, version, prefixlen, nf, nl, rf, rl, cursor, used, reserved = row
    return _Pool(pid, subnet, version, prefixlen, _int(nf), _int(nl), _int(rf), _int(rl),
                 _int(cursor) if cursor is not None else None, used, reserved)


def _pools_of(tx: Txn, network: Network, version: int) -> list[_Pool]:
    rows = tx.conn.execute(
        f"SELECT {_POOL_COLUMNS} FROM ipam_pools p WHERE p.network_id = ? AND p.version = ? ORDER BY p.seq",
        (network.id, version),
    ).fetchall()
    if not rows:
        raise rules.no_subnet_of_family(network, version)
    return [_pool_from_row(r) for r in rows]


def _held_by(tx: ReadTxn, owner: str) -> list[tuple[_Pool, int]]:
    rows = tx.conn.execute(
        f"SELECT {_POOL_COLUMNS}, a.addr FROM ipam_addresses a JOIN ipam_pools p ON p.id = a.pool_id "
        f"WHERE a.owner = ? ORDER BY p.network_id, p.seq",
        (owner,),
    )
    return [(_pool_from_row(r[:-1]), _int(r[-1])) for r in rows]


def _refuse_second_address(tx: Txn, network: Network, version: int, owner: str) -> None:
    """An endpoint holds at most one address per family and network (model.Endpoint.addresses)."""
    row = tx.conn.execute(
        "SELECT p.version, p.prefixlen, a.addr FROM ipam_addresses a JOIN ipam_pools p ON p.id = a.pool_id "
        "WHERE a.owner = ? AND p.network_id = ? AND p.version = ? LIMIT 1",
        (owner, network.id, version),
    ).fetchone()
    if row:
        held = rules.format_address(_int(row[2]), row[0], row[1])
        raise AlreadyExists(
            f"{rules.describe_owner(owner)} already holds address {held} in network '{network.name}'; "
            f"release it before asking for another"
        )


def _allocate_static(tx: Txn, network: Network, pools: list[_Pool], version: int, owner: str, text: str) -> str:
    address = rules.parse_static_address(network, version, text)
    pool = rules.static_pool(network, address, pools)
    n = int(address)
    holder = tx.conn.execute(
        "SELECT owner FROM ipam_addresses WHERE pool_id = ? AND addr = ?", (pool.id, _blob(n))
    ).fetchone()
    if holder:
        raise rules.address_taken(network, address, holder[0])
    _insert_address(tx, pool, n, owner, move_cursor=False)
    return pool.format(n)


def _next_free(tx: Txn, pool: _Pool) -> int:
    """The first free address after the cursor, wrapping around once. Only called when the counter
    says one exists, so a miss means the counters and the rows disagree."""
    start = pool.range_first
    if pool.cursor is not None and pool.range_first <= pool.cursor < pool.range_last:
        start = pool.cursor + 1
    n = _first_gap(tx, pool.id, start, pool.range_last)
    if n is None and start > pool.range_first:
        n = _first_gap(tx, pool.id, pool.range_first, start - 1)
    if n is None:
        raise StoreError(
            f"IPAM counters of subnet {pool.subnet} disagree with its addresses (says {pool.range_used} of "
            f"{pool.range_size} used, finds none free); run `netctl doctor`"
        )
    return n


def _first_gap(tx: Txn, pool_id: int, first: int, last: int) -> int | None:
    """Lowest address in [first, last] with no row: walks the primary key from `first` and stops at
    the first hole, so it reads only the run of taken addresses right after `first`."""
    expected = first
    rows = tx.conn.execute(
        "SELECT addr FROM ipam_addresses WHERE pool_id = ? AND addr >= ? AND addr <= ? ORDER BY addr",
        (pool_id, _blob(first), _blob(last)),
    )
    try:
        for (addr,) in rows:
            if _int(addr) != expected:
                break
            expected += 1
    finally:
        rows.close()  # don't leave a half-read statement open while we insert into the same table
    return expected if expected <= last else None


def _insert_address(tx: Txn, pool: _Pool, n: int, owner: str, *, move_cursor: bool) -> None:
    tx.conn.execute("INSERT INTO ipam_addresses (pool_id, addr, owner) VALUES (?, ?, ?)", (pool.id, _blob(n), owner))
    _count(tx, pool, n, owner, +1)
    if move_cursor:
        tx.conn.execute("UPDATE ipam_pools SET cursor = ? WHERE id = ?", (_blob(n), pool.id))


def _count(tx: Txn, pool: _Pool, n: int, owner: str, delta: int) -> None:
    """Keep the pool's counters in step with one address row added (+1) or removed (-1)."""
    in_range = delta if pool.in_range(n) else 0
    reserved = rules.is_reserved_owner(owner)
    tx.conn.execute(
        "UPDATE ipam_pools SET allocated = allocated + ?, range_used = range_used + ?, "
        "reserved_in_range = reserved_in_range + ? WHERE id = ?",
        (0 if reserved else delta, in_range, in_range if reserved else 0, pool.id),
    )


def _blob(n: int) -> bytes:
    return n.to_bytes(16, "big")


def _int(b: bytes) -> int:
    return int.from_bytes(b, "big")
