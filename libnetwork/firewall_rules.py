"""netctl's nftables ruleset, rendered: a pure function of the bridge networks and their published
endpoints, as nft JSON commands (no kernel access here; libnetwork/firewall.py applies them).

netctl owns exactly two tables and never touches anything else (other tools' tables, iptables chains):

- ``table inet netctl``: forward filtering between networks and the outside, masquerade, port
  publishing (DNAT, from outside, from the host itself and hairpin from inside the network).
- ``table bridge netctl``: inter-container traffic (ICC) between ports of one bridge. Frames between two
  ports of a bridge never reach the IP forward hook unless br_netfilter is loaded, and loading it would
  change how every bridge of the machine is filtered.

:func:`render` first checks every input (names, addresses, ports) so that nothing unsafe reaches a
rule, then builds commands that replace both tables at once (``add table; delete table; add table;
chains; rules``).

Forward-chain rules are grouped by kind, not by network: every "same bridge" accept comes first, then
every internal-network drop, then every isolation drop, and only then the accepts. So no accept of one
network can open a path that a drop of another network closes (e.g. a container of an internal network
reaching a published port of another network through the host's address). Rules that need no counter
of their own match a set of bridges, so the chain grows by two rules per network, not five.

Separate from applying and reading the tables because it is pure: the unit tests check it without a
kernel, and drift detection renders the same commands to compare.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from libnetwork.errors import AlreadyExists, InvalidArgument
from libnetwork.model import PortMapping

TABLE = "netctl"
INET = "inet"
BRIDGE = "bridge"

# Numeric chain priorities on purpose: nft 1.0.6's JSON parser silently turns a named priority
# ("filter") into a plain chain without a hook, which would leave the firewall switched off.
PRIO_FILTER = 0
PRIO_DSTNAT = -100
PRIO_SRCNAT = 100

# Named sets of netctl bridge devices: all of them (isolation) and those of non-internal networks.
BRIDGES_SET = "bridges"
OPEN_BRIDGES_SET = "open_bridges"
# Regular chain holding the DNAT of every published port; prerouting and output jump to it.
PUBLISHED_CHAIN = "published"

# A Linux interface name: at most 15 bytes; we accept only characters that need no quoting anywhere
# (nft treats a trailing "*" as a wildcard and "\\" as an escape, so those must never get through).
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_COMMENT_MAX = 128  # nft's limit on a rule comment, in bytes
_NAME_MAX = _COMMENT_MAX - len("internal ")  # the longest comment prefix
_PROTOCOLS = ("tcp", "udp", "sctp")


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass
class PublishedEndpoint:
    """An endpoint of a bridge network that publishes ports."""

    addresses: list[str]  # container addresses, bare ("172.18.0.2") or with prefix ("172.18.0.2/16")
    ports: list[PortMapping] = field(default_factory=list)


@dataclass
class BridgeNet:
    """What the firewall needs to know about one bridge network."""

    name: str  # network name, used in rule comments (the keys of counters())
    bridge: str  # bridge device, e.g. "nc-1a2b3c4d5e6f"
    subnets: list[str]  # CIDRs, v4 and/or v6
    gateways: list[str] = field(default_factory=list)
    internal: bool = False
    icc: bool = True
    masquerade: bool = True
    endpoints: list[PublishedEndpoint] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# Validation: BridgeNet (plain strings) -> _Checked (parsed, safe to put into rules)


@dataclass(frozen=True)
class _Dnat:
    family: int  # 4 or 6
    host_ip: IPAddress | None  # None: every local address of the host
    protocol: str
    host_port: int
    address: IPAddress
    port: int


@dataclass(frozen=True)
class _Checked:
    name: str
    bridge: str
    subnets: tuple[IPNetwork, ...]
    internal: bool
    icc: bool
    masquerade: bool
    dnats: tuple[_Dnat, ...]

    @property
    def has_v4_dnat(self) -> bool:
        return any(d.family == 4 for d in self.dnats)


def _check_bridge(net: BridgeNet) -> str:
    if not isinstance(net.bridge, str) or not _IFNAME.fullmatch(net.bridge) or net.bridge in (".", ".."):
        raise InvalidArgument(
            f"network {net.name!r}: bridge name {net.bridge!r} is not a valid interface name; "
            "use 1-15 characters of A-Z a-z 0-9 _ . -"
        )
    return net.bridge


def _check_name(net: BridgeNet) -> str:
    if not isinstance(net.name, str):
        raise InvalidArgument(f"network name {net.name!r} is not a string")
    bad = [c for c in net.name if not c.isprintable() or c in "\"'\\"]
    if not net.name or bad or len(net.name.encode()) > _NAME_MAX:
        raise InvalidArgument(
            f"network name {net.name!r} cannot label a firewall rule; use up to {_NAME_MAX} bytes of "
            "printable characters without quotes or backslashes"
        )
    return net.name


def _check_subnets(net: BridgeNet) -> tuple[IPNetwork, ...]:
    try:
        subnets = tuple(ipaddress.ip_network(s, strict=False) for s in net.subnets)
        for gateway in net.gateways:
            ipaddress.ip_address(gateway)
    except ValueError as err:
        raise InvalidArgument(
            f"network {net.name!r}: {err}; give subnets as CIDRs and gateways as bare addresses"
        ) from None
    if not subnets:
        raise InvalidArgument(f"network {net.name!r} has no subnet; a bridge network needs at least one")
    return subnets


def _container_addresses(net: BridgeNet, endpoint: PublishedEndpoint) -> dict[int, IPAddress]:
    try:
        addresses = [ipaddress.ip_interface(a).ip for a in endpoint.addresses]
    except ValueError as err:
        raise InvalidArgument(f"network {net.name!r}: endpoint address: {err}") from None
    return {a.version: a for a in addresses}  # one address per family (model.Endpoint.address_of)


def _check_mapping(net: BridgeNet, mapping: PortMapping) -> IPAddress | None:
    if mapping.protocol not in _PROTOCOLS:
        raise InvalidArgument(f"network {net.name!r}: port {mapping}: protocol must be one of {', '.join(_PROTOCOLS)}")
    for port in (mapping.host_port, mapping.container_port):
        if not isinstance(port, int) or not 1 <= port <= 65535:
            raise InvalidArgument(f"network {net.name!r}: port {mapping}: ports must be 1-65535")
    if not mapping.host_ip:
        return None
    try:
        return ipaddress.ip_address(mapping.host_ip)
    except ValueError:
        raise InvalidArgument(
            f"network {net.name!r}: port {mapping}: host address {mapping.host_ip!r} is not an IP address"
        ) from None


def _check_dnats(net: BridgeNet) -> tuple[_Dnat, ...]:
    dnats = []
    for endpoint in net.endpoints:
        by_family = _container_addresses(net, endpoint)
        for mapping in endpoint.ports:
            host_ip = _check_mapping(net, mapping)
            families = [host_ip.version] if host_ip else sorted(by_family)
            if host_ip and host_ip.version not in by_family:
                raise InvalidArgument(
                    f"network {net.name!r}: port {mapping} is published on an IPv{host_ip.version} address "
                    f"but the endpoint has no IPv{host_ip.version} address; publish on an address of its family"
                )
            for family in families:
                dnats.append(_Dnat(family, host_ip, mapping.protocol, mapping.host_port,
                                   by_family[family], mapping.container_port))
    return tuple(dnats)


def _check(net: BridgeNet) -> _Checked:
    return _Checked(
        name=_check_name(net),
        bridge=_check_bridge(net),
        subnets=_check_subnets(net),
        internal=bool(net.internal),
        icc=bool(net.icc),
        masquerade=bool(net.masquerade),
        # An internal network has no way in: its published ports are not programmed.
        dnats=() if net.internal else _check_dnats(net),
    )


def _check_unique(nets: list[_Checked]) -> None:
    for attribute in ("bridge", "name"):
        seen: set[str] = set()
        for net in nets:
            value = getattr(net, attribute)
            if value in seen:
                raise InvalidArgument(f"two bridge networks share the {attribute} {value!r}; each needs its own")
            seen.add(value)


def _check_no_port_clash(nets: list[_Checked]) -> None:
    """A host port can be published once per address: two DNATs for it would silently shadow one."""
    claimed: dict[tuple[int, str, int], list[tuple[IPAddress | None, str]]] = {}
    for net in nets:
        for d in net.dnats:
            key = (d.family, d.protocol, d.host_port)
            for host_ip, owner in claimed.get(key, []):
                if host_ip is None or d.host_ip is None or host_ip == d.host_ip:
                    where = d.host_ip or host_ip or "every address"
                    raise AlreadyExists(
                        f"host port {d.host_port}/{d.protocol} on {where} is published twice "
                        f"(networks {owner!r} and {net.name!r}); publish one of them on another port"
                    )
            claimed.setdefault(key, []).append((d.host_ip, net.name))


# --------------------------------------------------------------------------------------------------
# nft JSON building blocks


def _match(left: dict[str, Any], right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def _meta(key: str, value: Any, op: str = "==") -> dict[str, Any]:
    return _match({"meta": {"key": key}}, value, op)


def _prefix(subnet: IPNetwork) -> dict[str, Any]:
    return {"prefix": {"addr": str(subnet.network_address), "len": subnet.prefixlen}}


def _addr_match(field_name: str, subnet: IPNetwork) -> dict[str, Any]:
    protocol = "ip" if subnet.version == 4 else "ip6"
    return _match({"payload": {"protocol": protocol, "field": field_name}}, _prefix(subnet))


_ACCEPT: dict[str, Any] = {"accept": None}
_DROP: dict[str, Any] = {"drop": None}
_COUNTER: dict[str, Any] = {"counter": None}
_MASQUERADE: dict[str, Any] = {"masquerade": None}
_CT_DNAT = _match({"ct": {"key": "status"}}, "dnat", "in")
_CT_ESTABLISHED = _match({"ct": {"key": "state"}}, ["established", "related"], "in")
_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


def _rule(family: str, chain: str, expr: list[dict[str, Any]], comment: str = "") -> dict[str, Any]:
    rule: dict[str, Any] = {"family": family, "table": TABLE, "chain": chain, "expr": expr}
    if comment:
        rule["comment"] = comment
    return {"add": {"rule": rule}}


def _counted_drop(family: str, chain: str, expr: list[dict[str, Any]], comment: str) -> dict[str, Any]:
    return _rule(family, chain, [*expr, _COUNTER, _DROP], comment)


def _base_chain(family: str, name: str, kind: str, hook: str, prio: int) -> dict[str, Any]:
    chain = {"family": family, "table": TABLE, "name": name, "type": kind, "hook": hook,
             "prio": prio, "policy": "accept"}
    return {"add": {"chain": chain}}


def _reset_table(family: str) -> list[dict[str, Any]]:
    """Empty the table whether it existed or not (delete of a missing table would fail the batch)."""
    table = {"family": family, "name": TABLE}
    return [{"add": {"table": dict(table)}}, {"delete": {"table": dict(table)}}]


def _create_table(family: str) -> dict[str, Any]:
    return {"add": {"table": {"family": family, "name": TABLE}}}


# --------------------------------------------------------------------------------------------------
# The rules


def _forward_rules(nets: list[_Checked]) -> list[dict[str, Any]]:
    rules = []
    for net in nets:  # routed traffic inside one network; ICC is decided on L2 in the bridge table
        rules.append(_rule(INET, "forward", [_meta("iifname", net.bridge), _meta("oifname", net.bridge), _ACCEPT]))
    for net in (n for n in nets if n.internal):  # no way in or out; the gateway is INPUT, not forward
        comment = f"internal {net.name}"
        rules.append(_counted_drop(INET, "forward", [_meta("iifname", net.bridge)], comment))
        rules.append(_counted_drop(INET, "forward", [_meta("oifname", net.bridge)], comment))
    for net in nets:  # its own bridge is in the set too, but that traffic was accepted above
        match_others = [_meta("iifname", net.bridge), _meta("oifname", f"@{BRIDGES_SET}")]
        rules.append(_counted_drop(INET, "forward", match_others, f"isolate {net.name}"))
    if any(not n.internal for n in nets):  # one rule per kind, not per network: a set lookup is O(1)
        to_open, from_open = _meta("oifname", f"@{OPEN_BRIDGES_SET}"), _meta("iifname", f"@{OPEN_BRIDGES_SET}")
        rules.append(_rule(INET, "forward", [to_open, _CT_DNAT, _ACCEPT]))  # published ports
        rules.append(_rule(INET, "forward", [to_open, _CT_ESTABLISHED, _ACCEPT]))
        rules.append(_rule(INET, "forward", [from_open, _ACCEPT]))
        # Like Docker: from outside, a container is reachable only through its published ports.
        rules.append(_counted_drop(INET, "forward", [to_open], "inbound unpublished"))
    return rules


def _postrouting_rules(net: _Checked) -> list[dict[str, Any]]:
    if net.internal:
        return []
    rules = []
    if net.masquerade:
        for subnet in net.subnets:
            out_elsewhere = [_addr_match("saddr", subnet), _meta("oifname", net.bridge, "!="), _MASQUERADE]
            rules.append(_rule(INET, "postrouting", out_elsewhere))
    if net.dnats:
        # Hairpin: a container reaching a published port of its own network must get the replies
        # through the gateway, not straight from the peer (which it would not recognise).
        for subnet in net.subnets:
            hairpin = [_meta("oifname", net.bridge), _addr_match("saddr", subnet), _CT_DNAT, _MASQUERADE]
            rules.append(_rule(INET, "postrouting", hairpin))
    if net.has_v4_dnat:
        # The host itself via 127.0.0.1 (needs route_localnet=1 on the bridge, set by the driver).
        from_loopback = [_meta("oifname", net.bridge), _addr_match("saddr", _LOOPBACK), _MASQUERADE]
        rules.append(_rule(INET, "postrouting", from_loopback))
    return rules


def _dnat_rule(d: _Dnat) -> dict[str, Any]:
    """One published port, in the chain that prerouting and output jump to for local addresses."""
    ip = "ip" if d.family == 4 else "ip6"
    if d.host_ip is None:
        expr = [_meta("nfproto", f"ipv{d.family}")]  # the family dependency dnat needs in inet
    else:
        expr = [_match({"payload": {"protocol": ip, "field": "daddr"}}, str(d.host_ip))]
    expr += [
        _meta("l4proto", d.protocol),
        _match({"payload": {"protocol": "th", "field": "dport"}}, d.host_port),
        {"dnat": {"family": ip, "addr": str(d.address), "port": d.port}},
    ]
    return _rule(INET, PUBLISHED_CHAIN, expr)


def _published_rules(nets: list[_Checked]) -> list[dict[str, Any]]:
    dnats = [_dnat_rule(d) for net in nets for d in net.dnats]
    if not dnats:
        return []
    # Docker's DOCKER-chain shape: both entry points share one list of DNATs.
    to_local = _match({"fib": {"result": "type", "flags": ["daddr"]}}, "local")
    jump = {"jump": {"target": PUBLISHED_CHAIN}}
    jumps = [_rule(INET, chain, [to_local, jump]) for chain in ("prerouting", "output")]
    return jumps + dnats


def _icc_rules(net: _Checked) -> list[dict[str, Any]]:
    """Drop frames bridged from one port of the network's bridge to another.

    The kernel of our machines lacks nft_meta_bridge (CONFIG_NFT_BRIDGE_META), so ``meta ibrname``
    cannot name the bridge. Instead the rule names the network by its subnets: only this network's
    containers hold those addresses, and frames to the gateway are delivered locally (input hook),
    never forwarded, so they still pass.
    """
    comment = f"icc {net.name}"
    return [_counted_drop(BRIDGE, "forward", [_addr_match("daddr", s)], comment) for s in net.subnets]


def _ifname_set(name: str, bridges: list[str]) -> dict[str, Any]:
    return {"add": {"set": {"family": INET, "table": TABLE, "name": name, "type": "ifname", "elem": bridges}}}


def _inet_table(nets: list[_Checked]) -> list[dict[str, Any]]:
    commands = [
        _create_table(INET),
        _base_chain(INET, "forward", "filter", "forward", PRIO_FILTER),
        _base_chain(INET, "prerouting", "nat", "prerouting", PRIO_DSTNAT),
        _base_chain(INET, "output", "nat", "output", PRIO_DSTNAT),
        _base_chain(INET, "postrouting", "nat", "postrouting", PRIO_SRCNAT),
        {"add": {"chain": {"family": INET, "table": TABLE, "name": PUBLISHED_CHAIN}}},
        _ifname_set(BRIDGES_SET, [n.bridge for n in nets]),
    ]
    open_bridges = [n.bridge for n in nets if not n.internal]
    if open_bridges:
        commands.append(_ifname_set(OPEN_BRIDGES_SET, open_bridges))
    commands += _forward_rules(nets)
    for net in nets:
        commands += _postrouting_rules(net)
    commands += _published_rules(nets)
    return commands


def _bridge_table(nets: list[_Checked]) -> list[dict[str, Any]]:
    commands = [_create_table(BRIDGE)]
    no_icc = [n for n in nets if not n.icc]
    if no_icc:  # a bridge-family base chain sees every bridged frame of the machine: only when needed
        commands.append(_base_chain(BRIDGE, "forward", "filter", "forward", PRIO_FILTER))
        for net in no_icc:
            commands += _icc_rules(net)
    return commands


def render(nets: list[BridgeNet]) -> list[dict[str, Any]]:
    """The nft JSON commands that replace netctl's tables with the ruleset of ``nets``.

    Pure: no kernel access. With no networks the commands just delete both tables.
    Raises InvalidArgument (bad name, address, port) or AlreadyExists (a host port published twice).
    """
    checked = sorted((_check(n) for n in nets), key=lambda n: n.bridge)
    _check_unique(checked)
    _check_no_port_clash(checked)
    commands = delete_tables()
    if checked:
        commands += _inet_table(checked) + _bridge_table(checked)
    return commands


def delete_tables() -> list[dict[str, Any]]:
    """The commands that delete both netctl tables, whether they exist or not."""
    return _reset_table(INET) + _reset_table(BRIDGE)
