"""IP address management: subnets (pools) for networks, addresses for endpoints.

Docker's default IPAM, but where its users complain we do better: a default subnet skips anything
that overlaps a host route as well as another network, and every refusal names what it clashes with.

Every function runs inside a store transaction (`with store.transaction() as tx`) and uses `tx.conn`;
atomicity and mutual exclusion between processes come from that transaction (BEGIN IMMEDIATE), not
from locks here. Addresses are integers, stored as 16-byte big-endian BLOBs (see store/sqlite.py for
the tables). Allocation is round robin from a per-pool cursor, like CNI host-local's
last_reserved_ip, so a released address is not handed out again at once; a per-pool counter answers
"exhausted?" without counting rows.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Iterable

from libnetwork.errors import AlreadyExists, InvalidArgument, Overlap, PoolExhausted, StoreError
from libnetwork.model import Network, PoolConfig

if TYPE_CHECKING:
    from libnetwork.store.sqlite import ReadTxn, Txn

DEFAULT_V4_POOLS = [
    ("172.17.0.0/16", 16),
    ("172.18.0.0/16", 16),
    ("172.19.0.0/16", 16),
    ("172.20.0.0/14", 16),
    ("172.24.0.0/14", 16),
    ("172.28.0.0/14", 16),
    ("192.168.0.0/16", 20),
]
DEFAULT_V6_POOLS = [("fd4e:6574:6374::/48", 64)]  # ULA "Nets" "ct"; /64s carved from it

# Longest prefix that still holds a gateway and one endpoint.
MAX_PREFIXLEN = {4: 30, 6: 126}
SHORTEST_WORKING_SUBNET = {4: "/30", 6: "/126"}

GATEWAY_OWNER_PREFIX = "gateway:"
AUX_OWNER_PREFIX = "aux:"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NETWORK_CLASS = {4: ipaddress.IPv4Network, 6: ipaddress.IPv6Network}
_ADDRESS_CLASS = {4: ipaddress.IPv4Address, 6: ipaddress.IPv6Address}


def gateway_owner(network_id: str) -> str:
    return f"{GATEWAY_OWNER_PREFIX}{network_id}"


def aux_owner(name: str, network_id: str) -> str:
    return f"{AUX_OWNER_PREFIX}{name}:{network_id}"


def is_reserved_owner(owner: str) -> bool:
    """Gateway and aux rows are reservations of the network, not endpoint addresses."""
    return owner.startswith((GATEWAY_OWNER_PREFIX, AUX_OWNER_PREFIX))


@dataclass
class PoolUsage:
    """How full one pool is, for `network inspect` and for tests."""

    network_id: str
    subnet: str
    allocated: int  # endpoint addresses anywhere in the subnet (gateway/aux not counted)
    in_use: int  # endpoint addresses inside the dynamic range
    capacity: int  # addresses the dynamic range can hand out (gateway/aux excluded)


# ---------------------------------------------------------------------------------------------------
# Pools
# ---------------------------------------------------------------------------------------------------


def allocate_pool(
    tx: "Txn",
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
    _check_version(version)
    clashes = _existing_pools(tx, version) + _route_clashes(host_routes, version)
    if requested is None or not requested.subnet:
        _refuse_options_without_subnet(network, requested)
        subnet = _pick_default_subnet(version, clashes)
        config = PoolConfig(subnet=str(subnet), gateway=str(subnet.network_address + 1))
    else:
        subnet = _parse_cidr(network, "subnet", requested.subnet, version)
        _refuse_unusable_subnet(network, subnet)
        _refuse_overlap(network, subnet, clashes)
        config = _complete_config(network, subnet, requested)
    _insert_pool(tx, network, subnet, config)
    return config


def release_pools(tx: "Txn", network_id: str) -> None:
    """Free the pools of a network and every address in them. Idempotent."""
    tx.conn.execute(
        "DELETE FROM ipam_addresses WHERE pool_id IN (SELECT id FROM ipam_pools WHERE network_id = ?)",
        (network_id,),
    )
    tx.conn.execute("DELETE FROM ipam_pools WHERE network_id = ?", (network_id,))


def pool_usage(tx: "ReadTxn", network_id: str) -> list[PoolUsage]:
    rows = tx.conn.execute(
        f"SELECT {_POOL_COLUMNS}, p.allocated FROM ipam_pools p WHERE p.network_id = ? ORDER BY p.seq",
        (network_id,),
    )
    usage = []
    for row in rows:
        pool = _pool_from_row(row[:-1])
        usage.append(PoolUsage(network_id, pool.subnet, row[-1], pool.in_use, pool.capacity))
    return usage


@dataclass(frozen=True)
class _Clash:
    """An address range a new subnet must not overlap, with the words that name it."""

    first: int
    last: int
    text: str  # "10.1.2.0/24 of network 'blue'" or "host route 192.168.1.0/24 dev eth0"


def _existing_pools(tx: "Txn", version: int) -> list[_Clash]:
    rows = tx.conn.execute(
        "SELECT p.net_first, p.net_last, p.subnet, COALESCE(n.name, p.network_name) "
        "FROM ipam_pools p LEFT JOIN networks n ON n.id = p.network_id WHERE p.version = ? ORDER BY p.net_first",
        (version,),
    )
    return [_Clash(_int(first), _int(last), f"{subnet} of network '{name}'") for first, last, subnet, name in rows]


def _route_clashes(host_routes: Iterable[tuple[str, str]], version: int) -> list[_Clash]:
    clashes = []
    for cidr, description in host_routes:
        try:
            route = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise InvalidArgument(f"host route {cidr!r} ({description}) is not a CIDR") from None
        if route.version != version or route.prefixlen == 0:
            continue  # a default route covers everything and is never a clash
        # Callers describe a route as "route 10.0.0.0/8 dev eth0"; accept "host route ..." as well.
        text = description if description.startswith("host ") else f"host {description or f'route {route}'}"
        clashes.append(_Clash(int(route.network_address), int(route.broadcast_address), text))
    return clashes


def _first_clash(first: int, last: int, clashes: list[_Clash]) -> _Clash | None:
    for clash in clashes:
        if clash.first <= last and first <= clash.last:
            return clash
    return None


def _pick_default_subnet(version: int, clashes: list[_Clash]) -> IPNetwork:
    defaults = DEFAULT_V4_POOLS if version == 4 else DEFAULT_V6_POOLS
    for base, size in defaults:
        found = _first_free_block(ipaddress.ip_network(base), size, clashes)
        if found is not None:
            return found
    bases = ", ".join(base for base, _ in defaults)
    raise PoolExhausted(
        f"no free default IPv{version} subnet: all of {bases} overlap existing networks or host routes; "
        f"pass --subnet"
    )


def _first_free_block(base: IPNetwork, prefixlen: int, clashes: list[_Clash]) -> IPNetwork | None:
    """First /prefixlen block of `base` that touches no clash; jumps past clashes, so a /48 carved
    into 65536 /64s costs one step per clash, not per block."""
    block = 1 << (base.max_prefixlen - prefixlen)
    candidate = int(base.network_address)
    end = int(base.broadcast_address)
    while candidate + block - 1 <= end:
        clash = _first_clash(candidate, candidate + block - 1, clashes)
        if clash is None:
            return _NETWORK_CLASS[base.version]((candidate, prefixlen))
        candidate = (clash.last // block + 1) * block  # first aligned block after the clash
    return None


def _refuse_options_without_subnet(network: Network, requested: PoolConfig | None) -> None:
    if requested is None:
        return
    for label, value in (("gateway", requested.gateway), ("ip range", requested.ip_range)):
        if value:
            raise InvalidArgument(
                f"{label} {value} of network '{network.name}' needs an explicit subnet; pass --subnet too"
            )
    if requested.aux_addresses:
        raise InvalidArgument(
            f"auxiliary addresses of network '{network.name}' need an explicit subnet; pass --subnet too"
        )


def _parse_cidr(network: Network, label: str, text: str, version: int) -> IPNetwork:
    """A canonical network CIDR of the right family, or InvalidArgument saying what was meant."""
    if "/" not in text:
        raise InvalidArgument(
            f"{label} '{text}' of network '{network.name}' has no prefix length; "
            f"write it in CIDR form, e.g. 10.1.0.0/16 or fd00:1::/64"
        )
    try:
        cidr = ipaddress.ip_network(text, strict=True)
    except ValueError:
        try:
            meant = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise InvalidArgument(
                f"{label} '{text}' of network '{network.name}' is not a valid CIDR; "
                f"write it like 10.1.0.0/16 or fd00:1::/64"
            ) from None
        raise InvalidArgument(
            f"{label} {text} of network '{network.name}' is not a network address (host bits are set); "
            f"did you mean {meant}?"
        ) from None
    if cidr.version != version:
        raise InvalidArgument(
            f"{label} {cidr} of network '{network.name}' is IPv{cidr.version} where an IPv{version} one was expected"
        )
    return cidr


def _refuse_unusable_subnet(network: Network, subnet: IPNetwork) -> None:
    if subnet.prefixlen > MAX_PREFIXLEN[subnet.version]:
        raise InvalidArgument(
            f"subnet {subnet} of network '{network.name}' is too small: IPv{subnet.version} subnets need a "
            f"prefix of {SHORTEST_WORKING_SUBNET[subnet.version]} or shorter to hold a gateway and an endpoint"
        )
    for kind, bad in (
        ("multicast", subnet.is_multicast),
        ("loopback", subnet.is_loopback),
        ("unspecified-address", subnet.network_address.is_unspecified),
    ):
        if bad:
            raise InvalidArgument(
                f"subnet {subnet} of network '{network.name}' is a {kind} range and cannot hold endpoint "
                f"addresses; choose a unicast subnet"
            )


def _refuse_overlap(network: Network, subnet: IPNetwork, clashes: list[_Clash]) -> None:
    clash = _first_clash(int(subnet.network_address), int(subnet.broadcast_address), clashes)
    if clash is not None:
        raise Overlap(f"subnet {subnet} overlaps {clash.text}; choose another subnet for network '{network.name}'")


def _complete_config(network: Network, subnet: IPNetwork, requested: PoolConfig) -> PoolConfig:
    """Validate gateway, ip range and aux addresses against `subnet`; fill the default gateway."""
    if requested.gateway:
        gateway = _parse_host_address(network, "gateway", requested.gateway, subnet)
    else:
        gateway = subnet.network_address + 1
    ip_range = ""
    if requested.ip_range:
        cidr = _parse_cidr(network, "ip range", requested.ip_range, subnet.version)
        if not cidr.subnet_of(subnet):  # type: ignore[arg-type]
            raise InvalidArgument(
                f"ip range {cidr} of network '{network.name}' is outside its subnet {subnet}; "
                f"pick a range inside it"
            )
        first, last = _dynamic_range(subnet, cidr)
        if first > last:
            raise InvalidArgument(
                f"ip range {cidr} of network '{network.name}' holds no host address of subnet {subnet}; "
                f"pick a larger range"
            )
        ip_range = str(cidr)
    aux = _validated_aux(network, subnet, gateway, requested.aux_addresses)
    return PoolConfig(subnet=str(subnet), gateway=str(gateway), ip_range=ip_range, aux_addresses=aux)


def _validated_aux(
    network: Network, subnet: IPNetwork, gateway: IPAddress, aux_addresses: dict[str, str]
) -> dict[str, str]:
    seen: dict[IPAddress, str] = {gateway: "the gateway"}
    aux = {}
    for name, text in aux_addresses.items():
        if not name:
            raise InvalidArgument(f"auxiliary address {text} of network '{network.name}' has no name; write NAME=ADDRESS")
        address = _parse_host_address(network, f"auxiliary address '{name}'", text, subnet)
        if address in seen:
            raise InvalidArgument(
                f"auxiliary address '{name}'={address} of network '{network.name}' is already {seen[address]}; "
                f"give each auxiliary address its own IP"
            )
        seen[address] = f"auxiliary address '{name}'"
        aux[name] = str(address)
    return aux


def _parse_host_address(network: Network, label: str, text: str, subnet: IPNetwork) -> IPAddress:
    """A bare address inside `subnet` that is neither its network nor (IPv4) its broadcast address."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidArgument(f"{label} '{text}' of network '{network.name}' is not an IP address") from None
    if address.version != subnet.version or address not in subnet:
        raise InvalidArgument(
            f"{label} {address} of network '{network.name}' is outside its subnet {subnet}; pick an address inside it"
        )
    special = _special_address_kind(int(address), subnet)
    if special:
        raise InvalidArgument(
            f"{label} {address} of network '{network.name}' is the {special} address of subnet {subnet}; "
            f"pick a host address such as {subnet.network_address + 1}"
        )
    return address


def _special_address_kind(n: int, subnet: IPNetwork) -> str:
    if n == int(subnet.network_address):
        return "network"
    if subnet.version == 4 and n == int(subnet.broadcast_address):
        return "broadcast"
    return ""


def _dynamic_range(subnet: IPNetwork, ip_range: IPNetwork | None) -> tuple[int, int]:
    """[first, last] that dynamic allocation may use: the host addresses of subnet ∩ ip_range."""
    first = int(subnet.network_address) + 1
    last = int(subnet.broadcast_address) - (1 if subnet.version == 4 else 0)
    if ip_range is not None:
        first = max(first, int(ip_range.network_address))
        last = min(last, int(ip_range.broadcast_address))
    return first, last


def _insert_pool(tx: "Txn", network: Network, subnet: IPNetwork, config: PoolConfig) -> None:
    ip_range = ipaddress.ip_network(config.ip_range) if config.ip_range else None
    range_first, range_last = _dynamic_range(subnet, ip_range)
    reserved = [(int(ipaddress.ip_address(config.gateway)), gateway_owner(network.id))]
    reserved += [(int(ipaddress.ip_address(a)), aux_owner(name, network.id)) for name, a in config.aux_addresses.items()]
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
        return f"{_ADDRESS_CLASS[self.version](n)}/{self.prefixlen}"


def allocate_address(tx: "Txn", network: Network, version: int, owner: str, address: str = "") -> str:
    """Give `owner` (an endpoint id) one address of family `version` in `network`: "ip/prefixlen".

    `address` given: that one, if it is in one of the network's subnets and free. Otherwise the next
    free address after the pool's cursor (round robin), trying the network's subnets in order.
    """
    _check_version(version)
    if not owner:
        raise InvalidArgument(f"an address of network '{network.name}' needs an owner (the endpoint id)")
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
    raise _exhausted(network, pools)


def release_addresses(tx: "Txn", owner: str) -> list[str]:
    """Free every address `owner` holds, in any network. Idempotent; returns what was freed."""
    freed = []
    for pool, n in _held_by(tx, owner):
        tx.conn.execute("DELETE FROM ipam_addresses WHERE pool_id = ? AND addr = ?", (pool.id, _blob(n)))
        _count(tx, pool, n, owner, -1)
        freed.append(pool.format(n))
    return freed


def addresses_of(tx: "ReadTxn", owner: str) -> list[str]:
    """Addresses `owner` holds, as "ip/prefixlen"."""
    return [pool.format(n) for pool, n in _held_by(tx, owner)]


def allocations(tx: "ReadTxn", network_id: str | None = None) -> list[tuple[str, str, str]]:
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
    return [(nid, f"{_ADDRESS_CLASS[v](_int(addr))}/{plen}", owner) for nid, v, plen, addr, owner in rows]


_POOL_COLUMNS = (
    "p.id, p.subnet, p.version, p.prefixlen, p.net_first, p.net_last, p.range_first, p.range_last, "
    "p.cursor, p.range_used, p.reserved_in_range"
)


def _pool_from_row(row: tuple[Any, ...]) -> _Pool:
    pid, subnet, version, prefixlen, nf, nl, rf, rl, cursor, used, reserved = row
    return _Pool(pid, subnet, version, prefixlen, _int(nf), _int(nl), _int(rf), _int(rl),
                 _int(cursor) if cursor is not None else None, used, reserved)


def _pools_of(tx: "Txn", network: Network, version: int) -> list[_Pool]:
    rows = tx.conn.execute(
        f"SELECT {_POOL_COLUMNS} FROM ipam_pools p WHERE p.network_id = ? AND p.version = ? ORDER BY p.seq",
        (network.id, version),
    ).fetchall()
    if not rows:
        hint = "create it with --ipv6" if version == 6 else "it was created without IPv4"
        raise InvalidArgument(f"network '{network.name}' has no IPv{version} subnet; {hint}")
    return [_pool_from_row(r) for r in rows]


def _held_by(tx: "ReadTxn", owner: str) -> list[tuple[_Pool, int]]:
    rows = tx.conn.execute(
        f"SELECT {_POOL_COLUMNS}, a.addr FROM ipam_addresses a JOIN ipam_pools p ON p.id = a.pool_id "
        f"WHERE a.owner = ? ORDER BY p.network_id, p.seq",
        (owner,),
    )
    return [(_pool_from_row(r[:-1]), _int(r[-1])) for r in rows]


def _refuse_second_address(tx: "Txn", network: Network, version: int, owner: str) -> None:
    """An endpoint holds at most one address per family and network (model.Endpoint.addresses)."""
    row = tx.conn.execute(
        "SELECT p.version, p.prefixlen, a.addr FROM ipam_addresses a JOIN ipam_pools p ON p.id = a.pool_id "
        "WHERE a.owner = ? AND p.network_id = ? AND p.version = ? LIMIT 1",
        (owner, network.id, version),
    ).fetchone()
    if row:
        held = _ADDRESS_CLASS[row[0]](_int(row[2]))
        raise AlreadyExists(
            f"{_describe_owner(owner)} already holds address {held}/{row[1]} in network '{network.name}'; "
            f"release it before asking for another"
        )


def _allocate_static(tx: "Txn", network: Network, pools: list[_Pool], version: int, owner: str, text: str) -> str:
    try:
        address = ipaddress.ip_interface(text).ip  # "10.1.0.5" or "10.1.0.5/16": the prefix is the subnet's
    except ValueError:
        raise InvalidArgument(f"address '{text}' for network '{network.name}' is not an IP address") from None
    if address.version != version:
        raise InvalidArgument(
            f"address {address} is IPv{address.version} where an IPv{version} address of network "
            f"'{network.name}' was asked for"
        )
    n = int(address)
    pool = next((p for p in pools if p.contains(n)), None)
    if pool is None:
        subnets = ", ".join(p.subnet for p in pools)
        raise InvalidArgument(f"address {address} is outside the subnets of network '{network.name}' ({subnets})")
    special = _special_address_kind(n, ipaddress.ip_network(pool.subnet))
    if special:
        raise InvalidArgument(
            f"address {address} is the {special} address of subnet {pool.subnet} of network '{network.name}'; "
            f"pick a host address"
        )
    holder = tx.conn.execute(
        "SELECT owner FROM ipam_addresses WHERE pool_id = ? AND addr = ?", (pool.id, _blob(n))
    ).fetchone()
    if holder:
        raise AlreadyExists(
            f"address {address} of network '{network.name}' is already in use by {_describe_owner(holder[0])}; "
            f"pick another address or remove that endpoint"
        )
    _insert_address(tx, pool, n, owner, move_cursor=False)
    return pool.format(n)


def _next_free(tx: "Txn", pool: _Pool) -> int:
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


def _first_gap(tx: "Txn", pool_id: int, first: int, last: int) -> int | None:
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


def _insert_address(tx: "Txn", pool: _Pool, n: int, owner: str, *, move_cursor: bool) -> None:
    tx.conn.execute("INSERT INTO ipam_addresses (pool_id, addr, owner) VALUES (?, ?, ?)", (pool.id, _blob(n), owner))
    _count(tx, pool, n, owner, +1)
    if move_cursor:
        tx.conn.execute("UPDATE ipam_pools SET cursor = ? WHERE id = ?", (_blob(n), pool.id))


def _count(tx: "Txn", pool: _Pool, n: int, owner: str, delta: int) -> None:
    """Keep the pool's counters in step with one address row added (+1) or removed (-1)."""
    in_range = delta if pool.in_range(n) else 0
    reserved = is_reserved_owner(owner)
    tx.conn.execute(
        "UPDATE ipam_pools SET allocated = allocated + ?, range_used = range_used + ?, "
        "reserved_in_range = reserved_in_range + ? WHERE id = ?",
        (0 if reserved else delta, in_range, in_range if reserved else 0, pool.id),
    )


def _exhausted(network: Network, pools: list[_Pool]) -> PoolExhausted:
    subnets = ", ".join(p.subnet for p in pools)
    in_use = sum(p.in_use for p in pools)
    capacity = sum(p.capacity for p in pools)
    return PoolExhausted(
        f"address pool of network '{network.name}' ({subnets}) is exhausted: {in_use} of {capacity} addresses "
        f"in use; remove endpoints or use a larger subnet"
    )


def _describe_owner(owner: str) -> str:
    if owner.startswith(GATEWAY_OWNER_PREFIX):
        return "the gateway"
    if owner.startswith(AUX_OWNER_PREFIX):
        name = owner[len(AUX_OWNER_PREFIX):].rsplit(":", 1)[0]
        return f"auxiliary address '{name}'"
    return f"endpoint {owner[:12]}"


def _check_version(version: int) -> None:
    if version not in (4, 6):
        raise InvalidArgument(f"IP version must be 4 or 6, not {version}")


def _blob(n: int) -> bytes:
    return n.to_bytes(16, "big")


def _int(b: bytes) -> int:
    return int.from_bytes(b, "big")
