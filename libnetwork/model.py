"""The Container Network Model: networks, endpoints, sandboxes.

Plain dataclasses with no behaviour beyond (de)serialisation: the controller decides, the store
persists, drivers program the kernel from these objects. NetworkSpec is what a caller asks for when it
creates a network; the others are what the library records and returns.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# Lifecycle states of an endpoint. An endpoint is written "creating" before any kernel object exists
# and flipped to "ready" once everything is in place; a crash in between leaves a record that
# `netctl doctor` can recognise (its op_pid is dead) and `netctl gc` can undo.
CREATING = "creating"
READY = "ready"
DELETING = "deleting"


@dataclass
class PoolConfig:
    """One subnet of a network as the user asked for it (or as the IPAM picked it)."""

    subnet: str  # "172.18.0.0/16" or "fd00:1::/64"
    gateway: str = ""  # bare address, no prefix
    ip_range: str = ""  # sub-CIDR that dynamic allocation is limited to
    aux_addresses: dict[str, str] = field(default_factory=dict)  # name -> address, reserved

    @property
    def version(self) -> int:
        return 6 if ":" in self.subnet else 4


@dataclass
class PortMapping:
    host_port: int
    container_port: int
    protocol: str = "tcp"  # tcp | udp
    host_ip: str = ""  # "" means every address of the host

    def __str__(self) -> str:
        host = f"{self.host_ip}:" if self.host_ip else ""
        return f"{host}{self.host_port}->{self.container_port}/{self.protocol}"


@dataclass
class Network:
    id: str
    name: str
    driver: str
    scope: str = "local"
    pools: list[PoolConfig] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)  # driver options (-o), validated
    labels: dict[str, str] = field(default_factory=dict)
    internal: bool = False
    ipv6: bool = False
    mtu: int = 0  # 0: driver default
    created: str = ""
    # Names of kernel objects the driver made for this network (e.g. {"bridge": "nc-1a2b..."}).
    driver_state: dict[str, str] = field(default_factory=dict)

    @property
    def short_id(self) -> str:
        return self.id[:12]

    def pools_of(self, version: int) -> list[PoolConfig]:
        return [p for p in self.pools if p.version == version]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Network":
        d = dict(d)
        d["pools"] = [PoolConfig(**p) for p in d.get("pools", [])]
        return cls(**d)


@dataclass
class Endpoint:
    id: str
    name: str
    network_id: str
    sandbox_id: str = ""
    addresses: list[str] = field(default_factory=list)  # "ip/prefixlen", one per family at most
    mac: str = ""
    aliases: list[str] = field(default_factory=list)
    ports: list[PortMapping] = field(default_factory=list)
    ifname: str = ""  # name inside the sandbox: eth0, eth1, ...
    host_ifname: str = ""  # host side of the veth: nv<id[:11]>
    state: str = CREATING
    op_pid: int = 0  # process that is creating/deleting it; 0 once settled
    created: str = ""

    @property
    def short_id(self) -> str:
        return self.id[:12]

    def address_of(self, version: int) -> str:
        for a in self.addresses:
            if (":" in a) == (version == 6):
                return a
        return ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Endpoint":
        d = dict(d)
        d["ports"] = [PortMapping(**p) for p in d.get("ports", [])]
        return cls(**d)


@dataclass
class Sandbox:
    id: str
    name: str
    netns_path: str  # ROOT/netns/<id>
    hostname: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    container_id: str = ""  # set by the runner or a CNI runtime
    created: str = ""
    # True when the namespace belongs to someone else (a CNI runtime's CNI_NETNS): netctl joins and
    # leaves it but never creates or deletes it.
    external: bool = False

    @property
    def short_id(self) -> str:
        return self.id[:12]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Sandbox":
        return cls(**dict(d))


@dataclass
class NetworkSpec:
    """What a user asks for in `network create`; the controller validates all of it."""

    name: str
    driver: str = "bridge"
    pools: list[PoolConfig] = field(default_factory=list)  # requested subnets (may be empty)
    ipv6: bool = False
    internal: bool = False
    mtu: int = 0
    options: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    # subnet -> (first, last): dynamic allocation limited to that span of addresses, like CNI
    # host-local's rangeStart/rangeEnd (which need not form a CIDR, so PoolConfig.ip_range cannot say it).
    pool_ranges: dict[str, tuple[str, str]] = field(default_factory=dict)
