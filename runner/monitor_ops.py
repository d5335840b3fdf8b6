"""The monitor's requests beyond `run`, for Docker's split life cycle (netctl/docker_api/ drives them):
create (records only), start (a created or exited container), attach (before or after start), wait
with Docker's conditions, rename, resize of a terminal, and the restart policies (runner/restart.py).

    create   -> {"event": "created", "id", "name"}
    start    -> {"event": "ok"} once the init has exec'd ("already": true if it ran)
    attach   -> {"event": "attached"} (+ the terminal or stdin pipe as SCM_RIGHTS when stdin is asked
                and the container runs), output frames, {"event": "stdin"} + descriptor when a
                pending attach's container starts, {"event": "exit"} at its end
    wait     -> {"event": "exit", "code", "oom", "status"}: condition not-running (default), next-exit,
                removed; with "ack", {"event": "waiting"} first once the wait is registered
    rename, resize -> {"event": "ok"}

Separate from runner/monitor.py (the `netctl` requests and the entry point) to keep each module to
one job; both use the same launch code (runner/monitor_launch.py): `run` is create + start.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import struct
import termios

from libnetwork.errors import InvalidArgument, NetctlError
from runner import restart
from runner.monitor_clients import Client
from runner.monitor_launch import start
from runner.monitor_watch import ContainerWatcher, Live
from runner.spec import RunRequest
from runner.state import EXITED, RESTARTING, Container, check_name

log = logging.getLogger("netctl.monitor")

WAIT_CONDITIONS = ("not-running", "next-exit", "removed")


class ContainerOps(ContainerWatcher):
    """Docker's container requests, over the watcher. The Monitor registers a start (_started) and
    answers errors (_error); both are declared here for the type checker."""

    def __init__(self, runtime) -> None:
        super().__init__(runtime)
        self.pending_attach: dict[str, list[tuple[Client, bool]]] = {}  # before start: (client, stdin)
        self.next_exit: dict[str, list[Client]] = {}  # wait next-exit on a container not running yet
        self.removal: dict[str, list[Client]] = {}  # wait removed
        self.last_exit: dict[str, dict] = {}
        self.restart_due: set[str] = set()
        self.backoff: dict[str, float] = {}

    def _started(self, client: Client | None, launched: tuple[Live, int], detach: bool) -> None:
        raise NotImplementedError

    def _error(self, client: Client, err: NetctlError) -> None:
        raise NotImplementedError

    def _answer(self, client: Client, event: dict) -> None:
        self._send(client, event)
        self._close_after_flush(client)

    def _on_worker(self, client: Client, job, answer, failed=None) -> None:
        """Run job() on the worker; answer(result) on the main thread, or failed(error) there (by
        default: the error to the client)."""
        failed = failed or functools.partial(self._error, client)

        def work() -> None:
            try:
                result = job()
            except NetctlError as err:
                self.call_soon(functools.partial(failed, err))
                return
            except Exception as err:  # noqa: BLE001 - a bug: still one line for the client
                log.exception("request failed")
                failure = NetctlError(f"internal error in the monitor: {type(err).__name__}: {err}")
                self.call_soon(functools.partial(failed, failure))
                return
            self.call_soon(lambda: answer(result))

        self.submit(work)

    # --- create and start -----------------------------------------------------------------------

    def _op_create(self, client: Client, request: dict) -> None:
        run = RunRequest.from_dict(request["request"])
        self._on_worker(client, lambda: self.runtime.create(run),
                        lambda config: self._answer(client, {"event": "created", "id": config.id, "name": config.name}))

    def _op_start(self, client: Client, container: Container, request: dict) -> None:
        live = self.live.get(container.id)
        if live is not None and live.status is None:
            self._answer(client, {"event": "ok", "already": True})
            return
        self.restart_due.discard(container.id)
        self.backoff.pop(container.id, None)

        def job():
            fresh = self.runtime.records.load(container.id)
            if fresh is None:
                raise NetctlError(f"container {container.name!r} was removed")
            fresh.state.restart_count = 0
            return start(self.runtime, fresh)

        def answer(launched) -> None:
            self._started(None, launched, True)
            self._answer(client, {"event": "ok"})

        self._on_worker(client, job, answer)

    def _attach_pending(self, live: Live) -> None:
        """A container just started: clients that attached before get its output (and stdin)."""
        for client, stdin in self.pending_attach.pop(live.container.id, []):
            if client.closed:
                continue
            live.clients.append(client)
            live.waiters.append(client)
            fd = self._stdin_of(live, stdin)
            self._send(client, {"event": "stdin" if fd >= 0 else "running"}, [fd] if fd >= 0 else None)
            self._after_stdin_sent(live, fd)

    def _stdin_of(self, live: Live, wanted: bool) -> int:
        if not wanted:
            return -1
        return live.master_fd if live.master_fd >= 0 else live.stdin_w

    def _after_stdin_sent(self, live: Live, fd: int) -> None:
        # StdinOnce: the first attached client owns stdin; its end of input is the container's.
        if fd >= 0 and fd == live.stdin_w and live.container.config.stdin_once:
            os.close(live.stdin_w)
            live.stdin_w = -1

    # --- attach, wait ---------------------------------------------------------------------------

    def _op_attach(self, client: Client, container: Container, request: dict) -> None:
        stdin = bool(request.get("stdin"))
        live = self.live.get(container.id)
        if live is not None and live.status is None:
            live.clients.append(client)
            live.waiters.append(client)
            fd = self._stdin_of(live, stdin)
            self._send(client, {"event": "attached", "running": True}, [fd] if fd >= 0 else None)
            self._after_stdin_sent(live, fd)
            return
        self.pending_attach.setdefault(container.id, []).append((client, stdin))
        self._send(client, {"event": "attached", "running": False})

    def _op_wait(self, client: Client, container: Container, request: dict) -> None:
        condition = str(request.get("condition") or "not-running")
        if condition not in WAIT_CONDITIONS:
            raise InvalidArgument(f"wait condition {condition!r} is unknown; use not-running, next-exit or removed")
        live = self.live.get(container.id)
        if condition == "removed":
            self.removal.setdefault(container.id, []).append(client)
        elif live is not None:
            live.waiters.append(client)
        elif condition == "next-exit" or container.id in self.restart_due:
            self.next_exit.setdefault(container.id, []).append(client)
        else:
            self._answer(client, {"event": "exit", **self._exit_view(container)})
            return
        if request.get("ack"):  # the Docker API answers its client once the wait is in place
            self._send(client, {"event": "waiting"})

    @staticmethod
    def _exit_view(container: Container) -> dict:
        state = container.state
        code = state.exit_code if state.exit_code is not None else 0
        return {"code": code, "oom": state.oom_killed, "status": state.status}

    def _notify(self, live: Live, event: dict) -> None:
        super()._notify(live, event)
        self.last_exit[live.container.id] = event
        for client in self.next_exit.pop(live.container.id, []):
            self._answer(client, event)

    def _removed(self, container_id: str) -> None:
        self.restart_due.discard(container_id)
        self.backoff.pop(container_id, None)
        event = self.last_exit.pop(container_id, None) or {"event": "exit", "code": 0, "oom": False}
        for client in self.removal.pop(container_id, []) + self.next_exit.pop(container_id, []):
            self._answer(client, {**event, "status": "removed"})
        for client, _ in self.pending_attach.pop(container_id, []):
            self._answer(client, {**event, "status": "removed"})

    def _client_gone(self, client: Client) -> None:
        super()._client_gone(client)
        for table in (self.next_exit, self.removal):
            for clients in table.values():
                if client in clients:
                    clients.remove(client)
        for pending in self.pending_attach.values():
            pending[:] = [p for p in pending if p[0] is not client]

    # --- restart policies -----------------------------------------------------------------------

    def _exited_for_good_or_restart(self, container: Container, code: int, ran_for: float) -> None:
        state = container.state
        if not restart.should_restart(container.config.restart, code, state.restart_count, state.manually_stopped):
            self.backoff.pop(container.id, None)
            return
        delay = restart.next_delay(self.backoff.get(container.id, 0.0), ran_for)
        self.backoff[container.id] = delay
        self.restart_due.add(container.id)

        def mark() -> None:
            state.status = RESTARTING
            state.restart_count += 1
            self.runtime.records.write_state(container.id, state)

        self.submit(mark)
        self.later(delay, lambda: self._restart_now(container.id))

    def _restart_now(self, container_id: str) -> None:
        if container_id not in self.restart_due:
            return  # stopped, started or removed meanwhile
        self.restart_due.discard(container_id)

        def work() -> None:
            container = self.runtime.records.load(container_id)
            if container is None or container.state.manually_stopped or container.state.status != RESTARTING:
                return
            try:
                launched = start(self.runtime, container)
            except NetctlError as err:
                container.state.status = EXITED
                container.state.error = err.message
                self.runtime.records.write_state(container_id, container.state)
                log.warning("restart of %s failed: %s", container_id[:12], err.message)
                return
            self.call_soon(lambda: self._started(None, launched, True))

        self.submit(work)

    def _start_left_over(self, containers: list[Container]) -> None:
        """Worker, when the monitor starts: the containers its restart policy starts again (see
        runner/monitor_adopt.py), counted as restarts."""
        for container in containers:
            fresh = self.runtime.records.load(container.id)
            if fresh is None:
                continue
            fresh.state.restart_count += 1
            try:
                launched = start(self.runtime, fresh)
            except NetctlError as err:
                fresh.state.status = EXITED
                fresh.state.error = err.message
                self.runtime.records.write_state(container.id, fresh.state)
                log.warning("restart of %s failed: %s", container.id[:12], err.message)
                continue
            self.call_soon(functools.partial(self._started, None, launched, True))

    def _stop_restarting(self, container: Container) -> bool:
        """stop/kill of a container waiting for its restart: it stays exited. True if it was waiting."""
        if container.id not in self.restart_due:
            return False
        self.restart_due.discard(container.id)
        self.backoff.pop(container.id, None)

        def work() -> None:
            fresh = self.runtime.records.load(container.id)
            if fresh is not None:
                fresh.state.status = EXITED
                fresh.state.manually_stopped = True
                self.runtime.records.write_state(container.id, fresh.state)

        self.submit(work)
        return True

    # --- rename, resize -------------------------------------------------------------------------

    def _op_rename(self, client: Client, container: Container, request: dict) -> None:
        new = check_name(str(request.get("name", "")).lstrip("/"))

        def job() -> None:
            records = self.runtime.records
            fresh = records.load(container.id)
            if fresh is None:
                raise NetctlError(f"container {container.name!r} was removed")
            if new == fresh.config.name:
                return
            records.claim_name(new, container.id)
            old = fresh.config.name
            try:
                if fresh.config.sandbox_id and fresh.state.status == "running":
                    self.runtime.rename_sandbox(fresh.config.sandbox_id, new)  # its name on the networks
            except BaseException:
                records.release_name(new, container.id)
                raise
            fresh.config.name = new
            records.write_config(fresh.config)
            records.release_name(old, container.id)
            live = self.live.get(container.id)
            if live is not None:
                live.container.config.name = new

        self._on_worker(client, job, lambda _: self._answer(client, {"event": "ok"}))

    def _op_resize(self, client: Client, container: Container, request: dict) -> None:
        live = self.live.get(container.id)
        if live is not None and live.master_fd >= 0:
            set_window(live.master_fd, int(request.get("h", 0)), int(request.get("w", 0)))
        self._answer(client, {"event": "ok"})


def set_window(master: int, height: int, width: int) -> None:
    if height <= 0 or width <= 0 or height > 0xFFFF or width > 0xFFFF:
        raise InvalidArgument(f"terminal size {height}x{width} is out of range")
    try:
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
    except OSError:
        pass  # the terminal closed meanwhile
