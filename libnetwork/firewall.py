"""The nftables firewall of bridge networks.

netctl owns exactly two tables and never touches anything else (other tools' tables, iptables chains):

- ``table inet netctl``: forward filtering between networks and the outside, masquerade, port
  publishing (DNAT, from outside, from the host itself and hairpin from inside the network).
- ``table bridge netctl``: inter-container traffic (ICC) between ports of one bridge. Frames between two
  ports of a bridge never reach the IP forward hook unless br_netfilter is loaded, and loading it would
  change how every bridge of the machine is filtered.

The whole ruleset is *derived*: :func:`render` is a pure function of the bridge networks and their
published endpoints, and :func:`apply` replaces both tables in ONE atomic nft transaction
(``add table; delete table; add table; chains; rules``). Anything that went wrong outside netctl
(someone flushed or deleted our tables) is repaired by rendering and applying again; :func:`drift`
tells whether that is needed.

Forward-chain rules are grouped by kind, not by network: every "same bridge" accept comes first, then
every internal-network drop, then every isolation drop, and only then the accepts. So no accept of one
network can open a path that a drop of another network closes (e.g. a container of an internal network
reaching a published port of another network through the host's address). Rules that need no counter
of their own match a set of bridges, so the chain grows by two rules per network, not five.

Transactions go through libnftables in-process (ctypes); the ``nft`` binary is the fallback.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import re
import stat
import threading
from dataclasses import dataclass, field
from typing import Any

from libnetwork import netns
from libnetwork.errors import AlreadyExists, InvalidArgument, KernelError
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

_NFT_CTX_OUTPUT_JSON = 1 << 4  # enum nft_output_flags in nftables/libnftables.h
_NFT_TIMEOUT_S = 30
_CLONE_NEWNET = 0x40000000

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
    commands = _reset_table(INET) + _reset_table(BRIDGE)
    if checked:
        commands += _inet_table(checked) + _bridge_table(checked)
    return commands


# --------------------------------------------------------------------------------------------------
# Talking to the kernel


def _libnftables() -> ctypes.CDLL | None:
    """libnftables with its prototypes set, or None when it is not installed."""
    try:
        lib = ctypes.CDLL("libnftables.so.1")
        lib.nft_run_cmd_from_buffer  # noqa: B018 (a library of that name without nft's API is no use)
    except (OSError, AttributeError):
        return None
    ctx = ctypes.c_void_p
    lib.nft_ctx_new.argtypes, lib.nft_ctx_new.restype = [ctypes.c_uint32], ctx
    lib.nft_ctx_free.argtypes, lib.nft_ctx_free.restype = [ctx], None
    lib.nft_ctx_output_set_flags.argtypes, lib.nft_ctx_output_set_flags.restype = [ctx, ctypes.c_uint], None
    lib.nft_ctx_buffer_output.argtypes, lib.nft_ctx_buffer_output.restype = [ctx], ctypes.c_int
    lib.nft_ctx_buffer_error.argtypes, lib.nft_ctx_buffer_error.restype = [ctx], ctypes.c_int
    lib.nft_run_cmd_from_buffer.argtypes, lib.nft_run_cmd_from_buffer.restype = [ctx, ctypes.c_char_p], ctypes.c_int
    lib.nft_ctx_get_output_buffer.argtypes, lib.nft_ctx_get_output_buffer.restype = [ctx], ctypes.c_char_p
    lib.nft_ctx_get_error_buffer.argtypes, lib.nft_ctx_get_error_buffer.restype = [ctx], ctypes.c_char_p
    return lib


def _run_with_libnftables(lib: ctypes.CDLL, text: str) -> tuple[bool, str, str]:
    """Run nft input in-process: (ok, output, error).

    A new context each time, because the context's netlink socket belongs to the network namespace
    the thread is in when it is created.
    """
    fds_before = _open_fds()
    ctx = lib.nft_ctx_new(0)
    if not ctx:
        raise KernelError("cannot create an nftables context (out of memory?)")
    try:
        _keep_sockets_from_children(_open_fds() - fds_before)
        lib.nft_ctx_output_set_flags(ctx, _NFT_CTX_OUTPUT_JSON)  # JSON in (tried first) and JSON out
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        rc = lib.nft_run_cmd_from_buffer(ctx, text.encode())
        output = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode(errors="replace")
        error = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
    except BaseException:
        lib.nft_ctx_free(ctx)
        raise
    _free_in_background(lib, ctx)
    return rc == 0, output, error


def _open_fds() -> set[int]:
    listing = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return {int(fd) for fd in os.listdir(listing)} - {listing}  # not the fd that reads the list
    finally:
        os.close(listing)


def _keep_sockets_from_children(fds: set[int]) -> None:
    """Mark the context's netlink socket close-on-exec.

    libnftables opens it without SOCK_CLOEXEC, and it stays open until the context is freed (later,
    in the background): a container exec'd meanwhile by a fork that did not close its fds would
    otherwise hold a netfilter socket of the host's namespace.
    """
    for fd in fds:
        with contextlib.suppress(OSError):  # closed again meanwhile by another thread
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                os.set_inheritable(fd, False)


def _free_in_background(lib: ctypes.CDLL, ctx: int) -> None:
    """Free an nft context without making the caller wait for the kernel's cleanup.

    The transaction is committed once nft_run_cmd_from_buffer returns. But closing the context's
    netlink socket makes the kernel first finish freeing what the transaction replaced, which waits
    for an RCU grace period: 8-20 ms on our 2-vCPU machines, most of a `network create`. A thread
    pays that wait instead (ctypes releases the GIL); it is not a daemon, so the interpreter still
    lets it finish before exiting.
    """
    try:
        threading.Thread(target=lib.nft_ctx_free, args=(ctx,), name="nft-ctx-free").start()
    except RuntimeError:  # no thread to be had: pay the wait here
        lib.nft_ctx_free(ctx)


def _run_with_nft_cli(text: str) -> tuple[bool, str, str]:
    """Run nft input with the nft binary (fallback when libnftables cannot be loaded)."""
    import shutil  # only this fallback needs them
    import subprocess

    nft = shutil.which("nft") or "/usr/sbin/nft"
    try:
        done = subprocess.run([nft, "-j", "-f", "-"], input=text, capture_output=True, text=True,
                              timeout=_NFT_TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise KernelError("neither libnftables.so.1 nor the nft command is installed; install nftables") from None
    except subprocess.TimeoutExpired:
        raise KernelError(f"nft did not finish within {_NFT_TIMEOUT_S} s") from None
    return done.returncode == 0, done.stdout, done.stderr


def _run_nft(text: str) -> tuple[bool, str, str]:
    lib = _libnftables()
    return _run_with_libnftables(lib, text) if lib is not None else _run_with_nft_cli(text)


def _first_error_line(error: str) -> str:
    for line in error.splitlines():
        line = line.strip()
        if line:
            # JSON input has no source positions: drop the meaningless "internal:0:0-0: " prefix.
            return re.sub(r"^internal:\d+:\d+-\d+:\s*", "", line)
    return "nft failed without a message"


def _nft(commands: list[dict[str, Any]], *, doing: str = "change netctl's tables") -> str:
    """Run nft JSON commands in the current network namespace; returns nft's (JSON) output."""
    text = json.dumps({"nftables": [{"metainfo": {"json_schema_version": 1}}, *commands]})
    ok, output, error = _run_nft(text)
    if not ok:
        raise KernelError(f"nftables could not {doing}: {_first_error_line(error)}", details=error)
    return output


def _in_netns(netns_path: str | None) -> contextlib.AbstractContextManager[Any]:
    """Enter the namespace for the call (the nft context's socket, or the nft child, is made there)."""
    return contextlib.nullcontext() if netns_path is None else netns.entered(netns_path)


def apply(commands: list[dict[str, Any]], *, netns_path: str | None = None) -> None:
    """Run ``commands`` (from render()) as one atomic transaction.

    On failure raises KernelError with nft's message; the kernel then keeps the previous tables.
    """
    with _in_netns(netns_path):
        _nft(commands)


def sync(nets: list[BridgeNet], *, netns_path: str | None = None) -> None:
    """Make netctl's tables match ``nets`` (render + apply)."""
    apply(render(nets), netns_path=netns_path)


def remove(*, netns_path: str | None = None) -> None:
    """Delete both netctl tables; nothing happens if they are already gone."""
    apply(_reset_table(INET) + _reset_table(BRIDGE), netns_path=netns_path)


def _netctl_tables(listing: dict[str, Any]) -> list[str]:
    return [t["table"]["family"] for t in listing.get("nftables", [])
            if "table" in t and t["table"]["name"] == TABLE and t["table"]["family"] in (INET, BRIDGE)]


def _rule_counters(listing: dict[str, Any]) -> dict[str, int]:
    packets: dict[str, int] = {}
    for item in listing.get("nftables", []):
        rule = item.get("rule")
        if not rule or not rule.get("comment"):
            continue
        for expr in rule.get("expr", []):
            counter = expr.get("counter") if isinstance(expr, dict) else None
            if isinstance(counter, dict):  # an anonymous counter; a string would name a counter object
                packets[rule["comment"]] = packets.get(rule["comment"], 0) + int(counter.get("packets", 0))
    return packets


def counters(*, netns_path: str | None = None) -> dict[str, int]:
    """Packets counted by each commented rule of netctl's tables, keyed by comment (rules sharing a
    comment are summed). Empty when the tables do not exist."""
    with _in_netns(netns_path):
        families = _netctl_tables(json.loads(_nft([{"list": {"tables": None}}], doing="list tables") or "{}"))
        # One list command per batch: nft 1.0.6 fills its cache for the first table of a batch only.
        listings = [_nft([{"list": {"table": {"family": f, "name": TABLE}}}], doing=f"list table {f} {TABLE}")
                    for f in families]
    packets: dict[str, int] = {}
    for listing in listings:
        for comment, count in _rule_counters(json.loads(listing or "{}")).items():
            packets[comment] = packets.get(comment, 0) + count
    return packets


# --------------------------------------------------------------------------------------------------
# Drift: is the live ruleset still the one render() derives? (for `netctl doctor`)


def _canonical(item: dict[str, Any]) -> str:
    """One listed object as comparable text: no handle, no counter values."""
    (kind, body), = item.items()
    body = {k: v for k, v in body.items() if k != "handle"}
    if kind == "rule":
        body["expr"] = [{"counter": {}} if isinstance(e, dict) and "counter" in e else e for e in body["expr"]]
    return json.dumps(body, sort_keys=True)


def _snapshot() -> dict[str, list[str]]:
    """netctl's tables in the current namespace: {"chain inet netctl forward": [chain, rule, ...], ...}."""
    families = _netctl_tables(json.loads(_nft([{"list": {"tables": None}}], doing="list tables") or "{}"))
    objects: dict[str, list[str]] = {}
    for family in families:
        listing = json.loads(_nft([{"list": {"table": {"family": family, "name": TABLE}}}],
                                  doing=f"list table {family} {TABLE}") or "{}")
        for item in listing.get("nftables", []):
            kind = next(iter(item))
            if kind in ("table", "chain", "set"):
                name = TABLE if kind == "table" else f"{TABLE} {item[kind]['name']}"
                objects.setdefault(f"{kind} {family} {name}", []).append(_canonical(item))
            elif kind == "rule":
                objects.setdefault(f"chain {family} {TABLE} {item['rule']['chain']}", []).append(_canonical(item))
    return objects


def _expected_snapshot(commands: list[dict[str, Any]]) -> dict[str, list[str]]:
    """What ``commands`` produce, read back from nft in a scratch network namespace.

    nft lists rules in its own normal form (``meta l4proto tcp th dport 80`` comes back as ``tcp dport
    80``), so the reference is made by the kernel itself: a thread unshares a fresh namespace (only
    that thread moves), applies there, lists, and ends, taking the namespace with it.
    """
    result: dict[str, Any] = {}

    def in_scratch_namespace() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(_CLONE_NEWNET) != 0:
                raise KernelError(f"cannot create a scratch network namespace: {os.strerror(ctypes.get_errno())}")
            _nft(commands)
            result["snapshot"] = _snapshot()
        except BaseException as err:  # handed to the caller's thread
            result["error"] = err

    worker = threading.Thread(target=in_scratch_namespace, name="nft-scratch-netns")
    worker.start()
    worker.join(_NFT_TIMEOUT_S)
    if worker.is_alive():
        raise KernelError(f"nft did not finish within {_NFT_TIMEOUT_S} s in a scratch namespace")
    if "error" in result:
        raise result["error"]
    return result["snapshot"]


def drift(nets: list[BridgeNet], *, netns_path: str | None = None) -> list[str]:
    """How netctl's live tables differ from what ``sync(nets)`` would make: one line per table, chain
    or set out of step (missing, foreign, or changed); empty when in step. Needs CAP_SYS_ADMIN (it
    builds the reference in a scratch namespace)."""
    expected = _expected_snapshot(render(nets))
    with _in_netns(netns_path):
        live = _snapshot()
    problems = []
    missing_tables = [f" {family} {TABLE}" for family in (INET, BRIDGE) if f"table {family} {TABLE}" not in live]
    for key in sorted(set(expected) | set(live), key=lambda k: (not k.startswith("table"), k)):
        if key not in live and key.startswith(("chain", "set")) and any(t + " " in key for t in missing_tables):
            continue  # its table is reported missing already
        if key not in live:
            problems.append(f"{key} is missing")
        elif key not in expected:
            problems.append(f"{key} is not part of netctl's ruleset (added by hand or left over)")
        elif live[key] != expected[key]:
            detail = ""
            if key.startswith("chain"):  # [the chain itself, its rules...]
                detail = f" ({len(live[key]) - 1} rules, expected {len(expected[key]) - 1})"
            problems.append(f"{key} differs from netctl's ruleset{detail}")
    return problems
