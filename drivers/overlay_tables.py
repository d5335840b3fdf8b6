"""The static tables of an overlay network's VXLAN device on one host: FDB entries (a remote
endpoint's MAC -> its host's VTEP address) and neighbour entries (its IP -> its MAC), which the
device's ARP/ND proxy answers from.

`reconcile_tables()` makes both tables exactly equal to a desired set computed from the global store
(peer records): it adds what is missing, fixes what points elsewhere, removes everything else, and is
idempotent. Docker's overlay let such entries go stale (moby/moby#35401, #49908, #52661); here the
kernel tables are a function of the store, re-derived as often as the caller likes.

Separate from the segment (drivers/overlay_segment.py) because this is the part that changes all the
time (every endpoint on another host), on a segment built once; the driver (drivers/overlay.py)
finds the device and calls these.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Protocol

from drivers.base import ReconcileResult

if TYPE_CHECKING:
    from libnetwork.netlink import Netlink

log = logging.getLogger("drivers.overlay")

NTF_SELF = 0x2
NUD_PERMANENT = 0x80


class RemotePeer(Protocol):
    """One endpoint on another host, as reconcile needs it (libnetwork.store.etcd.PeerRecord fits)."""

    mac: str
    vtep: str
    addresses: list[str]  # "ip/prefixlen"


@dataclass(frozen=True)
class Peer:
    """A plain RemotePeer, for callers that have no store record at hand."""

    mac: str
    vtep: str
    addresses: tuple[str, ...] = ()


@dataclass
class OverlayTables:
    """The static entries of a network's VXLAN device: what the kernel holds, or what it should."""

    fdb: dict[str, list[str]] = field(default_factory=dict)  # MAC -> VTEP addresses (one when all is well)
    neighbours: dict[str, str] = field(default_factory=dict)  # IP -> MAC ("MAC (state 0x..)" if not permanent)


def desired_tables(peers: Iterable[RemotePeer], own_vtep: str) -> OverlayTables:
    """FDB and neighbour entries for `peers`, skipping any on this host's own VTEP."""
    wanted = OverlayTables()
    for peer in sorted(peers, key=lambda p: (p.mac.lower(), p.vtep)):
        mac = peer.mac.lower()
        if not peer.vtep or peer.vtep == own_vtep or not mac:
            continue
        if mac in wanted.fdb:
            # Two hosts claim one MAC: the store is inconsistent (e.g. a record of a moved endpoint
            # lingers). Keep the first, deterministically, and say so.
            log.warning("MAC %s is claimed by VTEPs %s and %s; using %s", mac, wanted.fdb[mac][0], peer.vtep,
                        wanted.fdb[mac][0])
            continue
        wanted.fdb[mac] = [peer.vtep]
        for address in peer.addresses:
            wanted.neighbours[address.split("/")[0]] = mac
    return wanted


def read_tables(inside: "Netlink", vxlan: int) -> OverlayTables:
    """The static entries VXLAN device `vxlan` holds now (`inside`: a socket in the segment's namespace)."""
    have = OverlayTables()
    for entry in inside.fdbs(vxlan):
        # The dump also lists the bridge's entries for this port (learnt MACs, the port's own), which
        # carry no NTF_SELF: the VXLAN device's own table is the one we keep.
        if entry.flags & NTF_SELF:
            have.fdb.setdefault(entry.mac, []).append(entry.ip)
    for entry in inside.neighs(vxlan):
        have.neighbours[entry.ip] = (
            entry.mac if entry.state & NUD_PERMANENT else f"{entry.mac} (state {entry.state:#x})"
        )
    return have


def reconcile_tables(inside: "Netlink", vxlan: int, want: OverlayTables, *, dry_run: bool = False) -> ReconcileResult:
    """Make device `vxlan`'s tables exactly `want`; what changed (or, with `dry_run`, would change).
    Adds go FDB first, then neighbour (a container told a MAC can reach it at once); removals go the
    other way round."""
    result = ReconcileResult()
    have = read_tables(inside, vxlan)
    for mac, vteps in want.fdb.items():
        current = have.fdb.get(mac)
        if current == vteps:
            continue
        result.fdb_removed += [f"{mac} -> {v}" for v in current or []]
        result.fdb_added.append(f"{mac} -> {vteps[0]}")
        if not dry_run:
            if current and len(current) > 1:  # several remotes: a replace would keep the others
                inside.fdb_del(vxlan, mac)
            inside.fdb_replace(vxlan, mac, vteps[0])
    for ip, mac in want.neighbours.items():
        if have.neighbours.get(ip) != mac:
            result.neighbours_added.append(f"{ip} -> {mac}")
            if not dry_run:
                inside.neigh_replace(vxlan, ip, mac)
    for ip, mac in have.neighbours.items():
        if ip not in want.neighbours:
            result.neighbours_removed.append(f"{ip} -> {mac}")
            if not dry_run:
                inside.neigh_del(vxlan, ip)
    for mac, vteps in have.fdb.items():
        if mac not in want.fdb:
            result.fdb_removed += [f"{mac} -> {v}" for v in vteps]
            if not dry_run:
                inside.fdb_del(vxlan, mac)
    return result
