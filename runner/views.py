"""Docker-shaped views of what the runner records: here, not in netctl/views.py with the network
views, because runner/lifecycle.py (which may not import netctl/) records them in a container's
inspect data; netctl/views.py uses them from here."""

from __future__ import annotations

from typing import Any

from libnetwork.model import Endpoint


def endpoint_view(endpoint: Endpoint) -> dict[str, Any]:
    """An endpoint as Docker shows it (NetworkSettings.Networks of a container, Containers of a network)."""
    return {
        "EndpointID": endpoint.id,
        "Name": endpoint.name,
        "Interface": endpoint.ifname,
        "HostInterface": endpoint.host_ifname,
        "MacAddress": endpoint.mac,
        "IPv4Address": endpoint.address_of(4),
        "IPv6Address": endpoint.address_of(6),
        "Aliases": list(endpoint.aliases),
        "Ports": [str(p) for p in endpoint.ports],
    }
