"""The driver contract.

A driver turns model objects into kernel objects and back. It receives plain objects (Network,
Endpoint, Sandbox) and netlink handles; it never touches the store and never decides ordering or
rollback — the controller does. Every method that creates something has an inverse that is idempotent,
so the controller can undo a half-done operation and `netctl gc` can remove leftovers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from libnetwork.errors import InvalidArgument

if TYPE_CHECKING:
    from libnetwork.model import Endpoint, Network, Sandbox
    from libnetwork.netlink import Netlink


@dataclass
class KernelObject:
    """A kernel object carrying netctl's mark, as `netctl doctor` reports it."""

    kind: str  # "bridge", "veth", ...
    name: str


class Driver(Protocol):
    name: str
    scope: str  # "local" or "global"
    uses_ipam: bool  # False: endpoints get no addresses (null)

    def validate_options(self, options: dict[str, str]) -> dict[str, str]:
        """Return the options normalised (aliases resolved), or raise InvalidArgument."""

    def plan_network(self, network: "Network", others: list["Network"], host: "Netlink") -> None:
        """Fill network.driver_state (device names) and refuse clashes; changes nothing in the kernel."""

    def create_network(self, network: "Network", host: "Netlink") -> None: ...

    def delete_network(self, network: "Network", host: "Netlink") -> None:
        """Idempotent: a network whose kernel objects are already gone is not an error."""

    def join(self, network: "Network", endpoint: "Endpoint", sandbox: "Sandbox", host: "Netlink") -> None: ...

    def leave(self, network: "Network", endpoint: "Endpoint", sandbox: "Sandbox", host: "Netlink") -> None:
        """Idempotent, like delete_network."""

    def network_present(self, network: "Network", host: "Netlink") -> bool:
        """Whether the network's kernel objects exist (for doctor)."""

    def endpoint_present(self, network: "Network", endpoint: "Endpoint", host: "Netlink") -> bool: ...

    def marked_objects(self, host: "Netlink") -> list[KernelObject]:
        """Every kernel object in the host namespace that carries this driver's mark."""

    def repair_network(self, network: "Network", host: "Netlink") -> list[str]:
        """Bring the network's kernel side back (after a reboot, or a device deleted by hand): make
        what is missing, fix what is off. Returns what it did, one line each; [] when all was in place."""

    def repair_endpoint(self, network: "Network", endpoint: "Endpoint", sandbox: "Sandbox",
                        host: "Netlink") -> list[str]:
        """The same for an endpoint whose sandbox's namespace still exists; [] when all was in place."""


def parse_bool_option(driver: str, key: str, value: str) -> str:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return "true"
    if lowered in ("0", "false", "no", "off"):
        return "false"
    raise InvalidArgument(f"option {key}={value!r} of driver {driver} must be true or false")


def load_driver(name: str) -> Driver:
    """Drivers are imported on demand so a CLI call pays only for the one it uses."""
    if name == "bridge":
        from drivers.bridge import BridgeDriver

        return BridgeDriver()
    if name == "null":
        from drivers.null import NullDriver

        return NullDriver()
    if name == "overlay":
        # Global scope: the controller builds its own instance with this host's VTEP and root; this
        # one (VTEP unknown) can validate options and plan, not build.
        from drivers.overlay import OverlayDriver

        return OverlayDriver()
    raise InvalidArgument(f"unknown network driver {name!r}; available drivers: bridge, null, overlay")
