"""Processes a lab starts (etcd, one daemon per host), recorded by PID *and* start time.

A PID alone can be reused by an unrelated process after ours died; the start time (field 22 of
/proc/PID/stat, in clock ticks since boot) cannot be the same for both. So a recorded process is
signalled only while both still match: `down` never kills anything the lab did not start.

Commands run inside a lab namespace through `nsenter --net=HANDLE` (network namespace only: the file
system, the cgroups and the PID space stay the caller's, like a host's processes on one machine).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from libnetwork.errors import NetctlError

STOP_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Recorded:
    pid: int
    start_time: int

    def to_dict(self) -> dict:
        return {"pid": self.pid, "start_time": self.start_time}

    @classmethod
    def from_dict(cls, d: dict) -> "Recorded":
        return cls(int(d["pid"]), int(d["start_time"]))

    @classmethod
    def of(cls, pid: int) -> "Recorded | None":
        start = start_time(pid)
        return cls(pid, start) if start else None

    @property
    def alive(self) -> bool:
        return start_time(self.pid) == self.start_time and not _is_zombie(self.pid)


def start_time(pid: int) -> int:
    """The process's start time in clock ticks since boot, 0 if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0
    # The command name (field 2) may contain spaces and parentheses: split after its last ')'.
    fields = stat[stat.rfind(b")") + 2:].split()
    return int(fields[19])  # field 22 overall


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:].split()[0] == b"Z"


def in_netns(netns_path: str, argv: list[str]) -> list[str]:
    return ["nsenter", f"--net={netns_path}", "--", *argv]


def netctl_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "netctl", *args]


def spawn(argv: list[str], *, log_path: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Recorded]:
    """Start argv detached (own session, stdio to `log_path`); nsenter execs the command, so the PID
    recorded is the command's own."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, close_fds=True,
                                start_new_session=True, cwd="/", env=env)  # fmt: skip
    recorded = Recorded.of(proc.pid)
    if recorded is None:  # exited at once: still report it through the log
        recorded = Recorded(proc.pid, -1)
    return proc, recorded


def stop(recorded: Recorded, timeout: float = STOP_TIMEOUT_S) -> bool:
    """SIGTERM, then SIGKILL after `timeout`; True if it was running. Only if PID and start time match."""
    if not recorded.alive:
        return False
    _signal(recorded, signal.SIGTERM)
    if _wait_gone(recorded, timeout):
        return True
    _signal(recorded, signal.SIGKILL)
    _wait_gone(recorded, timeout)
    return True


def _signal(recorded: Recorded, sig: int) -> None:
    # pidfd: the signal reaches exactly the process whose start time was just checked.
    try:
        fd = os.pidfd_open(recorded.pid)
    except OSError:
        return
    try:
        if start_time(recorded.pid) == recorded.start_time:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, sig)
    finally:
        os.close(fd)


def _wait_gone(recorded: Recorded, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(recorded.pid, os.WNOHANG)  # ours if `up` started it in this process
        if not recorded.alive:
            return True
        time.sleep(0.02)
    return False


def rss_kib(pid: int) -> int:
    """Resident memory of a process in KiB (VmRSS), 0 if unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run(argv: list[str], *, env: dict[str, str] | None = None, timeout: float = COMMAND_TIMEOUT_S,
        what: str = "") -> subprocess.CompletedProcess:
    """Run argv to completion (bounded); a failure raises NetctlError with the command's last error line."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, cwd="/",
                              stdin=subprocess.DEVNULL)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise NetctlError(f"{what or argv[0]}: no answer within {timeout:.0f} s") from None
    if proc.returncode != 0:
        reason = last_line(proc.stderr) or f"exit status {proc.returncode}"
        raise NetctlError(f"{what or ' '.join(argv[-3:])}: {reason}")
    return proc


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def processes_in(netns_inodes: set[tuple[int, int]]) -> list[int]:
    """PIDs of processes whose network namespace is one of `netns_inodes` ((st_dev, st_ino) pairs)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            st = os.stat(f"/proc/{entry}/ns/net")
            if (st.st_dev, st.st_ino) in netns_inodes:
                found.append(int(entry))
    return found


def kill_now(pid: int) -> None:
    """SIGKILL a process found in one of the lab's own namespaces (a container or monitor left over)."""
    recorded = Recorded.of(pid)
    if recorded is not None:
        _signal(recorded, signal.SIGKILL)
