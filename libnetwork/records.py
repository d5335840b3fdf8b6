"""New records and their checks: ids, timestamps, names, addresses, MACs and interface names.

What every operation needs when it makes a record (a network, a sandbox, an endpoint), without a store,
a kernel or a driver: pure functions, cheap to import.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from libnetwork.errors import AlreadyExists, InvalidArgument
from libnetwork.model import Endpoint

if TYPE_CHECKING:
    from collections.abc import Callable

    from libnetwork.model import Network, Sandbox

MAX_NAME = 64
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def new_id() -> str:
    return os.urandom(32).hex()  # not `secrets`: its import (hashlib, random) costs ~10 ms per CLI call


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def validate_name(name: str, what: str) -> str:
    if not name or len(name) > MAX_NAME or not _NAME.match(name):
        raise InvalidArgument(
            f"invalid {what} name {name!r}: use 1-{MAX_NAME} characters of letters, digits, '_', '.' "
            "or '-', starting with a letter or digit"
        )
    return name


def check_address(text: str, version: int, flag: str) -> None:
    import ipaddress

    try:
        ok = ipaddress.ip_address(text).version == version
    except ValueError:
        ok = False
    if not ok:
        raise InvalidArgument(f"{flag} {text!r} is not a valid IPv{version} address")



_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def check_mac(text: str) -> str:
    mac = text.strip().lower()
    if not _MAC.match(mac) or int(mac[:2], 16) & 1:
        raise InvalidArgument(f"MAC address {text!r} is not a unicast address of the form 02:42:ac:11:00:02")
    return mac


def mac_for(endpoint: Endpoint) -> str:
    """A locally administered MAC: 02:42 + the IPv4 address like Docker, else from the endpoint id."""
    v4 = endpoint.address_of(4)
    if v4:
        octets = [int(o) for o in v4.split("/")[0].split(".")]
        return "02:42:" + ":".join(f"{o:02x}" for o in octets)
    raw = bytes.fromhex(endpoint.id[:10])
    return "02:" + ":".join(f"{b:02x}" for b in raw)


def container_sandbox_name(container_id: str) -> str:
    """The sandbox name of a CNI runtime's container: its id (podman's and containerd's 64 hex digits
    fit), so `podman ps --no-trunc` and `netctl network inspect` name it alike. A longer id is cut and
    suffixed with its checksum, so two ids sharing a long prefix still get two names."""
    import zlib

    if len(container_id) <= MAX_NAME:
        return container_id
    return f"{container_id[: MAX_NAME - 9]}-{zlib.crc32(container_id.encode()):08x}"



def new_endpoint(tx, network: Network, sandbox: Sandbox, *, aliases: list[str] | None, ifname: str,
                 host_ifname: Callable[[str], str], **fields: Any) -> Endpoint:
    """A new endpoint record of sandbox on network (not stored yet); AlreadyExists if it is on it.
    `host_ifname` names the host side of the veth after the endpoint id (the driver's: "" when it has none)."""
    from drivers.base import validate_ifname

    if tx.find_endpoint(network.id, sandbox.id) is not None:
        raise AlreadyExists(f"sandbox {sandbox.name!r} is already connected to network {network.name!r}")
    endpoint_id = new_id()
    return Endpoint(
        id=endpoint_id,
        name=sandbox.name,
        network_id=network.id,
        sandbox_id=sandbox.id,
        aliases=[validate_name(a, "alias") for a in aliases or []],
        ifname=validate_ifname(ifname, "interface") if ifname else next_ifname(tx, sandbox),
        host_ifname=host_ifname(endpoint_id),
        created=now(),
        **fields,
    )


def next_ifname(tx, sandbox: Sandbox) -> str:
    taken = {e.ifname for e in tx.list_endpoints(sandbox_id=sandbox.id)}
    index = 0
    while f"eth{index}" in taken:
        index += 1
    return f"eth{index}"
