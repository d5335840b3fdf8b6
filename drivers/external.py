"""The external driver: netctl hands out the addresses, another program makes the data plane.

What `netctl-ipam` records when a CNI runtime chains it under a plugin netctl does not own (the
reference `bridge`, `macvlan`, ...): the network's subnets and every endpoint's addresses live in
netctl's store (so `netctl network inspect` lists the containers), while links, addresses and routes
in the kernel are the other plugin's business. Hence no kernel object here, and nothing to find or
remove.
"""

from __future__ import annotations

from drivers.base import KernelObject
from libnetwork.errors import InvalidArgument


class ExternalDriver:
    name = "external"
    scope = "local"
    uses_ipam = True

    def validate_options(self, options: dict[str, str]) -> dict[str, str]:
        if options:
            raise InvalidArgument(
                f"driver external takes no options (got {', '.join(sorted(options))}); remove the -o flags"
            )
        return {}

    def plan_network(self, network, others, host) -> None:
        network.driver_state = {}

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
