"""The driver contract.

A driver turns model objects into kernel objects and back. It receives plain objects (Network,
Endpoint, Sandbox) and netlink handles; it never touches the store and never decides ordering or
rollback — the controller does. Every method that creates something has an inverse that is idempotent,
so the controller can undo a half-done operation and `netctl gc` can remove leftovers.

libnetwork reaches drivers only through drivers/registry.py (by name) and this contract; this module
imports no driver (each driver imports it), so the contract and its implementations form no cycle.
Two parts:

- `Driver`: what every driver does (local scope: bridge, null; the CNI chain's external).
- `GlobalDriver`: what a global-scope driver (overlay) adds. Its networks live in the global store and
  span hosts; it is built with this host's VTEP address and state root (`registry.get("overlay",
  vtep=..., root=...)`), builds a network on a host when its first local endpoint joins
  (`ensure_network`), and keeps the kernel's forwarding tables equal to the store's remote endpoints
  (`reconcile`, which returns a ReconcileResult).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from libnetwork.errors import InvalidArgument

if TYPE_CHECKING:
    from libnetwork.model import Endpoint, Network, Sandbox
    from libnetwork.netlink import Netlink


IFNAMSIZ = 15  # usable characters of a Linux interface name
_IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def validate_ifname(name: str, what: str) -> str:
    """An interface name the kernel takes (an endpoint's --ifname, a bridge's name), or InvalidArgument."""
    if not name or len(name) > IFNAMSIZ or not _IFNAME.match(name):
        raise InvalidArgument(
            f"{what} {name!r} is not a valid interface name: use 1-{IFNAMSIZ} characters of letters, "
            "digits, '_', '.' or '-', starting with a letter or digit"
        )
    return name


@dataclass
class KernelObject:
    """A kernel object carrying netctl's mark, as `netctl doctor` reports it."""

    kind: str  # "bridge", "veth", ...
    name: str
    note: str = ""  # what the driver knows of it, e.g. "a removed network's bridge, waiting for deletion"


@dataclass
class ReconcileResult:
    """What GlobalDriver.reconcile changed in a network's forwarding tables ("mac -> vtep", "ip -> mac")."""

    fdb_added: list[str] = field(default_factory=list)  # "mac -> vtep"
    fdb_removed: list[str] = field(default_factory=list)
    neighbours_added: list[str] = field(default_factory=list)  # "ip -> mac"
    neighbours_removed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.fdb_added or self.fdb_removed or self.neighbours_added or self.neighbours_removed)


class Driver(Protocol):
    name: str
    scope: str  # "local" or "global"
    uses_ipam: bool  # False: endpoints get no addresses (null)
    # Prefix of the host-side interfaces of its endpoints, its mark on them ("" when it makes none).
    host_ifname_prefix: str

    def host_ifname(self, endpoint_id: str) -> str:
        """The host-side interface name of an endpoint (derived from its id), "" when it has none."""

    def validate_options(self, options: dict[str, str]) -> dict[str, str]:
        """Return the options normalised (aliases resolved), or raise InvalidArgument."""

    def plan_network(self, network: "Network", others: list["Network"], host: "Netlink") -> None:
        """Fill network.driver_state (device names) and refuse clashes; changes nothing in the kernel."""

    def create_network(self, network: "Network", host: "Netlink") -> None: ...

    def delete_network(self, network: "Network", host: "Netlink") -> None:
        """Idempotent: a network whose kernel objects are already gone is not an error."""

    # Optional (looked up with getattr): delete_network in two steps, for a caller that answers first.
    #   def retire_network(self, network, host) -> Callable[[Netlink], None] | None
    # takes the network's devices out of use at once (their names, addresses and routes stop counting)
    # and returns the slow rest of the deletion, to be run later with a host Netlink; None when nothing
    # is left to do. What it leaves must carry the driver's mark, so doctor/gc find it after a crash.

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


class GlobalDriver(Driver, Protocol):
    """The global-scope part of the contract (overlay). Built as `registry.get(name, vtep=VTEP, root=ROOT)`:
    `vtep` is this host's underlay address ("" plans and removes, never builds), `root` its state root,
    under which the networks built on this host keep their namespaces (ROOT/<state_dir>/<network id>)."""

    overhead: int  # bytes of encapsulation: a network's default MTU is the underlay's minus this
    state_dir: str  # under ROOT: one entry per network built on this host, named by its id

    def derived_state(self, network_id: str) -> dict[str, str]:
        """The driver_state (device names) a network's kernel side has, from its id alone: enough to
        find and remove it when the global store cannot say more."""

    def default_mtu(self, host: "Netlink") -> int:
        """The MTU of a new network on this host: its underlay's minus the overhead."""

    def ensure_network(self, network: "Network", host: "Netlink") -> bool:
        """Build the network on this host unless it is; True when it built it."""

    def reconcile(self, network: "Network", desired_remote_endpoints: Iterable[Any],
                  host: "Netlink") -> ReconcileResult:
        """Make the network's forwarding tables on this host exactly the remote endpoints given."""

    def netns_path(self, network: "Network") -> str:
        """Where the network's namespace is bound on this host."""

    def network_present(self, network: "Network", host: "Netlink | None" = None) -> bool:
        """Whether the network is built on this host (its namespace holds it: no host handle needed)."""

    def endpoint_present(self, network: "Network", endpoint: "Endpoint", host: "Netlink | None" = None) -> bool: ...

    def endpoint_ifname(self, endpoint: "Endpoint") -> str:
        """Name of an endpoint's interface in the network's namespace."""


def parse_bool_option(driver: str, key: str, value: str) -> str:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return "true"
    if lowered in ("0", "false", "no", "off"):
        return "false"
    raise InvalidArgument(f"option {key}={value!r} of driver {driver} must be true or false")
