"""netctl-ipam: CNI host-local's configuration, backed by netctl's store.

Understood (the `ipam` section; the plugin receives the whole network configuration):

    ranges        [[{subnet, rangeStart?, rangeEnd?, gateway?}, ...], ...]  one range set per IP version
    subnet, rangeStart, rangeEnd, gateway   legacy single range, prepended as range set 0
    routes        [{dst, gw?}]  copied into the result (and installed by netctl-bridge)
    resolvConf    a resolv.conf whose nameserver/domain/search/options become the result's dns
    runtimeConfig.ipRanges  range sets prepended to `ranges` (capability ipRanges)
    requested addresses: CNI_ARGS IP, args.cni.ips, runtimeConfig.ips (capability ips)

The CNI network becomes a netctl network of the same name: driver `external` (netctl only keeps the
addresses) when another plugin makes the data plane, driver `bridge` when netctl-bridge runs this
same code in-process. An address is one row of netctl's IPAM, owned by the container's endpoint, so
`netctl network inspect NAME` lists every container holding one.

Differences from host-local: one address per IP version and attachment (two range sets of one
version are refused, code 2); one attachment per container and network (a second ifname is refused);
no dataDir (the store lives under netctl's root).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from cni_plugins import config as cfg
from cni_plugins.skel import CNIError, Context, Request, family, shown
from libnetwork.errors import CNI_INTERNAL, CNI_INVALID_CONFIG

NAME = "netctl-ipam"
STATUS_NOT_AVAILABLE = 50  # spec STATUS code: the plugin cannot serve ADD now (e.g. exhausted)


@dataclass
class IpamConf:
    pools: list = field(default_factory=list)  # libnetwork.model.PoolConfig
    ranges: dict[str, tuple[str, str]] = field(default_factory=dict)  # subnet -> (rangeStart, rangeEnd)
    routes: list[dict[str, Any]] = field(default_factory=list)
    dns: dict[str, Any] = field(default_factory=dict)


def parse_ipam(req: Request) -> IpamConf:
    """The `ipam` section as netctl pools, validated before anything is created."""
    section = cfg.get_dict(req.config, "ipam")
    if not section:
        raise CNIError(CNI_INVALID_CONFIG, "IPAM config missing 'ipam' key")
    range_sets = list(cfg.get_list(cfg.get_dict(req.config, "runtimeConfig"), "ipRanges", where="runtimeConfig."))
    if section.get("subnet") is not None:
        range_sets.insert(0, [{k: section[k] for k in ("subnet", "rangeStart", "rangeEnd", "gateway") if k in section}])
    range_sets += cfg.get_list(section, "ranges", where="ipam.")
    if not range_sets:
        raise CNIError(CNI_INVALID_CONFIG, "no IP ranges specified",
                       "give ipam.ranges, e.g. [[{\"subnet\": \"10.1.0.0/24\"}]]")
    conf = IpamConf()
    versions: dict[int, int] = {}
    for index, range_set in enumerate(range_sets):
        where = f"ipam.ranges[{index}]"
        if not isinstance(range_set, list) or not range_set:
            raise cfg.invalid(where, range_set, "a range set is a non-empty list of ranges")
        version = 0
        for position, entry in enumerate(range_set):
            pool, span = _range(entry, f"{where}[{position}]")
            if version and pool_version(pool) != version:
                raise CNIError(CNI_INVALID_CONFIG, f"invalid range set {index}: mixed address families")
            version = pool_version(pool)
            if any(p.subnet == pool.subnet for p in conf.pools):
                raise cfg.unsupported(f"{where}[{position}].subnet", pool.subnet,
                                      "netctl-ipam takes each subnet once; give one range per subnet")
            conf.pools.append(pool)
            if span:
                conf.ranges[pool.subnet] = span
        if version in versions:
            raise cfg.unsupported(where, range_set, f"netctl-ipam gives one IPv{version} address per attachment, "
                                                    f"and range set {versions[version]} is IPv{version} too")
        versions[version] = index
    conf.routes = [_route(r, f"ipam.routes[{i}]") for i, r in enumerate(cfg.get_list(section, "routes", where="ipam."))]
    resolv_conf = cfg.get_str(section, "resolvConf", where="ipam.")
    if resolv_conf:
        conf.dns = read_resolv_conf(resolv_conf)
    return conf


def pool_version(pool) -> int:
    return 6 if ":" in pool.subnet else 4


def _range(entry: Any, where: str):
    """One host-local range: a PoolConfig, plus (start, end) when rangeStart/rangeEnd narrow it."""
    from libnetwork.model import PoolConfig

    if not isinstance(entry, dict):
        raise cfg.invalid(where, entry, "a range is an object {subnet, rangeStart, rangeEnd, gateway}")
    text = cfg.get_str(entry, "subnet", where=where + ".")
    if not text:
        raise cfg.invalid(where + ".subnet", entry.get("subnet"), "every range needs a subnet")
    try:
        subnet = ipaddress.ip_network(text, strict=True)
    except ValueError:
        network = cfg.parse_cidr(text, where + ".subnet")  # refuses non-CIDRs with its own message
        raise cfg.invalid(where + ".subnet", text, f"the network address of this subnet is {network}") from None
    gateway = cfg.get_str(entry, "gateway", where=where + ".")
    if gateway:
        gateway = str(cfg.parse_ip(gateway, where + ".gateway"))
    start, end = cfg.get_str(entry, "rangeStart", where=where + "."), cfg.get_str(entry, "rangeEnd", where=where + ".")
    span = None
    if start or end:
        first_host = subnet.network_address + 1
        last_host = subnet.broadcast_address - (1 if subnet.version == 4 else 0)
        first = cfg.parse_ip(start, where + ".rangeStart") if start else first_host
        last = cfg.parse_ip(end, where + ".rangeEnd") if end else last_host
        for key, address in (("rangeStart", first), ("rangeEnd", last)):
            if address.version != subnet.version or not int(first_host) <= int(address) <= int(last_host):
                raise cfg.invalid(f"{where}.{key}", str(address), f"is not a host address of subnet {subnet}")
        if int(first) > int(last):
            raise cfg.invalid(f"{where}.rangeStart", str(first), f"is after rangeEnd {last}")
        span = (str(first), str(last))
    return PoolConfig(subnet=str(subnet), gateway=gateway), span


def _route(entry: Any, where: str) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise cfg.invalid(where, entry, "a route is an object {dst, gw}")
    route: dict[str, Any] = {"dst": str(cfg.parse_cidr(entry.get("dst"), where + ".dst"))}
    if entry.get("gw"):
        gateway = cfg.parse_ip(entry["gw"], where + ".gw")
        if gateway.version != family(route["dst"]):
            raise cfg.invalid(where + ".gw", entry["gw"], f"is not of the IP version of dst {route['dst']}")
        route["gw"] = str(gateway)
    return route


def read_resolv_conf(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read(1 << 20).splitlines()
    except OSError as err:
        raise CNIError(CNI_INVALID_CONFIG, f"cannot read ipam.resolvConf {shown(path)}: {err.strerror}") from None
    dns: dict[str, Any] = {}
    for line in lines:
        words = line.split()
        if not words or words[0].startswith(("#", ";")):
            continue
        key, values = words[0], words[1:]
        if key == "nameserver" and values:
            dns.setdefault("nameservers", []).append(values[0])
        elif key == "domain" and values:
            dns["domain"] = values[0]
        elif key == "search":
            dns["search"] = values
        elif key == "options":
            dns.setdefault("options", []).extend(values)
    return dns


def gateway_of(network, address: str) -> str:
    ip = ipaddress.ip_interface(address).ip
    for pool in network.pools:
        if ip in ipaddress.ip_network(pool.subnet):
            return pool.gateway
    return ""


def ipam_result(network, endpoint, conf: IpamConf, interface: int | None = None) -> dict[str, Any]:
    """The IPAM part of a result (spec §5 "delegated plugins": no interfaces, no ips[].interface
    unless the caller, the main plugin, sets it)."""
    ips = []
    for address in endpoint.addresses:
        entry: dict[str, Any] = {"address": address}
        gateway = gateway_of(network, address)
        if gateway:
            entry["gateway"] = gateway
        if interface is not None:
            entry["interface"] = interface
        ips.append(entry)
    return {"ips": ips, "routes": [dict(r) for r in conf.routes], "dns": dict(conf.dns)}


def external_spec(req: Request, conf: IpamConf):
    from libnetwork.controller import NetworkSpec

    return NetworkSpec(name=req.name, driver="external", pools=list(conf.pools), pool_ranges=dict(conf.ranges),
                       labels={"netctl.cni.plugin": NAME})


# --- the plugin -----------------------------------------------------------------------------------


def handle(req: Request, context: Context) -> dict[str, Any] | None:
    return {"ADD": add, "DEL": delete, "CHECK": check, "GC": gc, "STATUS": status}[req.command](req, context)


def add(req: Request, context: Context) -> dict[str, Any]:
    conf = parse_ipam(req)
    wanted = cfg.requested_ips(req)
    labels = cfg.labels_from_args(req)
    from cni_plugins.kernel import require_container_netns

    require_container_netns(req.netns)
    controller = context.controller(req)
    network, created = controller.ensure_network(external_spec(req, conf))
    try:
        _, endpoint = controller.attach_container(req.name, req.container_id, req.netns, req.ifname,
                                                  ip=wanted.get(4, ""), ip6=wanted.get(6, ""), labels=labels)
    except BaseException:
        if created:
            controller.discard_network(network)
        raise
    return ipam_result(network, endpoint, conf)


def delete(req: Request, context: Context) -> None:
    context.controller(req).detach_container(req.name, req.container_id, req.ifname)
    return None


def check(req: Request, context: Context) -> None:
    found = context.controller(req).find_attachment(req.name, req.container_id, req.ifname)
    if found is None or not found[1].addresses:
        raise CNIError(CNI_INTERNAL, f"netctl-ipam: failed to find address added by container {req.container_id} "
                                     f"({req.ifname}) in network {req.name!r}")
    return None


def gc(req: Request, context: Context) -> None:
    context.controller(req).gc_attachments(req.name, cfg.valid_attachments(req))
    return None


def status(req: Request, context: Context) -> None:
    require_addresses_left(req, context)
    return None


def require_addresses_left(req: Request, context: Context) -> None:
    """STATUS: code 50 when an IP version of the network has no free address left (spec example)."""
    controller = context.controller(req)
    try:
        usage = controller.pool_usage(req.name)
    except Exception as err:  # the store itself is unusable: nothing can be served
        raise CNIError(STATUS_NOT_AVAILABLE, f"netctl state store unavailable: {err}") from None
    free: dict[int, int] = {}
    for pool in usage:
        version = 6 if ":" in pool.subnet else 4
        free[version] = free.get(version, 0) + max(0, pool.capacity - pool.in_use)
    exhausted = [v for v, n in free.items() if n == 0]
    if exhausted:
        raise CNIError(STATUS_NOT_AVAILABLE, f"network {req.name!r} has no free IPv{exhausted[0]} address left",
                       "remove containers or give the network a larger subnet")
