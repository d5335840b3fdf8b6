"""Starting a container for the monitor (on its worker thread): create it (runner/lifecycle.py), fork the
helper that becomes its init (runner/process.py), attach its network while the init waits at the
network gate, then wait until the init has exec'd its command or failed.

Separate from the monitor's loop and bookkeeping because it is the one blocking, forking step: it runs
on the worker and hands the monitor a Live record (or an error) when done.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from typing import Callable

from libnetwork.errors import NetctlError
from runner import process, protocol
from runner.lifecycle import Runtime
from runner.monitor_loop import safely
from runner.monitor_watch import Live
from runner.spec import RunRequest
from runner.state import Container, ContainerState, process_start_time

START_TIMEOUT_S = 30.0  # init's set-up before exec


class StartFailed(NetctlError):
    """The container's init could not exec its command (exit code 126/127 like Docker)."""


def launch(runtime: Runtime, run: RunRequest, stdin_fd: int) -> tuple[Live, int]:
    """Worker: `netctl run` (and the API's create + start in one): create, then start; a failed start
    removes what create made. Returns (Live, terminal master or -1)."""
    config = runtime.create(run)
    container = Container(config, ContainerState())
    try:
        return start(runtime, container, stdin_fd)
    except BaseException:
        safely(lambda: runtime.remove(container, lazy_links=False))
        raise


def start(runtime: Runtime, container: Container, stdin_fd: int = -1) -> tuple[Live, int]:
    """Worker: start a created (or exited) container: the cgroup, fork the helper, attach the network
    meanwhile, wait for init's exec. On failure the cgroup and the network are undone and the container
    stays as it was. `stdin_fd` (`netctl run -i`): the container's stdin; else, for an API container
    with OpenStdin, a pipe whose writing end the monitor keeps (Live.stdin_w) for attached clients."""
    config = container.config
    prepared = runtime.prepare(config)
    opened: list[int] = []
    stdin_w = -1
    try:
        if config.tty:
            master, slave = os.openpty()
            opened += [master, slave]
            os.set_blocking(master, False)
            stdio = (slave, slave, slave)
            outputs = {master: protocol.STDOUT}
            prepared.init.console = os.ttyname(slave)
        else:
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            opened += [out_r, out_w, err_r, err_w]
            if stdin_fd < 0 and config.interactive:
                stdin_fd, stdin_w = os.pipe2(os.O_CLOEXEC)
                opened += [stdin_fd, stdin_w]
            null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC) if stdin_fd < 0 else -1
            if null >= 0:
                opened.append(null)
            stdio = (stdin_fd if stdin_fd >= 0 else null, out_w, err_w)
            outputs = {out_r: protocol.STDOUT, err_r: protocol.STDERR}
            master = -1
        pid = fork_init(prepared, stdio, lambda: runtime.attach_network(prepared))
        for fd in stdio:
            if fd in opened:
                opened.remove(fd)
                os.close(fd)
    except BaseException:
        for fd in opened:
            os.close(fd)
        safely(lambda: runtime.teardown(config, lazy_links=False))
        raise
    for fd in outputs:
        os.set_blocking(fd, False)
    log_fd = os.open(
        os.path.join(runtime.records.directory(config.id), "container.log"),
        os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
        0o600,
    )
    runtime.record_running(config.id, container.state, pid, process_start_time(pid), runtime.network_views(config),
                           health=bool(config.healthcheck.get("argv")))
    live = Live(container=container, pid=pid, outputs=outputs, log_fd=log_fd, master_fd=master,
                remove_when_done=config.auto_remove, stdin_w=stdin_w)  # fmt: skip
    return live, master


def fork_init(prepared, stdio: tuple[int, int, int], attach_network: Callable[[], None]) -> int:
    """Worker: fork the helper; while it and the init get as far as the network gate (joining the
    cgroup, namespaces, most of the rootfs: see runner/process.py), run attach_network(); then send
    the init its network namespace, learn its pid and wait until it has exec'd (or failed). If
    attach_network() fails, the gate closes unopened and the init ends quietly."""
    config = prepared.config
    error_r, error_w = os.pipe2(os.O_CLOEXEC)
    pid_r, pid_w = os.pipe2(os.O_CLOEXEC)
    gate, init_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)  # both close-on-exec
    gate_fd = init_end.detach()
    procs = prepared.cgroup.self_join_files()
    try:
        helper = os.fork()
        if helper == 0:  # the helper: never returns
            os.close(error_r)
            os.close(pid_r)
            gate.close()  # the monitor's end: the init must see end of stream if the monitor goes
            process.start_helper(
                prepared.init,
                cgroup_procs=procs,
                netns_fd=-1,
                unshare_flags=prepared.unshare_flags,
                stdio=stdio,
                error_fd=error_w,
                pid_fd=pid_w,
                network_gate=gate_fd,
            )
    except BaseException:
        gate.close()
        os.close(error_r)
        os.close(pid_r)
        raise
    finally:
        os.close(error_w)
        os.close(pid_w)
        os.close(gate_fd)
    try:
        attach_network()
        netns_fd = os.open(prepared.netns_path, os.O_RDONLY | os.O_CLOEXEC) if prepared.netns_path else -1
        try:
            process.send_network(gate, netns_fd)
        except OSError:
            pass  # the init is gone already: its error, or its death, is read below
        finally:
            if netns_fd >= 0:
                os.close(netns_fd)
        gate.close()
        pid_text = _read_all(pid_r, START_TIMEOUT_S)
        error = _read_all(error_r, START_TIMEOUT_S)
    finally:
        gate.close()
        os.close(pid_r)
        os.close(error_r)
    pid = int(pid_text) if pid_text.strip().isdigit() else 0
    if error or not pid:
        if pid:
            _kill_quietly(pid)
        message = error.decode(errors="replace").strip() or "init died before it could exec"
        not_found = "not found" in message or "No such file" in message
        code = process.EXIT_NOT_FOUND if not_found else process.EXIT_CANNOT_EXEC
        failure = StartFailed(f"cannot start container {config.name!r}: {message}")
        failure.exit_code = code
        raise failure
    return pid


def _read_all(fd: int, timeout: float) -> bytes:
    """Read a pipe to EOF, bounded in time (a wedged init must not wedge the monitor)."""
    import select

    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise NetctlError("the container's init did not start within 30 s; see the monitor log")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        data = os.read(fd, 4096)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
