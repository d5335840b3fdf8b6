"""Which command lines the host agent runs for the CLI, and on which socket: read by the thin client
(netctl/entry.py), which sends them there, and by the agent (netctl/service.py), which refuses the rest.

Imports only `os` and libnetwork/rootdir.py: every `netctl` call reads it before anything else.
"""

from __future__ import annotations

import os

from libnetwork import rootdir

# Commands the daemon may run: they read nothing but their arguments and write only stdout/stderr.
# Left out on purpose: `sandbox exec` (replaces this process), `network prune` (asks on stdin),
# `daemon` itself, and everything of the container runner (terminals, signals, the caller's cgroup).
DELEGATED = {
    ("network", "create"), ("network", "rm"), ("network", "connect"), ("network", "disconnect"),
    ("network", "ls"), ("network", "inspect"),
    ("sandbox", "create"), ("sandbox", "rm"), ("sandbox", "ls"), ("sandbox", "inspect"),
    ("doctor",), ("gc",), ("firewall", "sync"),
}


def split_globals(argv: list[str]) -> tuple[str, bool, list[str]] | None:
    """(root, debug, command words) from `netctl [--root DIR|--root=DIR] [--debug] CMD...`, or None
    for anything else (help, unknown global flags): those run in-process."""
    root = os.environ.get("NETCTL_ROOT") or rootdir.DEFAULT_ROOT
    debug = False
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        arg = argv[i]
        if arg == "--debug":
            debug = True
        elif arg == "--root" and i + 1 < len(argv):
            i += 1
            root = argv[i]
        elif arg.startswith("--root="):
            root = arg[len("--root="):]
        else:
            return None
        i += 1
    return root, debug, argv[i:]


def agent_socket_for(argv: list[str]) -> str | None:
    """The socket of the agent that may run this command line (by its words and root alone), or None
    for commands that must run in the caller's own process."""
    parsed = split_globals(argv)
    if parsed is None:
        return None
    root, debug, words = parsed
    if debug or "-h" in words or "--help" in words:
        return None
    if tuple(words[:2]) not in DELEGATED and tuple(words[:1]) not in DELEGATED:
        return None
    return rootdir.path(root, rootdir.AGENT_SOCKET)
