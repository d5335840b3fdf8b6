"""The IPAM's rules, with no store: what a pool request comes to, which default subnet is free, where
dynamic allocation may hand out addresses, and how every refusal is worded.

Both allocators use these and only these: the local one over SQLite (ipam/local.py) and the global one
in etcd (store/etcd/allocators.py), so a subnet or an address is refused with the same words whichever
store holds the network. Everything here is pure arithmetic on integers and `ipaddress` objects:
addresses are handled as integers so that IPv4 and IPv6 need no separate code.

netaddr is not used: `ipaddress` already gives every operation needed here (CIDR parsing, subnet_of,
integer conversion), and the clash walk works on integers, which neither library speeds up.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, Self, TypeVar

from libnetwork.errors import AlreadyExists, InvalidArgument, Overlap, PoolExhausted
from libnetwork.model import Network, PoolConfig

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
_ADDRESS_CLASS = {4: ipaddress.IPv4Address, 6: ipaddress.IPv6Address}


# ---------------------------------------------------------------------------------------------------
# Owners: who holds an address
# ---------------------------------------------------------------------------------------------------


def gateway_owner(network_id: str) -> str:
    """The owner recorded for a network's gateway address."""
    return f"{GATEWAY_OWNER_PREFIX}{network_id}"


def aux_owner(name: str, network_id: str) -> str:
    """The owner recorded for a network's auxiliary address `name` (--aux-address NAME=ADDRESS)."""
    return f"{AUX_OWNER_PREFIX}{name}:{network_id}"


def is_reserved_owner(owner: str) -> bool:
    """Gateway and aux rows are reservations of the network, not endpoint addresses."""
    return owner.startswith((GATEWAY_OWNER_PREFIX, AUX_OWNER_PREFIX))


def describe_owner(owner: str) -> str:
    """An owner in a user's words: "the gateway", "auxiliary address 'x'" or "endpoint 1a2b3c4d5e6f"."""
    if owner.startswith(GATEWAY_OWNER_PREFIX):
        return "the gateway"
    if owner.startswith(AUX_OWNER_PREFIX):
        name = owner[len(AUX_OWNER_PREFIX):].rsplit(":", 1)[0]
        return f"auxiliary address '{name}'"
    return f"endpoint {owner[:12]}"


# ---------------------------------------------------------------------------------------------------
# Address arithmetic
# ---------------------------------------------------------------------------------------------------


def check_version(version: int) -> None:
    """InvalidArgument unless `version` is 4 or 6."""
    if version not in (4, 6):
        raise InvalidArgument(f"IP version must be 4 or 6, not {version}")


def format_address(n: int, version: int, prefixlen: int) -> str:
    """An address as the stores hand it out: "ip/prefixlen"."""
    return f"{_ADDRESS_CLASS[version](n)}/{prefixlen}"


def special_address_kind(n: int, subnet: IPNetwork) -> str:
    """"network" or "broadcast" (IPv4 only) when address `n` cannot be a host's in `subnet`, else ""."""
    if n == int(subnet.network_address):
        return "network"
    if subnet.version == 4 and n == int(subnet.broadcast_address):
        return "broadcast"
    return ""


def dynamic_range(subnet: IPNetwork, ip_range: IPNetwork | None) -> tuple[int, int]:
    """[first, last] that dynamic allocation may use: the host addresses of subnet ∩ ip_range."""
    first = int(subnet.network_address) + 1
    last = int(subnet.broadcast_address) - (1 if subnet.version == 4 else 0)
    if ip_range is not None:
        first = max(first, int(ip_range.network_address))
        last = min(last, int(ip_range.broadcast_address))
    return first, last


@dataclass(frozen=True)
class PoolRange:
    """One subnet of a network as address allocation sees it: its addresses and its dynamic range."""

    subnet: str
    network: IPNetwork
    first: int  # dynamic range
    last: int

    @classmethod
    def of(cls, config: PoolConfig) -> Self:
        net = ipaddress.ip_network(config.subnet)
        first, last = dynamic_range(net, ipaddress.ip_network(config.ip_range) if config.ip_range else None)
        return cls(config.subnet, net, first, last)

    def contains(self, n: int) -> bool:
        return int(self.network.network_address) <= n <= int(self.network.broadcast_address)

    def in_range(self, n: int) -> bool:
        return self.first <= n <= self.last

    def format(self, n: int) -> str:
        return format_address(n, self.network.version, self.network.prefixlen)


def no_subnet_of_family(network: Network, version: int) -> InvalidArgument:
    """The refusal of an address of a family the network has no subnet of."""
    hint = "create it with --ipv6" if version == 6 else "it was created without IPv4"
    return InvalidArgument(f"network '{network.name}' has no IPv{version} subnet; {hint}")


# ---------------------------------------------------------------------------------------------------
# Subnets: clashes, defaults, requests
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clash:
    """An address range a new subnet must not overlap, with the words that name it."""

    first: int
    last: int
    text: str  # "10.1.2.0/24 of network 'blue'" or "host route 192.168.1.0/24 dev eth0"

    @classmethod
    def of_network(cls, subnet: IPNetwork, network_name: str) -> Clash:
        """The subnet of another network."""
        return cls(int(subnet.network_address), int(subnet.broadcast_address), f"{subnet} of network '{network_name}'")


def route_clashes(host_routes: Iterable[tuple[str, str]], version: int) -> list[Clash]:
    """The host's routes of family `version` as clashes. `host_routes` are (cidr, description) pairs
    such as ("10.0.0.0/8", "route 10.0.0.0/8 dev eth0"); default routes never clash."""
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
        clashes.append(Clash(int(route.network_address), int(route.broadcast_address), text))
    return clashes


def first_clash(first: int, last: int, clashes: list[Clash]) -> Clash | None:
    for clash in clashes:
        if clash.first <= last and first <= clash.last:
            return clash
    return None


def first_free_block(base: IPNetwork, prefixlen: int, clashes: list[Clash]) -> IPNetwork | None:
    """First /prefixlen block of `base` that touches no clash; jumps past clashes, so a /48 carved
    into 65536 /64s costs one step per clash, not per block."""
    block = 1 << (base.max_prefixlen - prefixlen)
    candidate = int(base.network_address)
    end = int(base.broadcast_address)
    while candidate + block - 1 <= end:
        clash = first_clash(candidate, candidate + block - 1, clashes)
        if clash is None:
            if base.version == 4:
                return ipaddress.IPv4Network((candidate, prefixlen))
            return ipaddress.IPv6Network((candidate, prefixlen))
        candidate = (clash.last // block + 1) * block  # first aligned block after the clash
    return None


def first_free_subnet(defaults: list[tuple[str, int]], clashes: list[Clash]) -> IPNetwork | None:
    """The first block of the default pools `defaults` ((base CIDR, block prefix length) pairs, tried in
    order) that overlaps no clash; None when every one does."""
    for base, size in defaults:
        found = first_free_block(ipaddress.ip_network(base), size, clashes)
        if found is not None:
            return found
    return None


def pick_default_subnet(version: int, clashes: list[Clash]) -> IPNetwork:
    """A local network's default subnet: the first free block of DEFAULT_V4_POOLS / DEFAULT_V6_POOLS."""
    defaults = DEFAULT_V4_POOLS if version == 4 else DEFAULT_V6_POOLS
    found = first_free_subnet(defaults, clashes)
    if found is not None:
        return found
    bases = ", ".join(base for base, _ in defaults)
    raise PoolExhausted(
        f"no free default IPv{version} subnet: all of {bases} overlap existing networks or host routes; "
        f"pass --subnet"
    )


def plan_pool(
    network: Network,
    requested: PoolConfig | None,
    version: int,
    clashes: list[Clash],
    pick_default: Callable[[int, list[Clash]], IPNetwork] = pick_default_subnet,
) -> PoolConfig:
    """What a pool request of `network` comes to, checked against `clashes` (other networks' subnets and
    the host's routes): `requested` None or without a subnet takes `pick_default(version, clashes)` with
    its first address as gateway; otherwise subnet, gateway, ip range and aux addresses are validated and
    the gateway filled in. Raises InvalidArgument, Overlap or PoolExhausted saying what to change."""
    check_version(version)
    if requested is None or not requested.subnet:
        _refuse_options_without_subnet(network, requested)
        subnet = pick_default(version, clashes)
        return PoolConfig(subnet=str(subnet), gateway=str(subnet.network_address + 1))
    subnet = parse_cidr(network, "subnet", requested.subnet, version)
    _refuse_unusable_subnet(network, subnet)
    _refuse_overlap(network, subnet, clashes)
    return _complete_config(network, subnet, requested)


def reserved_addresses(network_id: str, config: PoolConfig) -> list[tuple[int, str]]:
    """(address, owner) of what a pool reserves for its network: the gateway, then the aux addresses."""
    reserved = [(int(ipaddress.ip_address(config.gateway)), gateway_owner(network_id))]
    for name, address in config.aux_addresses.items():
        reserved.append((int(ipaddress.ip_address(address)), aux_owner(name, network_id)))
    return reserved


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


def parse_cidr(network: Network, label: str, text: str, version: int) -> IPNetwork:
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


def _refuse_overlap(network: Network, subnet: IPNetwork, clashes: list[Clash]) -> None:
    clash = first_clash(int(subnet.network_address), int(subnet.broadcast_address), clashes)
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
        cidr = parse_cidr(network, "ip range", requested.ip_range, subnet.version)
        if not cidr.subnet_of(subnet):  # type: ignore[arg-type]
            raise InvalidArgument(
                f"ip range {cidr} of network '{network.name}' is outside its subnet {subnet}; "
                f"pick a range inside it"
            )
        first, last = dynamic_range(subnet, cidr)
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
            raise InvalidArgument(
                f"auxiliary address {text} of network '{network.name}' has no name; write NAME=ADDRESS"
            )
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
    special = special_address_kind(int(address), subnet)
    if special:
        raise InvalidArgument(
            f"{label} {address} of network '{network.name}' is the {special} address of subnet {subnet}; "
            f"pick a host address such as {subnet.network_address + 1}"
        )
    return address


# ---------------------------------------------------------------------------------------------------
# Addresses: the checks and refusals both allocators share
# ---------------------------------------------------------------------------------------------------


def check_owner(network: Network, owner: str) -> None:
    if not owner:
        raise InvalidArgument(f"an address of network '{network.name}' needs an owner (the endpoint id)")


def parse_static_address(network: Network, version: int, text: str) -> IPAddress:
    """The address of a request for one given address ("10.1.0.5" or "10.1.0.5/16": the prefix is the
    subnet's), of family `version`."""
    try:
        address = ipaddress.ip_interface(text).ip
    except ValueError:
        raise InvalidArgument(f"address '{text}' for network '{network.name}' is not an IP address") from None
    if address.version != version:
        raise InvalidArgument(
            f"address {address} is IPv{address.version} where an IPv{version} address of network "
            f"'{network.name}' was asked for"
        )
    return address


class _Subnetted(Protocol):
    @property
    def subnet(self) -> str: ...  # canonical CIDR


P = TypeVar("P", bound=_Subnetted)


def static_pool(network: Network, address: IPAddress, pools: Sequence[P]) -> P:
    """The one of `pools` (the network's, of the address's family) whose subnet holds `address` as a
    host address; InvalidArgument when none holds it, or one holds it as its network or broadcast address."""
    n = int(address)
    for pool in pools:
        subnet = ipaddress.ip_network(pool.subnet)
        if int(subnet.network_address) <= n <= int(subnet.broadcast_address):
            special = special_address_kind(n, subnet)
            if special:
                raise InvalidArgument(
                    f"address {address} is the {special} address of subnet {pool.subnet} of network "
                    f"'{network.name}'; pick a host address"
                )
            return pool
    subnets = ", ".join(p.subnet for p in pools)
    raise InvalidArgument(f"address {address} is outside the subnets of network '{network.name}' ({subnets})")


def address_taken(network: Network, address: IPAddress, holder: str) -> AlreadyExists:
    return AlreadyExists(
        f"address {address} of network '{network.name}' is already in use by {describe_owner(holder)}; "
        f"pick another address or remove that endpoint"
    )


def pool_exhausted(network: Network, subnets: list[str], in_use: int, capacity: int) -> PoolExhausted:
    return PoolExhausted(
        f"address pool of network '{network.name}' ({', '.join(subnets)}) is exhausted: {in_use} of {capacity} "
        f"addresses in use; remove endpoints or use a larger subnet"
    )
