"""Networks over the Docker API: list, inspect, create, connect, disconnect, remove, prune.

The same library calls `netctl network ...` makes (libnetwork's Controller; the IPAM request checks of
netctl/network_requests.py; a container's connect through runner/container_networks.py). Docker's
"host" and "none" networks are shown as the predefined networks they are in Docker: a container's
network mode, not objects netctl creates; they cannot be removed or connected to.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from libnetwork.errors import AlreadyExists
from libnetwork.model import Network, NetworkSpec
from netctl.docker_api.api import Api
from netctl.docker_api.http import ApiError, Empty, Json, Request, check_filters, conflict, not_found

PREDEFINED = {"host": "host", "none": "null"}  # Docker's network modes shown as networks: name -> driver
DEFAULT_BRIDGE = "bridge"  # netctl run's default network (runner/lifecycle.py DEFAULT_NETWORK)
DRIVERS = {"bridge", "null", "overlay"}
LIST_FILTERS = {"name", "id", "driver", "label", "type", "dangling", "scope"}
PRUNE_FILTERS = {"label", "label!", "until"}
# Docker's option names the bridge driver also takes (drivers/bridge.py OPTION_ALIASES), for inspect.
DOCKER_OPTION_NAMES = {"bridge": "com.docker.network.bridge.name", "icc": "com.docker.network.bridge.enable_icc",
                       "masquerade": "com.docker.network.bridge.enable_ip_masquerade",
                       "mtu": "com.docker.network.driver.mtu"}
CREATE_FIELDS = {"Name", "CheckDuplicate", "Driver", "Scope", "Internal", "Attachable", "Ingress", "ConfigOnly",
                 "ConfigFrom", "IPAM", "EnableIPv6", "EnableIPv4", "Options", "Labels"}
ENDPOINT_FIELDS_IGNORED = {"NetworkID", "EndpointID", "Gateway", "IPAddress", "IPPrefixLen", "IPv6Gateway",
                           "GlobalIPv6Address", "GlobalIPv6PrefixLen", "DNSNames"}  # outputs, sent back empty


def _predefined_id(name: str) -> str:
    return hashlib.sha256(f"netctl-predefined-{name}".encode()).hexdigest()


def _predefined_view(name: str) -> dict[str, Any]:
    return {"Name": name, "Id": _predefined_id(name), "Created": "0001-01-01T00:00:00Z", "Scope": "local",
            "Driver": PREDEFINED[name], "EnableIPv4": name != "none", "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Options": None, "Config": None}, "Internal": False, "Attachable": False,
            "Ingress": False, "ConfigFrom": {"Network": ""}, "ConfigOnly": False, "Containers": {}, "Options": {},
            "Labels": {}}


def _container_names(api: Api) -> dict[str, str]:
    from runner.state import Records

    return {c.id: c.name for c in Records(api.layout).all()}


def network_view(network: Network, endpoints: list, sandboxes: dict, names: dict[str, str]) -> dict[str, Any]:
    """`docker network inspect`'s shape."""
    containers = {}
    for endpoint in endpoints:
        sandbox = sandboxes.get(endpoint.sandbox_id)
        container_id = sandbox.container_id if sandbox is not None and sandbox.container_id else ""
        key = container_id or endpoint.sandbox_id or endpoint.id
        containers[key] = {
            "Name": names.get(container_id) or (sandbox.name if sandbox is not None else endpoint.name),
            "EndpointID": endpoint.id,
            "MacAddress": endpoint.mac,
            "IPv4Address": endpoint.address_of(4),
            "IPv6Address": endpoint.address_of(6),
        }
    options = {DOCKER_OPTION_NAMES.get(k, k) if network.driver == "bridge" else k: v
               for k, v in network.options.items()}
    if network.mtu and network.driver == "bridge":
        options.setdefault("com.docker.network.driver.mtu", str(network.mtu))
    return {
        "Name": network.name,
        "Id": network.id,
        "Created": network.created,
        "Scope": network.scope,
        "Driver": network.driver,
        "EnableIPv4": bool(network.pools_of(4)) or network.driver != "null",
        "EnableIPv6": network.ipv6,
        "IPAM": {
            "Driver": "default",
            "Options": {},
            "Config": [{"Subnet": p.subnet, "Gateway": p.gateway,
                        **({"IPRange": p.ip_range} if p.ip_range else {}),
                        **({"AuxiliaryAddresses": dict(p.aux_addresses)} if p.aux_addresses else {})}
                       for p in network.pools],
        },
        "Internal": network.internal,
        "Attachable": True,
        "Ingress": False,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": containers,
        "Options": options,
        "Labels": dict(network.labels),
    }


def _inspect(api: Api, ref: str) -> dict[str, Any]:
    if ref in PREDEFINED or any(ref == _predefined_id(n) for n in PREDEFINED):
        name = ref if ref in PREDEFINED else next(n for n in PREDEFINED if _predefined_id(n) == ref)
        return _predefined_view(name)
    with api.controller() as ctl:
        members = ctl.inspect_network(ref)
    names = _container_names(api) if members.endpoints else {}  # every container's record read: only if used
    return network_view(members.network, members.endpoints, members.sandboxes, names)


def _not_found(err: Exception, ref: str) -> ApiError:
    return not_found(f"network {ref} not found")


def inspect(api: Api, req: Request, ref: str) -> Json:
    from libnetwork.errors import NotFound

    try:
        return Json(_inspect(api, ref))
    except NotFound as err:
        raise _not_found(err, ref) from None


def _matches(view: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    if filters.get("name") and not any(re.search(re.escape(n), view["Name"]) for n in filters["name"]):
        return False
    if filters.get("id") and not any(view["Id"].startswith(i) for i in filters["id"]):
        return False
    if filters.get("driver") and view["Driver"] not in filters["driver"]:
        return False
    if filters.get("scope") and view["Scope"] not in filters["scope"]:
        return False
    for label in filters.get("label", []):
        key, sep, value = label.partition("=")
        if key not in view["Labels"] or (sep and view["Labels"][key] != value):
            return False
    builtin = view["Name"] in PREDEFINED or view["Name"] == DEFAULT_BRIDGE
    for kind in filters.get("type", []):
        if kind not in ("custom", "builtin"):
            raise ApiError(400, f"invalid filter: 'type'='{kind}'")
    if filters.get("type") and ("builtin" if builtin else "custom") not in filters["type"]:
        return False
    for dangling in filters.get("dangling", []):
        if dangling.lower() not in ("true", "false", "1", "0"):
            raise ApiError(400, f"invalid filter 'dangling={dangling}'")
        wants_dangling = dangling.lower() in ("true", "1")
        if builtin or bool(view["Containers"]) == wants_dangling:
            return False
    return True


def list_networks(api: Api, req: Request) -> Json:
    filters = req.filters()
    check_filters(filters, LIST_FILTERS)
    names = _container_names(api)
    views = []
    with api.controller() as ctl:
        for network in ctl.list_networks():
            try:
                members = ctl.inspect_network(network.id)
            except Exception:  # noqa: BLE001  removed meanwhile, or a global network whose store is away
                continue
            views.append(network_view(members.network, members.endpoints, members.sandboxes, names))
    views += [_predefined_view(name) for name in PREDEFINED]
    return Json([v for v in views if _matches(v, filters)])


def _bool(body: dict, key: str) -> bool:
    value = body.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ApiError(400, f"{key} must be true or false")
    return value


def _string_map(body: dict, key: str) -> dict[str, str]:
    value = body.get(key) or {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ApiError(400, f"{key} must be an object of strings")
    return {str(k): v for k, v in value.items()}


def spec_from_body(body: dict) -> NetworkSpec:
    """NetworkSpec from POST /networks/create; anything netctl would have to ignore is refused."""
    from netctl.network_requests import pools_from_ipam

    unknown = set(body) - CREATE_FIELDS
    if unknown:
        raise ApiError(400, f"network create: field {sorted(unknown)[0]!r} is not supported")
    name = body.get("Name")
    if not isinstance(name, str) or not name:
        raise ApiError(400, "network create: Name is required")
    driver = body.get("Driver") or "bridge"
    if not isinstance(driver, str):
        raise ApiError(400, "network create: Driver must be a string")
    if not isinstance(body.get("ConfigFrom") or {}, dict):
        raise ApiError(400, "network create: ConfigFrom must be an object")
    if driver in PREDEFINED.values() and driver != "null" or name in PREDEFINED:
        raise ApiError(403, f"{name} is a pre-defined network and cannot be created" if name in PREDEFINED
                       else f"only one instance of \"{driver}\" network is allowed")
    if driver not in DRIVERS:
        raise ApiError(400, f"network driver {driver!r} is not supported; netctl has bridge, null and overlay")
    for key in ("Ingress", "ConfigOnly"):
        if _bool(body, key):
            raise ApiError(400, f"network create: {key} is not supported by netctl")
    if (body.get("ConfigFrom") or {}).get("Network"):
        raise ApiError(400, "network create: ConfigFrom is not supported by netctl")
    if body.get("Scope") not in (None, "", "local") and not (driver == "overlay" and body["Scope"] == "global"):
        raise ApiError(400, f"network create: Scope {body['Scope']!r} is not supported by netctl")
    if body.get("EnableIPv4") is False:
        raise ApiError(400, "network create: EnableIPv4=false is not supported by netctl")
    ipam = body.get("IPAM") or {}
    if not isinstance(ipam, dict):
        raise ApiError(400, "network create: IPAM must be an object")
    if ipam.get("Driver") not in (None, "", "default"):
        raise ApiError(400, f"network create: IPAM driver {ipam['Driver']!r} is not supported; use default")
    if ipam.get("Options"):
        raise ApiError(400, f"network create: IPAM option {sorted(ipam['Options'])[0]!r} is not supported")
    pools = pools_from_ipam(ipam.get("Config"), name)
    return NetworkSpec(name=name, driver=driver, pools=pools, ipv6=_bool(body, "EnableIPv6"),
                       internal=_bool(body, "Internal"), options=_string_map(body, "Options"),
                       labels=_string_map(body, "Labels"))


def create(api: Api, req: Request) -> Json:
    spec = spec_from_body(req.json_object())
    with api.mutation(), api.controller() as ctl:
        try:
            network = ctl.create_network(spec)
        except AlreadyExists as err:
            if ctl.find_network(spec.name) is not None:
                raise conflict(f"network with name {spec.name} already exists") from None
            raise conflict(err.message) from None
    api.events.publish("network", "create", network.id, {"name": network.name, "type": network.driver})
    return Json({"Id": network.id, "Warning": ""}, status=201)


def _refuse_predefined(ref: str, what: str) -> None:
    if ref in PREDEFINED or ref == DEFAULT_BRIDGE and what == "removed":
        raise ApiError(403, f"{ref} is a pre-defined network and cannot be {what}")


def remove(api: Api, req: Request, ref: str) -> Empty:
    from libnetwork.errors import NotFound

    _refuse_predefined(ref, "removed")
    with api.mutation(), api.controller() as ctl:
        try:
            network = ctl.resolve_network(ref)
        except NotFound as err:
            raise _not_found(err, ref) from None
        if network.name == DEFAULT_BRIDGE:
            _refuse_predefined(DEFAULT_BRIDGE, "removed")
        ctl.delete_network(network.id, later=api.later)
    api.events.publish("network", "destroy", network.id, {"name": network.name, "type": network.driver})
    return Empty(204)


def _endpoint_config(body: dict) -> tuple[str, str, list[str], str]:
    config = body.get("EndpointConfig") or {}
    if not isinstance(config, dict):
        raise ApiError(400, "EndpointConfig must be an object")
    for key, value in config.items():
        if key in ENDPOINT_FIELDS_IGNORED or key in ("IPAMConfig", "Aliases", "MacAddress"):
            continue
        if value:  # Links, DriverOpts, LinkLocalIPs...: would change behaviour
            raise ApiError(400, f"EndpointConfig.{key} is not supported by netctl")
    ipam = config.get("IPAMConfig") or {}
    if not isinstance(ipam, dict):
        raise ApiError(400, "EndpointConfig.IPAMConfig must be an object")
    if ipam.get("LinkLocalIPs"):
        raise ApiError(400, "EndpointConfig.IPAMConfig.LinkLocalIPs is not supported by netctl")
    aliases = config.get("Aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise ApiError(400, "EndpointConfig.Aliases must be a list of names")
    return ipam.get("IPv4Address") or "", ipam.get("IPv6Address") or "", aliases, config.get("MacAddress") or ""


def _container_ref(body: dict, what: str) -> str:
    container_ref = body.get("Container")
    if not isinstance(container_ref, str) or not container_ref:
        raise ApiError(400, f"network {what}: Container is required")
    return container_ref


def _with_container(api: Api, ref: str, container_ref: str, action: str, call) -> Empty:
    """connect/disconnect: `call(ctl, network)` -> (container, network) under the API's mutation lock,
    Docker's 404s for the network and the container, then the network event."""
    from libnetwork.errors import NotFound

    with api.mutation(), api.controller() as ctl:
        try:
            network = ctl.resolve_network(ref)
        except NotFound as err:
            raise _not_found(err, ref) from None
        try:
            container, network = call(ctl, network)
        except NotFound as err:
            if err.message.startswith("container") and "not found" in err.message:
                raise not_found(f"No such container: {container_ref}") from None
            raise
    api.events.publish("network", action, network.id,
                       {"container": container.id, "name": network.name, "type": network.driver})
    return Empty(200)


def connect(api: Api, req: Request, ref: str) -> Empty:
    from runner.container_networks import connect_container

    body = req.json_object()
    container_ref = _container_ref(body, "connect")
    ip, ip6, aliases, mac = _endpoint_config(body)
    if ref in PREDEFINED:
        raise ApiError(400, f"container cannot be connected to network {ref}: it is a network mode; give it "
                            "when the container is created")

    def call(ctl, network):
        container, network, _ = connect_container(ctl, api.layout, container_ref, network.id, ip=ip, ip6=ip6,
                                                  aliases=aliases, mac=mac)
        return container, network

    return _with_container(api, ref, container_ref, "connect", call)


def disconnect(api: Api, req: Request, ref: str) -> Empty:
    from runner.container_networks import disconnect_container

    body = req.json_object()
    container_ref = _container_ref(body, "disconnect")
    force = _bool(body, "Force")

    def call(ctl, network):
        return disconnect_container(ctl, api.layout, container_ref, network.id, force=force,
                                    remove_links=api.remove_links)

    return _with_container(api, ref, container_ref, "disconnect", call)


def prune(api: Api, req: Request) -> Json:
    from netctl.docker_api.filters import label_filter, until_filter

    filters = req.filters()
    check_filters(filters, PRUNE_FILTERS)
    keep_labels = label_filter(filters)
    older = until_filter(filters)

    seen: dict[str, Network] = {}

    def keep(network: Network) -> bool:
        seen[network.name] = network
        return (network.name == DEFAULT_BRIDGE or not keep_labels(network.labels)
                or not older(network.created))

    with api.mutation(), api.controller() as ctl:
        removed = ctl.prune_networks(keep=keep)
    for name in removed:  # the event's actor is the network's id, as for network rm
        api.events.publish("network", "destroy", seen[name].id, {"name": name, "type": seen[name].driver})
    return Json({"NetworksDeleted": removed})


_REF = r"(?P<ref>[^/]+)"
ROUTES = [
    ("GET", r"/networks", list_networks),
    ("POST", r"/networks/create", create),
    ("POST", r"/networks/prune", prune),
    ("GET", rf"/networks/{_REF}", inspect),
    ("DELETE", rf"/networks/{_REF}", remove),
    ("POST", rf"/networks/{_REF}/connect", connect),
    ("POST", rf"/networks/{_REF}/disconnect", disconnect),
]
