"""The overlay driver, kernel side: one L2 segment per network, spanning hosts over VXLAN.

On each host a network lives in a network namespace of its own (ROOT/overlay/<network id>), as in
Docker's overlay driver: a Linux bridge (`no-<id>`) with one VXLAN device (`nx-<id>`) as a port, and
the host side (`ny<id>`) of one veth pair per local endpoint, whose other side is created directly in
the sandbox as ethN. The VXLAN device is created in that namespace while its UDP socket stays in the
host's (the kernel keeps a VXLAN device's sockets and routing in the namespace it was created from):
encapsulated traffic uses the host's underlay, the segment itself touches nothing of the host.

Why a namespace, not the host's: a bridge hands broadcasts and frames for its own MAC up to the stack
of the namespace it sits in, address or not. In the host's namespace a container could reach host
services one way (a UDP broadcast needs no answer; loose rp_filter with a default route lets unicast
in too), and the host would route for it. In an empty namespace there is nobody to reach and no
route to follow: isolation from the host, from bridge networks and from other overlays is structural.

How frames find remote endpoints:

- the VXLAN device has no multicast group and learning off: nothing is flooded to other hosts and
  nothing is learnt from what arrives; every remote endpoint has a static FDB entry (its MAC -> its
  host's VTEP address);
- `proxy` is on: the device answers ARP requests (and IPv6 neighbour solicitations) itself from static
  neighbour entries (remote IP -> remote MAC), so broadcasts never cross the underlay;
- `reconcile()` makes both tables exactly equal to a desired set computed from the global store (peer
  records): it adds what is missing, fixes what points elsewhere, removes everything else, and is
  idempotent. Docker's overlay let such entries go stale (moby/moby#35401, #49908, #52661); here the
  kernel tables are a function of the store, re-derived as often as the caller likes.

MTU: the network's MTU, by default the underlay's MTU minus 50 (inner Ethernet 14 + outer IPv4 20 +
UDP 8 + VXLAN 8), on the bridge, the VXLAN device and both ends of every veth. A host whose underlay
cannot carry it refuses to build the network rather than black-hole large packets (libnetwork#2661).

Throughput (bench/bench_overlay.py; kernel 6.18, 2 cores): through the bridge, a container's traffic
pays on each host one veth hop (netif_rx into the per-CPU backlog and out again) and one bridge
beyond raw kernel VXLAN: 90-98 % of raw VXLAN on a calm machine, 82-92 % on a busy one. The fast path
(drivers/overlay_fastpath.py, an eBPF program on tcx ingress of the VXLAN device and of each veth
end) hands unicast frames between them past the bridge, and into a container without the backlog
(bpf_redirect_peer): 96-101 % of raw VXLAN on a calm machine (six runs, medians of 11-31 paired
rounds; pooled 97.3 %), 93-94 % on a busy one. What is left is the veth hop out of the container
(about 1.5x the backlog packets of raw VXLAN), which only netkit (not built into our machines'
kernel) avoids. The bridge still carries broadcast, multicast and anything the fast path's map lacks;
`-o fastpath=false` keeps every frame on it. Each local container has a static entry in the bridge's
FDB: its unicast passing the bridge by, the bridge could not learn it. Also tried, and no help:
GRO/NAPI on the veth (the kernel bypasses veth NAPI for TSO packets from a TSO-capable peer), port
learning off with static bridge entries, multicast snooping off, txqueuelen and qdiscs (all noqueue),
veth queue counts, the outer UDP checksum (offloaded over veth as over real NICs), a macvlan on the
bridge instead of the veth (bench --prototype: slower), no bridge via tc mirred (84 %), RPS on the
veths (worse), BIG TCP (VXLAN does not carry GSO packets over 64 KiB: throughput collapses). The
device parameters are the kernel's defaults on purpose.

The driver never touches the store: the VNI comes in `network.driver_state["vni"]` (allocated by the
caller in the global store), the remote endpoints come in as arguments.

This module is the Driver contract (options, planning, building under a lock with rollback, endpoints,
the fast path's glue); the segment itself is drivers/overlay_segment.py, the FDB and neighbour tables
drivers/overlay_tables.py. Their public names are importable from here too.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Callable, Iterable

from drivers import overlay_segment, overlay_tables
from drivers.base import KernelObject, ReconcileResult
from drivers.overlay_segment import (
    BRIDGE_PREFIX,
    DEFAULT_PORT,
    IFNAMSIZ,
    VXLAN_PREFIX,
    bridge_name,
    network_port,
    network_vni,
    vxlan_name,
)
from drivers.overlay_tables import NTF_SELF, NUD_PERMANENT, OverlayTables, Peer, RemotePeer
from libnetwork import netns, rootdir, sysctl
from libnetwork.errors import AlreadyExists, InvalidArgument, KernelError, NetctlError, NotFound

if TYPE_CHECKING:
    from libnetwork.model import Endpoint, Network, Sandbox
    from libnetwork.netlink import Netlink

log = logging.getLogger(__name__)
_logged_once: set[str] = set()


def _log_once(kind: str, level: int, message: str, *args: object) -> None:
    """The fast path's complaints: the first of each kind at `level`, the rest at debug."""
    log.log(level if kind not in _logged_once else logging.DEBUG, message, *args)
    _logged_once.add(kind)


DEFAULT_ROOT = rootdir.DEFAULT_ROOT
# Under ROOT; not ROOT/netns, which holds sandboxes (and is garbage-collected as such).
NETNS_DIR = rootdir.OVERLAY_NETNS
LOCK_FILE = "overlay.lock"  # under ROOT: serialises building and removing networks between processes
FAST_PATH_LOCK_FILE = "overlay-fastpath.lock"  # under ROOT: serialises changes of the fast paths' maps
LOCK_TIMEOUT_S = 10.0
VETH_PREFIX = "ny"
VXLAN_OVERHEAD = 50  # inner Ethernet 14 + outer IPv4 20 + UDP 8 + VXLAN 8
PORT_RANGE = (1024, 49151)  # what Docker accepts (libnetwork#2282)
MIN_MTU = 1280  # IPv6's minimum: a smaller overlay could not carry IPv6 at all

__all__ = [  # the segment's and the tables' names are re-exported: callers import them from here
    "BRIDGE_PREFIX", "DEFAULT_PORT", "IFNAMSIZ", "MIN_MTU", "NETNS_DIR", "NTF_SELF", "NUD_PERMANENT", "PORT_RANGE",
    "VETH_PREFIX", "VXLAN_OVERHEAD", "VXLAN_PREFIX", "OverlayDriver", "OverlayTables", "Peer", "ReconcileResult",
    "RemotePeer", "bridge_name", "host_veth_name", "vxlan_name",
]

OPTION_ALIASES = {
    "com.docker.network.driver.overlay.vxlanid_list": "vni",
    "com.docker.network.driver.mtu": "mtu",
}
KNOWN_OPTIONS = ("vni", "port", "mtu", "fastpath")
BOOLEAN_OPTIONS = {"fastpath"}  # true|false (also on|off, yes|no, 1|0)
TRUE_WORDS, FALSE_WORDS = ("true", "on", "yes", "1"), ("false", "off", "no", "0")


def host_veth_name(endpoint_id: str) -> str:
    return VETH_PREFIX + endpoint_id[: IFNAMSIZ - len(VETH_PREFIX)]


def _fast_path_wanted(network: "Network") -> bool:
    """-o fastpath=false keeps every frame on the bridge (for comparison, or next to other tcx users)."""
    return network.options.get("fastpath", "true") != "false"


class OverlayDriver:
    """`vtep`: this host's underlay address, the one other hosts send VXLAN packets to (the daemon's
    advertise address); without it the driver can plan networks but not build them. `root`: the
    host's netctl root (NETCTL_ROOT), under which the networks' namespaces are bound."""

    name = "overlay"
    scope = "global"
    uses_ipam = True
    # The global-scope part of the contract (drivers/base.py GlobalDriver):
    host_ifname_prefix = VETH_PREFIX
    overhead = VXLAN_OVERHEAD
    state_dir = NETNS_DIR

    @staticmethod
    def host_ifname(endpoint_id: str) -> str:
        return host_veth_name(endpoint_id)

    @staticmethod
    def derived_state(network_id: str) -> dict[str, str]:
        suffix = network_id[: IFNAMSIZ - len(BRIDGE_PREFIX)]
        return {"bridge": BRIDGE_PREFIX + suffix, "vxlan": VXLAN_PREFIX + suffix}

    def __init__(self, vtep: str = "", root: str = ""):
        self.vtep = vtep
        self.root = root or os.environ.get("NETCTL_ROOT") or DEFAULT_ROOT

    def netns_path(self, network: "Network") -> str:
        """Where the network's namespace is bound on this host."""
        return os.path.join(self.root, NETNS_DIR, network.id)

    # --- options and planning -------------------------------------------------------------------

    def validate_options(self, options: dict[str, str]) -> dict[str, str]:
        normalised: dict[str, str] = {}
        for key, value in options.items():
            key = OPTION_ALIASES.get(key, key)
            if key not in KNOWN_OPTIONS:
                raise InvalidArgument(
                    f"unknown option {key!r} for driver overlay; known options: {', '.join(KNOWN_OPTIONS)}"
                )
            value = value.strip()
            if key in BOOLEAN_OPTIONS:
                if value.lower() not in TRUE_WORDS + FALSE_WORDS:
                    raise InvalidArgument(f"option {key}={value!r} of driver overlay must be true or false")
                normalised[key] = "true" if value.lower() in TRUE_WORDS else "false"
                continue
            if not value.isdigit():
                raise InvalidArgument(f"option {key}={value!r} of driver overlay must be a number")
            if key == "port" and not (PORT_RANGE[0] <= int(value) <= PORT_RANGE[1]):
                raise InvalidArgument(
                    f"option port={value} of driver overlay is out of range ({PORT_RANGE[0]}-{PORT_RANGE[1]})"
                )
            normalised[key] = str(int(value))
        return normalised

    def plan_network(self, network: "Network", others: list["Network"], host: "Netlink") -> None:
        """Fill driver_state (device names, UDP port) and, if unset, the MTU from this host's underlay;
        refuse clashes. Changes nothing in the kernel. The VNI must already be in driver_state["vni"]."""
        vni = network_vni(network)
        suffix = network.id[: IFNAMSIZ - len(BRIDGE_PREFIX)]
        for other in others:
            if other.id != network.id and other.driver == self.name and other.driver_state.get("vni") == str(vni):
                raise AlreadyExists(f"VNI {vni} is already used by network '{other.name}'; choose another VNI")
        network.driver_state = {"vni": str(vni), "bridge": BRIDGE_PREFIX + suffix, "vxlan": VXLAN_PREFIX + suffix,
                                "port": str(network_port(network))}
        if not network.mtu:
            network.mtu = self.default_mtu(host)
        if network.mtu < MIN_MTU:
            raise InvalidArgument(
                f"MTU {network.mtu} of overlay network '{network.name}' is below {MIN_MTU}; "
                f"the underlay needs an MTU of at least {MIN_MTU + VXLAN_OVERHEAD}"
            )

    def default_mtu(self, host: "Netlink") -> int:
        """The underlay's MTU minus the VXLAN overhead."""
        return self._underlay(host)[1] - VXLAN_OVERHEAD

    def _underlay(self, host: "Netlink") -> tuple[str, int]:
        """(name, MTU) of the link holding this host's VTEP address."""
        if not self.vtep:
            raise InvalidArgument(
                "the overlay driver needs this host's VTEP address (the underlay address other hosts reach it "
                "at); start the daemon with --advertise-addr"
            )
        for address in host.addrs():
            if address.address.split("/")[0] == self.vtep:
                link = host.link(address.index)
                if link is not None:
                    return link.name, link.mtu
        raise InvalidArgument(
            f"VTEP address {self.vtep} is not configured on any interface of this host; check --advertise-addr"
        )

    # --- networks -------------------------------------------------------------------------------

    def create_network(self, network: "Network", host: "Netlink") -> None:
        """The network's namespace with its bridge and VXLAN device, up. On failure nothing is left."""
        with self._locked():
            self._create(network, host)

    def _create(self, network: "Network", host: "Netlink") -> None:
        underlay, underlay_mtu = self._underlay(host)
        if network.mtu > underlay_mtu - VXLAN_OVERHEAD:
            raise InvalidArgument(
                f"overlay network '{network.name}' has MTU {network.mtu}, but underlay {underlay} of this host "
                f"has MTU {underlay_mtu}, which carries at most {underlay_mtu - VXLAN_OVERHEAD}; recreate the "
                f"network with --mtu {underlay_mtu - VXLAN_OVERHEAD} or raise the underlay's MTU"
            )
        path = self.netns_path(network)
        netns.create(path)
        try:
            vxlan_index = overlay_segment.build(path, network, host, self.vtep)
            if _fast_path_wanted(network):
                self._fast_path(path, "install", lambda fp: fp.install(vxlan_index))
        except BaseException:
            self._remove(network)
            raise

    def ensure_network(self, network: "Network", host: "Netlink") -> bool:
        """Make the network exist on this host (a host builds a network when it first needs it).
        Idempotent and safe against a concurrent caller; True if it had to (re)build it."""
        with self._locked():
            if self.network_present(network, host):
                return False
            self._remove(network)  # half-built (a crash mid-way): start over
            self._create(network, host)
            return True

    def delete_network(self, network: "Network", host: "Netlink") -> None:
        """Remove the network's namespace and everything in it (host sides of veths included, which
        takes their sandbox sides along). Idempotent."""
        with self._locked():
            self._remove(network)

    def _remove(self, network: "Network") -> None:
        overlay_segment.remove(self.netns_path(network), network)

    @contextlib.contextmanager
    def _locked(self, name: str = LOCK_FILE) -> Iterator[None]:
        """An exclusive lock between netctl processes of this host (the daemon and a CLI building the
        same network at once), bounded in time."""
        from libnetwork import flock

        path = os.path.join(self.root, name)
        os.makedirs(self.root, exist_ok=True)
        with flock.held(path, LOCK_TIMEOUT_S, lambda: KernelError(
                f"another netctl process has held {path} for more than {LOCK_TIMEOUT_S:.0f} s; retry, or find "
                f"it with `fuser {path}`")):
            yield

    # --- endpoints ------------------------------------------------------------------------------

    def endpoint_ifname(self, endpoint: "Endpoint") -> str:
        """Name of the endpoint's veth end in the network's namespace."""
        return endpoint.host_ifname or host_veth_name(endpoint.id)

    def join(self, network: "Network", endpoint: "Endpoint", sandbox: "Sandbox", host: "Netlink") -> None:
        from libnetwork.netlink import Netlink

        path = self.netns_path(network)
        if not netns.is_netns(path):
            raise NotFound(
                f"overlay network '{network.name}' is not built on this host ({path} is missing); "
                "build it first (ensure_network)"
            )
        ifname = self.endpoint_ifname(endpoint)
        with Netlink(path) as inside:
            bridge = inside.link(bridge_name(network))
            if bridge is None:
                raise NotFound(f"bridge {bridge_name(network)} of overlay network '{network.name}' is missing; "
                               "rebuild the network (ensure_network)")
            fd = netns.open_fd(sandbox.netns_path)
            try:
                inside.add_veth(ifname, endpoint.ifname, peer_netns_fd=fd, mtu=network.mtu, peer_mac=endpoint.mac,
                                up=False)
            finally:
                os.close(fd)
            try:
                # No IPv6 address on the segment's side of the veth: it would send DAD and router
                # solicitations to the container.
                sysctl.write(f"net.ipv6.conf.{ifname}.addr_gen_mode", "1", netns_path=path)
                inside.set_link(ifname, master=bridge.index, up=True)
                mac = self._configure_inside(endpoint, sandbox)
                # The bridge need not learn where the container is: with the fast path its unicast
                # never passes the bridge, and a learnt entry would age out into flooding.
                port = inside.link(ifname)
                if port is not None:
                    inside.bridge_fdb_static(port.index, mac)
            except BaseException:
                inside.del_link(ifname, missing_ok=True)
                raise
            vxlan = inside.link(vxlan_name(network))
        if vxlan is not None and port is not None and _fast_path_wanted(network):
            self._fast_path(path, f"adding {ifname}", lambda fp: fp.add_port(vxlan.index, port.index, mac))

    @staticmethod
    def _configure_inside(endpoint: "Endpoint", sandbox: "Sandbox") -> str:
        """Addresses on the sandbox's side, up; its MAC."""
        from libnetwork.netlink import Netlink

        with Netlink(sandbox.netns_path) as inside:
            link = inside.link(endpoint.ifname)
            if link is None:
                raise NotFound(f"interface {endpoint.ifname} vanished from sandbox '{sandbox.name}' while joining")
            for address in endpoint.addresses:
                inside.add_addr(link.index, address)  # the subnet's on-link route comes with it
            inside.set_link(link.index, up=True)
            return link.mac

    def leave(self, network: "Network", endpoint: "Endpoint", sandbox: "Sandbox", host: "Netlink") -> None:
        """Idempotent (also when the whole network is gone from this host)."""
        from libnetwork.netlink import Netlink

        path = self.netns_path(network)
        if netns.is_netns(path):
            with Netlink(path) as inside:
                vxlan, port = inside.link(vxlan_name(network)), inside.link(self.endpoint_ifname(endpoint))
                if vxlan is not None and port is not None and _fast_path_wanted(network):
                    # First the fast path's entry: a frame redirected to a veth that is gone is dropped.
                    self._fast_path(path, f"removing {port.name}", lambda fp: fp.remove_port(vxlan.index, port.index))
                inside.del_link(self.endpoint_ifname(endpoint), missing_ok=True)

    def _fast_path(self, path: str, what: str, step: Callable[[Any], object]) -> None:
        """Run one step of the fast path (drivers/overlay_fastpath.py) inside the network's namespace,
        under a lock of its own (taken inside the driver's lock where both are held, never the other
        way round). The bridge carries every frame the fast path does not, so a failure costs speed,
        not traffic: it is logged (once per kind of step and process), and the operation goes on."""
        from drivers import overlay_fastpath

        try:
            with self._locked(FAST_PATH_LOCK_FILE), netns.entered(path):
                step(overlay_fastpath)
        except overlay_fastpath.FastPathUnavailable as err:
            _log_once("unavailable", logging.INFO, "overlay: %s", err)
        except (OSError, NetctlError) as err:
            _log_once(what.split()[0], logging.WARNING,
                      "overlay fast path: %s failed (%s); the bridge carries those frames", what, err)

    # --- remote endpoints -----------------------------------------------------------------------

    def desired_tables(self, peers: Iterable[RemotePeer]) -> OverlayTables:
        """FDB and neighbour entries for `peers`, skipping any on this host's own VTEP."""
        return overlay_tables.desired_tables(peers, self.vtep)

    def kernel_tables(self, network: "Network", host: "Netlink | None" = None) -> OverlayTables:
        """The static entries the network's VXLAN device holds now on this host."""
        from libnetwork.netlink import Netlink

        with Netlink(self._built(network)) as inside:
            return overlay_tables.read_tables(inside, self._vxlan_index(network, inside))

    def reconcile(self, network: "Network", desired_remote_endpoints: Iterable[RemotePeer],
                  host: "Netlink | None" = None, *, dry_run: bool = False) -> ReconcileResult:
        """Make the VXLAN device's static FDB and neighbour entries exactly those of the remote endpoints.

        Missing entries are added, entries pointing elsewhere are replaced, everything else (stale peers,
        duplicate remotes, an all-zeros flood entry someone added) is removed. Idempotent: a second
        call with the same peers changes nothing. Adds go FDB first, then neighbour (a container told a
        MAC can reach it at once); removals go the other way round. `dry_run` only reports what it
        would change (what `netctl doctor` shows as drift between the store and the kernel)."""
        from libnetwork.netlink import Netlink

        want = self.desired_tables(desired_remote_endpoints)
        with Netlink(self._built(network)) as inside:
            vxlan = self._vxlan_index(network, inside)
            result = overlay_tables.reconcile_tables(inside, vxlan, want, dry_run=dry_run)
        if not dry_run and _fast_path_wanted(network):
            # A network built before the fast path existed has none (sync is a no-op): rebuilding it
            # gives it one, for all its ports at once.
            self._fast_path(self._built(network), "syncing remote MACs",
                            lambda fp: fp.sync_remotes(vxlan, set(want.fdb)))
        return result

    def _built(self, network: "Network") -> str:
        path = self.netns_path(network)
        if not netns.is_netns(path):
            raise NotFound(
                f"overlay network '{network.name}' is not built on this host ({path} is missing); "
                "build it first (ensure_network)"
            )
        return path

    @staticmethod
    def _vxlan_index(network: "Network", inside: "Netlink") -> int:
        link = inside.link(vxlan_name(network))
        if link is None or link.kind != "vxlan":
            raise NotFound(
                f"VXLAN device {vxlan_name(network)} of overlay network '{network.name}' is missing on this host; "
                "rebuild the network (ensure_network)"
            )
        return link.index

    def fast_path_entries(self, network: "Network") -> dict[str, str] | None:
        """The fast path's map on this host as {MAC: the device it hands frames to}; None when the
        network has no fast path here (-o fastpath=false, or a kernel without eBPF/tcx)."""
        import socket

        from drivers import overlay_fastpath

        with netns.entered(self._built(network)):
            try:
                found = overlay_fastpath.entries(socket.if_nametoindex(vxlan_name(network)))
            except OSError as err:
                if err.errno in overlay_fastpath.UNSUPPORTED:
                    return None
                raise
            if found is None:
                return None
            names = {}
            for mac, index in found.items():
                try:
                    names[mac] = socket.if_indextoname(index)
                except OSError:
                    names[mac] = f"<gone: ifindex {index}>"
            return names

    # --- what exists ----------------------------------------------------------------------------

    def network_present(self, network: "Network", host: "Netlink | None" = None) -> bool:
        return overlay_segment.present(self.netns_path(network), network)

    def endpoint_present(self, network: "Network", endpoint: "Endpoint", host: "Netlink | None" = None) -> bool:
        from libnetwork.netlink import Netlink

        path = self.netns_path(network)
        if not netns.is_netns(path):
            return False
        with Netlink(path) as inside:
            return inside.link(self.endpoint_ifname(endpoint)) is not None

    def marked_objects(self, host: "Netlink | None" = None) -> list[KernelObject]:
        """The networks' namespaces on this host (everything else of a network lives inside one)."""
        directory = os.path.join(self.root, NETNS_DIR)
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            return []
        return [KernelObject("netns", os.path.join(directory, name)) for name in names]
