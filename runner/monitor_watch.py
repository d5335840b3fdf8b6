"""What the monitor does for each running container: Live, its record in the monitor; its output,
appended to ROOT/containers/<id>/container.log and streamed to attached clients; its exit, reaped
(SIGCHLD for our children, a pidfd for containers adopted from an earlier monitor), recorded durably,
torn down, and told to the clients waiting for it.

Separate from starting containers (runner/monitor_launch.py) and from the requests
(runner/monitor.py): this layer only watches what is already running.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import cast

from runner import protocol
from runner.lifecycle import Runtime
from runner.monitor_clients import Client, ClientServer
from runner.state import Container

log = logging.getLogger("netctl.monitor")

OUTPUT_DRAIN_S = 2.0  # after init exits, how long to wait for the pipes to close (all ns processes die)
READ_CHUNK = 1 << 16
UNCLAIMED_TTL_S = 120.0
EXIT_LOST = 255


@dataclass(eq=False)
class Live:
    """A container whose init the monitor watches."""

    container: Container
    pid: int
    outputs: dict[int, int] = field(default_factory=dict)  # fd -> protocol.STDOUT/STDERR
    log_fd: int = -1
    master_fd: int = -1  # -t: the terminal's master side (also in outputs)
    clients: list[Client] = field(default_factory=list)
    waiters: list[Client] = field(default_factory=list)  # get {"event": "exit"} when done
    status: int | None = None  # wait status once reaped
    pidfd: int = -1  # adopted from an earlier monitor: not our child, watched through a pidfd
    remove_when_done: bool = False
    finishing: bool = False
    exit_event: dict | None = None
    stdin_w: int = -1  # OpenStdin without a terminal: the writing end of the container's stdin
    since: float = field(default_factory=time.monotonic)  # for the restart back-off
    pause_wanted: bool | None = None  # what the last accepted pause/unpause asked, until its job is done
    killed: bool = False  # SIGKILL sent: a pause from here on could only hold the kill back
    pauses: int = 0  # pause requests accepted: a health probe that saw one is not judged


class ContainerWatcher(ClientServer):
    """The loop and its clients, plus the containers running under this monitor (`live`)."""

    def __init__(self, runtime: Runtime) -> None:
        super().__init__()
        self.runtime = runtime
        self.live: dict[str, Live] = {}  # container id -> Live
        self.by_pid: dict[int, str] = {}
        self.unclaimed: dict[int, tuple[int, float]] = {}  # reaped before registration: pid -> (status, when)
        self.done: dict[str, dict] = {}  # recent exit events, for waiters that come late

    def _event(self, kind: str, obj: object, fd: int, events: int) -> None:
        if kind == "output":
            self._output(cast(str, obj), fd)
        elif kind == "pidfd":
            self._pidfd_exit(cast(str, obj))
        else:
            super()._event(kind, obj, fd, events)

    def _drop_failed(self, kind: str, obj: object, fd: int) -> None:
        if kind == "output":  # the container's output from here on is lost: said in the log
            log.error("no longer reading an output of %s after that failure", cast(str, obj)[:12])
            self._close_output(self.live.get(cast(str, obj)), fd)
        else:
            super()._drop_failed(kind, obj, fd)

    def _woken(self) -> None:
        self._reap()

    def _client_gone(self, client: Client) -> None:
        for live in self.live.values():
            if client in live.clients:
                live.clients.remove(client)
            if client in live.waiters:
                live.waiters.remove(client)

    def _reap(self) -> None:
        for _ in range(100_000):  # bounded: each round reaps one child
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            container_id = self.by_pid.pop(pid, None)
            if container_id is None:
                self.unclaimed[pid] = (status, time.monotonic())  # a helper, or an init not registered yet
                continue
            self._exited(container_id, status)
        cutoff = time.monotonic() - UNCLAIMED_TTL_S
        for pid in [p for p, (_, when) in self.unclaimed.items() if when < cutoff]:
            del self.unclaimed[pid]

    # --- output ---------------------------------------------------------------------------------

    def _output(self, container_id: str, fd: int) -> None:
        live = self.live.get(container_id)
        if live is None:
            self._close_output(None, fd)
            return
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as err:
            if err.errno != errno.EIO:  # EIO: a terminal whose last slave closed
                log.warning("reading output of %s: %s", container_id[:12], err)
            data = b""
        if not data:
            self._close_output(live, fd)
            return
        stream = live.outputs[fd]
        record = {"t": round(time.time(), 6), "s": stream, "d": data.decode("utf-8", "surrogateescape")}
        try:
            os.write(live.log_fd, (json.dumps(record) + "\n").encode("utf-8", "surrogatepass"))
        except OSError as err:
            log.warning("log of %s: %s", container_id[:12], err)
        chunk = protocol.frame(stream, data)
        for client in list(live.clients):
            self._send_raw(client, chunk)

    def _close_output(self, live: Live | None, fd: int) -> None:
        try:
            self.selector.unregister(fd)
        except (KeyError, ValueError):
            pass
        if live is not None:
            live.outputs.pop(fd, None)
            if fd == live.master_fd:
                live.master_fd = -1
        os.close(fd)
        if live is not None and live.status is not None and not live.outputs:
            self._finish(live)

    # --- exit -----------------------------------------------------------------------------------

    def _pidfd_exit(self, container_id: str) -> None:
        live = self.live.get(container_id)
        if live is None:
            return
        self.selector.unregister(live.pidfd)
        os.close(live.pidfd)
        live.pidfd = -1
        live.status = -1
        self._finish(live)

    def _exited(self, container_id: str, status: int) -> None:
        live = self.live.get(container_id)
        if live is None:
            return
        live.status = status
        if live.master_fd >= 0 and live.master_fd in live.outputs:
            pass  # a terminal reports EIO once the last process holding the slave is gone
        if not live.outputs:
            self._finish(live)
        else:
            self.later(OUTPUT_DRAIN_S, lambda: self._finish(live))

    def _finish(self, live: Live) -> None:
        """Init is gone and its output drained (or the drain timed out): record, tear down, notify."""
        if live.finishing:
            return
        live.finishing = True
        for fd in list(live.outputs):
            self._close_output(None, fd)
        live.outputs.clear()
        if live.log_fd >= 0:
            os.close(live.log_fd)
            live.log_fd = -1
        if live.stdin_w >= 0:
            os.close(live.stdin_w)
            live.stdin_w = -1
        status = live.status if live.status is not None else -1
        lost = status == -1
        code = EXIT_LOST if lost else (os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
        container = live.container
        remove = live.remove_when_done
        ran_for = time.monotonic() - live.since

        def work() -> None:
            # The exit record first (durable), then the teardown: a crash in between loses nothing
            # but work the next monitor redoes.
            oom = False
            try:
                oom = self.runtime.oom_killed(container.config)
                error = "exit status lost: the monitor was restarted" if lost else ""
                self.runtime.record_exit(container.id, container.state, code, oom, error)
            except Exception:  # noqa: BLE001
                log.exception("recording the exit of %s", container.id[:12])
            links: list[str] = []
            try:
                links = self.runtime.host_links(container.config)
                if remove:
                    self.runtime.remove(container)  # the teardown, then the directory and the name
                else:
                    self.runtime.teardown(container.config)
            except Exception:  # noqa: BLE001
                log.exception("teardown of %s", container.id[:12])
            # "links": the host ends of its veth pairs, which the kernel removes a moment after this
            # (runner/lifecycle.py); a client that must see them gone (the Docker API) waits for them.
            event = {"event": "exit", "code": code, "oom": oom, "status": "removed" if remove else "exited",
                     "links": links}  # fmt: skip
            self.call_soon(lambda: self._notify(live, event))
            if remove:
                self.call_soon(lambda: self._removed(container.id))
            else:
                self.call_soon(lambda: self._exited_for_good_or_restart(container, code, ran_for))

        self.submit(work)

    def _removed(self, container_id: str) -> None:
        """Hook: the container's directory and name are gone (auto-remove, rm)."""

    def _exited_for_good_or_restart(self, container: Container, code: int, ran_for: float) -> None:
        """Hook: the exit is recorded and torn down; a restart policy may start it again."""

    def _notify(self, live: Live, event: dict) -> None:
        self.live.pop(live.container.id, None)
        for client in dict.fromkeys(live.waiters + live.clients):
            self._send(client, event)
            self._close_after_flush(client)
