"""What a lab has mounted under its directory: network namespace handles (switch, hosts, overlay
networks, containers' sandboxes), shared bind mounts of their directories, containers' root file
systems. Found in /proc/self/mountinfo; unmounted deepest first.

`down` unmounts them all; `test` walks the namespaces among them to flush learnt neighbours.
"""

from __future__ import annotations

import contextlib
import os

from netctl.lab.state import Paths

UMOUNT_ROUNDS = 8


def lab_netns_paths(paths: Paths) -> set[str]:
    """Every network namespace handle bound under the lab directory: switch, hosts, overlay networks
    and containers' sandboxes."""
    from libnetwork import netns

    return {point for point in mounts_under(paths.lab) if netns.is_netns(point)}


def mounts_under(directory: str) -> list[str]:
    prefix = os.path.abspath(directory)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = _unescape(line.split()[4])
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found


def _unescape(text: str) -> str:
    """mountinfo writes space, tab, newline and backslash as \\ooo octal."""
    import re

    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def unmount_under(directory: str) -> None:
    """Unmount everything under `directory`, deepest first (netns handles, shared bind mounts of their
    directories, container root file systems). Shared propagation can stack copies: a few rounds."""
    from libnetwork import netns

    for _ in range(UMOUNT_ROUNDS):
        points = sorted(set(mounts_under(directory)), key=lambda p: p.count("/"), reverse=True)
        if not points:
            return
        for point in points:
            with contextlib.suppress(OSError):
                netns._umount_detach(point)  # noqa: SLF001 - the same libc call, for any mount
