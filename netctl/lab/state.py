"""Where a lab's things are (ROOT/labs/<name>/...) and what `up` recorded of them (state.json).

Everything of a lab lives under ROOT/labs/<name>/:

    state.json            what `up` made, written as it goes (so `down` can undo a half-made lab)
    netns/switch          the switch namespace: one bridge per underlay, etcd on .254
    netns/host-<host>     one namespace per host, eth0 on its underlay
    hosts/<host>/         the host's own netctl root (store, images, containers, overlay namespaces)
    etcd/                 etcd's data directory
    logs/                 etcd.log, <host>-daemon.log

Every phase (up, down, status, test) starts here: the layout and the record are the one thing they
share, so they have a module of their own.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from libnetwork.errors import NetctlError
from netctl.lab.fabric import Fabric


class LabError(NetctlError):
    """A lab could not be brought up (it was torn down again) or is not in the state asked for."""


@dataclass(frozen=True)
class Paths:
    root: str  # netctl's root (ROOT)
    name: str

    @property
    def lab(self) -> str:
        return os.path.join(os.path.abspath(self.root), "labs", self.name)

    @property
    def state(self) -> str:
        return os.path.join(self.lab, "state.json")

    @property
    def logs(self) -> str:
        return os.path.join(self.lab, "logs")

    @property
    def etcd_data(self) -> str:
        return os.path.join(self.lab, "etcd")

    def host_root(self, host: str) -> str:
        return os.path.join(self.lab, "hosts", host)

    @property
    def hosts_dir(self) -> str:
        return os.path.join(self.lab, "hosts")

    def daemon_log(self, host: str) -> str:
        return os.path.join(self.logs, f"{host}-daemon.log")

    @property
    def fabric(self) -> Fabric:
        return Fabric(self.lab)


@dataclass
class State:
    """ROOT/labs/<name>/state.json: written after every step of `up`."""

    name: str
    phase: str = "starting"  # starting -> up
    created: str = ""
    file: str = ""
    cgroup_parent: str = ""  # PARENT/lab-<name>: each host's containers go under <this>/<host>
    etcd: dict = field(default_factory=dict)  # Recorded
    daemons: dict[str, dict] = field(default_factory=dict)  # host -> Recorded
    hosts: list[str] = field(default_factory=list)  # hosts whose namespace exists
    up_seconds: float = 0.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> "State":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def read_state(paths: Paths) -> State | None:
    try:
        with open(paths.state) as f:
            return State.from_dict(json.load(f))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as err:
        raise LabError(f"lab {paths.name}: state file {paths.state} is unreadable ({err}); "
                       "`netctl lab down` removes the lab") from None


def write_state(paths: Paths, state: State) -> None:
    tmp = paths.state + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state.to_dict(), f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, paths.state)
