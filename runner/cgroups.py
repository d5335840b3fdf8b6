"""cgroups for containers, v1 (one hierarchy per controller; what a hybrid host has) and v2 (unified).

Which one is used is decided by what is mounted, not by a flag: if the memory, pids and cpu controllers
are mounted as v1 hierarchies, v1; else if a cgroup2 file system is mounted at the cgroup root, v2.
A container's cgroup is PARENT/<container id> in each hierarchy, PARENT being "netctl" by default
(NETCTL_CGROUP_PARENT overrides it: the tests give every throwaway host its own parent, because
cgroups, unlike the other namespaces, are machine-wide).

Limits, as Docker sets them:
  --memory      v1 memory.limit_in_bytes (+ memory.memsw.limit_in_bytes: no swap on top); v2 memory.max
                (+ memory.swap.max 0)
  --cpus        v1 cpu.cfs_quota_us/cpu.cfs_period_us; v2 cpu.max "QUOTA PERIOD"
  --pids-limit  v1 and v2 pids.max
An OOM kill is read back from memory.oom_control / memory.events ("oom_kill N").

Everything takes the cgroup file system's root as a parameter, so the v1/v2 logic is tested against a
plain directory tree as well as the kernel.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from libnetwork.errors import InvalidArgument, KernelError

CGROUP_ROOT = "/sys/fs/cgroup"
DEFAULT_PARENT = "netctl"
PARENT_ENV = "NETCTL_CGROUP_PARENT"
CONTROLLERS = ("memory", "pids", "cpu")
V1_EXTRA = ("cpuacct", "freezer")  # joined when present: CPU usage for inspect/tests; pause (freezer.state)
CFS_PERIOD_US = 100_000
REMOVE_TIMEOUT_S = 5.0  # rmdir waits this long for the last (killed) tasks to leave
FREEZE_TIMEOUT_S = 5.0  # a task in an uninterruptible sleep holds a freeze back until it wakes


@dataclass
class Limits:
    memory: int = 0  # bytes, 0: unlimited
    cpus: float = 0.0  # CPUs, 0: unlimited
    pids: int = 0  # 0: unlimited

    def to_dict(self) -> dict:
        return {"memory": self.memory, "cpus": self.cpus, "pids": self.pids}

    @classmethod
    def from_dict(cls, d: dict) -> "Limits":
        return cls(memory=d.get("memory", 0), cpus=d.get("cpus", 0.0), pids=d.get("pids", 0))


@dataclass
class Hierarchy:
    """What is mounted: version 1 with {controller: mount point}, or version 2 with one mount point."""

    version: int
    mounts: dict[str, str] = field(default_factory=dict)  # v1: controller -> mount point
    unified: str = ""  # v2: mount point

    def to_dict(self) -> dict:
        return {"version": self.version, "mounts": dict(self.mounts), "unified": self.unified}

    @classmethod
    def from_dict(cls, d: dict) -> "Hierarchy":
        return cls(version=d["version"], mounts=dict(d.get("mounts", {})), unified=d.get("unified", ""))


def parse_mounts(text: str, root: str = CGROUP_ROOT,
                 exists: Callable[[str], bool] = os.path.exists) -> Hierarchy | None:
    """Pick the hierarchy from /proc/self/mounts content and what the paths show.

    The mount table alone can mislead: a mount hidden by a later one on top of it (cgroup2 mounted over
    a hybrid /sys/fs/cgroup) is still listed, and moved mounts keep their place in the list. So a
    listed mount counts only if its directory shows that kind of file system now: v1 roots have
    cgroup.clone_children, a v2 root has cgroup.controllers. `exists` is injectable for tests."""
    v1: dict[str, str] = {}
    unified = ""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        mount_point, fstype, options = parts[1], parts[2], parts[3].split(",")
        if not (mount_point == root or mount_point.startswith(root + "/")):
            continue
        if fstype == "cgroup" and exists(os.path.join(mount_point, "cgroup.clone_children")):
            for controller in CONTROLLERS + V1_EXTRA:
                if controller in options:
                    v1.setdefault(controller, mount_point)
        elif fstype == "cgroup2" and mount_point == root and exists(os.path.join(root, "cgroup.controllers")):
            unified = mount_point
    if all(c in v1 for c in CONTROLLERS):
        return Hierarchy(1, mounts=v1)
    if unified:
        return Hierarchy(2, unified=unified)
    if v1:
        return Hierarchy(1, mounts=v1)
    return None


def detect(root: str = CGROUP_ROOT) -> Hierarchy:
    with open("/proc/self/mounts") as f:
        hierarchy = parse_mounts(f.read(), root)
    if hierarchy is None:
        raise KernelError(f"no cgroup file system is mounted under {root}; mount cgroup2 there (or the v1 controllers)")
    return hierarchy


def parent_name(explicit: str = "") -> str:
    parent = (explicit or os.environ.get(PARENT_ENV) or DEFAULT_PARENT).strip("/")
    if not parent or any(p in ("", ".", "..") for p in parent.split("/")):
        raise InvalidArgument(f"cgroup parent {parent!r} is invalid; use a relative path like netctl or netctl/test1")
    return parent


@dataclass
class Cgroup:
    """One container's cgroup: the directories in each hierarchy, created and removed together."""

    hierarchy: Hierarchy
    path: str  # relative: PARENT/<id>

    # --- where ---

    def directories(self) -> dict[str, str]:
        """{controller (or "unified"): absolute directory}."""
        if self.hierarchy.version == 2:
            return {"unified": os.path.join(self.hierarchy.unified, self.path)}
        return {c: os.path.join(m, self.path) for c, m in self.hierarchy.mounts.items()}

    def directory(self, controller: str) -> str | None:
        if self.hierarchy.version == 2:
            return os.path.join(self.hierarchy.unified, self.path)
        mount = self.hierarchy.mounts.get(controller)
        return os.path.join(mount, self.path) if mount else None

    # --- life cycle ---

    def create(self, limits: Limits) -> None:
        """Make the directories and write the limits; on failure remove what was made."""
        self._check_available(limits)
        made: list[str] = []
        try:
            if self.hierarchy.version == 2:
                self._enable_v2_controllers(limits)
            for directory in self.directories().values():
                _mkdir_parents(directory, made)
            self._write_limits(limits)
        except BaseException:
            for directory in reversed(made):
                _rmdir_quietly(directory)
            raise

    def _check_available(self, limits: Limits) -> None:
        wanted = [c for c, on in (("memory", limits.memory), ("cpu", limits.cpus), ("pids", limits.pids)) if on]
        if self.hierarchy.version == 1:
            missing = [c for c in wanted if c not in self.hierarchy.mounts]
        else:
            available = _read(os.path.join(self.hierarchy.unified, "cgroup.controllers")).split()
            missing = [c for c in wanted if c not in available]
        if missing:
            raise InvalidArgument(
                f"the {', '.join(missing)} cgroup controller is not available on this host "
                f"(cgroup v{self.hierarchy.version}); "
                "drop the matching limit flag"
            )

    def _enable_v2_controllers(self, limits: Limits) -> None:
        """v2: a controller works in a cgroup only if every ancestor enables it for its children."""
        wanted = [c for c, on in (("memory", limits.memory), ("cpu", limits.cpus), ("pids", limits.pids)) if on]
        if not wanted:
            return
        directory = self.hierarchy.unified
        parts = self.path.split("/")[:-1]
        for part in [""] + parts:
            directory = os.path.join(directory, part) if part else directory
            os.makedirs(directory, exist_ok=True)
            enabled = _read(os.path.join(directory, "cgroup.subtree_control"), missing_ok=True).split()
            todo = [c for c in wanted if c not in enabled]
            if todo:
                _write(os.path.join(directory, "cgroup.subtree_control"), " ".join("+" + c for c in todo))

    def _write_limits(self, limits: Limits) -> None:
        for name, value in limit_files(self.hierarchy.version, limits):
            controller, _, _ = name.partition(".")
            directory = self.directory(controller)
            if directory is None:
                continue
            path = os.path.join(directory, name)
            if name.endswith("memsw.limit_in_bytes") and not os.path.exists(path):
                continue  # no swap accounting on this kernel: nothing to cap
            if name == "memory.swap.max" and not os.path.exists(path):
                continue
            _write(path, value)

    def join(self, pid: int = 0) -> None:
        """Move process `pid` (0: the caller) into every directory of the cgroup."""
        text = str(pid or os.getpid())
        for directory in self.directories().values():
            _write(os.path.join(directory, "cgroup.procs"), text)

    def self_join_files(self) -> list[str]:
        """Files a single-threaded process writes "0" to, to move itself in (runner/process.py does,
        between fork and exec).

        v1: `tasks`. Writing "0" (the calling thread) there is the one migration the kernel does without
        write-locking cgroup_threadgroup_rwsem, a lock whose first taker waits a whole RCU grace period
        (~10-17 ms on our VMs, per container start); for a process of one thread it means the same as
        cgroup.procs. v2 has no such file for domain cgroups: cgroup.procs."""
        name = "tasks" if self.hierarchy.version == 1 else "cgroup.procs"
        return [os.path.join(d, name) for d in self.directories().values()]

    def oom_killed(self) -> bool:
        directory = self.directory("memory")
        if directory is None:
            return False
        if self.hierarchy.version == 2:
            return _count(_read(os.path.join(directory, "memory.events"), missing_ok=True), "oom_kill") > 0
        text = _read(os.path.join(directory, "memory.oom_control"), missing_ok=True)
        return _count(text, "oom_kill") > 0

    def pids(self) -> list[int]:
        found: set[int] = set()
        for directory in self.directories().values():
            for line in _read(os.path.join(directory, "cgroup.procs"), missing_ok=True).split():
                found.add(int(line))
        return sorted(found)

    def kill_all(self) -> None:
        """SIGKILL every process in the cgroup (v2: cgroup.kill; v1: one by one)."""
        import signal

        if self.hierarchy.version == 2:
            path = os.path.join(self.directories()["unified"], "cgroup.kill")
            if os.path.exists(path):
                _write(path, "1")
                return
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def freeze(self, frozen: bool, timeout: float = FREEZE_TIMEOUT_S) -> None:
        """Freeze (`pause`) or thaw every process of the cgroup; returns once the kernel says it is
        done (v1 freezer.state FROZEN/THAWED, v2 cgroup.events "frozen 0|1")."""
        if self.hierarchy.version == 2:
            directory = self.directories()["unified"]
            control, value = os.path.join(directory, "cgroup.freeze"), "1" if frozen else "0"
            events = os.path.join(directory, "cgroup.events")
            want = f"frozen {value}"

            def done() -> bool:
                return want in _read(events).splitlines()
        else:
            found = self.directory("freezer")
            if found is None:
                raise InvalidArgument("the freezer cgroup controller is not mounted on this host (cgroup v1), "
                                      "or was not when the container was created; pause needs it")
            control, value = os.path.join(found, "freezer.state"), "FROZEN" if frozen else "THAWED"

            def done() -> bool:
                return _read(control).strip() == value

        _write(control, value)
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                if frozen:  # half-frozen (v1 FREEZING) is worse than either: back to thawed
                    _write(control, "0" if self.hierarchy.version == 2 else "THAWED")
                raise KernelError(f"cgroup {os.path.dirname(control)} did not become {value} within {timeout:g} s "
                                  "(a process stuck in the kernel?); try again")
            time.sleep(0.002)

    def frozen(self) -> bool:
        try:
            if self.hierarchy.version == 2:
                return "frozen 1" in _read(os.path.join(self.directories()["unified"], "cgroup.events")).splitlines()
            found = self.directory("freezer")
            return found is not None and _read(os.path.join(found, "freezer.state")).strip() != "THAWED"
        except KernelError:
            return False

    def remove(self, timeout: float = REMOVE_TIMEOUT_S) -> None:
        """Remove every directory (idempotent); retries while killed tasks are still leaving, then the
        parent directories that became empty. A frozen cgroup is thawed first: its killed tasks could
        not leave it otherwise."""
        if self.frozen():
            self.freeze(False)
        deadline = time.monotonic() + timeout
        for directory in self.directories().values():
            while True:
                try:
                    os.rmdir(directory)
                    break
                except FileNotFoundError:
                    break
                except OSError as err:
                    if err.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise KernelError(
                            f"cannot remove cgroup {directory}: {err.strerror}; processes are still in it "
                            f"(cat {directory}/cgroup.procs)"
                        ) from None
                    time.sleep(0.01)
            remove_empty_parents(directory, self.path.count("/"))


def limit_files(version: int, limits: Limits) -> list[tuple[str, str]]:
    """The files and values that express `limits` (pure)."""
    files: list[tuple[str, str]] = []
    if limits.memory:
        if version == 1:
            files += [("memory.limit_in_bytes", str(limits.memory)),
                      ("memory.memsw.limit_in_bytes", str(limits.memory))]
        else:
            files += [("memory.max", str(limits.memory)), ("memory.swap.max", "0")]
    if limits.cpus:
        quota = max(1000, int(round(limits.cpus * CFS_PERIOD_US)))
        if version == 1:
            files += [("cpu.cfs_period_us", str(CFS_PERIOD_US)), ("cpu.cfs_quota_us", str(quota))]
        else:
            files += [("cpu.max", f"{quota} {CFS_PERIOD_US}")]
    if limits.pids:
        files += [("pids.max", str(limits.pids))]
    return files


def _mkdir_parents(directory: str, made: list[str]) -> None:
    """mkdir -p, recording what it made; retries when a concurrent remover deletes an empty parent."""
    for _ in range(10):
        missing = []
        probe = directory
        while not os.path.isdir(probe):
            missing.append(probe)
            probe = os.path.dirname(probe)
        try:
            for path in reversed(missing):
                try:
                    os.mkdir(path, 0o755)
                    made.append(path)
                except FileExistsError:
                    pass
            return
        except FileNotFoundError:
            continue  # a parent vanished between the check and the mkdir (another container's rm)
        except OSError as err:
            raise KernelError(f"cannot create cgroup {directory}: {err.strerror}") from None
    raise KernelError(f"cannot create cgroup {directory}: its parent keeps disappearing")


def remove_empty_parents(directory: str, depth: int) -> None:
    """rmdir up to `depth` ancestors of `directory`, nearest first, while they are empty: a parent
    like "netctl" lives exactly as long as something is under it (one still in use stays)."""
    for _ in range(depth):
        directory = os.path.dirname(directory)
        if not _rmdir_quietly(directory):
            return


def _rmdir_quietly(directory: str) -> bool:
    try:
        os.rmdir(directory)
        return True
    except OSError:
        return False  # not empty (another container), busy, or gone: all fine here


def _read(path: str, missing_ok: bool = False) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        if missing_ok:
            return ""
        raise KernelError(f"cgroup file {path} is missing; is the controller mounted?") from None


def _write(path: str, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as err:
        raise KernelError(f"cannot write {value!r} to {path}: {err.strerror}") from None


def _count(text: str, key: str) -> int:
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def parse_memory(text: str) -> int:
    """Docker's size syntax: 16m, 1g, 512k, 1048576 (bytes); b/k/m/g, case-insensitive."""
    value = text.strip().lower()
    units = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    multiplier = 1
    if value.endswith("ib"):
        value = value[:-2]
    elif value.endswith("b") and len(value) > 1 and value[-2] in units:
        value = value[:-1]
    if value and value[-1] in units:
        multiplier = units[value[-1]]
        value = value[:-1]
    try:
        number = float(value)
    except ValueError:
        number = -1
    if not value or number <= 0 or number != number:
        raise InvalidArgument(f"--memory {text!r} is not a size; use e.g. 16m, 512k or 1g")
    size = int(number * multiplier)
    if size < 6 << 20:
        raise InvalidArgument(f"--memory {text!r} is below the minimum of 6m")
    return size


def parse_cpus(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.01 <= value <= (os.cpu_count() or 1) or value != value:
        raise InvalidArgument(f"--cpus {text!r} must be a number between 0.01 and {os.cpu_count() or 1} "
                              "(the CPUs of this host)")
    return value


def parse_pids(text: str | int) -> int:
    try:
        value = int(text)
    except (TypeError, ValueError):
        value = 0
    if value <= 0:
        raise InvalidArgument(f"--pids-limit {text!r} must be a positive number of processes")
    return value
