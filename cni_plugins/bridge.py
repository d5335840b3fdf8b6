"""netctl-bridge: the CNI face of netctl's bridge driver.

The CNI network `name` is a netctl bridge network of that name: created by the first ADD from this
configuration (bridge name, MTU, ipMasq, subnets from the IPAM section), afterwards required to have
the same settings. A container attachment is an endpoint of that network in an external sandbox (the
runtime's namespace), so it shows in `netctl network inspect` and falls under doctor and gc.

Keys: bridge (default: netctl's nc-<id>), mtu, ipMasq (default false, as the reference), hairpinMode,
portIsolation (netctl's icc=false), isGateway/isDefaultGateway/forceAddress/enabledad (accepted:
the bridge always holds the gateway and a container gets a default route through it unless it has
one, as in Docker), ipam, dns, runtimeConfig {ips, mac, portMappings, aliases}, args.cni {ips, mac},
CNI_ARGS IP/MAC. Refused with code 2: promiscMode, vlan, vlanTrunk, macspoofchk,
disableContainerInterface (netctl's bridge driver has no such modes).

IPAM: `netctl-ipam` runs in this process (same code as the netctl-ipam executable, one process less);
any other type (host-local, static, dhcp...) is executed from CNI_PATH and the addresses it hands
out are mirrored into netctl's IPAM, so `network inspect` still shows them and netctl never hands
them out twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from cni_plugins import config as cfg
from cni_plugins import delegate
from cni_plugins import ipam as native_ipam
from cni_plugins import kernel
from cni_plugins.skel import CNIError, Context, Request, family, parse_dns, prev_result
from libnetwork.errors import CNI_INTERNAL, CNI_INVALID_CONFIG
from libnetwork import name_server

NAME = "netctl-bridge"
DEFAULT_ROUTES = ("0.0.0.0/0", "::/0")
UNSUPPORTED = {  # key -> why; refused when set to anything but its neutral value
    "promiscMode": "netctl bridges are not promiscuous",
    "vlan": "netctl-bridge has no VLAN support",
    "vlanTrunk": "netctl-bridge has no VLAN support",
    "macspoofchk": "netctl-bridge has no MAC spoof check",
    "disableContainerInterface": "netctl-bridge always creates the container interface",
}


@dataclass
class BridgeConf:
    bridge: str
    mtu: int
    ip_masq: bool
    hairpin: bool
    isolated_ports: bool
    ipam_type: str
    dns: dict[str, Any]

    @property
    def native_ipam(self) -> bool:
        return self.ipam_type == native_ipam.NAME


def parse_conf(req: Request) -> BridgeConf:
    conf = req.config
    for key, why in UNSUPPORTED.items():
        if conf.get(key) not in (None, False, 0, [], ""):
            raise cfg.unsupported(key, conf[key], why)
    for key in ("isGateway", "isDefaultGateway", "forceAddress", "enabledad", "preserveDefaultVlan"):
        cfg.get_bool(conf, key)  # accepted, but must still be well-formed
    bridge = cfg.get_str(conf, "bridge")
    if bridge:
        from drivers.bridge import validate_ifname

        validate_ifname(bridge, "bridge")
    ipam_section = cfg.get_dict(conf, "ipam")
    ipam_type = cfg.get_str(ipam_section, "type", where="ipam.")
    if not ipam_type:
        raise CNIError(CNI_INVALID_CONFIG,
                       "netctl-bridge needs ipam.type: netctl-ipam, or an IPAM plugin such as host-local",
                       "layer-2-only networks (no IPAM) are not supported")
    try:
        dns = parse_dns(conf.get("dns"))
    except (TypeError, ValueError) as err:
        raise cfg.invalid("dns", conf.get("dns"), str(err)) from None
    return BridgeConf(
        bridge=bridge,
        mtu=cfg.get_int(conf, "mtu", high=65535),
        ip_masq=cfg.get_bool(conf, "ipMasq"),
        hairpin=cfg.get_bool(conf, "hairpinMode"),
        isolated_ports=cfg.get_bool(conf, "portIsolation"),
        ipam_type=ipam_type,
        dns=dns,
    )


def network_spec(req: Request, conf: BridgeConf, pools: list, ranges: dict[str, tuple[str, str]]):
    from libnetwork.controller import NetworkSpec

    options = {"masquerade": "true" if conf.ip_masq else "false"}
    if conf.bridge:
        options["bridge"] = conf.bridge
    if conf.isolated_ports:
        options["icc"] = "false"
    return NetworkSpec(name=req.name, driver="bridge", pools=pools, mtu=conf.mtu, options=options,
                       labels={"netctl.cni.plugin": NAME}, pool_ranges=ranges)


def handle(req: Request, context: Context) -> dict[str, Any] | None:
    return {"ADD": add, "DEL": delete, "CHECK": check, "GC": gc, "STATUS": status}[req.command](req, context)


# --- ADD ------------------------------------------------------------------------------------------


def add(req: Request, context: Context) -> dict[str, Any]:
    """Every input is checked before anything is created; each step is undone if a later one fails."""
    conf = parse_conf(req)
    previous = prev_result(req)
    kernel.require_container_netns(req.netns)
    wanted_mac = cfg.requested_mac(req)
    ports = cfg.requested_ports(req)
    aliases = cfg.requested_aliases(req, context.log)
    labels = cfg.labels_from_args(req)
    controller = context.controller(req)

    undo: list[Callable[[], object]] = []  # steps to take back, newest first, if a later step fails
    try:
        if conf.native_ipam:
            ipam_conf = native_ipam.parse_ipam(req)
            wanted = cfg.requested_ips(req)
            spec = network_spec(req, conf, ipam_conf.pools, ipam_conf.ranges)
        else:
            delegated = delegate.call(req, context, conf.ipam_type, "ADD")
            assert delegated is not None  # call() returns the parsed result of every ADD
            undo.append(lambda: delegate.call(req, context, conf.ipam_type, "DEL"))
            ipam_conf = native_ipam.IpamConf(routes=delegated.get("routes", []), dns=delegated.get("dns", {}))
            wanted, pools = _mirror(conf, delegated)
            spec = network_spec(req, conf, pools, {})
        network, created = controller.ensure_network(spec, exact_pools=conf.native_ipam)
        if created:
            undo.append(lambda: controller.discard_network(network))
        _, endpoint = controller.attach_container(
            req.name, req.container_id, req.netns, req.ifname, ip=wanted.get(4, ""), ip6=wanted.get(6, ""),
            mac=wanted_mac, ports=ports, aliases=aliases, labels=labels,
        )
        undo.append(lambda: controller.detach_container(req.name, req.container_id, req.ifname))
        host_mac, routes = _finish(req, conf, controller, network, endpoint, ipam_conf.routes)
    except BaseException:
        for step in reversed(undo):
            try:
                step()
            except Exception as err:  # report the first failure, not the undo's
                context.log.append(f"netctl-bridge: undoing a failed ADD: {err}")
        raise
    ipam_part = native_ipam.ipam_result(network, endpoint, ipam_conf)
    name_server.sync(controller.root)  # the name server listens in the namespace before the runtime goes on
    return _result(req, conf, network, endpoint, host_mac, routes, ipam_part, previous)


def _mirror(conf: BridgeConf, delegated: dict[str, Any]) -> tuple[dict[int, str], list]:
    """The subnets and addresses a delegated IPAM plugin handed out, as netctl pools and static
    addresses: netctl's IPAM then records them (network inspect) and never hands them out itself."""
    import ipaddress

    from libnetwork.model import PoolConfig

    wanted: dict[int, str] = {}
    pools = []
    for ip in delegated.get("ips", []):
        interface = ipaddress.ip_interface(ip["address"])
        if interface.version in wanted:
            raise CNIError(CNI_INVALID_CONFIG, f"IPAM plugin {conf.ipam_type} gave two IPv{interface.version} "
                                               "addresses; netctl gives an attachment one per IP version")
        wanted[interface.version] = str(interface.ip)
        pools.append(PoolConfig(subnet=str(interface.network), gateway=ip.get("gateway", "")))
    if not wanted:
        raise CNIError(CNI_INVALID_CONFIG, f"IPAM plugin {conf.ipam_type} gave no address; netctl-bridge needs one")
    return wanted, pools


def _finish(req: Request, conf: BridgeConf, controller, network, endpoint, routes: list[dict[str, Any]]):
    """After the driver's join: hairpin, the IPAM routes, and what the result reports (the host
    veth's MAC, the routes really present through this interface)."""
    from libnetwork.netlink import Netlink

    host_link = controller.host.link(endpoint.host_ifname)
    if host_link is None:
        raise CNIError(CNI_INTERNAL, f"host side {endpoint.host_ifname} of the new veth vanished")
    if conf.hairpin:
        controller.host.set_bridge_port(host_link.index, hairpin=True)
    gateways = {family(a): native_ipam.gateway_of(network, a) for a in endpoint.addresses}
    with Netlink(req.netns) as inside:
        link = kernel.existing_link(inside, endpoint.ifname, req.netns)
        present = {(r.dst, r.gateway) for r in inside.routes() if r.oif == link.index}
        reported = []
        for route in routes:
            gateway = route.get("gw") or gateways.get(family(route["dst"]), "")
            if route["dst"] in DEFAULT_ROUTES and any(dst == route["dst"] for dst, _ in present):
                reported.append(route)  # netctl's driver installed it already, through the gateway
                continue
            inside.add_route(route["dst"], gateway=gateway, oif=link.index)
            reported.append(route)
        listed = {r["dst"] for r in reported}
        for dst, gateway in sorted(present):
            if dst in DEFAULT_ROUTES and gateway and dst not in listed:
                reported.append({"dst": dst, "gw": gateway})
    return host_link.mac, reported


def _result(req: Request, conf: BridgeConf, network, endpoint, host_mac: str, routes, ipam_part,
            previous: dict[str, Any] | None) -> dict[str, Any]:
    from drivers.bridge import bridge_mac

    interfaces = [
        {"name": network.driver_state["bridge"], "mac": bridge_mac(network.id)},
        {"name": endpoint.host_ifname, "mac": host_mac},
        {"name": endpoint.ifname, "mac": endpoint.mac, "mtu": network.mtu, "sandbox": req.netns},
    ]
    result: dict[str, Any] = {"interfaces": [], "ips": [], "routes": [], "dns": {}}
    if previous:  # chained after another plugin: its result, augmented
        result.update({k: list(previous.get(k, [])) for k in ("interfaces", "ips", "routes")})
        result["dns"] = dict(previous.get("dns") or {})
    offset = len(result["interfaces"])
    result["interfaces"] += interfaces
    result["ips"] += [dict(ip, interface=offset + 2) for ip in ipam_part["ips"]]
    result["routes"] += routes
    # Names: the configuration's own dns, else the agent's name server (README, "Names").
    result["dns"] = conf.dns or ipam_part["dns"] or result["dns"] or name_server.cni_dns()
    return result


# --- DEL, CHECK, GC, STATUS -----------------------------------------------------------------------


def delete(req: Request, context: Context) -> None:
    """Idempotent: no record, no namespace, never added — all succeed. The delegated IPAM's DEL
    always runs (spec §4), also when netctl holds no record."""
    ipam_type = _ipam_type_for_delete(req)
    netns_usable = kernel.usable_netns(req.netns)
    controller = context.controller(req)
    endpoint = controller.detach_container(req.name, req.container_id, req.ifname, remove_links=context.remove_links)
    if endpoint is not None:
        name_server.sync(controller.root)  # its name goes, and the server's sockets release the namespace
    if endpoint is None and netns_usable:
        kernel.remove_leftover_interface(req.netns, req.ifname)
    if ipam_type and ipam_type != native_ipam.NAME:
        delegate.call(req, context, ipam_type, "DEL")
    return None


def _ipam_type_for_delete(req: Request) -> str:
    """DEL must work with whatever the runtime cached: a malformed section is no reason to keep state."""
    section = req.config.get("ipam")
    value = section.get("type") if isinstance(section, dict) else None
    return value if isinstance(value, str) else ""


def check(req: Request, context: Context) -> None:
    """Spec CHECK: what ADD made (and prevResult lists) is still there, as it was."""
    previous = prev_result(req)
    if previous is None:
        raise CNIError(CNI_INTERNAL, "Required prevResult missing")
    conf = parse_conf(req)
    kernel.require_container_netns(req.netns)
    controller = context.controller(req)
    found = controller.find_attachment(req.name, req.container_id, req.ifname)
    if found is None:
        raise CNIError(CNI_INTERNAL, f"netctl-bridge: container {req.container_id} has no interface {req.ifname} "
                                     f"on network {req.name!r}")
    network, endpoint, _ = found
    if network.driver != "bridge":
        raise CNIError(CNI_INTERNAL,
                       f"network {req.name!r} is a netctl {network.driver} network, not a netctl-bridge one")
    bridge = controller.host.link(network.driver_state["bridge"])
    if bridge is None or bridge.kind != "bridge":
        raise CNIError(CNI_INTERNAL, f"bridge {network.driver_state.get('bridge')} of network {req.name!r} is missing")
    port = controller.host.link(endpoint.host_ifname)
    if port is None or port.master != bridge.index:
        raise CNIError(CNI_INTERNAL, f"host veth {endpoint.host_ifname} is missing or not a port of {bridge.name}")
    kernel.check_container_side(req, previous, endpoint)
    if not conf.native_ipam:
        delegate.call(req, context, conf.ipam_type, "CHECK")
    return None


def gc(req: Request, context: Context) -> None:
    """Detach what is not in cni.dev/valid-attachments, then GC the delegated IPAM (spec §2 GC, §4).
    Keeps going past a failure and reports the first one at the end."""
    valid = cfg.valid_attachments(req)
    errors = []
    try:
        context.controller(req).gc_attachments(req.name, valid)
    except Exception as err:
        errors.append(err)
    ipam_type = _ipam_type_for_delete(req)
    if ipam_type and ipam_type != native_ipam.NAME:
        try:
            delegate.call(req, context, ipam_type, "GC")
        except Exception as err:
            errors.append(err)
    if errors:
        raise errors[0]
    return None


def status(req: Request, context: Context) -> None:
    conf = parse_conf(req)
    if conf.native_ipam:
        native_ipam.require_addresses_left(req, context)
    else:
        delegate.call(req, context, conf.ipam_type, "STATUS")
    return None
