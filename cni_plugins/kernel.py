"""Kernel steps the plugins take around the controller's own: checking CNI_NETNS, cleaning an
interface a killed ADD left behind, and reading or adding what sits inside the container."""

from __future__ import annotations

import os

from cni_plugins.skel import CNIError, shown
from libnetwork.errors import CNI_INTERNAL, CNI_INVALID_ENV, CNI_INVALID_NETNS

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from libnetwork.netlink import Link, Netlink

THREAD_NETNS = "/proc/thread-self/ns/net"


def _ns_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def is_own_netns(path: str) -> bool:
    """Whether `path` is the namespace the plugin runs in: the host's, never a container's."""
    return _ns_id(path) == _ns_id(THREAD_NETNS)


def require_container_netns(path: str) -> None:
    """CNI_NETNS must be a network namespace other than our own (spec: the plugin runs in the
    runtime's namespace; configuring that one as a container's would break the host)."""
    from libnetwork import netns

    if not netns.is_netns(path):
        raise CNIError(CNI_INVALID_ENV, f"CNI_NETNS {shown(path)} is not a network namespace",
                       "pass the container's namespace, e.g. /run/netns/NAME or /proc/PID/ns/net")
    refuse_own_netns(path)


def refuse_own_netns(path: str) -> None:
    if path and is_own_netns(path):
        raise CNIError(CNI_INVALID_NETNS, "plugin's netns and netns from CNI_NETNS should not be the same",
                       f"CNI_NETNS {shown(path)} is the host's own network namespace")


def usable_netns(path: str) -> bool:
    """For DEL: a namespace still there to clean up in (gone or empty is fine: nothing to do)."""
    from libnetwork import netns

    if not path:
        return False
    refuse_own_netns(path)
    return netns.is_netns(path)


def existing_link(inside: Netlink, name: str, netns_path: str) -> Link:
    """An interface that must be there (lo, or the one the controller has just made): a spec error
    naming it if it is not, rather than an internal error about None."""
    link = inside.link(name)
    if link is None:
        raise CNIError(CNI_INTERNAL, f"interface {name} is missing in {netns_path}")
    return link


def remove_leftover_interface(netns_path: str, ifname: str) -> bool:
    """DEL with no record: an ADD killed after creating the veth leaves CNI_IFNAME in the container.
    Like the reference bridge, DEL removes it (a veth only; the runtime keys the attachment by this
    name, so it is ours). True if something was removed."""
    from libnetwork.netlink import Netlink

    with Netlink(netns_path) as inside:
        link = inside.link(ifname)
        if link is None or link.kind != "veth":
            return False
        return inside.del_link(link.index)


def check_container_side(req, previous: dict, endpoint) -> None:
    """CHECK inside the container: the interface ADD made is a veth with prevResult's MAC, holds the
    addresses prevResult lists (and netctl recorded), and every prevResult route is in place."""
    from libnetwork.netlink import Netlink

    ours = [i for i, iface in enumerate(previous.get("interfaces", []))
            if iface.get("name") == req.ifname and iface.get("sandbox") == req.netns]
    expected_mac = previous["interfaces"][ours[0]].get("mac", "") if ours else ""
    with Netlink(req.netns) as inside:
        link = inside.link(req.ifname)
        if link is None or link.kind != "veth":
            raise CNIError(CNI_INTERNAL, f"interface {req.ifname} is missing in {req.netns} or is not a veth")
        if expected_mac and link.mac.lower() != expected_mac.lower():
            raise CNIError(CNI_INTERNAL, f"interface {req.ifname} has MAC {link.mac}, prevResult says {expected_mac}")
        have = {a.address for a in inside.addrs(link.index)}
        for ip in previous.get("ips", []):
            if ours and ip.get("interface") not in ours:
                continue
            if ip["address"] not in have:
                raise CNIError(CNI_INTERNAL, f"address {ip['address']} is missing on {req.ifname}")
            if ip["address"] not in endpoint.addresses:
                raise CNIError(CNI_INTERNAL, f"address {ip['address']} on {req.ifname} is not the one netctl "
                                             f"recorded ({', '.join(endpoint.addresses)})")
        routes = {(r.dst, r.gateway) for r in inside.routes()}
        for route in previous.get("routes", []):
            if not any(dst == route["dst"] and (not route.get("gw") or gw == route["gw"]) for dst, gw in routes):
                raise CNIError(CNI_INTERNAL, f"route {route['dst']} is missing in {req.netns}")
