"""netctl-overlay: the CNI face of netctl's overlay driver (a global network, spanning hosts over VXLAN).

The CNI network `name` is a netctl overlay network of that name, kept in the global store (etcd):
created by the first ADD on any host from this configuration (VNI, UDP port, MTU, subnets from the
IPAM section), afterwards required to have the same settings on every host. A container attachment
is an endpoint of that network in an external sandbox (the runtime's namespace): `netctl network
inspect` on any host lists it with its host, the daemons of the other hosts learn its peer record and
program their FDB/neighbour tables, and doctor/gc cover it like any overlay endpoint.

Keys: store (etcd://HOST:PORT; default NETCTL_STORE, then ROOT/global.json as `netctl daemon
--store` wrote it), vni (256-16777215; default: the lowest free one), port (VXLAN UDP port,
1024-49151; default 4789), mtu (default: the underlay's minus 50), ipam, dns, runtimeConfig {ips,
mac, aliases}, args.cni {ips, mac}, CNI_ARGS IP/MAC/K8S_POD_*. Refused with code 2: portMappings
(an overlay segment has no way in from the host), rangeStart/rangeEnd (the global IPAM allocates
whole subnets), and any IPAM type but netctl-ipam: host-local and its kind allocate per host, so
two hosts would hand out the same address; mirroring them into the global IPAM cannot prevent that.

The host must be registered in the store, which a running `netctl daemon --store URL` does (it also
keeps the other hosts' peers programmed here); without it ADD and STATUS say so.

IPAM (the `ipam` section, netctl-ipam's keys: ranges/subnet/gateway, routes, resolvConf) is
optional: without it netctl picks a free subnet for the network. Addresses come from the global
IPAM in etcd, one per IP version and attachment. The segment has no router (as in Docker, an
overlay network is an isolated L2 segment), so results carry no gateway and no default route; the
IPAM routes are installed on-link through the container's interface (or via their gw).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cni_plugins import config as cfg
from cni_plugins import ipam as native_ipam
from cni_plugins import kernel
from cni_plugins.skel import CNIError, Context, Request, parse_dns, prev_result, state_root
from libnetwork.errors import CNI_INTERNAL, CNI_INVALID_CONFIG
from libnetwork import name_server

NAME = "netctl-overlay"
STATUS_NOT_AVAILABLE = 50  # spec STATUS code: the plugin cannot serve ADD now
VNI_RANGE = (256, (1 << 24) - 1)  # libnetwork/store/etcd.py VNI_FIRST/VNI_LAST (Docker's range)
PORT_RANGE = (1024, 49151)  # drivers/overlay.py PORT_RANGE
UNSUPPORTED = {  # key -> why; refused when set to anything but its neutral value
    "ipMasq": "an overlay segment has no router to masquerade through",
    "vlan": "netctl-overlay has no VLAN support",
    "hairpinMode": "an overlay segment has no bridge port on the host",
}


@dataclass
class OverlayConf:
    store: str  # "" = the host's default (NETCTL_STORE, ROOT/global.json)
    vni: int
    port: int
    mtu: int
    ipam: native_ipam.IpamConf | None  # None: netctl picks the subnet
    dns: dict[str, Any]
    fast_path: bool = True  # "fastPath": false keeps every frame on the segment's bridge


def parse_conf(req: Request) -> OverlayConf:
    conf = req.config
    for key, why in UNSUPPORTED.items():
        if conf.get(key) not in (None, False, 0, [], ""):
            raise cfg.unsupported(key, conf[key], why)
    store = cfg.get_str(conf, "store")
    if store:
        from libnetwork.store.etcd import parse_url  # no etcd client import: only the URL rules

        try:
            parse_url(store)
        except Exception:  # InvalidArgument: one message for every malformed URL
            raise cfg.invalid("store", store, "must be an etcd address like etcd://HOST:PORT") from None
    ipam_section = cfg.get_dict(conf, "ipam")
    ipam_conf = None
    if ipam_section:
        ipam_type = cfg.get_str(ipam_section, "type", where="ipam.")
        if ipam_type != native_ipam.NAME:
            raise cfg.unsupported("ipam.type", ipam_type, "overlay addresses come from netctl's global IPAM in etcd; "
                                  "a per-host IPAM plugin would hand out the same address on two hosts; "
                                  "use netctl-ipam")
        ipam_conf = native_ipam.parse_ipam(req)
        if ipam_conf.ranges:
            subnet = next(iter(ipam_conf.ranges))
            raise cfg.unsupported(f"ipam rangeStart/rangeEnd of {subnet}", list(ipam_conf.ranges[subnet]),
                                  "overlay networks allocate from whole subnets; give a smaller subnet instead")
    try:
        dns = parse_dns(conf.get("dns"))
    except (TypeError, ValueError) as err:
        raise cfg.invalid("dns", conf.get("dns"), str(err)) from None
    return OverlayConf(
        store=store,
        vni=_optional_int(conf, "vni", VNI_RANGE),
        port=_optional_int(conf, "port", PORT_RANGE),
        mtu=cfg.get_int(conf, "mtu", high=65535),
        ipam=ipam_conf,
        dns=dns,
        fast_path=cfg.get_bool(conf, "fastPath", default=True),
    )


def _optional_int(conf: dict[str, Any], key: str, bounds: tuple[int, int]) -> int:
    """0 when absent (netctl's default), else a whole number within bounds."""
    if conf.get(key) in (None, 0):
        return 0
    return cfg.get_int(conf, key, low=bounds[0], high=bounds[1])


def network_spec(req: Request, conf: OverlayConf):
    from libnetwork.controller import NetworkSpec

    options = {k: str(v) for k, v in (("vni", conf.vni), ("port", conf.port)) if v}
    if not conf.fast_path:
        options["fastpath"] = "false"
    return NetworkSpec(name=req.name, driver="overlay", pools=list(conf.ipam.pools) if conf.ipam else [],
                       mtu=conf.mtu, options=options, labels={"netctl.cni.plugin": NAME})


def controller_for(req: Request, context: Context, store: str = ""):
    """A controller of this state root on the configuration's store. The request's environment, not
    the process's, names the store and host (the CNI service serves many requests in one process)."""
    from libnetwork.controller import Controller

    root = state_root(req.config, req.env)
    store_url = store or req.env.get("NETCTL_STORE") or None
    host_name = req.env.get("NETCTL_HOST_NAME") or None
    key = f"{root}\0overlay\0{store_url or ''}\0{host_name or ''}"
    if key not in context.controllers:
        context.controllers[key] = Controller(root, store_url=store_url, host_name=host_name)
    return context.controllers[key]


def require_registered_host(controller) -> None:
    """The host must have a store and a registration (a running `netctl daemon --store`)."""
    if not controller.store_url:
        raise CNIError(CNI_INVALID_CONFIG, "netctl-overlay needs a global store and none is configured",
                       "set \"store\": \"etcd://HOST:PORT\" in the network configuration, or start "
                       "`netctl daemon --store etcd://HOST:PORT` on this host")
    with controller.global_store.snapshot() as g:
        registered = g.get_host(controller.host_name) is not None
    if not registered:
        raise CNIError(CNI_INTERNAL, f"host {controller.host_name!r} is not registered in the global store at "
                                     f"{controller.store_url}; start `netctl daemon --store {controller.store_url}` "
                                     "on this host first")


def handle(req: Request, context: Context) -> dict[str, Any] | None:
    return {"ADD": add, "DEL": delete, "CHECK": check, "GC": gc, "STATUS": status}[req.command](req, context)


# --- ADD ------------------------------------------------------------------------------------------


def add(req: Request, context: Context) -> dict[str, Any]:
    """Every input is checked before anything is created; each step is undone if a later one fails."""
    conf = parse_conf(req)
    previous = prev_result(req)
    kernel.require_container_netns(req.netns)
    if cfg.requested_ports(req):
        raise cfg.unsupported("runtimeConfig.portMappings", req.config["runtimeConfig"]["portMappings"],
                              "an overlay network cannot publish ports")
    wanted = cfg.requested_ips(req)
    wanted_mac = cfg.requested_mac(req)
    aliases = cfg.requested_aliases(req, context.log)
    labels = cfg.labels_from_args(req)
    controller = controller_for(req, context, conf.store)
    require_registered_host(controller)

    undo = []  # steps to take back, newest first, if a later step fails
    try:
        network, created = controller.ensure_network(network_spec(req, conf))
        if created:
            undo.append(lambda: controller.discard_network(network))
        else:
            _require_same_overlay(network, conf)
        _, endpoint = controller.attach_container(
            req.name, req.container_id, req.netns, req.ifname, ip=wanted.get(4, ""), ip6=wanted.get(6, ""),
            mac=wanted_mac, aliases=aliases, labels=labels,
        )
        undo.append(lambda: controller.detach_container(req.name, req.container_id, req.ifname))
        routes = _install_routes(req, endpoint, conf.ipam.routes if conf.ipam else [])
        result = _result(req, conf, controller, network, endpoint, routes, previous)  # reads the kernel too
        name_server.sync(controller.root)  # the name server listens in the namespace before the runtime goes on
        return result
    except BaseException:
        for step in reversed(undo):
            try:
                step()
            except Exception as err:  # report the first failure, not the undo's
                context.log.append(f"{NAME}: undoing a failed ADD: {err}")
        raise


def _require_same_overlay(network, conf: OverlayConf) -> None:
    """What ensure_network does not compare for overlay networks: the VXLAN identity."""
    differences = []
    if conf.vni and network.driver_state.get("vni") != str(conf.vni):
        differences.append(f"VNI {network.driver_state.get('vni')}, not {conf.vni}")
    if conf.port and network.driver_state.get("port") != str(conf.port):
        differences.append(f"port {network.driver_state.get('port')}, not {conf.port}")
    if differences:
        raise CNIError(CNI_INVALID_CONFIG, f"network {network.name!r} already exists with other settings "
                                           f"({'; '.join(differences)}); give the CNI network another name, or "
                                           f"remove the old one with `netctl network rm {network.name}`")


def _install_routes(req: Request, endpoint, routes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The IPAM routes, through the container's interface: via their gw, else on-link."""
    if not routes:
        return []
    from libnetwork.netlink import Netlink

    with Netlink(req.netns) as inside:
        link = kernel.existing_link(inside, endpoint.ifname, req.netns)
        for route in routes:
            inside.add_route(route["dst"], gateway=route.get("gw", ""), oif=link.index)
    return [dict(r) for r in routes]


def _result(req: Request, conf: OverlayConf, controller, network, endpoint, routes, previous) -> dict[str, Any]:
    """Interfaces: the segment's bridge and the endpoint's port on it, both in the network's own
    namespace on this host (named in `sandbox`), then the container's interface."""
    from drivers.overlay import OverlayDriver, bridge_name
    from libnetwork.netlink import Netlink

    segment = OverlayDriver(root=controller.root).netns_path(network)
    with Netlink(segment) as inside:  # runtimes parse every interface's MAC (podman refuses an empty one)
        bridge, port = inside.link(bridge_name(network)), inside.link(endpoint.host_ifname)
    if bridge is None or port is None:
        raise CNIError(CNI_INTERNAL, f"bridge or port {endpoint.host_ifname} of overlay network {network.name!r} "
                                     "vanished during ADD")
    interfaces = [
        {"name": bridge.name, "mac": bridge.mac, "sandbox": segment},
        {"name": port.name, "mac": port.mac, "sandbox": segment},
        {"name": endpoint.ifname, "mac": endpoint.mac, "mtu": network.mtu, "sandbox": req.netns},
    ]
    result: dict[str, Any] = {"interfaces": [], "ips": [], "routes": [], "dns": {}}
    if previous:  # chained after another plugin: its result, augmented
        result.update({k: list(previous.get(k, [])) for k in ("interfaces", "ips", "routes")})
        result["dns"] = dict(previous.get("dns") or {})
    offset = len(result["interfaces"])
    result["interfaces"] += interfaces
    # No gateway: nothing on the segment holds the pool's gateway address (see the module doc).
    result["ips"] += [{"address": a, "interface": offset + 2} for a in endpoint.addresses]
    result["routes"] += routes
    # Names: the configuration's own dns, else the agent's name server (README, "Names").
    result["dns"] = conf.dns or (conf.ipam.dns if conf.ipam else {}) or result["dns"] or name_server.cni_dns()
    return result


# --- DEL ------------------------------------------------------------------------------------------


def delete(req: Request, context: Context) -> None:
    """Idempotent: no record, no namespace, never added — all succeed. What an ADD killed half-way
    left (an etcd record of this host, a veth) goes too. With etcd unreachable the kernel side and
    the local record still go; what stays in etcd is named on stderr, and `netctl gc` releases it
    once etcd answers again."""
    from libnetwork.errors import InvalidArgument, StoreError

    netns_usable = kernel.usable_netns(req.netns)
    store = req.config.get("store")
    controller = controller_for(req, context, store if isinstance(store, str) else "")
    try:
        endpoint = controller.detach_container(req.name, req.container_id, req.ifname)
        if endpoint is None and controller.store_url:
            release_interrupted_adds(controller, req.name, lambda name, ifname: (
                name == _sandbox_name(req.container_id) and ifname == req.ifname))
    except (StoreError, InvalidArgument) as err:  # etcd away, or a `store` the runtime cached malformed
        endpoint = _detach_without_store(controller, req, context, err.message)
    if endpoint is not None:
        name_server.sync(controller.root)  # its name goes, and the server's sockets release the namespace
    if endpoint is None and netns_usable:
        kernel.remove_leftover_interface(req.netns, req.ifname)
    return None


def _sandbox_name(container_id: str) -> str:
    from libnetwork.controller import container_sandbox_name

    return container_sandbox_name(container_id)


def release_interrupted_adds(controller, network_name: str, matches, *, creating_only: bool = False) -> list[str]:
    """An ADD killed after its etcd allocation leaves this host's endpoint record (and addresses) in
    etcd with no local record: released by the controller (GlobalNetworks.release_unrecorded_endpoints,
    what `netctl gc` does for the same case), the ones `matches(endpoint name, ifname)` picks. Returns
    their ids. creating_only (GC, which matches by exclusion): only records still in CREATING."""
    return controller.release_unrecorded_endpoints(network_name, matches, creating_only=creating_only)


def _detach_without_store(controller, req: Request, context: Context, why: str):
    """DEL while etcd is away: the attachment is found in this host's own records by container and
    interface (a runtime keys attachments by those; the network's name would need etcd), then the
    controller's own etcd-tolerant removal takes the kernel side and the local copy."""
    endpoint = controller.detach_container_without_store(req.container_id, req.ifname)
    if endpoint is None:
        return None
    context.log.append(f"{NAME}: {why}; removed {req.ifname} of container {req.container_id} here, but its "
                       f"address(es) {', '.join(endpoint.addresses) or '(none)'} and endpoint {endpoint.id[:12]} "
                       f"stay in etcd until `netctl gc` runs on this host with etcd back")
    return endpoint


# --- CHECK, GC, STATUS ----------------------------------------------------------------------------


def check(req: Request, context: Context) -> None:
    """Spec CHECK: what ADD made (and prevResult lists) is still there, as it was, here and in etcd."""
    from libnetwork import netns
    from libnetwork.netlink import Netlink

    previous = prev_result(req)
    if previous is None:
        raise CNIError(CNI_INTERNAL, "Required prevResult missing")
    conf = parse_conf(req)
    kernel.require_container_netns(req.netns)
    controller = controller_for(req, context, conf.store)
    found = controller.find_attachment(req.name, req.container_id, req.ifname)
    if found is None:
        raise CNIError(CNI_INTERNAL, f"{NAME}: container {req.container_id} has no interface {req.ifname} "
                                     f"on network {req.name!r}")
    network, endpoint, _ = found
    if network.driver != "overlay":
        raise CNIError(CNI_INTERNAL,
                       f"network {req.name!r} is a netctl {network.driver} network, not a netctl-overlay one")
    _require_same_overlay(network, conf)
    with controller.global_store.snapshot() as g:
        if g.get_endpoint(endpoint.id, network.id) is None:
            raise CNIError(CNI_INTERNAL, f"endpoint {endpoint.id[:12]} of {req.container_id} is missing in etcd")
    from drivers.overlay import OverlayDriver

    segment = OverlayDriver(root=controller.root).netns_path(network)
    if not netns.is_netns(segment):
        raise CNIError(CNI_INTERNAL, f"overlay network {req.name!r} is not built on this host ({segment} is missing)")
    with Netlink(segment) as inside:
        from drivers.overlay import bridge_name

        bridge = inside.link(bridge_name(network))
        port = inside.link(endpoint.host_ifname)
        if bridge is None or port is None or port.master != bridge.index:
            raise CNIError(CNI_INTERNAL, f"port {endpoint.host_ifname} of {req.container_id} is missing from the "
                                         f"bridge of overlay network {req.name!r}")
    kernel.check_container_side(req, previous, endpoint)
    return None


def gc(req: Request, context: Context) -> None:
    """Detach this host's attachments not in cni.dev/valid-attachments (other hosts' are theirs)."""
    valid = cfg.valid_attachments(req)
    store = req.config.get("store")
    controller = controller_for(req, context, store if isinstance(store, str) else "")
    controller.gc_attachments(req.name, valid)
    if controller.store_url:  # and what ADDs killed half-way left in etcd for containers not valid
        keep = {(_sandbox_name(container_id), ifname) for container_id, ifname in valid}
        release_interrupted_adds(controller, req.name, lambda name, ifname: (name, ifname) not in keep,
                                 creating_only=True)
    return None


def status(req: Request, context: Context) -> None:
    """Code 50 unless ADD could work now: a store configured and answering, this host registered,
    and (once the network exists) a free address of every IP version it has."""
    from libnetwork.errors import NetctlError

    conf = parse_conf(req)
    controller = controller_for(req, context, conf.store)
    try:
        require_registered_host(controller)
        usage = controller.pool_usage(req.name)
    except CNIError as err:
        raise CNIError(STATUS_NOT_AVAILABLE, err.msg, err.details) from None
    except NetctlError as err:  # StoreError: etcd unreachable
        raise CNIError(STATUS_NOT_AVAILABLE, f"netctl global store unavailable: {err.message}") from None
    free: dict[int, int] = {}
    for pool in usage:
        version = 6 if ":" in pool.subnet else 4
        free[version] = free.get(version, 0) + max(0, pool.capacity - pool.in_use)
    exhausted = sorted(v for v, n in free.items() if n == 0)
    if exhausted:
        raise CNIError(STATUS_NOT_AVAILABLE, f"overlay network {req.name!r} has no free IPv{exhausted[0]} address left",
                       "remove containers or give the network a larger subnet")
    return None
