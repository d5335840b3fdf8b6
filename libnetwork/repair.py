"""Repair at agent start: bring the kernel back in line with the store after a restart or a reboot.

After a reboot the store still holds every network, sandbox and endpoint while the kernel holds none of
them: no bridge, no gateway address, no nftables table, no namespace. Docker and podman bring their
networks back by themselves; the agent (`netctl daemon`) does it by calling repair() once at start:

1. Sandboxes whose network namespace is gone (the handle is missing, or is a plain file: its mount
   died with the old kernel) are released with their endpoints and addresses, in etcd too for overlay
   endpoints. A namespace gone is a container gone: Docker likewise releases the endpoints of
   containers that are not running when its daemon starts. CNI attachments are such sandboxes too
   (the runtime's namespace is gone, no DEL will come). The runner's container records stay: a
   container whose process is gone is the monitor's business, and its removal finds the sandbox gone.
2. Every local network gets its kernel side back through its own driver (`repair_network`: for a
   bridge network the bridge with its MTU, MAC and gateway addresses, up), and every endpoint of a
   sandbox that is still alive its veth pair (`repair_endpoint`). A live namespace is a running
   container, so its endpoint is made whole rather than released.
3. Overlay networks with live endpoints on this host: a missing segment (namespace, bridge, VXLAN
   device) is rebuilt, the endpoints' veths made again and the segment's FDB/neighbour entries
   reconciled from etcd. The overlay agent's reconcile cannot do this: it only fixes the tables of a
   segment that exists (for a missing one it logs "not built" and goes on).
4. netctl's nftables tables are rebuilt from the store when they differ from it (`firewall sync`).

With etcd away, what needs it waits (a sandbox with overlay endpoints is not released, a lost segment
not rebuilt) and is reported; etcd is asked once, so a silent one costs the start one timeout.

It never removes a network record: that is `gc`'s to do, when a user asks. It runs in one write
transaction of the store, as gc does, so no command interleaves. Each sandbox, network and endpoint is
one step: a failure is reported and the others are still repaired. When nothing is wrong it changes
nothing and costs little: one is_netns per sandbox, a link lookup per network and endpoint, and one
nftables comparison.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from libnetwork import netns
from libnetwork.errors import NetctlError, NotFound, StoreError

if TYPE_CHECKING:
    from libnetwork.controller import Controller
    from libnetwork.model import Endpoint, Network, Sandbox


@dataclass
class RepairReport:
    """What repair() did (the agent logs it at INFO) and what it could not do (at WARNING)."""

    actions: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def repair(controller: "Controller") -> RepairReport:
    report = RepairReport()
    etcd = _EtcdProbe(controller)
    with controller.store.transaction() as tx:
        for sandbox in tx.list_sandboxes():
            if not netns.is_netns(sandbox.netns_path):
                _release_vanished(report, controller, tx, sandbox, etcd)
        # What is left of those waits for etcd (reported): nothing of theirs to repair.
        waiting = {s.id for s in tx.list_sandboxes() if not netns.is_netns(s.netns_path)}
        for network in tx.list_networks():
            if _step(report, f"network {network.name}", _repair_network, controller, network):
                for endpoint in tx.list_endpoints(network_id=network.id):
                    if endpoint.sandbox_id not in waiting:
                        _repair_endpoint(report, controller, tx, network, endpoint)
        for network_id, endpoints in _overlay_copies(tx, waiting).items():
            _step(report, f"overlay network {network_id[:12]}", _repair_overlay, report, controller, tx, network_id,
                  endpoints, etcd)
        _step(report, "nftables", _repair_firewall, controller, tx)
    return report


def repair_root(root: str | None = None) -> RepairReport:
    """repair() with a controller of its own on `root` (default: NETCTL_ROOT, then /var/lib/netctl):
    what the agent calls at start."""
    from libnetwork.controller import Controller

    with Controller(root) as controller:
        return repair(controller)


def _step(report: RepairReport, what: str, action: Callable[..., list[str]], *args: object) -> bool:
    """Run one repair; its lines go to the report, its failure too (and the others go on). True: it worked."""
    try:
        report.actions += action(*args)
        return True
    except NetctlError as err:
        report.failures.append(f"{what}: not repaired: {err.message}")
    except OSError as err:
        report.failures.append(f"{what}: not repaired: {err.strerror or err}")
    return False


class _EtcdProbe:
    """Whether the global store answers, asked once and only when needed: a silent etcd costs a
    timeout (seconds) per request, which the agent's start must pay once, not once per endpoint."""

    def __init__(self, controller: "Controller"):
        self.controller = controller
        self._error: str | None = None

    def error(self) -> str:
        """Empty when etcd answers, else why not (one line)."""
        if self._error is None:
            self._error = self._ask()
        return self._error

    def _ask(self) -> str:
        if not self.controller.store_url:
            return "no global store is configured; start the agent with --store etcd://HOST:PORT"
        try:
            with self.controller._require_global_store("repair").snapshot() as g:
                g.get_host(self.controller.host_name)
        except NetctlError as err:
            return err.message
        return ""


# --- 1. sandboxes whose namespace is gone -----------------------------------------------------------


def _release_vanished(report: RepairReport, controller: "Controller", tx, sandbox: "Sandbox",
                      etcd: _EtcdProbe) -> None:
    """Released whole or not at all: one with overlay endpoints waits while etcd does not answer (its
    records there, peers included, must go with it; the next start or `netctl gc` releases it)."""
    from libnetwork.controller_base import is_global_copy

    what = f"sandbox {sandbox.name}"
    if any(is_global_copy(e) for e in tx.list_endpoints(sandbox_id=sandbox.id)) and etcd.error():
        report.failures.append(f"{what}: namespace gone, but not released: {etcd.error()}; the agent's next start "
                               "or `netctl gc` releases it")
        return
    _step(report, what, _release, controller, tx, sandbox)


def _release(controller: "Controller", tx, sandbox: "Sandbox") -> list[str]:
    names = _network_names(controller, tx, tx.list_endpoints(sandbox_id=sandbox.id))
    released = controller._release_sandbox(tx, sandbox)
    lines = [
        f"released endpoint {e.short_id} of network {names[e.network_id]}{_addresses(e)} "
        f"(sandbox {sandbox.name}: namespace gone)"
        for e in released
    ]
    return lines + [f"removed sandbox {sandbox.name} (namespace {sandbox.netns_path} gone)"]


def _network_names(controller: "Controller", tx, endpoints: list["Endpoint"]) -> dict[str, str]:
    """{network id: name} of the endpoints' networks; a global one's from etcd (its id when etcd is away)."""
    names = {}
    for endpoint in endpoints:
        network = tx.get_network(endpoint.network_id) or controller._global_network_for(endpoint.network_id)
        names[endpoint.network_id] = network.name
    return names


def _addresses(endpoint: "Endpoint") -> str:
    return f", {', '.join(endpoint.addresses)}" if endpoint.addresses else ""


# --- 2. local networks and their endpoints ----------------------------------------------------------


def _repair_network(controller: "Controller", network: "Network") -> list[str]:
    driver = controller.driver(network.driver)
    return [f"network {network.name}: {line}" for line in driver.repair_network(network, controller.host)]


def _repair_endpoint(report: RepairReport, controller: "Controller", tx, network: "Network",
                     endpoint: "Endpoint") -> None:
    sandbox = tx.get_sandbox(endpoint.sandbox_id)
    if sandbox is None:
        return  # a record without a sandbox: doctor reports it, gc removes it
    what = f"network {network.name}: endpoint {endpoint.short_id} (sandbox {sandbox.name})"
    driver = controller.driver(network.driver)

    def repaired() -> list[str]:
        return [f"{what}: {line}" for line in driver.repair_endpoint(network, endpoint, sandbox, controller.host)]

    _step(report, what, repaired)


# --- 3. overlay networks with live endpoints here ---------------------------------------------------


def _overlay_copies(tx, waiting: set[str]) -> dict[str, list["Endpoint"]]:
    """{global network id: this host's endpoints on it} (the local copies of live sandboxes)."""
    from libnetwork.controller_base import is_global_copy

    local = {n.id for n in tx.list_networks()}
    found: dict[str, list[Endpoint]] = {}
    for endpoint in tx.list_endpoints():
        if endpoint.network_id not in local and is_global_copy(endpoint) and endpoint.sandbox_id not in waiting:
            found.setdefault(endpoint.network_id, []).append(endpoint)
    return found


def _repair_overlay(report: RepairReport, controller: "Controller", tx, network_id: str,
                    endpoints: list["Endpoint"], etcd: _EtcdProbe) -> list[str]:
    """Looks at the kernel first (names derived from the id), and asks etcd only when something is missing."""
    from libnetwork.controller_base import overlay_stand_in

    driver = controller._overlay_driver()
    stand_in = overlay_stand_in(network_id)
    missing = [e for e in endpoints if not driver.endpoint_present(stand_in, e)]
    if not missing and driver.network_present(stand_in):
        return []
    if etcd.error():
        raise StoreError(f"{etcd.error()}; the agent's next start rebuilds it")
    network = _global_network(controller, network_id)
    driver = controller._overlay_driver(controller.vtep())
    if driver.ensure_network(network, controller.host):  # reported at once: before the endpoints' lines
        vni = network.driver_state.get("vni")
        report.actions.append(f"overlay network {network.name}: segment rebuilt (VNI {vni})")
    for endpoint in missing:
        sandbox = tx.get_sandbox(endpoint.sandbox_id)
        if sandbox is None:
            continue  # doctor reports it, gc removes it
        what = f"overlay network {network.name}: endpoint {endpoint.short_id} (sandbox {sandbox.name})"
        _step(report, what, _rejoin, driver, network, endpoint, sandbox, controller, what)
    with controller._require_global_store("repair").snapshot() as g:
        peers = controller._remote_peers(g, network_id)
    result = driver.reconcile(network, peers, controller.host)
    if not result.changed:
        return []
    restored = f"{len(result.fdb_added)} FDB and {len(result.neighbours_added)} neighbour entries restored"
    return [f"overlay network {network.name}: {restored}"]


def _global_network(controller: "Controller", network_id: str) -> "Network":
    network = controller._global_network(network_id)
    if network is None or network.id != network_id:
        raise NotFound(f"overlay network {network_id[:12]} is gone from the global store; `netctl gc` removes "
                       "its endpoints here")
    return network


def _rejoin(driver, network: "Network", endpoint: "Endpoint", sandbox: "Sandbox", controller: "Controller",
            what: str) -> list[str]:
    driver.join(network, endpoint, sandbox, controller.host)
    return [f"{what}: veth {driver.endpoint_ifname(endpoint)} recreated"]


# --- 4. nftables --------------------------------------------------------------------------------------


def _repair_firewall(controller: "Controller", tx) -> list[str]:
    from libnetwork import firewall
    from libnetwork.controller_base import firewall_networks

    differences = firewall.drift(firewall_networks(tx, controller.driver("bridge")))
    if not differences:
        return []
    controller._sync_firewall(tx)
    count = f"{len(differences)} difference{'s' if len(differences) > 1 else ''}"
    return [f"nftables: netctl's tables rebuilt from the store ({count}, first: {differences[0]})"]
