"""A network's requested pools, from `netctl network create`'s flags or from the Docker API's IPAM
configuration: one set of checks for both front ends (netctl/cli.py, netctl/docker_api/networks.py).
Pure: no store, no kernel."""

from __future__ import annotations

import ipaddress
from typing import Any

from libnetwork.errors import InvalidArgument
from libnetwork.model import PoolConfig

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def network_of(text: str, what: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text, strict=False)
    except (ValueError, TypeError):
        raise InvalidArgument(f"{what} {text!r} is not a valid CIDR (e.g. 10.1.0.0/16 or fd00:1::/64)") from None


def address_of(text: str, what: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except (ValueError, TypeError):
        raise InvalidArgument(f"{what} {text!r} is not a valid IP address") from None


def _inside(item: IPAddress | IPNetwork, net: IPNetwork) -> bool:
    if item.version != net.version:
        return False
    if isinstance(item, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return item.subnet_of(net)  # type: ignore[arg-type]
    return item in net


def request_pools(subnets, gateways, ip_ranges, aux_addresses) -> list[PoolConfig]:
    """Pair --gateway/--ip-range/--aux-address with the --subnet that contains them, like Docker."""
    from netctl.cli_shared import parse_pairs

    pools = []
    for text in subnets:
        network_of(text, "--subnet")
        pools.append(PoolConfig(subnet=text))
    if not pools and (gateways or ip_ranges or aux_addresses):
        raise InvalidArgument("--gateway, --ip-range and --aux-address need a --subnet to belong to")

    def owner(item, flag: str, text: str) -> PoolConfig:
        for pool in pools:
            if _inside(item, ipaddress.ip_network(pool.subnet, strict=False)):
                return pool
        raise InvalidArgument(f"{flag} {text} is outside every --subnet ({', '.join(p.subnet for p in pools)})")

    for text in gateways:
        pool = owner(address_of(text, "--gateway"), "--gateway", text)
        if pool.gateway:
            raise InvalidArgument(f"--gateway given twice for subnet {pool.subnet}")
        pool.gateway = text
    for text in ip_ranges:
        pool = owner(network_of(text, "--ip-range"), "--ip-range", text)
        if pool.ip_range:
            raise InvalidArgument(f"--ip-range given twice for subnet {pool.subnet}")
        pool.ip_range = text
    for name, text in parse_pairs(aux_addresses, "--aux-address").items():
        pool = owner(address_of(text, "--aux-address"), "--aux-address", text)
        pool.aux_addresses[name] = text
    return pools


def pools_from_ipam(configs: Any, network: str) -> list[PoolConfig]:
    """Docker's IPAM.Config: [{"Subnet", "IPRange", "Gateway", "AuxiliaryAddresses"}, ...], each
    member checked against its own Subnet (as dockerd does)."""
    if configs is None:
        return []
    if not isinstance(configs, list):
        raise InvalidArgument(f"network {network!r}: IPAM.Config must be a list")
    pools = []
    for i, config in enumerate(configs):
        where = f"network {network!r}: IPAM.Config[{i}]"
        if not isinstance(config, dict):
            raise InvalidArgument(f"{where} must be an object")
        unknown = set(config) - {"Subnet", "IPRange", "Gateway", "AuxiliaryAddresses"}
        if unknown:
            raise InvalidArgument(f"{where}: field {sorted(unknown)[0]!r} is not supported")
        subnet = config.get("Subnet") or ""
        if not subnet:
            if config.get("Gateway") or config.get("IPRange") or config.get("AuxiliaryAddresses"):
                raise InvalidArgument(f"{where}: Gateway, IPRange and AuxiliaryAddresses need a Subnet")
            continue
        net = network_of(subnet, f"{where}.Subnet")
        pool = PoolConfig(subnet=subnet)
        if config.get("Gateway"):
            gateway = address_of(config["Gateway"], f"{where}.Gateway")
            if not _inside(gateway, net):
                raise InvalidArgument(f"{where}: gateway {gateway} is outside subnet {subnet}")
            pool.gateway = str(config["Gateway"])
        if config.get("IPRange"):
            rng = network_of(config["IPRange"], f"{where}.IPRange")
            if not _inside(rng, net):
                raise InvalidArgument(f"{where}: IP range {config['IPRange']} is outside subnet {subnet}")
            pool.ip_range = str(config["IPRange"])
        aux = config.get("AuxiliaryAddresses") or {}
        if not isinstance(aux, dict):
            raise InvalidArgument(f"{where}.AuxiliaryAddresses must be an object of name: address")
        for name, text in aux.items():
            address = address_of(text, f"{where}.AuxiliaryAddresses[{name!r}]")
            if not _inside(address, net):
                raise InvalidArgument(f"{where}: auxiliary address {text} is outside subnet {subnet}")
            pool.aux_addresses[str(name)] = str(text)
        pools.append(pool)
    return pools
