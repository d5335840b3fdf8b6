"""The global IPAM and the VNIs: three allocators over one etcd transaction (VNIs, subnets, addresses).

Each allocation *creates* its key, so two hosts can never both take the same VNI, subnet or address:
the loser's commit fails and `atomic` runs it again. The rules and refusals are the local IPAM's
(libnetwork.ipam's public API), so a global network is refused with the same words as a local one.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from libnetwork import ipam
from libnetwork.errors import AlreadyExists, InvalidArgument, PoolExhausted
from libnetwork.model import Network, PoolConfig
from libnetwork.store.etcd.keys import Keys

if TYPE_CHECKING:
    from libnetwork.store.etcd.reads import EtcdReadTxn
    from libnetwork.store.etcd.transactions import EtcdTxn

VNI_FIRST, VNI_LAST = 256, (1 << 24) - 1  # Docker's overlay range (drivers/overlay/overlay.go)

# Global networks get their default subnets from ranges the local IPAM never uses (Docker swarm's
# default address pool is 10.0.0.0/8 in /24s), so a global network does not collide with the local
# bridge networks every host creates from 172.17.0.0/16 onwards.
GLOBAL_DEFAULT_POOLS = {4: [("10.0.0.0/8", 24)], 6: [("fd4e:6574:6375::/48", 64)]}


# ---------------------------------------------------------------------------------------------------
# VNIs
# ---------------------------------------------------------------------------------------------------


def vni_owner(tx: EtcdReadTxn, vni: int) -> str:
    kv = tx._get(Keys.vni(vni))
    return kv.value["network_id"] if kv is not None else ""


def allocate_vni(tx: EtcdTxn, network: Network, requested: int = 0) -> int:
    """A VXLAN network identifier for `network`: `requested` if free, else the lowest free one."""
    if requested:
        if not VNI_FIRST <= requested <= VNI_LAST:
            raise InvalidArgument(
                f"VNI {requested} of network '{network.name}' is out of range ({VNI_FIRST}-{VNI_LAST})"
            )
        _claim_vni(tx, network, requested)
        return requested
    taken = {int(kv.key[len(Keys.VNIS):]) for kv in tx._list(Keys.VNIS, fence=False, keys_only=True)}
    vni, skip = VNI_FIRST, tx._spread()
    while vni in taken or skip:
        if vni not in taken:
            skip -= 1
        vni += 1
    if vni > VNI_LAST:
        raise PoolExhausted(f"no free VNI left for network '{network.name}' ({VNI_FIRST}-{VNI_LAST} all taken)")
    _claim_vni(tx, network, vni)
    return vni


def _claim_vni(tx: EtcdTxn, network: Network, vni: int) -> None:
    holder = tx._get(Keys.vni(vni))
    if holder is not None:
        if holder.value["network_id"] == network.id:
            return
        raise AlreadyExists(
            f"VNI {vni} is already used by network '{holder.value['network_name']}'; "
            "choose another VNI or leave it out"
        )
    tx._create(Keys.vni(vni), {"network_id": network.id, "network_name": network.name})


def release_vni(tx: EtcdTxn, vni: int, network_id: str) -> None:
    holder = tx._get(Keys.vni(vni))
    if holder is not None and holder.value["network_id"] == network_id:
        tx._delete(Keys.vni(vni))


# ---------------------------------------------------------------------------------------------------
# Subnets
# ---------------------------------------------------------------------------------------------------


def allocate_pool(tx: EtcdTxn, network: Network, requested: PoolConfig | None, version: int,
                  host_routes: list[tuple[str, str]]) -> PoolConfig:
    """One subnet of family `version` for `network`, overlapping no other global network nor a route
    of this host; reserves its gateway and aux addresses. Same rules and messages as ipam.allocate_pool."""
    ipam.check_version(version)
    clashes = _subnet_clashes(tx, version) + ipam.route_clashes(host_routes, version)
    config = ipam.plan_pool(network, requested, version, clashes, _pick_global_subnet)
    subnet = ipaddress.ip_network(config.subnet)
    tx._create(Keys.subnet(version, int(subnet.network_address), subnet.prefixlen),
               {"network_id": network.id, "network_name": network.name, "subnet": str(subnet)})
    for n, owner in ipam.reserved_addresses(network.id, config):
        tx._create(Keys.address(network.id, version, n),
                   {"owner": owner, "address": ipam.format_address(n, version, subnet.prefixlen)})
    return config


def _subnet_clashes(tx: EtcdTxn, version: int) -> list[ipam.Clash]:
    # Fenced: a concurrent new subnet fails our commit.
    return [ipam.Clash.of_network(ipaddress.ip_network(kv.value["subnet"]), kv.value["network_name"])
            for kv in tx._list(Keys.subnets(version))]


def _pick_global_subnet(version: int, clashes: list[ipam.Clash]) -> ipam.IPNetwork:
    found = ipam.first_free_subnet(GLOBAL_DEFAULT_POOLS[version], clashes)
    if found is not None:
        return found
    bases = ", ".join(base for base, _ in GLOBAL_DEFAULT_POOLS[version])
    raise PoolExhausted(
        f"no free default IPv{version} subnet for a global network: all of {bases} overlap other global "
        "networks or host routes; pass --subnet"
    )


def release_pools(tx: EtcdTxn, network_id: str) -> None:
    """Free every subnet and address of a network. Idempotent."""
    for version in (4, 6):
        for kv in tx._list(Keys.subnets(version), fence=False):
            if kv.value["network_id"] == network_id:
                tx._delete(kv.key)
    tx._delete_prefix(Keys.addresses_of(network_id))
    tx._delete_prefix(Keys.cursors_of(network_id))


# ---------------------------------------------------------------------------------------------------
# Addresses
# ---------------------------------------------------------------------------------------------------


class _GlobalPool(ipam.PoolRange):
    """One subnet of a global network, as address allocation needs it (derived from its PoolConfig):
    counts and picks among the addresses `held` in it, read from etcd ({address: record})."""

    def used(self, held: dict[int, Any]) -> int:
        return sum(1 for n, v in held.items() if self.in_range(n) and not ipam.is_reserved_owner(v["owner"]))

    def free(self, held: dict[int, Any]) -> int:
        """Addresses left in the dynamic range."""
        return self.last - self.first + 1 - sum(1 for n in held if self.in_range(n))

    def next_free(self, held: dict[int, Any], cursor: int | None, skip: int = 0) -> int | None:
        """First free address after the cursor (passing over `skip` free ones), wrapping around once."""
        free = self.free(held)
        if free <= 0:
            return None
        skip %= free
        start = cursor + 1 if cursor is not None and self.first <= cursor < self.last else self.first
        for lo, hi in ((start, self.last), (self.first, start - 1)):
            n = lo
            while n <= hi:
                if n not in held:
                    if not skip:
                        return n
                    skip -= 1
                n += 1
        return None


def _pools(network: Network, version: int) -> list[_GlobalPool]:
    configs = network.pools_of(version)
    if not configs:
        raise ipam.no_subnet_of_family(network, version)
    return [_GlobalPool.of(c) for c in configs]


def _held(tx: EtcdReadTxn, network_id: str, version: int) -> dict[int, Any]:
    """Every address held in a network's family, {address: {"owner", "address"}}. Unfenced: a concurrent
    allocation of the same address fails our commit through its create compare; one of a different
    address should not make us retry."""
    return {int(kv.key.rsplit("/", 1)[1], 16): kv.value
            for kv in tx._list(Keys.addresses_in(network_id, version), fence=False)}


def allocate_address(tx: EtcdTxn, network: Network, version: int, owner: str, address: str = "") -> str:
    """Give `owner` (an endpoint id) one address of `network`: "ip/prefixlen", unique across hosts.

    Round robin from a per-network cursor, like the local IPAM, so an address released on one host
    is not handed out again at once (remote FDB/ARP entries for it may still be in flight)."""
    ipam.check_version(version)
    ipam.check_owner(network, owner)
    pools = _pools(network, version)
    held = _held(tx, network.id, version)
    for value in held.values():
        if value["owner"] == owner:
            raise AlreadyExists(
                f"endpoint {owner[:12]} already holds address {value['address']} in network '{network.name}'; "
                "release it before asking for another"
            )
    if address:
        return _allocate_static(tx, network, pools, version, owner, address, held)
    cursor_kv = tx._get(Keys.cursor(network.id, version), fence=False)
    cursor = int(cursor_kv.value, 16) if cursor_kv is not None else None
    for pool in pools:
        n = pool.next_free(held, cursor, skip=tx._spread())
        if n is None:
            continue
        _take_address(tx, network.id, pool, n, owner)
        tx._put(Keys.cursor(network.id, version), f"{n:x}")  # a hint: the address's CAS is what counts
        return pool.format(n)
    in_use = sum(pool.used(held) for pool in pools)
    capacity = sum(pool.free(held) + pool.used(held) for pool in pools)
    raise ipam.pool_exhausted(network, [p.subnet for p in pools], in_use, capacity)


def _allocate_static(tx: EtcdTxn, network: Network, pools: list[_GlobalPool], version: int, owner: str, text: str,
                     held: dict[int, Any]) -> str:
    ip = ipam.parse_static_address(network, version, text)
    pool = ipam.static_pool(network, ip, pools)
    n = int(ip)
    if n in held:
        raise ipam.address_taken(network, ip, held[n]["owner"])
    _take_address(tx, network.id, pool, n, owner)
    return pool.format(n)


def _take_address(tx: EtcdTxn, network_id: str, pool: _GlobalPool, n: int, owner: str) -> None:
    tx._create(Keys.address(network_id, pool.network.version, n), {"owner": owner, "address": pool.format(n)})


def release_addresses(tx: EtcdTxn, owner: str, network_id: str | None = None) -> list[str]:
    """Free every address `owner` holds (in `network_id`, or anywhere). Idempotent."""
    prefix = Keys.addresses_of(network_id) if network_id is not None else Keys.ADDRESSES
    freed = []
    for kv in tx._list(prefix, fence=False):
        if kv.value["owner"] == owner:
            tx._delete(kv.key)
            freed.append(kv.value["address"])
    return freed


def allocations(tx: EtcdReadTxn, network_id: str | None = None) -> list[tuple[str, str, str]]:
    """(network_id, "ip/prefixlen", owner) for every address held, gateways and aux included."""
    prefix = Keys.addresses_of(network_id) if network_id is not None else Keys.ADDRESSES
    found = []
    for kv in tx._list(prefix):
        nid = kv.key[len(Keys.ADDRESSES):].split("/", 1)[0]
        found.append((nid, kv.value["address"], kv.value["owner"]))
    return found


def pool_usage(tx: EtcdReadTxn, network: Network) -> list[ipam.PoolUsage]:
    """How full each subnet of a global network is (CNI STATUS), like ipam.pool_usage."""
    usage = []
    for version in (4, 6):
        if not network.pools_of(version):
            continue
        held = _held(tx, network.id, version)
        for pool in _pools(network, version):
            mine = {n: v for n, v in held.items() if pool.contains(n)}
            allocated = sum(1 for v in mine.values() if not ipam.is_reserved_owner(v["owner"]))
            reserved_in_range = sum(1 for n, v in mine.items()
                                    if pool.in_range(n) and ipam.is_reserved_owner(v["owner"]))
            capacity = pool.last - pool.first + 1 - reserved_in_range
            usage.append(ipam.PoolUsage(network.id, pool.subnet, allocated, pool.used(mine), capacity))
    return usage
