"""The null driver: a sandbox on a null network has `lo` only (the sandbox brings lo up itself)."""

from __future__ import annotations

from drivers.base import KernelObject
from libnetwork.errors import InvalidArgument


class NullDriver:
    name = "null"
    scope = "local"
    uses_ipam = False
    host_ifname_prefix = ""  # no interface on the host

    def host_ifname(self, endpoint_id: str) -> str:
        return ""

    def validate_options(self, options: dict[str, str]) -> dict[str, str]:
        if options:
            raise InvalidArgument(
                f"driver {self.name} takes no options (got {', '.join(sorted(options))}); remove the -o flags"
            )
        return {}

    def plan_network(self, network, others, host) -> None:
        if network.pools:
            raise InvalidArgument(f"network {network.name!r}: driver null takes no --subnet, --gateway or --ipv6")

    def create_network(self, network, host) -> None:
        pass

    def delete_network(self, network, host) -> None:
        pass

    def join(self, network, endpoint, sandbox, host) -> None:
        pass

    def leave(self, network, endpoint, sandbox, host) -> None:
        pass

    def network_present(self, network, host) -> bool:
        return True

    def endpoint_present(self, network, endpoint, host) -> bool:
        return True

    def marked_objects(self, host) -> list[KernelObject]:
        return []

    def repair_network(self, network, host) -> list[str]:
        return []  # nothing in the kernel

    def repair_endpoint(self, network, endpoint, sandbox, host) -> list[str]:
        return []
