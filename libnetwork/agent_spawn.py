"""Starting the host agent on first use: `netctl daemon --auto` for a root, detached.

One place for the CLI's thin client (netctl/entry.py) and the monitor (runner/hosts.py, which may not
import netctl/); cni_plugins/launch.py keeps its own copy on `posix` alone, the plugins' hot path.
Standard library only and cheap to import: it sits on every cold CLI call.
"""

from __future__ import annotations

import os
import sys

from libnetwork import rootdir

# The caller's choices that must not become the agent's: a store or host name given to one command,
# the test hooks that keep a command in-process.
NOT_FOR_THE_AGENT = frozenset({"NETCTL_STORE", "NETCTL_HOST_NAME", "NETCTL_TEST_PAUSE", "NETCTL_NO_DAEMON"})


def in_init_network_namespace() -> bool:
    ours, init = os.stat("/proc/self/ns/net"), os.stat("/proc/1/ns/net")
    return (ours.st_dev, ours.st_ino) == (init.st_dev, init.st_ino)


def spawn_agent(root: str) -> bool:
    """Start the agent for `root` in the background, detached from us (its own session, stdio to
    ROOT/agent.log); a second one started meanwhile by another command finds the root's lock held
    and leaves quietly. Only from the host's own network namespace (init's): `ip netns exec X netctl`
    must not leave an agent behind in X to serve the host's later commands. False when nothing was
    started; errors only cost the next command its speed, so they are not raised."""
    try:
        if not in_init_network_namespace():
            return False
        os.makedirs(root, mode=0o700, exist_ok=True)
        log = os.open(rootdir.path(root, rootdir.AGENT_LOG),
                      os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            # -P: not the caller's working directory first on sys.path (a root process must not import
            # whatever `netctl/` or `json.py` lies where a command happened to be run).
            os.posix_spawn(sys.executable, [sys.executable, "-P", "-m", "netctl", "--root", root, "daemon", "--auto"],
                           {k: v for k, v in os.environ.items() if k not in NOT_FOR_THE_AGENT},
                           file_actions=[(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                                         (os.POSIX_SPAWN_DUP2, log, 1), (os.POSIX_SPAWN_DUP2, log, 2)],
                           setsid=True)
        finally:
            os.close(log)
    except OSError:
        return False
    return True
