"""Exec as Docker separates it, run by the monitor: exec_create records what to run, exec_start forks
it into the container (runner/execute.py: the same plan and spawn as `netctl exec`), the monitor reaps
it, carries its output to the client that started it and keeps its exit code for exec_inspect.

    exec_create  {"ref", "argv", "env", "user", "workdir", "tty", "stdin"} -> {"event": "exec", "id"}
    exec_start   {"id", "detach"} -> {"event": "started", "pid"} (+ the terminal or stdin pipe as
                 SCM_RIGHTS when stdin was asked), output frames, {"event": "exit", "code"}
    exec_inspect {"id"} -> {"event": "exec", ...}        exec_resize {"id", "h", "w"} -> {"event": "ok"}

Records live in the monitor's memory only, as dockerd's do; the newest MAX_EXECS are kept.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import selectors
import time
from dataclasses import dataclass, field
from typing import Callable, cast

from libnetwork.errors import InUse, NotFound
from runner import execute, process, protocol
from runner.monitor_clients import Client
from runner.monitor_ops import set_window
from runner.monitor_watch import OUTPUT_DRAIN_S, READ_CHUNK, ContainerWatcher
from runner.state import Container

log = logging.getLogger("netctl.monitor")

MAX_EXECS = 512
CAPTURE_MAX = 4096  # dockerd keeps 4 KiB of a healthcheck's output
PREFIX = "exec:"  # by_pid keys of exec processes, beside container ids


@dataclass(eq=False)
class Exec:
    id: str
    container_id: str
    argv: list[str]
    env: list[str] = field(default_factory=list)
    user: str = ""
    workdir: str = ""
    tty: bool = False
    stdin: bool = False
    pid: int = 0
    running: bool = False
    exit_code: int | None = None
    outputs: dict[int, int] = field(default_factory=dict)
    master: int = -1
    stdin_w: int = -1
    error_r: int = -1
    client: Client | None = None
    status: int | None = None
    finishing: bool = False
    capture: bytearray | None = None  # an internal exec's output (a healthcheck's), bounded
    on_done: Callable[[Exec], None] | None = None  # an internal exec's end (exit_code set)
    output_error: str = ""

    def view(self) -> dict:
        return {"id": self.id, "container": self.container_id, "argv": self.argv, "user": self.user,
                "tty": self.tty, "stdin": self.stdin, "pid": self.pid, "running": self.running,
                "exit_code": self.exit_code}  # fmt: skip


class ExecOps(ContainerWatcher):
    def __init__(self, runtime) -> None:
        super().__init__(runtime)
        self.execs: dict[str, Exec] = {}

    def _exec(self, request: dict) -> Exec:
        record = self.execs.get(str(request.get("id", "")))
        if record is None:
            raise NotFound(f"exec instance {request.get('id')!r} not found")
        return record

    def _op_exec_create(self, client: Client, container: Container, request: dict) -> None:
        live = self.live.get(container.id)
        if live is None or live.status is not None:
            raise InUse(f"container {container.name!r} is not running; start it first")
        if live.container.state.paused:
            raise InUse(f"container {container.name!r} is paused; unpause it before exec")
        record = Exec(id=secrets.token_hex(32), container_id=container.id, argv=list(request["argv"]),
                      env=list(request.get("env") or []), user=str(request.get("user") or ""),
                      workdir=str(request.get("workdir") or ""), tty=bool(request.get("tty")),
                      stdin=bool(request.get("stdin")))  # fmt: skip
        if not record.argv:
            from libnetwork.errors import InvalidArgument

            raise InvalidArgument("exec needs a command (Cmd)")
        finished = [e for e in self.execs.values() if not e.running and e.pid]
        for old in finished[: max(0, len(self.execs) - MAX_EXECS)]:
            self.execs.pop(old.id, None)
        self.execs[record.id] = record
        self._send(client, {"event": "exec", "id": record.id})
        self._close_after_flush(client)

    def _op_exec_inspect(self, client: Client, request: dict) -> None:
        self._send(client, {"event": "exec", **self._exec(request).view()})
        self._close_after_flush(client)

    def _op_exec_resize(self, client: Client, request: dict) -> None:
        record = self._exec(request)
        if record.master >= 0:
            set_window(record.master, int(request.get("h", 0)), int(request.get("w", 0)))
        self._send(client, {"event": "ok"})
        self._close_after_flush(client)

    def _op_exec_start(self, client: Client, request: dict) -> None:
        record = self._exec(request)
        if record.pid or record.running:
            raise InUse(f"exec {record.id[:12]} has already been started")
        record.running = True  # claimed: a second start is refused
        detach = bool(request.get("detach"))

        def work() -> None:
            try:
                started = self._spawn(record)
            except Exception as err:  # noqa: BLE001 - NetctlError or an OS error: one line to the client
                from libnetwork.errors import NetctlError

                record.running = False
                failure = err if isinstance(err, NetctlError) else NetctlError(f"cannot exec: {err}")
                self.call_soon(lambda: self._error(client, failure))  # type: ignore[attr-defined]
                return
            self.call_soon(lambda: self._exec_started(client, record, started, detach))

        self.submit(work)

    def _spawn(self, record: Exec) -> int:
        """Worker: pipes or a terminal, then fork into the container. Returns the stdin descriptor to
        hand out (-1 if none)."""
        container = self.runtime.records.load(record.container_id)
        if container is None:
            raise NotFound(f"container {record.container_id[:12]} not found")
        spec, procs = execute.plan(container, record.argv, env=record.env, user=record.user,
                                   workdir=record.workdir, tty=record.tty)  # fmt: skip
        child: list[int] = []
        ours: list[int] = []
        try:
            if record.tty:
                master, slave = execute.container_pty(container.state.pid)
                ours.append(master)
                child.append(slave)
                stdio = (slave, slave, slave)
                record.master = master
                record.outputs = {master: protocol.STDOUT}
            else:
                out_r, out_w = os.pipe2(os.O_CLOEXEC)
                err_r, err_w = os.pipe2(os.O_CLOEXEC)
                ours += [out_r, err_r]
                child += [out_w, err_w]
                if record.stdin:
                    in_r, in_w = os.pipe2(os.O_CLOEXEC)
                    ours.append(in_w)
                    child.append(in_r)
                    record.stdin_w = in_w
                else:
                    in_r = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
                    child.append(in_r)
                stdio = (in_r, out_w, err_w)
                record.outputs = {out_r: protocol.STDOUT, err_r: protocol.STDERR}
            pid, error_r = execute.spawn(container, spec, procs, stdio, close_in_child=tuple(ours))
        except BaseException:
            for fd in ours:
                os.close(fd)
            record.outputs, record.master, record.stdin_w = {}, -1, -1
            raise
        finally:
            for fd in child:
                os.close(fd)
        for fd in record.outputs:
            os.set_blocking(fd, False)
        record.pid = pid
        record.error_r = error_r
        if not record.stdin:
            return -1
        return record.master if record.tty else record.stdin_w

    def _exec_started(self, client: Client, record: Exec, stdin_fd: int, detach: bool) -> None:
        key = PREFIX + record.id
        self.by_pid[record.pid] = key
        for fd in record.outputs:
            self.selector.register(fd, selectors.EVENT_READ, ("exec_output", record.id))
        event = {"event": "started", "id": record.id, "pid": record.pid}
        if detach or client.closed:
            self._send(client, event)
            self._close_after_flush(client)
        else:
            record.client = client
            self._send(client, event, [stdin_fd] if stdin_fd >= 0 else None)
        if record.stdin_w >= 0 and not detach:
            os.close(record.stdin_w)  # the client holds it now: its end of input is the process's
            record.stdin_w = -1
        if record.pid in self.unclaimed:
            status, _ = self.unclaimed.pop(record.pid)
            self.by_pid.pop(record.pid, None)
            self._exited(key, status)

    def _run_internal(self, container_id: str, argv: list[str], on_done: Callable[[Exec], None]) -> Exec:
        """An exec of the monitor's own (a healthcheck): output captured, on_done(record) at its end,
        also when it cannot start (exit_code -1, output_error set)."""
        record = Exec(id=secrets.token_hex(32), container_id=container_id, argv=argv, capture=bytearray(),
                      on_done=on_done, running=True)  # fmt: skip
        self.execs[record.id] = record

        def work() -> None:
            try:
                self._spawn(record)
            except Exception as err:  # noqa: BLE001 - reported as the probe's failure
                message = getattr(err, "message", None) or str(err)

                def failed() -> None:
                    self.execs.pop(record.id, None)
                    record.running, record.exit_code, record.output_error = False, -1, message
                    on_done(record)

                self.call_soon(failed)
                return
            self.call_soon(lambda: self._internal_started(record))

        self.submit(work)
        return record

    def _internal_started(self, record: Exec) -> None:
        key = PREFIX + record.id
        self.by_pid[record.pid] = key
        for fd in record.outputs:
            self.selector.register(fd, selectors.EVENT_READ, ("exec_output", record.id))
        if record.pid in self.unclaimed:
            status, _ = self.unclaimed.pop(record.pid)
            self.by_pid.pop(record.pid, None)
            self._exited(key, status)

    # --- the loop's events ----------------------------------------------------------------------

    def _event(self, kind: str, obj: object, fd: int, events: int) -> None:
        if kind == "exec_output":
            self._exec_output(cast(str, obj), fd)
        else:
            super()._event(kind, obj, fd, events)

    def _drop_failed(self, kind: str, obj: object, fd: int) -> None:
        if kind == "exec_output":
            log.error("no longer reading an output of exec %s after that failure", cast(str, obj)[:12])
            self._close_exec_output(self.execs.get(cast(str, obj)), fd)
        else:
            super()._drop_failed(kind, obj, fd)

    def _exec_output(self, exec_id: str, fd: int) -> None:
        record = self.execs.get(exec_id)
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as err:
            if err.errno != errno.EIO:
                log.warning("reading exec output: %s", err)
            data = b""
        if record is None or not data:
            self._close_exec_output(record, fd)
            return
        if record.client is not None:
            self._send_raw(record.client, protocol.frame(record.outputs.get(fd, protocol.STDOUT), data))
        elif record.capture is not None and len(record.capture) < CAPTURE_MAX:
            record.capture += data[: CAPTURE_MAX - len(record.capture)]

    def _close_exec_output(self, record: Exec | None, fd: int) -> None:
        try:
            self.selector.unregister(fd)
        except (KeyError, ValueError):
            pass
        if record is not None:
            record.outputs.pop(fd, None)
            if fd == record.master:
                record.master = -1
        os.close(fd)
        if record is not None and record.status is not None and not record.outputs:
            self._finish_exec(record)

    def _exited(self, container_id: str, status: int) -> None:
        if not container_id.startswith(PREFIX):
            super()._exited(container_id, status)
            return
        record = self.execs.get(container_id[len(PREFIX):])
        if record is None:
            return
        record.status = status
        if not record.outputs:
            self._finish_exec(record)
        else:
            self.later(OUTPUT_DRAIN_S, lambda: self._finish_exec(record))

    def _finish_exec(self, record: Exec) -> None:
        if record.finishing:
            return
        record.finishing = True
        for fd in list(record.outputs):
            self._close_exec_output(None, fd)
        record.outputs.clear()
        for fd in (record.master, record.stdin_w):
            if fd >= 0:
                os.close(fd)
        record.master = record.stdin_w = -1
        status = record.status if record.status is not None else 0
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
        error = b""
        if record.error_r >= 0:
            error = _read_ready(record.error_r)
            os.close(record.error_r)
            record.error_r = -1
        if error and code == 0:
            code = process.EXIT_CANNOT_EXEC
        record.exit_code = code
        record.running = False
        record.output_error = error.decode(errors="replace").strip()
        if record.on_done is not None:
            self.execs.pop(record.id, None)
            record.on_done(record)
        client = record.client
        record.client = None
        if client is not None:
            if error:
                self._send_raw(client, protocol.frame(protocol.STDERR, b"exec failed: " + error.strip() + b"\n"))
            self._send(client, {"event": "exit", "code": code})
            self._close_after_flush(client)

    def _client_gone(self, client: Client) -> None:
        super()._client_gone(client)
        for record in self.execs.values():
            if record.client is client:
                record.client = None  # the process goes on; its output is read and dropped


def _read_ready(fd: int) -> bytes:
    """The error pipe after the exec'd process's parent exited: data or EOF, never a wait (bounded)."""
    os.set_blocking(fd, False)
    chunks = []
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)
