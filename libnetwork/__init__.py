"""libnetwork: container networking for Linux, as a library.

Networks, sandboxes (network namespaces) and the endpoints that connect them, with an IPAM and drivers
(bridge, null, overlay) that program the kernel. Start with Host (libnetwork/host.py), one state root:

    from libnetwork import Host

    with Host("/var/lib/netctl") as host:
        web = host.create_network("web", subnet="10.77.0.0/24")
        a, b = host.create_sandbox("a"), host.create_sandbox("b")
        host.connect(web, a)
        host.connect(web, b, ports=["8080:80"])
        host.run(a, ["ping", "-c1", host.address(web, b)])
        assert host.doctor() == []

docs/library.md walks through it, overlay networks included. What is exported here:

    Host                  one state root: networks, sandboxes, endpoints, IPAM usage, doctor/gc, events
    Network, Sandbox, Endpoint, PoolConfig, PortMapping, NetworkSpec    the model (plain dataclasses)
    Problem               what doctor reports
    PoolUsage             how full a subnet is
    Event, NAMES_CHANGED, ENDPOINT_JOINED, ENDPOINT_LEFT                 events (Host.subscribe)
    NetctlError and its kinds: InvalidArgument (Overlap), NotFound, AlreadyExists, InUse, PoolExhausted,
    KernelError, StoreError (each with .message and .exit_code)
    Controller            the operations themselves, as the netctl front ends use them

Importing the package costs nothing: every name is loaded on first use (the netctl command's thin
client and the CNI launcher import libnetwork.ipc and libnetwork.rootdir on their hot path).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (this package must cost nothing)

# name -> module that defines it, imported on first access (PEP 562)
_EXPORTS = {
    "Host": "libnetwork.host",
    "Controller": "libnetwork.controller",
    "Network": "libnetwork.model",
    "Sandbox": "libnetwork.model",
    "Endpoint": "libnetwork.model",
    "PoolConfig": "libnetwork.model",
    "PortMapping": "libnetwork.model",
    "NetworkSpec": "libnetwork.model",
    "Problem": "libnetwork.doctor",
    "PoolUsage": "libnetwork.ipam",
    "Event": "libnetwork.events",
    "NAMES_CHANGED": "libnetwork.events",
    "ENDPOINT_JOINED": "libnetwork.events",
    "ENDPOINT_LEFT": "libnetwork.events",
    "NetctlError": "libnetwork.errors",
    "InvalidArgument": "libnetwork.errors",
    "NotFound": "libnetwork.errors",
    "AlreadyExists": "libnetwork.errors",
    "InUse": "libnetwork.errors",
    "PoolExhausted": "libnetwork.errors",
    "Overlap": "libnetwork.errors",
    "KernelError": "libnetwork.errors",
    "StoreError": "libnetwork.errors",
}
__all__ = [
    "AlreadyExists",
    "Controller",
    "ENDPOINT_JOINED",
    "ENDPOINT_LEFT",
    "Endpoint",
    "Event",
    "Host",
    "InUse",
    "InvalidArgument",
    "KernelError",
    "NAMES_CHANGED",
    "NetctlError",
    "Network",
    "NetworkSpec",
    "NotFound",
    "Overlap",
    "PoolConfig",
    "PoolExhausted",
    "PoolUsage",
    "PortMapping",
    "Problem",
    "Sandbox",
    "StoreError",
]

if TYPE_CHECKING:
    from typing import Any

    from libnetwork.controller import Controller
    from libnetwork.doctor import Problem
    from libnetwork.errors import (
        AlreadyExists,
        InUse,
        InvalidArgument,
        KernelError,
        NetctlError,
        NotFound,
        Overlap,
        PoolExhausted,
        StoreError,
    )
    from libnetwork.events import ENDPOINT_JOINED, ENDPOINT_LEFT, NAMES_CHANGED, Event
    from libnetwork.host import Host
    from libnetwork.ipam import PoolUsage
    from libnetwork.model import Endpoint, Network, NetworkSpec, PoolConfig, PortMapping, Sandbox


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'libnetwork' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
