"""Docker-shaped JSON views of the library's objects, for `network inspect` and `sandbox inspect`.

The library returns model objects (Network, Endpoint, Sandbox and their members); the shape users see
is the front ends' business, shaped like `docker network inspect` so existing habits carry over.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runner.views import endpoint_view

if TYPE_CHECKING:
    from libnetwork.controller import Controller
    from libnetwork.model import Endpoint, Network, Sandbox

__all__ = ["endpoint_view", "inspect_network", "inspect_sandbox", "network_view"]


def inspect_network(controller: "Controller", ref: str) -> dict[str, Any]:
    members = controller.inspect_network(ref)
    return network_view(members.network, members.endpoints, members.sandboxes, members.hosts)


def inspect_sandbox(controller: "Controller", ref: str) -> dict[str, Any]:
    members = controller.inspect_sandbox(ref)
    networks = members.networks
    view = members.sandbox.to_dict()
    view["endpoints"] = [
        dict(endpoint_view(e), network=networks[e.network_id].name if networks[e.network_id] else "")  # type: ignore[union-attr]
        for e in members.endpoints
    ]
    return view


def network_view(network: Network, endpoints: list[Endpoint], sandboxes: dict[str, Sandbox | None],
                 hosts: dict[str, str] | None = None) -> dict[str, Any]:
    """`network inspect` output, shaped like `docker network inspect` so existing habits carry over.
    `hosts` ({endpoint id: host name}, global networks): each endpoint also says where it lives and
    its state; a sandbox of another host is named by its endpoint."""
    def container(e: Endpoint) -> dict[str, Any]:
        sandbox = sandboxes.get(e.sandbox_id)
        view = endpoint_view(e) | {"Sandbox": sandbox.name if sandbox else (e.name if hosts is not None else "")}
        if hosts is not None:
            view |= {"Host": hosts.get(e.id, ""), "State": e.state}
        return view

    return {
        "Name": network.name,
        "Id": network.id,
        "Created": network.created,
        "Scope": network.scope,
        "Driver": network.driver,
        "EnableIPv6": network.ipv6,
        "IPAM": {
            "Driver": "default",
            "Config": [
                {
                    "Subnet": p.subnet,
                    "Gateway": p.gateway,
                    **({"IPRange": p.ip_range} if p.ip_range else {}),
                    **({"AuxiliaryAddresses": p.aux_addresses} if p.aux_addresses else {}),
                }
                for p in network.pools
            ],
        },
        "Internal": network.internal,
        "MTU": network.mtu,
        "Bridge": network.driver_state.get("bridge", ""),
        **({"VNI": int(network.driver_state["vni"])} if network.driver_state.get("vni", "").isdigit() else {}),
        "Options": dict(network.options),
        "Labels": dict(network.labels),
        "Containers": {e.sandbox_id: container(e) for e in endpoints},
    }
