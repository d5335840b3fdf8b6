"""netctl-null: the container's loopback, like the reference `loopback` plugin, on a netctl null
network. ADD brings `lo` up (the interface is always lo, whatever CNI_IFNAME says) and records the
attachment on the null network named after the CNI network, so `netctl network inspect` lists it; DEL
takes `lo` down and drops the record. Chained after another plugin, ADD passes prevResult on unchanged.
"""

from __future__ import annotations

from typing import Any

from cni_plugins import config as cfg
from cni_plugins import kernel
from cni_plugins.skel import CNIError, Context, Request, prev_result
from libnetwork.errors import CNI_INTERNAL

NAME = "netctl-null"
LOOPBACK = "lo"
LOOPBACK_ADDRESSES = ("127.0.0.1/8", "::1/128")


def handle(req: Request, context: Context) -> dict[str, Any] | None:
    return {"ADD": add, "DEL": delete, "CHECK": check, "GC": gc, "STATUS": status}[req.command](req, context)


def add(req: Request, context: Context) -> dict[str, Any]:
    from libnetwork.controller import NetworkSpec
    from libnetwork.netlink import Netlink

    previous = prev_result(req)
    kernel.require_container_netns(req.netns)
    controller = context.controller(req)
    network, created = controller.ensure_network(NetworkSpec(name=req.name, driver="null",
                                                             labels={"netctl.cni.plugin": NAME}))
    try:
        controller.attach_container(req.name, req.container_id, req.netns, LOOPBACK, labels=cfg.labels_from_args(req))
    except BaseException:
        if created:
            controller.discard_network(network)
        raise
    try:
        with Netlink(req.netns) as inside:
            inside.set_link(LOOPBACK, up=True)
            have = {a.address for a in inside.addrs(kernel.existing_link(inside, LOOPBACK, req.netns).index)}
    except BaseException:
        controller.detach_container(req.name, req.container_id)
        raise
    if previous is not None:
        return previous
    return {
        "interfaces": [{"name": LOOPBACK, "mac": "00:00:00:00:00:00", "sandbox": req.netns}],
        "ips": [{"address": a, "interface": 0} for a in LOOPBACK_ADDRESSES if a in have],
        "routes": [],
        "dns": {},
    }


def delete(req: Request, context: Context) -> None:
    from libnetwork.netlink import Netlink

    netns_usable = kernel.usable_netns(req.netns)
    context.controller(req).detach_container(req.name, req.container_id)
    if netns_usable:
        with Netlink(req.netns) as inside:
            inside.set_link(LOOPBACK, up=False)
    return None


def check(req: Request, context: Context) -> None:
    from libnetwork.netlink import Netlink

    kernel.require_container_netns(req.netns)
    if context.controller(req).find_attachment(req.name, req.container_id) is None:
        raise CNIError(CNI_INTERNAL,
                       f"netctl-null: container {req.container_id} is not attached to network {req.name!r}")
    with Netlink(req.netns) as inside:
        if not kernel.existing_link(inside, LOOPBACK, req.netns).up:
            raise CNIError(CNI_INTERNAL, "loopback interface is down")
    return None


def gc(req: Request, context: Context) -> None:
    # The attachment's ifname is always lo, whatever the runtime named it: judge by container id.
    valid = {(container_id, LOOPBACK) for container_id, _ in cfg.valid_attachments(req)}
    context.controller(req).gc_attachments(req.name, valid)
    return None


def status(req: Request, context: Context) -> None:
    from libnetwork.errors import StoreError

    try:
        context.controller(req).find_network(req.name)
    except StoreError as err:
        raise CNIError(50, f"netctl state store unavailable: {err}") from None
    return None
