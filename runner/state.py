"""Container records on disk: ROOT/containers/<id>/{config.json,state.json} and the name registry.

config.json is written once, when the container is made; state.json by the monitor alone (the single
writer), atomically (write + rename; for the exit record fsync of file and directory too), so a
reader - `ps`, `inspect`, a restarted monitor - always sees a whole record, and an exit code once
written survives a crash of the monitor or of the machine.

Names are claimed with symlink(2), which is atomic: ROOT/containers/.names/<name> -> <id>.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from libnetwork.errors import AlreadyExists, InvalidArgument, NotFound
from runner.paths import Layout
from runner.spec import ContainerConfig

CREATED, RUNNING, EXITED, REMOVING = "created", "running", "exited", "removing"
RESTARTING = "restarting"  # exited, a restart policy's next start is due
MIN_PREFIX = 3
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ID = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class ContainerState:
    status: str = CREATED
    pid: int = 0
    pid_start: int = 0  # /proc/PID/stat starttime: tells a recycled PID from ours
    started: str = ""
    finished: str = ""
    exit_code: int | None = None
    oom_killed: bool = False
    error: str = ""
    monitor_pid: int = 0
    monitor_start: int = 0  # the monitor's starttime, as pid_start (0 in records written before it)
    networks: dict[str, dict] = field(default_factory=dict)  # network name -> endpoint view at start
    restart_count: int = 0  # starts made by the restart policy since the last start by hand
    manually_stopped: bool = False  # stop/kill by a client: always and unless-stopped leave it stopped
    health: dict[str, Any] = field(default_factory=dict)  # Docker's State.Health while a healthcheck runs
    paused: bool = False  # running, its cgroup frozen (pause); status stays RUNNING, views show "paused"

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ContainerState":
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class Container:
    config: ContainerConfig
    state: ContainerState

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def name(self) -> str:
        return self.config.name


def new_id() -> str:
    return secrets.token_hex(32)


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidArgument(
            f"invalid container name {name!r}: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def write_json_atomic(path: str, data: Any, *, durable: bool = False) -> None:
    temp = f"{path}.tmp.{os.getpid()}"
    with open(temp, "w") as f:
        json.dump(data, f, sort_keys=True)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.rename(temp, path)
    if durable:  # the rename itself lives in the directory
        fd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class Records:
    def __init__(self, layout: Layout):
        self.layout = layout

    # --- names ---

    def claim_name(self, name: str, container_id: str) -> None:
        os.makedirs(self.layout.names, mode=0o700, exist_ok=True)
        try:
            os.symlink(container_id, os.path.join(self.layout.names, name))
        except FileExistsError:
            holder = self.name_holder(name) or "?"
            raise AlreadyExists(
                f"container name {name!r} is already used by container {holder[:12]}; "
                "choose another name or remove it (netctl rm)"
            ) from None

    def release_name(self, name: str, container_id: str) -> None:
        path = os.path.join(self.layout.names, name)
        if self.name_holder(name) == container_id:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def name_holder(self, name: str) -> str | None:
        try:
            return os.readlink(os.path.join(self.layout.names, name))
        except OSError:
            return None

    # --- records ---

    def directory(self, container_id: str) -> str:
        return self.layout.container(container_id)

    def write_config(self, config: ContainerConfig) -> None:
        write_json_atomic(os.path.join(self.directory(config.id), "config.json"), config.to_dict())

    def write_state(self, container_id: str, state: ContainerState) -> None:
        # fsync only what must survive a crash of the monitor or the machine: the exit record. A
        # "running" record lost in a power cut is corrected by the next monitor (the process is gone).
        path = os.path.join(self.directory(container_id), "state.json")
        write_json_atomic(path, state.to_dict(), durable=state.status == EXITED)

    def load(self, container_id: str) -> Container | None:
        directory = self.directory(container_id)
        try:
            with open(os.path.join(directory, "config.json")) as f:
                config = ContainerConfig.from_dict(json.load(f))
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return None
        return Container(config, self.state(container_id) or ContainerState())

    def state(self, container_id: str) -> ContainerState | None:
        """The state record alone (None: not written, or the container is gone)."""
        try:
            with open(os.path.join(self.directory(container_id), "state.json")) as f:
                return ContainerState.from_dict(json.load(f))
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return None

    def ids(self) -> list[str]:
        try:
            return [n for n in os.listdir(self.layout.containers) if _ID.match(n)]
        except FileNotFoundError:
            return []

    def all(self) -> list[Container]:
        found = [c for c in (self.load(i) for i in self.ids()) if c is not None]
        found.sort(key=lambda c: c.config.created, reverse=True)
        return found

    def find(self, ref: str) -> Container:
        """By full id, name, then unique id prefix (like Docker)."""
        if not ref:
            raise InvalidArgument("a container name or id is required")
        if _ID.match(ref):
            found = self.load(ref)
            if found is not None:
                return found
        if _NAME.match(ref):
            holder = self.name_holder(ref)
            if holder:
                found = self.load(holder)
                if found is not None:
                    return found
        if len(ref) >= MIN_PREFIX and re.match(r"^[0-9a-f]+$", ref):
            matches = [i for i in self.ids() if i.startswith(ref)]
            if len(matches) > 1:
                raise InvalidArgument(f"container reference {ref!r} is ambiguous; use the name or more of the id")
            if matches:
                found = self.load(matches[0])
                if found is not None:
                    return found
        raise NotFound(f"container {ref!r} not found; `netctl ps -a` lists containers")


def process_start_time(pid: int) -> int:
    """Field 22 of /proc/PID/stat (clock ticks since boot), 0 if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return 0
    return int(text.rpartition(")")[2].split()[19])


def is_alive(state: ContainerState) -> bool:
    return bool(state.pid) and process_start_time(state.pid) == state.pid_start


GROWING, DRAINING, DONE = "growing", "draining", "done"  # output_phase()


def output_phase(state: ContainerState) -> str:
    """Where a container's log stands, for `logs --follow`. GROWING: its init lives (or it is
    restarting under a live monitor). DRAINING: the init is gone but the record still says running and
    the monitor that wrote it lives: the monitor reaps the init, drains its pipes into the log and only
    then records the exit, so more output may still come. DONE: nothing more will be written."""
    if state.status == RESTARTING:
        return GROWING if _monitor_alive(state) else DONE
    if not state.running:
        return DONE
    if is_alive(state):
        return GROWING
    return DRAINING if _monitor_alive(state) else DONE


def _monitor_alive(state: ContainerState) -> bool:
    """The monitor that wrote the record still runs (its pid not recycled: the starttime matches).
    Records written before the starttime was kept cannot tell, and say no."""
    if not (state.monitor_pid and state.monitor_start):
        return False
    return process_start_time(state.monitor_pid) == state.monitor_start
