"""Host: the public face of libnetwork, one host's container networking in a handful of calls.

A Host is a state root (a directory; two roots on one machine are two independent hosts): its networks,
sandboxes (network namespaces) and the endpoints that connect them, with their addresses from the IPAM.
Every call is one operation of the library, with its ordering and rollback: a failure raises a
libnetwork.errors.NetctlError and leaves the host as it found it. libnetwork/__init__.py shows it in
use, docs/library.md at length.

Nothing is read from the environment unless asked for (Host.from_env()). Networks of the overlay
driver live in a global store (etcd) that hosts share: `Host(root, store="etcd://HOST:2379")`.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from libnetwork.model import Endpoint, Network, NetworkSpec, PoolConfig, PortMapping, Sandbox

if TYPE_CHECKING:
    from libnetwork.controller import Controller
    from libnetwork.doctor import Problem
    from libnetwork.events import Event
    from libnetwork.ipam import PoolUsage
    from libnetwork.repair import RepairReport

NetworkRef = Network | str  # a Network, or its name, id or id prefix
SandboxRef = Sandbox | str
PortSpec = PortMapping | str  # "8080:80", "8080:80/udp", "127.0.0.1:8080:80"


class Host:
    """One state root. `store`: the global store's URL (etcd://HOST:PORT) for overlay networks; None
    takes the one ROOT/global.json names (written by `netctl daemon --store`), "" means none.
    `host_name`: this host's name in the global store (default: ROOT/global.json's, else the hostname)."""

    def __init__(self, root: str, *, store: str | None = None, host_name: str | None = None):
        from libnetwork.controller import Controller

        if not root:
            from libnetwork.errors import InvalidArgument

            raise InvalidArgument("Host needs a state root directory (or use Host.from_env())")
        self.controller: Controller = Controller(root, store_url=store, host_name=host_name, env={})

    @classmethod
    def from_env(cls, root: str | None = None) -> "Host":
        """The host the netctl command would use: NETCTL_ROOT (default /var/lib/netctl), NETCTL_STORE
        and NETCTL_HOST_NAME, then ROOT/global.json."""
        from libnetwork.controller import Controller

        host = cls.__new__(cls)
        host.controller = Controller(root)
        return host

    @property
    def root(self) -> str:
        return self.controller.root

    def close(self) -> None:
        """Close the store and netlink connections (a Host is also a context manager)."""
        self.controller.close()

    def __enter__(self) -> "Host":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- networks ---------------------------------------------------------------------------------

    def create_network(self, name: str, driver: str = "bridge", *, subnet: str | Sequence[str] = (),
                       gateway: str = "", ipv6: bool = False, internal: bool = False, mtu: int = 0,
                       options: dict[str, str] | None = None, labels: dict[str, str] | None = None) -> Network:
        """A network. driver: "bridge" (default), "null" or "overlay" (needs a store). subnet: one
        CIDR or several (one per address family); none: the IPAM picks one. gateway: of the (only)
        subnet; default its first address. options: the driver's (-o), e.g. {"icc": "false"}."""
        subnets = [subnet] if isinstance(subnet, str) else list(subnet)
        pools = [PoolConfig(subnet=s) for s in subnets]
        if gateway:
            if len(pools) != 1:
                from libnetwork.errors import InvalidArgument

                raise InvalidArgument("gateway needs exactly one subnet; give several as PoolConfig in a NetworkSpec")
            pools[0].gateway = gateway
        spec = NetworkSpec(name=name, driver=driver, pools=pools, ipv6=ipv6, internal=internal, mtu=mtu,
                           options=dict(options or {}), labels=dict(labels or {}))
        return self.controller.create_network(spec)

    def create_network_from(self, spec: NetworkSpec) -> Network:
        """A network from a full NetworkSpec (several subnets with gateways, IP ranges, aux addresses)."""
        return self.controller.create_network(spec)

    def network(self, ref: NetworkRef) -> Network:
        """The network of that name, id or id prefix (local or global); NotFound otherwise."""
        return self.controller.resolve_network(_ref(ref))

    def networks(self) -> list[Network]:
        """Local networks, then the global ones (when a store is configured)."""
        return self.controller.list_networks()

    def delete_network(self, ref: NetworkRef, *, force: bool = False) -> Network | None:
        """Remove a network; InUse while endpoints are on it unless `force` disconnects them."""
        return self.controller.delete_network(_ref(ref), force=force)

    def pool_usage(self, network: NetworkRef) -> list["PoolUsage"]:
        """How full each subnet of the network is (allocated, in use, capacity)."""
        name = network.name if isinstance(network, Network) else self.network(network).name
        return self.controller.pool_usage(name)

    # --- sandboxes --------------------------------------------------------------------------------

    def create_sandbox(self, name: str = "", *, hostname: str = "", labels: dict[str, str] | None = None) -> Sandbox:
        """A sandbox: a network namespace of its own (lo up), bound at ROOT/netns/<id>."""
        return self.controller.create_sandbox(name, hostname=hostname, labels=labels)

    def sandbox(self, ref: SandboxRef) -> Sandbox:
        return self.controller.get_sandbox(_ref(ref))

    def sandboxes(self) -> list[Sandbox]:
        return [sandbox for sandbox, _ in self.controller.list_sandboxes()]

    def delete_sandbox(self, ref: SandboxRef, *, force: bool = False) -> Sandbox | None:
        """Disconnect the sandbox from every network and remove it with its namespace."""
        return self.controller.delete_sandbox(_ref(ref), force=force)

    def run(self, sandbox: SandboxRef, argv: Sequence[str], *, check: bool = True, timeout: float = 30.0,
            **kwargs: object) -> subprocess.CompletedProcess:
        """Run a command inside the sandbox's network namespace (nsenter), output captured as text."""
        path = (sandbox if isinstance(sandbox, Sandbox) else self.sandbox(sandbox)).netns_path
        return subprocess.run(["nsenter", f"--net={path}", "--", *argv], check=check, timeout=timeout,
                              capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]

    # --- endpoints --------------------------------------------------------------------------------

    def connect(self, network: NetworkRef, sandbox: SandboxRef, *, ip: str = "", ip6: str = "",
                aliases: Iterable[str] = (), ports: Iterable[PortSpec] = (), ifname: str = "",
                mac: str = "") -> Endpoint:
        """Connect the sandbox to the network: an endpoint with an interface in the sandbox (ifname,
        default the next free ethN), addresses (ip/ip6, default from the IPAM) and published host ports
        (bridge networks)."""
        return self.controller.connect(_ref(network), _ref(sandbox), ip=ip, ip6=ip6, aliases=list(aliases),
                                       ports=[_port(p) for p in ports], ifname=ifname, mac=mac)

    def disconnect(self, network: NetworkRef, sandbox: SandboxRef) -> Endpoint:
        return self.controller.disconnect(_ref(network), _ref(sandbox))

    def endpoints(self, sandbox: SandboxRef) -> list[Endpoint]:
        """The sandbox's endpoints, one per network it is on."""
        return self.controller.inspect_sandbox(_ref(sandbox)).endpoints

    def address(self, network: NetworkRef, sandbox: SandboxRef, version: int = 4) -> str:
        """The sandbox's address on the network, without its prefix length ("" if it has none)."""
        net = network if isinstance(network, Network) else self.network(network)
        box = sandbox if isinstance(sandbox, Sandbox) else self.sandbox(sandbox)
        for endpoint in self.endpoints(box):
            if endpoint.network_id == net.id:
                return endpoint.address_of(version).split("/")[0]
        from libnetwork.errors import NotFound

        raise NotFound(f"sandbox {box.name!r} is not connected to network {net.name!r}")

    # --- upkeep -----------------------------------------------------------------------------------

    def doctor(self) -> list["Problem"]:
        """What is out of step between the store and the kernel ([] when all is well)."""
        return self.controller.doctor()

    def gc(self) -> list["Problem"]:
        """Remove what doctor reports; returns what was removed."""
        return self.controller.gc()

    def repair(self) -> "RepairReport":
        """Rebuild the kernel side of what the store holds (after a reboot)."""
        from libnetwork.repair import repair

        return repair(self.controller)

    # --- events -----------------------------------------------------------------------------------

    def subscribe(self, kind: str, callback: Callable[["Event"], None]) -> Callable[[], None]:
        """Call `callback(event)` after each operation of this Host that emits `kind`: "names-changed",
        "endpoint-joined" or "endpoint-left" (libnetwork.events). Returns the unsubscribe function."""
        return self.controller.subscribe(kind, callback)


def _ref(obj: Network | Sandbox | str) -> str:
    return obj if isinstance(obj, str) else obj.id


def _port(spec: PortSpec) -> PortMapping:
    """PortMapping, or "[HOSTIP:]HOSTPORT:PORT[/tcp|udp]" (IPv4 host address)."""
    if isinstance(spec, PortMapping):
        return spec
    from libnetwork.errors import InvalidArgument

    body, _, protocol = spec.partition("/")
    parts = body.split(":")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts[-2:]):
        raise InvalidArgument(f"port {spec!r} must have the form [HOSTIP:]HOSTPORT:PORT[/tcp|udp]")
    host_ip = parts[0] if len(parts) == 3 else ""
    if protocol not in ("", "tcp", "udp") or not all(1 <= int(p) <= 65535 for p in parts[-2:]):
        raise InvalidArgument(f"port {spec!r}: ports are 1-65535, the protocol tcp or udp")
    return PortMapping(host_port=int(parts[-2]), container_port=int(parts[-1]), protocol=protocol or "tcp",
                       host_ip=host_ip)
