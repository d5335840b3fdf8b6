"""`netctl exec`: run a process in a running container, done by the CLI itself (no monitor round trip).

The CLI forks a child that joins the container's cgroup and every namespace of its init (cgroup, ipc,
uts, net, pid, mnt), then forks the process proper, which gets the container's user, capabilities,
no_new_privs, rlimits and environment before execve (runner/process.py). With -t the CLI makes a
terminal, puts ours in raw mode and copies both ways; otherwise the process inherits our stdio.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal

from libnetwork.errors import InUse, NetctlError
from runner import process
from runner.cgroups import Cgroup, Hierarchy
from runner.spec import merge_env
from runner.state import Container, is_alive


def exec_in(
    container: Container,
    argv: list[str],
    *,
    env: list[str],
    user: str = "",
    workdir: str = "",
    interactive: bool = False,
    tty: bool = False,
) -> int:
    spec, procs = plan(container, argv, env=env, user=user, workdir=workdir, tty=tty)
    master = slave = -1
    if tty:
        master, slave = container_pty(container.state.pid)
        stdio = (slave, slave, slave)
    else:
        stdin = 0 if interactive else os.open(os.devnull, os.O_RDONLY)
        stdio = (stdin, 1, 2)
    try:
        pid, error_r = spawn(container, spec, procs, stdio, close_in_child=(master,))
    finally:
        if slave >= 0:
            os.close(slave)
        if not tty and not interactive:
            os.close(stdio[0])
    try:
        if tty:
            _copy_terminal(master, pid, interactive)
        _, status = _wait(pid)
        error = _read(error_r)
    finally:
        os.close(error_r)
        if master >= 0:
            os.close(master)
    if error:
        raise_exec_error(container.config.name, error, os.waitstatus_to_exitcode(status))
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


TIOCSPTLCK, TIOCGPTN = 0x40045431, 0x80045430


def container_pty(pid: int) -> tuple[int, int]:
    """(master, slave) of a terminal of the container's own devpts instance, as Docker gives an exec:
    its name (/dev/pts/N) exists inside, so `tty` and ttyname() work. The host's (os.openpty) if the
    container has no devpts of its own."""
    import fcntl
    import struct

    pts = f"/proc/{pid}/root/dev/pts"
    try:
        master = os.open(f"{pts}/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return os.openpty()
    try:
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        number = struct.unpack("i", fcntl.ioctl(master, TIOCGPTN, b"\0\0\0\0"))[0]
        slave = os.open(f"{pts}/{number}", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        os.close(master)
        return os.openpty()
    return master, slave


def plan(container: Container, argv: list[str], *, env: list[str], user: str = "", workdir: str = "",
         tty: bool = False) -> tuple[process.ProcessSpec, list[str]]:  # fmt: skip
    """The process to exec and the cgroup files to join: the container's settings, as `netctl exec` and
    the Docker API's exec (run by the monitor, runner/monitor_exec.py) both use them."""
    config, state = container.config, container.state
    if not state.running or not is_alive(state):
        raise InUse(f"container {config.name!r} is not running; start it first")
    if state.paused:  # its processes are frozen: the exec'd one would be frozen as it joins the cgroup
        raise InUse(f"container {config.name!r} is paused; unpause it before exec")
    spec = process.ProcessSpec(
        argv=argv,
        env=merge_env(config.env, env),
        workdir=workdir or config.workdir,
        user=user or config.user,
        capabilities=config.capabilities,
        nofile=config.nofile,
        rlimits=dict(config.ulimits),
        tty=tty,
    )
    procs = []
    if config.cgroup_path and config.cgroup:
        cgroup = Cgroup(Hierarchy.from_dict(config.cgroup), config.cgroup_path)
        procs = cgroup.self_join_files()
    return spec, procs


def spawn(container: Container, spec: process.ProcessSpec, procs: list[str], stdio: tuple[int, int, int],
          close_in_child: tuple[int, ...] = ()) -> tuple[int, int]:  # fmt: skip
    """Fork the process that joins the container and execs `spec` (runner/process.py exec_child).
    Returns (pid of the intermediate, whose exit status is the process's; the error pipe's reading end,
    empty at EOF unless the exec failed)."""
    process.prepare()
    namespaces = process.open_namespaces(container.state.pid)
    if not is_alive(container.state):  # the pid could have been recycled between the check and the open
        for fd, _ in namespaces:
            os.close(fd)
        raise InUse(f"container {container.config.name!r} is not running")
    error_r, error_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
        if pid == 0:
            os.close(error_r)
            for fd in close_in_child:
                if fd >= 0:
                    os.close(fd)
            process.exec_child(namespaces, procs, spec, stdio, error_w)
    except BaseException:
        os.close(error_r)
        raise
    finally:
        os.close(error_w)
        for fd, _ in namespaces:
            os.close(fd)
    return pid, error_r


def raise_exec_error(name: str, error: bytes, code: int) -> None:
    err = NetctlError(f"cannot exec in container {name!r}: {error.decode(errors='replace').strip()}")
    err.exit_code = code if code > 0 else process.EXIT_CANNOT_EXEC
    raise err


def _wait(pid: int) -> tuple[int, int]:
    """waitpid that forwards ^C and friends to the process instead of dying of them."""
    forwarded = {}

    def forward(number, _frame):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, number)

    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        forwarded[number] = signal.signal(number, forward)
    try:
        return os.waitpid(pid, 0)
    finally:
        for number, handler in forwarded.items():
            signal.signal(number, handler)


def _read(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        data = os.read(fd, 4096)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def _copy_terminal(master: int, pid: int, interactive: bool) -> None:
    """Copy our stdin to the terminal and the terminal to our stdout until the process closes it."""
    import termios
    import tty as tty_mod

    saved = None
    if interactive and os.isatty(0):
        saved = termios.tcgetattr(0)
        tty_mod.setraw(0)
    try:
        watched = [master] + ([0] if interactive else [])
        while master in watched:
            try:
                readable, _, _ = select.select(watched, [], [])
            except InterruptedError:
                continue
            if 0 in readable:
                data = os.read(0, 4096)
                if data:
                    os.write(master, data)
                else:
                    watched.remove(0)
            if master in readable:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    data = b""
                if not data:
                    watched.remove(master)
                else:
                    os.write(1, data)
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
