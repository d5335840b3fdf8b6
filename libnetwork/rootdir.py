"""A host's state root: where it is, what lives directly under it, and the host's persistent identity.

Every host has one root (`/var/lib/netctl`, or `--root` / NETCTL_ROOT); two roots on one machine are
two hosts. This module is the one place that names the root's top-level entries; the runner's own
subtree (images, containers, the monitor's files) is runner/paths.py's.

    ROOT/netctl.sock     the host agent (`netctl daemon`): CLI, CNI, and later the Docker API and DNS
    ROOT/daemon.pid      flock-ed by the running agent (one per root)
    ROOT/agent.log       the log of an agent started on first use (not by hand)
    ROOT/global.json     this host's overlay membership {"store", "host", "vtep"}, written by the agent
    ROOT/host-id         the host's persistent identity (32 hex digits), made on first use
    ROOT/netctl.db       the local store (SQLite)
    ROOT/netns/<id>      network namespace handles of sandboxes
    ROOT/overlay/<id>    namespaces of the overlay networks built on this host (drivers/overlay.py)

Imports only `os` (json when global.json is read): the CLI's thin client and the CNI plugin launcher
read these names on their hot path.
"""

from __future__ import annotations

import os

DEFAULT_ROOT = "/var/lib/netctl"
AGENT_SOCKET = "netctl.sock"
AGENT_LOCK = "daemon.pid"
AGENT_LOG = "agent.log"
DOCKER_SOCKET = "docker.sock"  # the agent's Docker Engine API (netctl/docker_api/)
DNS_SOCKET = "dns.sock"  # the agent's name server's control socket (netctl/dns/, libnetwork/name_server.py)
VOLUMES = "volumes"  # named local volumes (runner/volumes.py)
GLOBAL_CONFIG = "global.json"
HOST_ID = "host-id"
NETNS = "netns"
OVERLAY_NETNS = "overlay"


class UnreadableConfig(Exception):
    """ROOT/global.json exists but cannot be used; the caller says what to do about it."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def resolve(root: str | None = None) -> str:
    """The root to use: the one given, else NETCTL_ROOT, else the default (as an absolute path)."""
    return os.path.abspath(root or os.environ.get("NETCTL_ROOT") or DEFAULT_ROOT)


def path(root: str, name: str) -> str:
    return os.path.join(os.path.abspath(root), name)


def global_config_path(root: str) -> str:
    return path(root, GLOBAL_CONFIG)


def read_global_config(root: str) -> dict[str, str]:
    """ROOT/global.json ({"store", "host", "vtep"}: this host's overlay membership, written by the
    agent), or {} when there is none. The one reader: the controller and the agent both use it."""
    import json  # lazy: a local-only host never has the file, and the hot paths never read it

    file = global_config_path(root)
    try:
        with open(file) as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise UnreadableConfig(file, str(err)) from None
    if not isinstance(data, dict):
        raise UnreadableConfig(file, "not a JSON object")
    return {k: str(v) for k, v in data.items() if isinstance(v, (str, int))}


def host_id(root: str) -> str:
    """This root's persistent host id, made (atomically: first writer wins) the first time it is asked
    for. Hosts are told apart by it, not by their host name: cloned machines share hostnames."""
    file = path(root, HOST_ID)
    try:
        with open(file) as f:
            value = f.read().strip()
        if _valid(value):
            return value
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(file), mode=0o700, exist_ok=True)
    value = os.urandom(16).hex()
    temporary = f"{file}.{os.getpid()}.tmp"
    with open(temporary, "w") as f:
        f.write(value + "\n")
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(temporary, file)  # fails if another process made it meanwhile: theirs wins
    except FileExistsError:
        with open(file) as f:
            value = f.read().strip()
        if not _valid(value):
            from libnetwork.errors import InvalidArgument

            raise InvalidArgument(f"{file} holds no host id (32 hex digits); remove it, then start again") from None
    finally:
        os.unlink(temporary)
    return value


def _valid(value: str) -> bool:
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)
