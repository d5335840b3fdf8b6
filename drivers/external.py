"""The external driver: netctl hands out the addresses, another program makes the data plane.

What `netctl-ipam` records when a CNI runtime chains it under a plugin netctl does not own (the
reference `bridge`, `macvlan`, ...): the network's subnets and every endpoint's addresses live in
netctl's store (so `netctl network inspect` lists the containers), while links, addresses and routes
in the kernel are the other plugin's business. Hence no kernel object here, and nothing to find or
remove.
"""

from __future__ import annotations

from drivers.null import NullDriver


class ExternalDriver(NullDriver):
    """Like null in the kernel (nothing to make, find or remove), but its endpoints get addresses."""

    name = "external"
    uses_ipam = True

    def plan_network(self, network, others, host) -> None:
        network.driver_state = {}
