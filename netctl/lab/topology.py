"""Lab topologies: a YAML file -> validated plain objects, or one clear error line.

The schema (documented with examples in topology_examples/README.md)::

    name: demo                       # the lab's name
    underlays:                       # optional; default: one underlay "ul", 198.18.0.0/24, MTU 1500
      ul: {subnet: 198.18.0.0/24, mtu: 1500}
    hosts:
      h1: {underlay: ul, address: 198.18.0.11}   # both optional (the only underlay; next free address)
      h2:
    networks:
      blue: {driver: overlay, subnet: 10.10.0.0/24, vni: 4242, mtu: 1400}   # global, on every host
      web:  {driver: bridge, host: h1, subnet: 10.20.0.0/24}                 # local to one host
    containers:
      a1: {host: h1, networks: [blue, web], image: busybox, command: [sleep, infinity]}
    expect:
      reach:    [[a1, a2, a3]]       # each group: every member reaches every other one
      isolated: [[[a1, a2], [b1]]]   # each entry: groups (a name = a group of one); no member of one
                                     # group reaches a member of another
    scenarios:
      - name: h2-cut
        cut: [h2]                    # hosts whose underlay link goes down during the scenario
        expect: {reach: ..., isolated: ...}

Validation is strict (unknown keys, unknown references, duplicate names, bad or overlapping subnets)
because a lab that silently ignores a typo tests something else than what its author thinks.
Everything here is pure: no kernel, no files but the one read.
The objects it makes are in netctl/lab/model.py (re-exported here).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from libnetwork.errors import InvalidArgument
from netctl.lab.model import (
    DEFAULT_COMMAND,
    DEFAULT_IMAGE,
    ETCD_PORT,
    Container,
    Expectations,
    Host,
    Network,
    Scenario,
    Topology,
    Underlay,
)

__all__ = [  # the objects are re-exported: callers know them as topology.Topology, topology.ETCD_PORT
    "DEFAULT_COMMAND", "DEFAULT_IMAGE", "ETCD_PORT", "Container", "Expectations", "Host", "Network", "Scenario",
    "Topology", "TopologyError", "Underlay", "lab_name", "load", "parse", "read_yaml",
]

DEFAULT_UNDERLAY = "ul"
DEFAULT_UNDERLAY_BASE = ipaddress.ip_network("198.18.0.0/16")  # RFC 2544 benchmarking range
DEFAULT_MTU = 1500
DRIVERS = ("overlay", "bridge")

# Short names: they end up in interface names (sw-<host>, ul-<underlay>: at most 15 characters).
_LAB_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,22}[a-z0-9])?$")
_SHORT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?$")
# Container and network names are also host names inside the lab (/etc/hosts).
_NAME = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$")

_TOP_KEYS = ("name", "underlays", "hosts", "networks", "containers", "expect", "scenarios")
_UNDERLAY_KEYS = ("subnet", "mtu")
_HOST_KEYS = ("underlay", "address")
_NETWORK_KEYS = ("driver", "subnet", "host", "vni", "mtu")
_CONTAINER_KEYS = ("host", "networks", "image", "command")
_EXPECT_KEYS = ("reach", "isolated")
_SCENARIO_KEYS = ("name", "cut", "expect")


class TopologyError(InvalidArgument):
    """The topology file is wrong; the message names the file and the offending key."""


# --- loading -------------------------------------------------------------------------------------------


def load(path: str) -> Topology:
    """Read and validate the topology file at `path`."""
    return parse(read_yaml(path), path)


def read_yaml(path: str) -> Any:
    import yaml  # lazy: only `netctl lab` pays for it

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise TopologyError(f"{path}: no such topology file") from None
    except OSError as err:
        raise TopologyError(f"{path}: cannot read the topology file: {err.strerror}") from None
    try:
        return yaml.load(text, Loader=_strict_loader())  # safe: a SafeLoader subclass
    except _DuplicateKey as err:
        raise TopologyError(f"{path}: line {err.line}: {err.key!r} is defined twice") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise TopologyError(f"{path}: not valid YAML{where}: {problem}") from None


class _DuplicateKey(Exception):
    def __init__(self, key: object, line: int):
        super().__init__(key)
        self.key, self.line = key, line


def _strict_loader():
    """A SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last one, so
    a second host `h1:` would silently replace the first)."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    raise _DuplicateKey(key, key_node.start_mark.line + 1)
                seen.add(key)
            return super().construct_mapping(node, deep)

    return StrictLoader


def lab_name(data: Any, path: str) -> str:
    """Only the lab's name (what `down` and `status` need, even if the rest of the file is broken)."""
    if not isinstance(data, dict) or "name" not in data:
        raise TopologyError(f"{path}: the top level needs a `name:` key (the lab's name)")
    return _lab_name(data["name"], _Where(path))


class _Where:
    """Builds "FILE: key.path: message" errors."""

    def __init__(self, path: str, keys: tuple[str, ...] = ()):
        self.path, self.keys = path, keys

    def __truediv__(self, key: object) -> _Where:
        return _Where(self.path, self.keys + (str(key),))

    def error(self, message: str) -> TopologyError:
        where = ".".join(self.keys)
        return TopologyError(f"{self.path}: {where + ': ' if where else ''}{message}")


def parse(data: Any, path: str = "<topology>") -> Topology:
    top = _Where(path)
    if data is None:
        raise top.error("the file is empty; it needs at least `name:` and `hosts:`")
    mapping = _mapping(data, top, _TOP_KEYS)
    name = lab_name(data, path)
    underlays = _underlays(mapping.get("underlays"), top / "underlays")
    hosts = _hosts(mapping.get("hosts"), underlays, top / "hosts")
    networks = _networks(mapping.get("networks"), hosts, top / "networks")
    containers = _containers(mapping.get("containers"), hosts, networks, top / "containers")
    _check_names_unique(hosts, networks, containers, top)
    _check_subnets(underlays, networks, top)
    expect = _expectations(mapping.get("expect"), containers, top / "expect")
    scenarios = _scenarios(mapping.get("scenarios"), hosts, containers, top / "scenarios")
    return Topology(name, underlays, hosts, networks, containers, expect, scenarios)


# --- sections --------------------------------------------------------------------------------------------


def _underlays(data: Any, where: _Where) -> dict[str, Underlay]:
    if data is None:
        subnet = next(DEFAULT_UNDERLAY_BASE.subnets(new_prefix=24))
        return {DEFAULT_UNDERLAY: _underlay(DEFAULT_UNDERLAY, {"subnet": str(subnet)}, where / DEFAULT_UNDERLAY)}
    entries = _named_entries(data, where, "underlay", _SHORT_NAME)
    if not entries:
        raise where.error("needs at least one underlay (or leave `underlays:` out for the default one)")
    defaults = iter(DEFAULT_UNDERLAY_BASE.subnets(new_prefix=24))
    result = {}
    for name, body in entries.items():
        body = _mapping(body, where / name, _UNDERLAY_KEYS)
        body = {"subnet": str(next(defaults)), **body} if "subnet" not in body else body
        result[name] = _underlay(name, body, where / name)
    return result


def _underlay(name: str, body: dict, where: _Where) -> Underlay:
    subnet = _subnet(body["subnet"], where / "subnet", version=4)
    if subnet.prefixlen > 29:
        raise (where / "subnet").error(f"{subnet} is too small for a lab underlay; use /29 or larger, e.g. /24")
    mtu = _integer(body.get("mtu", DEFAULT_MTU), where / "mtu", 1280, 65535)
    switch_address = str(subnet.broadcast_address - 1)  # .254 of a /24: hosts count up from .1
    return Underlay(name, str(subnet), mtu, switch_address)


def _hosts(data: Any, underlays: dict[str, Underlay], where: _Where) -> dict[str, Host]:
    entries = _named_entries(data, where, "host", _SHORT_NAME)
    if not entries:
        raise where.error("needs at least one host, e.g. `hosts: {h1: {}, h2: {}}`")
    bodies = {name: _mapping(body, where / name, _HOST_KEYS) for name, body in entries.items()}
    taken: dict[str, str] = {}  # address -> host
    underlay_of: dict[str, str] = {}
    for name, body in bodies.items():
        underlay_of[name] = _host_underlay(body, underlays, where / name)
        if "address" in body:
            taken[_host_address(body["address"], underlays[underlay_of[name]], taken, where / name / "address")] = name
    hosts = {}
    for name, body in bodies.items():
        underlay = underlays[underlay_of[name]]
        if "address" in body:
            address = next(a for a, h in taken.items() if h == name)
        else:
            address = _next_free(underlay, taken, where / name)
        taken[address] = name
        hosts[name] = Host(name, underlay.name, address)
    return hosts


def _host_underlay(body: dict, underlays: dict[str, Underlay], where: _Where) -> str:
    if "underlay" not in body:
        if len(underlays) > 1:
            raise (where / "underlay").error(
                f"missing: there are several underlays ({', '.join(underlays)}); say which")
        return next(iter(underlays))
    name = body["underlay"]
    if name not in underlays:
        raise (where / "underlay").error(f"unknown underlay {name!r} (defined: {', '.join(underlays)})")
    return name


def _host_address(value: Any, underlay: Underlay, taken: dict[str, str], where: _Where) -> str:
    try:
        address = ipaddress.IPv4Address(str(value))
    except ValueError:
        raise where.error(f"{value!r} is not an IPv4 address") from None
    subnet = ipaddress.ip_network(underlay.subnet)
    if address not in subnet or address in (subnet.network_address, subnet.broadcast_address):
        raise where.error(f"{address} is not a host address of underlay {underlay.name!r} ({underlay.subnet})")
    if str(address) == underlay.switch_address:
        raise where.error(
            f"{address} is the switch's own address on {underlay.name!r} (etcd listens there); pick another")
    if str(address) in taken:
        raise where.error(f"{address} is already the address of host {taken[str(address)]!r}")
    return str(address)


def _next_free(underlay: Underlay, taken: dict[str, str], where: _Where) -> str:
    for candidate in ipaddress.ip_network(underlay.subnet).hosts():
        text = str(candidate)
        if text not in taken and text != underlay.switch_address:
            return text
    raise where.error(f"underlay {underlay.name!r} ({underlay.subnet}) has no free address left; use a larger subnet")


def _networks(data: Any, hosts: dict[str, Host], where: _Where) -> dict[str, Network]:
    result = {}
    for name, body in _named_entries(data, where, "network", _NAME).items():
        here = where / name
        body = _mapping(body, here, _NETWORK_KEYS)
        driver = body.get("driver")
        if driver not in DRIVERS:
            raise (here / "driver").error(f"must be one of {', '.join(DRIVERS)} (got {driver!r})")
        subnet = str(_subnet(body["subnet"], here / "subnet")) if "subnet" in body else ""
        host = body.get("host", "")
        if driver == "bridge" and host not in hosts:
            problem = "missing" if not host else f"unknown host {host!r}"
            raise (here / "host").error(f"{problem}: a bridge network lives on one host (defined: {', '.join(hosts)})")
        if driver == "overlay" and "host" in body:
            raise (here / "host").error("an overlay network spans every host; remove `host:`")
        if driver == "bridge" and "vni" in body:
            raise (here / "vni").error("only overlay networks have a VNI")
        vni = _integer(body["vni"], here / "vni", 1, 2**24 - 1) if "vni" in body else 0
        mtu = _integer(body["mtu"], here / "mtu", 576, 65535) if "mtu" in body else 0
        result[name] = Network(name, driver, subnet, host, vni, mtu)
    return result


def _containers(data: Any, hosts: dict[str, Host], networks: dict[str, Network], where: _Where) -> dict[str, Container]:
    result = {}
    for name, body in _named_entries(data, where, "container", _NAME).items():
        here = where / name
        body = _mapping(body, here, _CONTAINER_KEYS)
        host = body.get("host")
        if host not in hosts:
            problem = "missing" if host is None else f"unknown host {host!r}"
            raise (here / "host").error(f"{problem} (defined: {', '.join(hosts)})")
        joined = _string_list(body.get("networks"), here / "networks")
        if not joined:
            raise (here / "networks").error("a container needs at least one network")
        for net in joined:
            if net not in networks:
                raise (here / "networks").error(f"unknown network {net!r} (defined: {', '.join(networks) or 'none'})")
            if networks[net].driver == "bridge" and networks[net].host != host:
                raise (here / "networks").error(
                    f"bridge network {net!r} is on host {networks[net].host!r}, not on {host!r}; "
                    "use an overlay network to cross hosts"
                )
        if len(set(joined)) != len(joined):
            raise (here / "networks").error("lists a network twice")
        image = body.get("image", DEFAULT_IMAGE)
        if not isinstance(image, str) or not image:
            raise (here / "image").error("must be an image name, e.g. busybox")
        command = _command(body.get("command"), here / "command")
        result[name] = Container(name, host, tuple(joined), image, command)
    return result


def _command(value: Any, where: _Where) -> tuple[str, ...]:
    if value is None:
        return DEFAULT_COMMAND
    if isinstance(value, str):
        return ("sh", "-c", value)
    words = _string_list(value, where)
    if not words:
        raise where.error("is empty; leave it out for the default (sleep infinity)")
    return tuple(words)


def _expectations(data: Any, containers: dict[str, Container], where: _Where) -> Expectations:
    if data is None:
        return Expectations()
    body = _mapping(data, where, _EXPECT_KEYS)
    reach = []
    for i, group in enumerate(_list(body.get("reach"), where / "reach")):
        members = _members(group, containers, where / "reach" / i)
        for a in members:
            for b in members:
                if a < b and not _shared(containers, a, b):
                    raise (where / "reach" / i).error(
                        f"{a} and {b} share no network, so they cannot reach each other; put them on a common network"
                    )
        reach.append(members)
    isolated = []
    for i, entry in enumerate(_list(body.get("isolated"), where / "isolated")):
        here = where / "isolated" / i
        items = _list(entry, here)
        groups = tuple(
            _members(item, containers, here / j) if isinstance(item, list) else _members([item], containers, here / j)
            for j, item in enumerate(items)
        )
        if len(groups) < 2:
            raise here.error("needs two or more groups (or names) that must not reach each other")
        isolated.append(groups)
    expectations = Expectations(tuple(reach), tuple(isolated))
    both = set(expectations.reach_pairs()) & set(expectations.isolated_pairs())
    if both:
        a, b = min(both)
        raise where.error(f"{a} -> {b} is expected both to reach and to be isolated")
    return expectations


def _scenarios(data: Any, hosts: dict[str, Host], containers: dict[str, Container],
               where: _Where) -> tuple[Scenario, ...]:  # fmt: skip
    result = []
    seen: set[str] = set()
    for i, entry in enumerate(_list(data, where)):
        here = where / i
        body = _mapping(entry, here, _SCENARIO_KEYS)
        name = body.get("name", f"scenario-{i + 1}")
        if not isinstance(name, str) or not name:
            raise (here / "name").error("must be a non-empty string")
        if name in seen:
            raise (here / "name").error(f"duplicate scenario name {name!r}")
        seen.add(name)
        cut = _string_list(body.get("cut"), here / "cut")
        if not cut:
            raise (here / "cut").error("name the hosts whose underlay link goes down, e.g. cut: [h2]")
        for host in cut:
            if host not in hosts:
                raise (here / "cut").error(f"unknown host {host!r} (defined: {', '.join(hosts)})")
        result.append(Scenario(name, tuple(cut), _expectations(body.get("expect"), containers, here / "expect")))
    return tuple(result)


# --- cross checks -----------------------------------------------------------------------------------------


def _check_names_unique(hosts: dict, networks: dict, containers: dict, where: _Where) -> None:
    """A container may not be named like a network or host: names resolve inside the lab."""
    for name in containers:
        if name in networks:
            raise (where / "containers" / name).error(f"{name!r} is also a network's name; names must be unique")
        if name in hosts:
            raise (where / "containers" / name).error(f"{name!r} is also a host's name; names must be unique")


def _check_subnets(underlays: dict[str, Underlay], networks: dict[str, Network], where: _Where) -> None:
    seen: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, _Where]] = []
    named = [(ipaddress.ip_network(u.subnet), where / "underlays" / u.name / "subnet") for u in underlays.values()]
    named += [(ipaddress.ip_network(n.subnet), where / "networks" / n.name / "subnet")
              for n in networks.values() if n.subnet]  # fmt: skip
    for subnet, here in named:
        for other, there in seen:
            if subnet.version == other.version and subnet.overlaps(other):
                raise here.error(f"{subnet} overlaps {other} ({'.'.join(there.keys)})")
        seen.append((subnet, here))


# --- small parsers ----------------------------------------------------------------------------------------


def _mapping(data: Any, where: _Where, allowed: tuple[str, ...]) -> dict:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise where.error(f"must be a mapping with keys among {', '.join(allowed)} (got {type(data).__name__})")
    for key in data:
        if key not in allowed:
            raise (where / key).error(f"unknown key (allowed: {', '.join(allowed)})")
    return data


def _named_entries(data: Any, where: _Where, what: str, pattern: re.Pattern) -> dict[str, Any]:
    """A mapping name -> body (a name given twice is refused by the loader already)."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise where.error(f"must be a mapping of {what} names to their settings")
    for name in data:
        if not isinstance(name, str) or not pattern.match(name):
            limit = "1-12 lower-case letters, digits or '-'" if pattern is _SHORT_NAME else "letters, digits or '-'"
            raise (where / name).error(
                f"invalid {what} name {name!r}: use {limit}, starting and ending with a letter or digit")
    return data


def _members(group: Any, containers: dict[str, Container], where: _Where) -> tuple[str, ...]:
    names = _string_list(group, where)
    for name in names:
        if name not in containers:
            raise where.error(f"unknown container {name!r}")
    if len(set(names)) != len(names):
        raise where.error("lists a container twice")
    return tuple(names)


def _shared(containers: dict[str, Container], a: str, b: str) -> bool:
    return bool(set(containers[a].networks) & set(containers[b].networks))


def _list(data: Any, where: _Where) -> list:
    if data is None:
        return []
    if not isinstance(data, list):
        raise where.error(f"must be a list (got {type(data).__name__})")
    return data


def _string_list(data: Any, where: _Where) -> list[str]:
    items = _list(data, where)
    for item in items:
        if not isinstance(item, (str, int)) or isinstance(item, bool):
            raise where.error(f"must be a list of names (got {item!r})")
    return [str(item) for item in items]


def _integer(value: Any, where: _Where, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise where.error(f"must be a whole number from {low} to {high} (got {value!r})")
    return value


def _subnet(value: Any, where: _Where, version: int = 0):
    try:
        subnet = ipaddress.ip_network(str(value), strict=True)
    except ValueError as err:
        raise where.error(f"{value!r} is not a subnet in CIDR form ({err}); e.g. 10.10.0.0/24") from None
    if version and subnet.version != version:
        raise where.error(f"{subnet} must be an IPv{version} subnet")
    return subnet


def _lab_name(value: Any, where: _Where) -> str:
    if not isinstance(value, str) or not _LAB_NAME.match(value):
        raise (where / "name").error(f"invalid lab name {value!r}: use 1-24 lower-case letters, digits or '-'")
    return value
