"""The container's processes: its init (started by the monitor) and `exec` (joining a running one).

Start, in the monitor (which is a child subreaper, so the init ends up its child):

    monitor ──fork──> helper: joins the cgroup,
                      unshare(mnt, uts, ipc, pid, cgroup), fork ──> init (PID 1 of the new pid ns):
                      helper reports init's pid, exits          mounts (runner/rootfs.py prepare),
                                                                waits at the network gate,
                                                                joins the sandbox's netns, /sys, pivot
                                                                (rootfs.finish), hostname, rlimits,
                                                                capabilities, no_new_privs, user, cwd,
                                                                execve(command)

The network gate is a socket pair: while helper and init get this far the monitor makes the sandbox
and its endpoints (the two overlap), then sends the namespace's descriptor (SCM_RIGHTS: the handle is
mounted after the init's mount namespace was copied, so a path would not do), or a message without one
for --network host. End of stream instead means the container is abandoned: the init exits quietly.

A failure in init before execve is written to an error pipe (close-on-exec: a successful execve
closes it empty), so `run` reports "executable file not found" and the like as one line.

Exec: the CLI forks a child that joins the cgroup and setns()es into every namespace of the init,
forks again (a pid namespace applies to children) and applies the same user, capability and
environment settings before execve. So `exec` sees exactly the container's view.

Code that runs after fork only calls the os module and ctypes, never imports (after pivot_root or
setns(mnt) the interpreter's files are out of sight: everything is imported and libc loaded before the
fork, see prepare()), and ends in execve or os._exit: nothing of the monitor (threads, handlers,
buffers) runs in a child.
"""

from __future__ import annotations

import fcntl
import os
import resource
import signal
import socket
import sys
from dataclasses import dataclass, field

from runner import linux, rootfs
from runner.spec import CAPABILITIES

EXIT_CANNOT_EXEC = 126
EXIT_NOT_FOUND = 127
NAMESPACES = (  # /proc/PID/ns name, setns type; mnt last: after it our paths are the container's
    ("cgroup", linux.CLONE_NEWCGROUP), ("ipc", linux.CLONE_NEWIPC), ("uts", linux.CLONE_NEWUTS),
    ("net", linux.CLONE_NEWNET), ("pid", linux.CLONE_NEWPID), ("mnt", linux.CLONE_NEWNS),
)  # fmt: skip


@dataclass
class ProcessSpec:
    """What the last steps before execve need; shared by the init and exec."""

    argv: list[str]
    env: list[str]
    workdir: str = ""
    user: str = ""
    capabilities: list[str] = field(default_factory=list)
    nofile: int = 0
    rlimits: dict[str, list[int]] = field(default_factory=dict)  # Docker's --ulimit: name -> [soft, hard]
    tty: bool = False


@dataclass
class InitSpec:
    """Everything the container's init does between fork and execve."""

    process: ProcessSpec
    rootfs: str
    lowerdirs: list[str]
    upper: str
    work: str
    etc_files: dict[str, str]
    volumes: list
    tmpfs: list = field(default_factory=list)  # (path, options)
    hostname: str = ""  # "" keeps the UTS namespace of the host (--network host)
    read_only: bool = False
    console: str = ""  # pty slave path for -t
    sysctls: dict[str, str] = field(default_factory=dict)  # namespaced ones only (runner/spec.py)
    shm_size: int = 0  # /dev/shm in bytes; 0: 64 MiB


def prepare() -> None:
    """Load what the code after fork needs while the host's files are still visible."""
    linux._libc()
    linux.last_capability()


def _apply_user(user: str) -> tuple[int, int, str]:
    """UID[:GID] or NAME[:GROUP], names read from the container's /etc/passwd and /etc/group."""
    name, _, group = user.partition(":")
    uid, gid, home = 0, 0, "/root"
    if name:
        entry = _lookup("/etc/passwd", name, 2)
        if entry is not None:
            uid, gid, home = int(entry[2]), int(entry[3]), entry[5] if len(entry) > 5 else "/"
        elif name.isdigit():
            uid, gid, home = int(name), int(name) if not group else 0, "/"
        else:
            raise LookupError(f"user {name!r} is not in the container's /etc/passwd")
    if group:
        entry = _lookup("/etc/group", group, 2)
        if entry is not None:
            gid = int(entry[2])
        elif group.isdigit():
            gid = int(group)
        else:
            raise LookupError(f"group {group!r} is not in the container's /etc/group")
    return uid, gid, home


def _lookup(path: str, key: str, id_field: int) -> list[str] | None:
    try:
        with open(path) as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) > id_field and (fields[0] == key or (key.isdigit() and fields[id_field] == key)):
                    return fields
    except OSError:
        pass
    return None


def finish_and_exec(spec: ProcessSpec) -> None:
    """The common tail of init and exec: limits, identity, privileges, then execve. Never returns."""
    if spec.nofile:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        value = spec.nofile if hard == resource.RLIM_INFINITY else min(spec.nofile, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (value, value))
    for name, (soft, hard) in spec.rlimits.items():  # as root still: a hard limit may be raised
        resource.setrlimit(getattr(resource, "RLIMIT_" + name.upper()), (soft, hard))
    uid, gid, home = _apply_user(spec.user) if spec.user else (0, 0, "/root")
    env: dict[str, str] = {}
    for entry in spec.env:
        key, _, setting = entry.partition("=")
        env[key] = setting
    env.setdefault("HOME", home)
    workdir = spec.workdir or "/"
    os.makedirs(workdir, mode=0o755, exist_ok=True)
    keep = {CAPABILITIES[c] for c in spec.capabilities if CAPABILITIES[c] <= linux.last_capability()}
    linux.drop_bounding_set(keep)
    linux.prctl(linux.PR_CAP_AMBIENT, linux.PR_CAP_AMBIENT_CLEAR_ALL)
    os.setgroups([gid] if gid else [])
    os.setgid(gid)
    if uid:
        os.setuid(uid)  # clears the permitted and effective sets (no keepcaps)
    else:
        linux.set_capabilities(keep)
    linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
    os.chdir(workdir)
    _default_signals()
    argv0 = spec.argv[0]
    if "/" in argv0:
        os.execve(argv0, spec.argv, env)
    path = env.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    last: OSError | None = None
    for directory in path.split(":"):
        candidate = os.path.join(directory or ".", argv0)
        try:
            os.execve(candidate, spec.argv, env)
        except (FileNotFoundError, NotADirectoryError) as err:
            last = last or err
        except PermissionError as err:
            last = err
    if isinstance(last, PermissionError):
        raise last
    raise FileNotFoundError(2, f"executable file {argv0!r} not found in $PATH")


def _default_signals() -> None:
    """Python ignores SIGPIPE and SIGXFSZ, and ignored signals survive execve: restore them all."""
    for number in range(1, signal.NSIG):
        if number in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(number, signal.SIG_DFL)
        except (OSError, ValueError, RuntimeError):
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def exit_code_for(err: BaseException) -> int:
    if isinstance(err, FileNotFoundError):
        return EXIT_NOT_FOUND
    return EXIT_CANNOT_EXEC


def describe(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        detail = err.strerror
        if err.filename:
            detail += f": {err.filename}"
        return detail
    return str(err) or type(err).__name__


# --- the init -------------------------------------------------------------------------------------


def run_init(spec: InitSpec, stdio: tuple[int, int, int], error_fd: int, network_gate: int = -1) -> None:
    """In the container's init (PID 1): build the rootfs, join the network (see the module doc), exec.
    Never returns."""
    try:
        for target, fd in enumerate(stdio):
            if fd != target:
                os.dup2(fd, target)
        _close_all_but({error_fd, network_gate})
        os.setsid()
        if spec.process.tty:
            fcntl.ioctl(0, linux.TIOCSCTTY, 0)
        rootfs.prepare(
            spec.rootfs,
            spec.lowerdirs,
            spec.upper,
            spec.work,
            etc_files=spec.etc_files,
            volumes=spec.volumes,
            tmpfs=spec.tmpfs,
            console=spec.console,
            shm_size=spec.shm_size,
        )
        if network_gate >= 0:
            _join_network(network_gate)
        for key, value in spec.sysctls.items():  # in its own network and IPC namespaces now
            _write_sysctl(key, value)
        rootfs.finish(spec.rootfs, read_only=spec.read_only)
        if spec.hostname:
            socket.sethostname(spec.hostname)
        finish_and_exec(spec.process)
    except BaseException as err:  # noqa: BLE001 - report anything, then die
        _report_and_exit(error_fd, err)


def _write_sysctl(key: str, value: str) -> None:
    """/proc/sys/KEY of the caller's namespaces (net.* and IPC ones are looked up by the writer's)."""
    fd = os.open("/proc/sys/" + key.replace(".", "/"), os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _close_all_but(keep: set[int]) -> None:
    """Close every descriptor from 3 up but those in `keep`."""
    low = 3
    for fd in sorted(fd for fd in keep if fd >= low):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 16)


def _join_network(gate: int) -> None:
    """Wait at the network gate; join the namespace whose descriptor arrives, or end quietly."""
    sock = socket.socket(fileno=gate)
    data, ancillary, _, _ = sock.recvmsg(16, socket.CMSG_SPACE(4))
    sock.close()
    if not data:
        os._exit(0)  # the monitor abandoned this container (its network could not be made)
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS and len(payload) >= 4:
            fd = int.from_bytes(payload[:4], sys.byteorder, signed=True)
            linux.setns(fd, linux.CLONE_NEWNET)
            os.close(fd)


def send_network(gate, netns_fd: int) -> None:
    """The monitor's side of the gate (a socket): the namespace to join, or -1 for the host's."""
    if netns_fd >= 0:
        gate.sendmsg([b"n"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, netns_fd.to_bytes(4, sys.byteorder, signed=True))])
    else:
        gate.sendall(b"h")


def _report_and_exit(error_fd: int, err: BaseException) -> None:
    try:
        os.write(error_fd, describe(err).encode()[:1000])
    finally:
        os._exit(exit_code_for(err))


def join_cgroup(files: list[str]) -> None:
    """Move the calling (single-threaded, just forked) process into a cgroup: "0" to each of
    Cgroup.self_join_files(), i.e. "this thread", which on v1 spares a wait for an RCU grace period."""
    for path in files:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)


def start_helper(
    spec: InitSpec,
    *,
    cgroup_procs: list[str],
    netns_fd: int,
    unshare_flags: int,
    stdio: tuple[int, int, int],
    error_fd: int,
    pid_fd: int,
    network_gate: int = -1,
) -> None:
    """The helper between monitor and init (see the module doc). Never returns. The network comes
    through `network_gate` to the init, or (netns_fd) is joined here already."""
    try:
        os.setsid()
        join_cgroup(cgroup_procs)
        if netns_fd >= 0:
            linux.setns(netns_fd, linux.CLONE_NEWNET)
        linux.unshare(unshare_flags)
        pid = os.fork()
        if pid == 0:
            os.close(pid_fd)
            run_init(spec, stdio, error_fd, network_gate)
        os.write(pid_fd, str(pid).encode())
        os._exit(0)
    except BaseException as err:  # noqa: BLE001
        _report_and_exit(error_fd, err)


# --- exec -----------------------------------------------------------------------------------------


def open_namespaces(pid: int) -> list[tuple[int, int]]:
    """(fd, type) of every namespace of process `pid` that differs from ours, mnt last."""
    fds = []
    try:
        for name, kind in NAMESPACES:
            theirs = f"/proc/{pid}/ns/{name}"
            try:
                if os.stat(theirs).st_ino == os.stat(f"/proc/self/ns/{name}").st_ino:
                    continue
            except FileNotFoundError:
                continue
            fds.append((os.open(theirs, os.O_RDONLY | os.O_CLOEXEC), kind))
    except BaseException:
        for fd, _ in fds:
            os.close(fd)
        raise
    return fds


def exec_child(
    namespaces: list[tuple[int, int]], cgroup_procs: list[str], spec: ProcessSpec, stdio: tuple[int, int, int],
    error_fd: int,
) -> None:
    """In the child of `netctl exec`: join cgroup and namespaces, fork into the pid namespace, exec.
    The intermediate waits and passes the exit status on. Never returns."""
    try:
        join_cgroup(cgroup_procs)
        for fd, kind in namespaces:
            linux.setns(fd, kind)
            os.close(fd)
        pid = os.fork()
        if pid == 0:
            try:
                for target, fd in enumerate(stdio):
                    if fd != target:
                        os.dup2(fd, target)
                if spec.tty:
                    os.setsid()
                    fcntl.ioctl(0, linux.TIOCSCTTY, 0)
                finish_and_exec(spec)
            except BaseException as err:  # noqa: BLE001
                _report_and_exit(error_fd, err)
        os.close(error_fd)
        _, status = os.waitpid(pid, 0)
        os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
    except BaseException as err:  # noqa: BLE001
        _report_and_exit(error_fd, err)
