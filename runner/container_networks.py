"""Connect a container to a network, or disconnect it, after it was created (`docker network
connect/disconnect`): its sandbox joins or leaves now when it runs, and its config.json records the
change so that its next start attaches the same networks.

The sandbox's own steps (endpoint, addresses, veth, hosts files through names-changed) are the
library's connect/disconnect, the calls `netctl network connect` makes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from libnetwork.errors import AlreadyExists, InvalidArgument, NotFound
from runner.spec import NETWORK_HOST, NETWORK_NONE, NetworkAttachment
from runner.state import Container, Records

if TYPE_CHECKING:
    from libnetwork.controller import Controller
    from libnetwork.model import Endpoint, Network
    from runner.paths import Layout


def live_sandbox(controller: Controller, container: Container) -> str:
    """The id of the container's sandbox if it has one now (it runs), else ""."""
    sandbox_id = container.config.sandbox_id
    if not sandbox_id:
        return ""
    with controller.store.snapshot() as tx:
        return sandbox_id if tx.get_sandbox(sandbox_id) is not None else ""


def _check_mode(container: Container) -> None:
    if container.config.network_mode in (NETWORK_HOST, NETWORK_NONE):
        raise InvalidArgument(f"container {container.name!r} uses network mode {container.config.network_mode}; "
                              "it cannot be connected to other networks")


def connect_container(controller: Controller, layout: Layout, container_ref: str, network_ref: str, *,
                      ip: str = "", ip6: str = "", aliases: list[str] | None = None,
                      mac: str = "") -> tuple[Container, Network, Endpoint | None]:
    """Connect; the endpoint when the container runs (None: recorded for its next start)."""
    records = Records(layout)
    container = records.find(container_ref)
    _check_mode(container)
    network = controller.resolve_network(network_ref)
    config = container.config
    if any(a.network in (network.name, network.id) for a in config.networks):
        raise AlreadyExists(f"container {container.name!r} is already connected to network {network.name!r}")
    if ip6:
        raise InvalidArgument("a static IPv6 address (IPAMConfig.IPv6Address) is not supported for a container; "
                              "leave it empty")
    endpoint = None
    sandbox_id = live_sandbox(controller, container)
    if sandbox_id:
        endpoint = controller.connect(network.id, sandbox_id, ip=ip, aliases=list(aliases or []), mac=mac)
    config.networks.append(NetworkAttachment(network=network.name, ip=ip, aliases=list(aliases or [])))
    try:
        records.write_config(config)
    except BaseException:
        if sandbox_id:
            controller.disconnect(network.id, sandbox_id)
        raise
    return container, network, endpoint


def disconnect_container(controller: Controller, layout: Layout, container_ref: str, network_ref: str, *,
                         force: bool = False, remove_links=None) -> tuple[Container, Network]:
    """Disconnect; `remove_links` as Controller.disconnect takes it (the agent deletes the veth pair
    after answering)."""
    records = Records(layout)
    container = records.find(container_ref)
    network = controller.resolve_network(network_ref)
    config = container.config
    kept = [a for a in config.networks if a.network not in (network.name, network.id)]
    sandbox_id = live_sandbox(controller, container)
    connected = len(kept) != len(config.networks)
    if sandbox_id:
        try:
            controller.disconnect(network.id, sandbox_id, remove_links=remove_links)
            connected = True
        except NotFound:
            if not connected and not force:
                raise
    if not connected:
        if force:
            return container, network
        raise NotFound(f"container {container.name!r} is not connected to network {network.name!r}")
    config.networks = kept
    records.write_config(config)
    return container, network
