"""Typed access to a CNI configuration: every key read through here is checked, and a wrong type or
value is a spec error naming the key and the value (code 7), never a KeyError deep inside a plugin.
Also the per-request inputs several plugins share: requested addresses, MAC, port mappings, aliases.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from cni_plugins.skel import CNIError, Request, shown
from libnetwork.errors import CNI_INVALID_CONFIG, CNI_UNSUPPORTED_FIELD

_MISSING = object()


def invalid(key: str, value: Any, expected: str) -> CNIError:
    return CNIError(CNI_INVALID_CONFIG, f"invalid {key}={shown(value)}: {expected}")


def unsupported(key: str, value: Any, why: str) -> CNIError:
    """Spec code 2: the message must name the key and the value."""
    return CNIError(CNI_UNSUPPORTED_FIELD, f"unsupported field {key}={shown(value)}: {why}")


def get_bool(section: dict[str, Any], key: str, default: bool = False, where: str = "") -> bool:
    value = section.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(where + key, value, "must be true or false")
    return value


def get_int(section: dict[str, Any], key: str, default: int = 0, *, low: int = 0, high: int = 2**31 - 1,
            where: str = "") -> int:
    value = section.get(key, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise invalid(where + key, value, f"must be a whole number from {low} to {high}")
    return value


def get_str(section: dict[str, Any], key: str, default: str = "", where: str = "") -> str:
    value = section.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str) or "\0" in value:
        raise invalid(where + key, value, "must be a string")
    return value


def get_dict(section: dict[str, Any], key: str, where: str = "") -> dict[str, Any]:
    value = section.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(where + key, value, "must be a JSON object")
    return value


def get_list(section: dict[str, Any], key: str, where: str = "") -> list[Any]:
    value = section.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid(where + key, value, "must be a list")
    return value


def parse_ip(text: Any, key: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address given as "10.1.0.5" or "10.1.0.5/24" (the prefix is the subnet's business)."""
    if not isinstance(text, str):
        raise invalid(key, text, "must be an IP address")
    try:
        return ipaddress.ip_interface(text.strip()).ip
    except ValueError:
        raise invalid(key, text, "must be an IP address") from None


def parse_cidr(text: Any, key: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if not isinstance(text, str) or "/" not in text:
        raise invalid(key, text, "must be a CIDR like 10.1.0.0/24")
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise invalid(key, text, "must be a CIDR like 10.1.0.0/24") from None


# --- inputs a runtime passes besides the configuration --------------------------------------------


def requested_ips(req: Request) -> dict[int, str]:
    """Static addresses asked for, by IP version: CNI_ARGS IP (comma separated), args.cni.ips and
    runtimeConfig.ips (capability `ips`), all accumulated as host-local does; args wins over CNI_ARGS
    for the same key (CONVENTIONS.md). netctl gives an attachment one address per IP version."""
    cni_args = get_dict(get_dict(req.config, "args"), "cni", where="args.")
    sources: list[tuple[str, Any]] = []
    if "ips" in cni_args:
        sources += [("args.cni.ips", ip) for ip in get_list(cni_args, "ips", where="args.cni.")]
    elif req.args.get("IP"):
        sources += [("CNI_ARGS IP", ip) for ip in req.args["IP"].split(",") if ip]
    sources += [("runtimeConfig.ips", ip)
                for ip in get_list(get_dict(req.config, "runtimeConfig"), "ips", where="runtimeConfig.")]
    wanted: dict[int, str] = {}
    for key, text in sources:
        address = parse_ip(text, key)
        if wanted.get(address.version, str(address)) != str(address):
            raise unsupported(key, text, f"netctl gives an attachment one IPv{address.version} address, and "
                                         f"{wanted[address.version]} is requested too")
        wanted[address.version] = str(address)
    return wanted


def requested_mac(req: Request) -> str:
    """runtimeConfig.mac (capability `mac`) over args.cni.mac over CNI_ARGS MAC, as the reference bridge."""
    from libnetwork.controller import check_mac
    from libnetwork.errors import InvalidArgument

    runtime = get_dict(req.config, "runtimeConfig")
    cni_args = get_dict(get_dict(req.config, "args"), "cni", where="args.")
    for key, mac in (("runtimeConfig.mac", get_str(runtime, "mac", where="runtimeConfig.")),
                     ("args.cni.mac", get_str(cni_args, "mac", where="args.cni.")),
                     ("CNI_ARGS MAC", req.args.get("MAC", ""))):
        if mac:
            try:
                return check_mac(mac)  # refused now, before anything is created
            except InvalidArgument:
                raise invalid(key, mac, "must be a unicast MAC address like 02:42:ac:11:00:02") from None
    return ""


def requested_ports(req: Request) -> list:
    """runtimeConfig.portMappings (capability `portMappings`) as netctl PortMappings."""
    from libnetwork.model import PortMapping

    ports = []
    for i, entry in enumerate(get_list(get_dict(req.config, "runtimeConfig"), "portMappings", where="runtimeConfig.")):
        where = f"runtimeConfig.portMappings[{i}]."
        if not isinstance(entry, dict):
            raise invalid(where[:-1], entry, "must be an object {hostPort, containerPort, protocol, hostIP}")
        protocol = get_str(entry, "protocol", "tcp", where=where).lower() or "tcp"
        if protocol not in ("tcp", "udp", "sctp"):
            raise invalid(where + "protocol", entry.get("protocol"), "must be tcp, udp or sctp")
        host_ip = get_str(entry, "hostIP", where=where)
        if host_ip:
            host_ip = str(parse_ip(host_ip, where + "hostIP"))
        ports.append(PortMapping(
            host_port=get_int(entry, "hostPort", low=1, high=65535, where=where),
            container_port=get_int(entry, "containerPort", low=1, high=65535, where=where),
            protocol=protocol,
            host_ip=host_ip,
        ))
    return ports


def requested_aliases(req: Request, log: list[str]) -> list[str]:
    """runtimeConfig.aliases: podman sends {network: [names]}, others a plain list. Names netctl
    cannot use are skipped with a note on stderr: aliases only feed name resolution."""
    from libnetwork.controller import validate_name
    from libnetwork.errors import InvalidArgument

    value = get_dict(req.config, "runtimeConfig").get("aliases")
    if isinstance(value, dict):
        value = value.get(req.name)
    if not isinstance(value, list):
        return []
    aliases = []
    for name in value:
        try:
            aliases.append(validate_name(name, "alias") if isinstance(name, str) else validate_name("", "alias"))
        except InvalidArgument as err:
            log.append(f"netctl: skipping alias {shown(name)}: {err}")
    return list(dict.fromkeys(aliases))


def labels_from_args(req: Request) -> dict[str, str]:
    """K8S_POD_* from CNI_ARGS, kept as sandbox labels so `netctl sandbox inspect` names the pod."""
    return {k: v for k, v in req.args.items() if k.startswith("K8S_POD_") and v}


def valid_attachments(req: Request) -> set[tuple[str, str]]:
    """GC's cni.dev/valid-attachments (libcni >= 1.2.3 also sends the spec-v1.1.0 tag's misspelled
    cni.dev/attachments). Missing altogether is an error, not "nothing is valid": that reading would
    detach every container of the network."""
    for key in ("cni.dev/valid-attachments", "cni.dev/attachments"):
        if key in req.config:
            break
    else:
        raise CNIError(CNI_INVALID_CONFIG, "GC needs cni.dev/valid-attachments (an empty list if none is valid)")
    valid = set()
    for entry in get_list(req.config, key):
        if (not isinstance(entry, dict) or not isinstance(entry.get("containerID"), str)
                or not isinstance(entry.get("ifname"), str)):
            raise invalid(key, entry, 'each entry must be {"containerID": "...", "ifname": "..."}')
        valid.add((entry["containerID"], entry["ifname"]))
    return valid
