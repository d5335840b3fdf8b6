"""The host ends and the in-service wait of a container's veth pairs (runner/lifecycle.py's helpers):
kept apart so the life cycle module stays about the life cycle."""

from __future__ import annotations

import contextlib
import os
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from libnetwork.controller import Controller

LINK_SERVICE_TIMEOUT_S = 1.0  # then start anyway: the links work, if a packet or two late


def await_in_service(controller: Controller, sandbox_id: str, netns_path: str) -> None:
    """Wait (bounded) until the kernel has put both ends of each veth in service.

    A link that just came up sends nothing until the kernel's linkwatch work has run for it
    (IFF_RUNNING; it swaps the no-op qdisc for a real one and enables the bridge port), a few ms
    later, more when the machine is busy: the container's first packet, typically an ARP request,
    would be dropped, and retried only after a second. The runner starts a process faster than that."""
    from libnetwork.controller import is_global_copy
    from libnetwork.netlink import Netlink

    with controller.store.snapshot() as tx:
        endpoints = tx.list_endpoints(sandbox_id=sandbox_id)
    inside_ends = [e.ifname for e in endpoints]
    if not inside_ends:
        return
    host_ends = [e.host_ifname for e in endpoints if e.host_ifname and not is_global_copy(e)]
    # An overlay endpoint's other end is a port of its network's bridge, in that network's own
    # namespace on this host (ROOT/overlay/<network id>, drivers/overlay.py), not in the host's.
    segment_ends = []
    if any(is_global_copy(e) for e in endpoints):
        from libnetwork.rootdir import OVERLAY_NETNS

        segment_ends = [(os.path.join(controller.root, OVERLAY_NETNS, e.network_id), e.host_ifname)
                        for e in endpoints if is_global_copy(e)]  # fmt: skip
    deadline = time.monotonic() + LINK_SERVICE_TIMEOUT_S
    delay = 0.0002
    with contextlib.ExitStack() as stack:
        inside = stack.enter_context(Netlink(netns_path))
        segments = {path: stack.enter_context(Netlink(path)) for path in {p for p, _ in segment_ends}}
        while time.monotonic() < deadline:
            links = ([inside.link(n) for n in inside_ends] + [controller.host.link(n) for n in host_ends]
                     + [segments[path].link(n) for path, n in segment_ends])  # fmt: skip
            if all(link is None or link.running for link in links):
                return
            time.sleep(delay)
            delay = min(delay * 2, 0.01)


def host_ends(controller: Controller, sandbox_id: str) -> list[str]:
    """The host-side interfaces of a sandbox's endpoints now (a global network's are not the host's)."""
    from libnetwork.controller import is_global_copy

    with controller.store.snapshot() as tx:
        return [e.host_ifname for e in tx.list_endpoints(sandbox_id=sandbox_id)
                if e.host_ifname and not is_global_copy(e)]  # fmt: skip
