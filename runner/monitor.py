"""The monitor: one process per host that is the parent of every container's init (what containerd-shim
or conmon is to one container), serving all of them.

It is a child subreaper, so each container's init, started through a short-lived helper
(runner/process.py), becomes its child: it reaps it, records the exit code and time durably
(state.json: write, fsync, rename), reads the container's stdout/stderr (or terminal) and appends them to
ROOT/containers/<id>/container.log, streams them to attached clients, and tears the container down
when it exits. The CLI is only a client: containers keep running when it exits or is killed.

Why one process for all containers: a Python interpreter per container would cost ~2.6 MB+ of anonymous
memory each; here a container costs a few kB (its record, two pipes, a log file descriptor), and the
interpreter is paid once per host. What a single monitor gives up is containment of its own crash:
if it is killed, running containers are re-parented to the host's init, and their exit codes can no
longer be collected; a new monitor marks them "exit status lost" (code 255) when they end, tears them
down, and never loses an exit code it had already recorded.

Threads: the main thread runs the event loop (sockets, pipes, SIGCHLD, timers) and is the only one that
touches the monitor's bookkeeping; one worker thread runs the slow, blocking steps (store transactions,
netlink, mounts, fork) in order, and hands results back to the main thread through call_soon().

The monitor is built in layers, one module each:

    runner/monitor_loop.py     the event loop, timers and the worker thread
    runner/monitor_clients.py  client connections: frames in, buffered output out
    runner/monitor_watch.py    running containers: output to the log and attached clients, exits
    runner/monitor_launch.py   starting a container (on the worker)
    runner/monitor_adopt.py    the containers an earlier monitor left
    runner/monitor.py          (this module) the requests, and the entry point

Started on demand by the first client (runner/client.py), as `python -m runner.monitor ROOT`; an
exclusive flock on ROOT/monitor.lock makes sure a host has one monitor.
"""

from __future__ import annotations

import functools
import logging
import os
import selectors
import signal
import socket
import sys

from libnetwork import ipc
from libnetwork.errors import InUse, InvalidArgument, NetctlError
from runner import linux, process, protocol
from runner.lifecycle import Runtime
from runner.monitor_adopt import adopt_or_finish_all
from runner.monitor_clients import Client
from runner.monitor_health import HealthOps
from runner.monitor_launch import StartFailed, launch
from runner.monitor_pause import PauseOps
from runner.monitor_watch import Live
from runner.paths import Layout
from runner.spec import RunRequest
from runner.state import Container

log = logging.getLogger("netctl.monitor")


CONTAINER_OPS = ("kill", "stop", "wait", "rm", "start", "attach", "rename", "resize", "exec_create", "pause",
                 "unpause")
EXEC_OPS = ("exec_start", "exec_inspect", "exec_resize")


class Monitor(PauseOps, HealthOps):
    """The monitor of one root: serves requests (hello, run, signal, kill, stop, wait, rm, stats; and
    Docker's create, start, attach, rename, resize, exec_*: runner/monitor_ops.py, monitor_exec.py) on
    ROOT/monitor.sock over the layers below it."""

    def __init__(self, layout: Layout):
        super().__init__(Runtime(layout))
        self.layout = layout
        self.reconciled = False  # containers of an earlier monitor adopted (see _reconcile)

    # --- start-up -------------------------------------------------------------------------------

    def serve(self) -> None:
        linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
        process.prepare()
        _raise_nofile()
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        self.listener = self._listen()
        self.selector.register(self.listener, selectors.EVENT_READ, ("accept", None))
        self.start_worker()
        self.submit(self._reconcile)
        log.info("monitor %d serving %s", os.getpid(), self.layout.root)
        while self.running:
            self._tick()

    def _listen(self) -> socket.socket:
        # Called with ROOT/monitor.lock held (main): a socket file already there is a dead monitor's.
        return ipc.listen(self.layout.monitor_socket, nonblocking=True)

    def _reconcile(self) -> None:
        """Worker: containers an earlier monitor left. Alive ones are watched by pidfd (their exit code
        cannot be had any more), dead ones are marked and torn down, half-made ones removed."""
        try:
            again = adopt_or_finish_all(self.runtime, self.call_soon, self._adopt)
            self._start_left_over(again)
        finally:
            self.call_soon(self._reconciled)  # even after a failure: requests must not wait forever

    def _reconciled(self) -> None:
        self.reconciled = True

    def _adopt(self, container: Container, pidfd: int) -> None:
        live = Live(container=container, pid=container.state.pid, pidfd=pidfd)
        self.live[container.id] = live
        self.selector.register(pidfd, selectors.EVENT_READ, ("pidfd", container.id))
        self._health_start(live)

    def _error(self, client: Client, err: NetctlError) -> None:
        event = protocol.error_event(err)
        if isinstance(err, StartFailed):
            event["exit_code"] = err.exit_code
        self._send(client, event)
        self._close_after_flush(client)

    def _request(self, client: Client, request: dict, fds: list[int]) -> None:
        op = request.get("op")
        try:
            if op == "hello":
                self._send(client, {"event": "hello", "version": protocol.VERSION, "pid": os.getpid()})
            elif op == "run":
                self._op_run(client, request, fds)
                fds = []
            elif op == "signal":
                live = self.live.get(client.attached)
                if live is not None:
                    self._signal(live, int(request["signal"]))
            elif op == "create":
                self._op_create(client, request)
            elif op in CONTAINER_OPS + EXEC_OPS and not self.reconciled:
                # A container of the earlier monitor is not ours to stop or wait for until _reconcile
                # adopted it: answer after the worker has run that (jobs run in order, then callbacks).
                self.submit(lambda: self.call_soon(lambda: self._request(client, request, [])))
            elif op in CONTAINER_OPS:
                container = self.runtime.records.find(str(request.get("ref", "")))
                getattr(self, f"_op_{op}")(client, container, request)
            elif op in EXEC_OPS:
                getattr(self, f"_op_{op}")(client, request)
            elif op == "stats":
                self._send(client, self._stats())
            else:
                raise InvalidArgument(f"unknown monitor request {op!r}")
        except NetctlError as err:
            self._error(client, err)
        finally:
            for fd in fds:
                os.close(fd)

    # --- operations -----------------------------------------------------------------------------

    def _op_run(self, client: Client, request: dict, fds: list[int]) -> None:
        run = RunRequest.from_dict(request["request"])
        stdin_fd = fds.pop(0) if run.interactive and not run.tty and fds else -1
        for fd in fds:
            os.close(fd)

        def work() -> None:
            try:
                launched = launch(self.runtime, run, stdin_fd)
            except NetctlError as err:
                self.call_soon(functools.partial(self._error, client, err))
                return
            except Exception as err:  # noqa: BLE001 - a bug: still one line for the user
                log.exception("run failed")
                message = f"internal error in the monitor: {type(err).__name__}: {err} (see {self.layout.monitor_log})"
                self.call_soon(lambda: self._error(client, NetctlError(message)))
                return
            finally:
                if stdin_fd >= 0:
                    os.close(stdin_fd)
            self.call_soon(lambda: self._started(client, launched, run.detach))

        self.submit(work)

    def _started(self, client: Client | None, launched: tuple[Live, int], detach: bool) -> None:
        live, master = launched
        container_id = live.container.id
        self.live[container_id] = live
        self.by_pid[live.pid] = container_id
        for fd in live.outputs:
            self.selector.register(fd, selectors.EVENT_READ, ("output", container_id))
        self._attach_pending(live)
        self._health_start(live)
        event = {"event": "started", "id": container_id, "name": live.container.name, "pid": live.pid}
        if client is not None:
            if not detach and not client.closed:
                live.clients.append(client)
                live.waiters.append(client)
                client.attached = container_id
            self._send(client, event, [master] if master >= 0 and not detach else None)
            if detach:
                self._close_after_flush(client)
        if live.pid in self.unclaimed:  # it exited before we registered it
            status, _ = self.unclaimed.pop(live.pid)
            self.by_pid.pop(live.pid, None)
            self._exited(container_id, status)

    def _signal(self, live: Live, number: int, thaw: bool | None = None) -> None:
        if live.status is not None:
            return
        try:
            if live.pidfd >= 0:
                signal.pidfd_send_signal(live.pidfd, number)
            else:
                os.kill(live.pid, number)  # our unreaped child: the pid cannot have been reused
        except ProcessLookupError:
            pass
        if number == signal.SIGKILL:
            live.killed = True
        if thaw is None:  # as dockerd (kill.go): SIGKILL and the stop signal thaw, others wait for unpause
            thaw = number in (signal.SIGKILL, stop_signal_number(live.container.config.stop_signal))
        if thaw:
            self._thaw_after_signal(live)

    def _op_kill(self, client: Client, container: Container, request: dict) -> None:
        live = self.live.get(container.id)
        number = int(request.get("signal", signal.SIGKILL))
        if self._stop_restarting(container):
            self._answer_ok(client)
            return
        if live is None or live.status is not None:
            raise InUse(f"container {container.name!r} is not running")
        if number in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            live.container.state.manually_stopped = True  # a restart policy leaves it stopped
        self._signal(live, number)
        self._send(client, {"event": "ok"})
        self._close_after_flush(client)

    def _op_stop(self, client: Client, container: Container, request: dict) -> None:
        live = self.live.get(container.id)
        self._stop_restarting(container)
        if live is None:
            self._send(client, {"event": "exit", **self._exit_view(container)})
            self._close_after_flush(client)
            return
        live.waiters.append(client)
        live.container.state.manually_stopped = True
        if live.status is None:
            config = live.container.config
            default_timeout = config.stop_timeout if config.stop_timeout is not None else 10
            timeout = request.get("timeout")
            timeout = max(0.0, float(default_timeout if timeout is None else timeout))
            number = request.get("signal") or stop_signal_number(config.stop_signal)
            self._signal(live, int(number), thaw=True)  # stop's signal, whichever it is
            self.later(timeout, lambda: self._signal(live, signal.SIGKILL))

    def _op_rm(self, client: Client, container: Container, request: dict) -> None:
        live = self.live.get(container.id)
        if live is not None and not live.finishing:
            if live.status is None and not request.get("force"):
                raise InUse(f"container {container.name!r} is running; stop it first (netctl stop) or use rm -f")
            live.remove_when_done = True  # read when the exit is finished, below in _finish
            live.waiters.append(client)
            self._signal(live, signal.SIGKILL)
            return
        # Not running, or its exit is being finished: the worker runs jobs in order, so this removal
        # comes after that teardown.

        self._stop_restarting(container)

        def work() -> None:
            try:
                self.runtime.remove(container)
                self.call_soon(functools.partial(self._removed, container.id))
                self.call_soon(functools.partial(self._answer_ok, client))
            except NetctlError as err:
                self.call_soon(functools.partial(self._error, client, err))

        self.submit(work)

    def _answer_ok(self, client: Client) -> None:
        self._send(client, {"event": "ok"})
        self._close_after_flush(client)

    def _stats(self) -> dict:
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return {
            "event": "stats",
            "pid": os.getpid(),
            "containers": len(self.live),
            "VmRSS": fields.get("VmRSS", "").strip(),
            "RssAnon": fields.get("RssAnon", "").strip(),
        }


def stop_signal_number(name: str) -> int:
    """A container's stop signal (Docker's StopSignal: SIGQUIT, QUIT or 3); SIGTERM by default."""
    from runner.spec import parse_signal

    return parse_signal(name or "SIGTERM")


def _raise_nofile() -> None:
    """Two descriptors per container: lift the soft limit to the hard one (never above it)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str]) -> int:
    root = argv[0] if argv else None
    layout = Layout.of(root)
    if ipc.lock_instance(layout.monitor_lock) is None:
        return 0  # another monitor serves this root
    logging.basicConfig(
        level=logging.DEBUG if os.environ.get("NETCTL_MONITOR_DEBUG") else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    Monitor(layout).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
