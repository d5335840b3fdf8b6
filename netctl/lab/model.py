"""A lab's plain objects: the Topology and its parts (underlays, hosts, networks, containers,
expectations, scenarios), with the defaults they carry.

Frozen and pure: what netctl/lab/topology.py makes of a YAML file once it has checked it, and what
the rest of the lab (fabric, etcd, matrix, up/down/status/test) reads. Separate from the parsing so
that a reader of the lab's steps needs only these objects, not the validation rules behind them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

DEFAULT_IMAGE = "busybox"
DEFAULT_COMMAND = ("sleep", "infinity")
ETCD_PORT = 2379


@dataclass(frozen=True)
class Underlay:
    name: str
    subnet: str
    mtu: int
    switch_address: str  # the switch's own address on it: etcd listens there

    @property
    def bridge(self) -> str:
        return f"ul-{self.name}"

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen


@dataclass(frozen=True)
class Host:
    name: str
    underlay: str
    address: str

    @property
    def switch_port(self) -> str:
        return f"sw-{self.name}"


@dataclass(frozen=True)
class Network:
    name: str
    driver: str
    subnet: str = ""
    host: str = ""  # bridge networks: the host that has it
    vni: int = 0
    mtu: int = 0

    @property
    def is_global(self) -> bool:
        return self.driver == "overlay"


@dataclass(frozen=True)
class Container:
    name: str
    host: str
    networks: tuple[str, ...]
    image: str = DEFAULT_IMAGE
    command: tuple[str, ...] = DEFAULT_COMMAND


@dataclass(frozen=True)
class Expectations:
    reach: tuple[tuple[str, ...], ...] = ()  # groups
    isolated: tuple[tuple[tuple[str, ...], ...], ...] = ()  # entries of groups

    def reach_pairs(self) -> list[tuple[str, str]]:
        """Ordered (source, target) pairs that must reach, in file order, without repeats."""
        pairs = [(s, t) for group in self.reach for s in group for t in group if s != t]
        return list(dict.fromkeys(pairs))

    def isolated_pairs(self) -> list[tuple[str, str]]:
        pairs = []
        for groups in self.isolated:
            for i, group in enumerate(groups):
                for j, other in enumerate(groups):
                    if i != j:
                        pairs += [(s, t) for s in group for t in other if s != t]
        return list(dict.fromkeys(pairs))


@dataclass(frozen=True)
class Scenario:
    name: str
    cut: tuple[str, ...]
    expect: Expectations


@dataclass(frozen=True)
class Topology:
    name: str
    underlays: dict[str, Underlay]
    hosts: dict[str, Host]
    networks: dict[str, Network]
    containers: dict[str, Container]
    expect: Expectations = field(default_factory=Expectations)
    scenarios: tuple[Scenario, ...] = ()

    def store_url(self, host: str) -> str:
        """The etcd URL a host uses: the switch's address on the host's underlay."""
        underlay = self.underlays[self.hosts[host].underlay]
        return f"etcd://{underlay.switch_address}:{ETCD_PORT}"

    def containers_on(self, host: str) -> list[Container]:
        return [c for c in self.containers.values() if c.host == host]

    def networks_on(self, host: str) -> list[Network]:
        """Bridge networks of this host, then the overlay networks its containers use."""
        used = {n for c in self.containers_on(host) for n in c.networks}
        return [n for n in self.networks.values() if n.host == host or (n.is_global and n.name in used)]

    def shared_networks(self, a: str, b: str) -> list[str]:
        theirs = set(self.containers[b].networks)
        return [n for n in self.containers[a].networks if n in theirs]
