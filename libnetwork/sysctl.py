"""Read and write kernel parameters under /proc/sys, optionally inside a network namespace.

/proc/sys/net is per network namespace and resolved when the file is opened, from the opening thread's
namespace, so with `netns_path` the file is opened while the thread is inside that namespace.

Keys are written as sysctl(8) does, "net.ipv4.ip_forward", or as a path, "net/ipv4/conf/nc-x/rp_filter".
In the dotted form an interface name may itself contain dots ("net.ipv4.conf.eth0.100.rp_filter"): for
net.{ipv4,ipv6}.{conf,neigh}.<ifname>.<leaf> everything between the fourth part and the last is the name.
"""

from __future__ import annotations

import contextlib
import os

from libnetwork.errors import InvalidArgument, KernelError, NotFound

PROC_SYS = "/proc/sys"


def key_path(key: str) -> str:
    """The /proc/sys file of `key`."""
    if not key or key.startswith(("/", ".")) or ".." in key.split("/"):
        raise InvalidArgument(f"sysctl key {key!r} is invalid; write it as net.ipv4.ip_forward")
    if "/" in key:
        return os.path.join(PROC_SYS, key)
    parts = key.split(".")
    if len(parts) > 5 and parts[0] == "net" and parts[1] in ("ipv4", "ipv6") and parts[2] in ("conf", "neigh"):
        parts = parts[:3] + [".".join(parts[3:-1]), parts[-1]]
    return os.path.join(PROC_SYS, *parts)


def _inside(netns_path: str | None) -> contextlib.AbstractContextManager[None]:
    if netns_path is None:
        return contextlib.nullcontext()
    from libnetwork import netns

    return netns.entered(netns_path)


def _where(netns_path: str | None) -> str:
    return f" in network namespace {netns_path}" if netns_path else ""


def read(key: str, *, netns_path: str | None = None) -> str:
    """The value of `key`, without the trailing newline."""
    path = key_path(key)
    try:
        with _inside(netns_path):
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return os.read(fd, 65536).decode().rstrip("\n")
        finally:
            os.close(fd)
    except FileNotFoundError:
        raise NotFound(f"sysctl {key} does not exist{_where(netns_path)}; check the name (and the interface)") from None
    except OSError as err:
        raise KernelError(f"cannot read sysctl {key}{_where(netns_path)}: {err.strerror}") from None


def write(key: str, value: str, *, netns_path: str | None = None) -> None:
    """Set `key` to `value`."""
    path = key_path(key)
    try:
        with _inside(netns_path):
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, str(value).encode())
        finally:
            os.close(fd)
    except FileNotFoundError:
        raise NotFound(f"sysctl {key} does not exist{_where(netns_path)}; check the name (and the interface)") from None
    except OSError as err:
        raise KernelError(f"cannot set sysctl {key}={value}{_where(netns_path)}: {err.strerror}") from None
