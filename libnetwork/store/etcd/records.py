"""Records of the global store that are not model objects: a host taking part in the overlay, and what
every other host needs to reach one endpoint. Also the rule that keeps two hosts from taking one name."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from libnetwork.errors import AlreadyExists
from libnetwork.model import Endpoint


@dataclass
class HostRecord:
    """A host taking part in the overlay; lives as long as its lease."""

    name: str
    vtep: str  # underlay address other hosts send VXLAN packets to
    lease: int
    registered: float = 0.0  # unix time
    host_id: str = ""  # the state root's persistent id (rootdir.host_id); "" in records of older netctl

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HostRecord:
        # Fields this version does not know are dropped: a newer netctl may add some.
        return cls(**{k: v for k, v in d.items() if k in _HOST_FIELDS})

    def held_by_another(self, host_id: str) -> bool:
        """Whether this record belongs to a host other than the one whose id is `host_id`. A record
        without an id was written by a netctl older than host ids: it is taken over, as it always
        was (it cannot say whose it is). A registrant without an id proves nothing, so it may not
        take a record that carries one."""
        return bool(self.host_id) and self.host_id != host_id

    @property
    def short_id(self) -> str:
        return self.host_id[:12] or "none"


_HOST_FIELDS = {"name", "vtep", "lease", "registered", "host_id"}


class HostTaken(AlreadyExists):
    """Another host (another host id) holds this host's name or VTEP address on a live lease."""


def registration_clash(name: str, vtep: str, host_id: str, live: list[HostRecord]) -> HostTaken | None:
    """Why host `name` (id `host_id`, VTEP `vtep`) may not register beside the `live` host records,
    or None when it may. Records exist only while their lease lives (etcd deletes a record with its
    lease), so every record read is a live one. The name is checked first: it is what the user
    changes (--host-name) when two cloned machines share a hostname."""
    others = [r for r in live if r.held_by_another(host_id)]
    for record in others:
        if record.name == name:
            return HostTaken(
                f"host name '{name}' is held by another host (host id {record.short_id}, VTEP {record.vtep}) "
                "on a live lease in etcd; pass --host-name NAME (or stop the other host's daemon)"
            )
    for record in others:
        if _same_address(record.vtep, vtep):
            return HostTaken(
                f"VTEP address {vtep} is held by host '{record.name}' (host id {record.short_id}) on a live lease "
                "in etcd; pass --vtep ADDR (or stop the other host's daemon)"
            )
    return None


def _same_address(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a == b


@dataclass
class PeerRecord:
    """What every other host needs to reach one endpoint: the overlay driver's FDB/ARP input.

    Written with the endpoint when it is ready, on its host's lease (see EtcdTxn.put_endpoint).
    """

    network_id: str
    endpoint_id: str
    name: str
    host: str
    vtep: str
    mac: str
    addresses: list[str] = field(default_factory=list)  # "ip/prefixlen"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PeerRecord:
        return cls(**d)

    @classmethod
    def of(cls, endpoint: Endpoint, host: HostRecord) -> PeerRecord:
        return cls(endpoint.network_id, endpoint.id, endpoint.name, host.name, host.vtep, endpoint.mac,
                   list(endpoint.addresses))

