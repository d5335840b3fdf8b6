"""IP address management: subnets (pools) for networks, addresses for endpoints.

Docker's default IPAM, but where its users complain we do better: a default subnet skips anything
that overlaps a host route as well as another network, and every refusal names what it clashes with.

This package is the IPAM's public API; nothing outside it reads or writes its tables.

The local IPAM (a host's own networks, in its SQLite store; ipam/local.py). Each call takes the open
store transaction: `with store.transaction() as tx: ipam.allocate_pool(tx, ...)`.

    allocate_pool(tx, network, requested, version, host_routes) -> PoolConfig
    set_dynamic_range(tx, network, subnet, first, last)          limit a new pool to [first, last]
    release_pools(tx, network_id)                                 the pools and every address in them
    allocate_address(tx, network, version, owner, address="") -> "ip/prefixlen"
    release_addresses(tx, owner) -> ["ip/prefixlen", ...]
    addresses_of(tx, owner), allocations(tx, network_id=None), pool_usage(tx, network_id)

The global IPAM (networks shared by hosts) lives in etcd (libnetwork/store/etcd/allocators.py) and
answers the same questions as methods of an etcd transaction. Both follow the same rules, which are
public here for that reason (ipam/rules.py): `plan_pool` (what a pool request comes to), `Clash`,
`route_clashes`, `first_free_subnet`, `PoolRange` and `dynamic_range` (where dynamic allocation may
hand out addresses), `parse_static_address` / `static_pool` (a request for one given address), the
owners of reserved addresses (`gateway_owner`, `aux_owner`, `is_reserved_owner`, `describe_owner`), and
the refusals both word alike (`address_taken`, `pool_exhausted`).
"""

from libnetwork.ipam.local import (
    PoolUsage,
    addresses_of,
    allocate_address,
    allocate_pool,
    allocations,
    pool_usage,
    release_addresses,
    release_pools,
    set_dynamic_range,
)
from libnetwork.ipam.rules import (
    AUX_OWNER_PREFIX,
    DEFAULT_V4_POOLS,
    DEFAULT_V6_POOLS,
    GATEWAY_OWNER_PREFIX,
    MAX_PREFIXLEN,
    Clash,
    IPAddress,
    IPNetwork,
    PoolRange,
    address_taken,
    aux_owner,
    check_owner,
    check_version,
    describe_owner,
    dynamic_range,
    first_free_subnet,
    format_address,
    gateway_owner,
    is_reserved_owner,
    no_subnet_of_family,
    parse_static_address,
    plan_pool,
    pool_exhausted,
    reserved_addresses,
    route_clashes,
    special_address_kind,
    static_pool,
)

__all__ = [
    "AUX_OWNER_PREFIX",
    "DEFAULT_V4_POOLS",
    "DEFAULT_V6_POOLS",
    "GATEWAY_OWNER_PREFIX",
    "MAX_PREFIXLEN",
    "Clash",
    "IPAddress",
    "IPNetwork",
    "PoolRange",
    "PoolUsage",
    "address_taken",
    "addresses_of",
    "allocate_address",
    "allocate_pool",
    "allocations",
    "aux_owner",
    "check_owner",
    "check_version",
    "describe_owner",
    "dynamic_range",
    "first_free_subnet",
    "format_address",
    "gateway_owner",
    "is_reserved_owner",
    "no_subnet_of_family",
    "parse_static_address",
    "plan_pool",
    "pool_exhausted",
    "pool_usage",
    "release_addresses",
    "release_pools",
    "reserved_addresses",
    "route_clashes",
    "set_dynamic_range",
    "special_address_kind",
    "static_pool",
]
