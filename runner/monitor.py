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

Started on demand by the first client (runner/client.py), as `python -m runner.monitor ROOT`; an
exclusive flock on ROOT/monitor.lock makes sure a host has one monitor.
"""

from __future__ import annotations

import errno
import heapq
import json
import logging
import os
import queue
import selectors
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from libnetwork import ipc
from libnetwork.errors import InUse, InvalidArgument, NetctlError
from runner import linux, process, protocol
from runner.lifecycle import Runtime
from runner.paths import Layout
from runner.spec import RunRequest
from runner.state import RUNNING, Container, ContainerState, is_alive, process_start_time

log = logging.getLogger("netctl.monitor")

OUTPUT_DRAIN_S = 2.0  # after init exits, how long to wait for the pipes to close (all ns processes die)
START_TIMEOUT_S = 30.0  # init's set-up before exec
CLIENT_BUFFER_MAX = 8 << 20  # a client that reads slower than this much output is detached
READ_CHUNK = 1 << 16
UNCLAIMED_TTL_S = 120.0
EXIT_LOST = 255


class StartFailed(NetctlError):
    """The container's init could not exec its command (exit code 126/127 like Docker)."""


@dataclass(eq=False)  # compared and hashed by identity
class Client:
    sock: socket.socket
    reader: protocol.FrameReader = field(default_factory=protocol.FrameReader)
    out: bytearray = field(default_factory=bytearray)
    attached: str = ""  # container id whose output this client receives
    closed: bool = False


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


class Monitor:
    def __init__(self, layout: Layout):
        self.layout = layout
        self.runtime = Runtime(layout)
        self.selector = selectors.DefaultSelector()
        self.live: dict[str, Live] = {}  # container id -> Live
        self.by_pid: dict[int, str] = {}
        self.unclaimed: dict[int, tuple[int, float]] = {}  # reaped before registration: pid -> (status, when)
        self.done: dict[str, dict] = {}  # recent exit events, for waiters that come late
        self.timers: list[tuple[float, int, Callable[[], None]]] = []
        self.timer_seq = 0
        self.calls: queue.SimpleQueue = queue.SimpleQueue()
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.listener: socket.socket | None = None
        self.running = True
        self.reconciled = False  # containers of an earlier monitor adopted (see _reconcile)

    # --- plumbing -------------------------------------------------------------------------------

    def call_soon(self, fn: Callable[[], None]) -> None:
        """From any thread: run fn on the main thread."""
        self.calls.put(fn)
        try:
            os.write(self.wake_w, b"c")
        except BlockingIOError:
            pass

    def submit(self, job: Callable[[], None]) -> None:
        """Run job on the worker thread (in submission order)."""
        self.jobs.put(job)

    def later(self, delay: float, fn: Callable[[], None]) -> None:
        self.timer_seq += 1
        heapq.heappush(self.timers, (time.monotonic() + delay, self.timer_seq, fn))

    def _worker(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])  # SIGCHLD is the main thread's
        while True:
            job = self.jobs.get()
            if job is None:
                return
            try:
                job()
            except Exception:  # noqa: BLE001 - a bug in one job must not stop the others
                log.exception("worker job failed")

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
        self.selector.register(self.wake_r, selectors.EVENT_READ, ("wake", None))
        threading.Thread(target=self._worker, name="worker", daemon=True).start()
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
            self._adopt_or_finish_all()
        finally:
            self.call_soon(self._reconciled)  # even after a failure: requests must not wait forever

    def _reconciled(self) -> None:
        self.reconciled = True

    def _adopt_or_finish_all(self) -> None:
        for container in self.runtime.records.all():
            state = container.state
            if state.status == RUNNING and is_alive(state):
                try:
                    pidfd = os.pidfd_open(state.pid)
                except OSError:
                    pidfd = -1
                if pidfd >= 0:
                    self.call_soon(lambda c=container, fd=pidfd: self._adopt(c, fd))
                    continue
            if state.status == RUNNING:
                self._finish_lost(container)
            elif state.status in ("created", "removing"):
                self._safely(lambda c=container: self.runtime.remove(c))

    def _finish_lost(self, container: Container) -> None:
        def work() -> None:
            oom = self.runtime.oom_killed(container.config)
            self.runtime.record_exit(container.id, container.state, EXIT_LOST, oom, "exit status lost: the monitor was restarted")
            self.runtime.teardown(container.config)
            if container.config.auto_remove:
                self.runtime.remove(container)

        self._safely(work)

    def _adopt(self, container: Container, pidfd: int) -> None:
        live = Live(container=container, pid=container.state.pid, pidfd=pidfd)
        self.live[container.id] = live
        self.selector.register(pidfd, selectors.EVENT_READ, ("pidfd", container.id))

    @staticmethod
    def _safely(fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:  # noqa: BLE001
            log.exception("clean-up failed")

    # --- the loop -------------------------------------------------------------------------------

    def _tick(self) -> None:
        timeout = None
        if self.timers:
            timeout = max(0.0, self.timers[0][0] - time.monotonic())
        for key, events in self.selector.select(timeout):
            kind, obj = key.data
            try:
                if kind == "accept":
                    self._accept()
                elif kind == "wake":
                    self._wake()
                elif kind == "client":
                    if events & selectors.EVENT_READ:
                        self._client_readable(obj)
                    if events & selectors.EVENT_WRITE and not obj.closed:
                        self._flush(obj)
                elif kind == "output":
                    self._output(obj, key.fd)
                elif kind == "pidfd":
                    self._pidfd_exit(obj)
            except Exception:  # noqa: BLE001
                log.exception("event %s failed", kind)
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _, _, fn = heapq.heappop(self.timers)
            fn()

    def _wake(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        self._reap()
        while True:
            try:
                fn = self.calls.get_nowait()
            except queue.Empty:
                break
            try:
                fn()
            except Exception:  # noqa: BLE001
                log.exception("callback failed")

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

    # --- clients --------------------------------------------------------------------------------

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            if not ipc.authorized(sock):  # a socket passed to another user must not let it in
                log.warning("refused a client that is neither root nor the monitor's user")
                sock.close()
                continue
            sock.setblocking(False)
            client = Client(sock)
            self.selector.register(sock, selectors.EVENT_READ, ("client", client))

    def _client_readable(self, client: Client) -> None:
        try:
            alive = protocol.receive(client.sock, client.reader)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            alive = False
        if not alive:
            self._drop(client)
            return
        try:
            for kind, payload in client.reader.frames():
                if kind == protocol.JSON:
                    self._request(client, json.loads(payload), client.reader.take_fds())
        except (ValueError, KeyError, TypeError) as err:
            self._send(client, protocol.error_event(InvalidArgument(f"bad request to the monitor: {err}")))
            self._drop(client)

    def _send(self, client: Client, event: dict, fds: list[int] | None = None) -> None:
        self._send_raw(client, protocol.message(event), fds)

    def _send_raw(self, client: Client, data: bytes, fds: list[int] | None = None) -> None:
        if client.closed:
            return
        if fds:
            self._flush(client)
            if not client.out:
                try:
                    protocol.send_with_fds(client.sock, data, fds)
                    return
                except OSError:
                    self._drop(client)
                    return
        client.out += data
        if len(client.out) > CLIENT_BUFFER_MAX:
            log.warning("client too slow; detaching it")
            self._drop(client)
            return
        self._flush(client)

    def _flush(self, client: Client) -> None:
        while client.out and not client.closed:
            try:
                sent = client.sock.send(client.out)
            except BlockingIOError:
                break
            except OSError:
                self._drop(client)
                return
            del client.out[:sent]
        if not client.closed:
            mask = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.out else 0)
            self.selector.modify(client.sock, mask, ("client", client))

    def _close_after_flush(self, client: Client) -> None:
        """Send what is queued, then close (bounded: the socket is closed after at most 5 s)."""
        if not client.out:
            self._drop(client)
        else:
            self.later(5.0, lambda: self._drop(client))

    def _drop(self, client: Client) -> None:
        if client.closed:
            return
        client.closed = True
        try:
            self.selector.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        client.sock.close()
        for fd in client.reader.take_fds():
            os.close(fd)
        for live in self.live.values():
            if client in live.clients:
                live.clients.remove(client)
            if client in live.waiters:
                live.waiters.remove(client)

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
            elif op in ("kill", "stop", "wait", "rm") and not self.reconciled:
                # A container of the earlier monitor is not ours to stop or wait for until _reconcile
                # adopted it: answer after the worker has run that (jobs run in order, then callbacks).
                self.submit(lambda: self.call_soon(lambda: self._request(client, request, [])))
            elif op in ("kill", "stop", "wait", "rm"):
                container = self.runtime.records.find(str(request.get("ref", "")))
                getattr(self, f"_op_{op}")(client, container, request)
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
                launched = self._launch(run, stdin_fd)
            except NetctlError as err:
                self.call_soon(lambda err=err: self._error(client, err))
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

    def _launch(self, run: RunRequest, stdin_fd: int) -> tuple[Live, int]:
        """Worker: create, fork the helper, attach the network meanwhile, wait for init's exec. Returns
        (Live, terminal master or -1)."""
        runtime = self.runtime
        prepared = runtime.create(run)
        config = prepared.config
        container = Container(config, ContainerState())
        opened: list[int] = []
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
                null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC) if stdin_fd < 0 else -1
                if null >= 0:
                    opened.append(null)
                stdio = (stdin_fd if stdin_fd >= 0 else null, out_w, err_w)
                outputs = {out_r: protocol.STDOUT, err_r: protocol.STDERR}
                master = -1
            pid = self._fork_init(prepared, stdio, lambda: runtime.attach_network(prepared))
            for fd in stdio:
                if fd in opened:
                    opened.remove(fd)
                    os.close(fd)
        except BaseException:
            for fd in opened:
                os.close(fd)
            self._safely(lambda: runtime.remove(container, lazy_links=False))
            raise
        for fd in outputs:
            os.set_blocking(fd, False)
        log_fd = os.open(
            os.path.join(runtime.records.directory(config.id), "container.log"),
            os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
            0o600,
        )
        runtime.record_running(config.id, container.state, pid, process_start_time(pid), runtime.network_views(config))
        live = Live(container=container, pid=pid, outputs=outputs, log_fd=log_fd, master_fd=master,
                    remove_when_done=config.auto_remove)  # fmt: skip
        return live, master

    def _fork_init(self, prepared, stdio: tuple[int, int, int], attach_network: Callable[[], None]) -> int:
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
            code = process.EXIT_NOT_FOUND if "not found" in message or "No such file" in message else process.EXIT_CANNOT_EXEC
            failure = StartFailed(f"cannot start container {config.name!r}: {message}")
            failure.exit_code = code
            raise failure
        return pid

    def _started(self, client: Client, launched: tuple[Live, int], detach: bool) -> None:
        live, master = launched
        container_id = live.container.id
        self.live[container_id] = live
        self.by_pid[live.pid] = container_id
        for fd in live.outputs:
            self.selector.register(fd, selectors.EVENT_READ, ("output", container_id))
        event = {"event": "started", "id": container_id, "name": live.container.name, "pid": live.pid}
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

    def _signal(self, live: Live, number: int) -> None:
        if live.status is not None:
            return
        try:
            if live.pidfd >= 0:
                signal.pidfd_send_signal(live.pidfd, number)
            else:
                os.kill(live.pid, number)  # our unreaped child: the pid cannot have been reused
        except ProcessLookupError:
            pass

    def _op_kill(self, client: Client, container: Container, request: dict) -> None:
        live = self.live.get(container.id)
        if live is None or live.status is not None:
            raise InUse(f"container {container.name!r} is not running")
        self._signal(live, int(request.get("signal", signal.SIGKILL)))
        self._send(client, {"event": "ok"})
        self._close_after_flush(client)

    def _op_stop(self, client: Client, container: Container, request: dict) -> None:
        live = self.live.get(container.id)
        if live is None:
            self._send(client, {"event": "exit", **self._exit_view(container)})
            self._close_after_flush(client)
            return
        live.waiters.append(client)
        if live.status is None:
            timeout = max(0.0, float(request.get("timeout", 10)))
            self._signal(live, int(request.get("signal", signal.SIGTERM)))
            self.later(timeout, lambda: self._signal(live, signal.SIGKILL))

    def _op_wait(self, client: Client, container: Container, request: dict) -> None:
        live = self.live.get(container.id)
        if live is None:
            self._send(client, {"event": "exit", **self._exit_view(container)})
            self._close_after_flush(client)
            return
        live.waiters.append(client)

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

        def work() -> None:
            try:
                self.runtime.remove(container)
                self.call_soon(lambda: (self._send(client, {"event": "ok"}), self._close_after_flush(client)))
            except NetctlError as err:
                self.call_soon(lambda err=err: self._error(client, err))

        self.submit(work)

    @staticmethod
    def _exit_view(container: Container) -> dict:
        fresh = container.state
        return {"code": fresh.exit_code if fresh.exit_code is not None else -1, "oom": fresh.oom_killed, "status": fresh.status}

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
        status = live.status if live.status is not None else -1
        lost = status == -1
        code = EXIT_LOST if lost else (os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
        container = live.container
        remove = live.remove_when_done

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
            try:
                if remove:
                    self.runtime.remove(container)  # the teardown, then the directory and the name
                else:
                    self.runtime.teardown(container.config)
            except Exception:  # noqa: BLE001
                log.exception("teardown of %s", container.id[:12])
            event = {"event": "exit", "code": code, "oom": oom, "status": "removed" if remove else "exited"}
            self.call_soon(lambda: self._notify(live, event))

        self.submit(work)

    def _notify(self, live: Live, event: dict) -> None:
        self.live.pop(live.container.id, None)
        for client in dict.fromkeys(live.waiters + live.clients):
            self._send(client, event)
            self._close_after_flush(client)


def _read_all(fd: int, timeout: float) -> bytes:
    """Read a pipe to EOF, bounded in time (a wedged init must not wedge the monitor)."""
    import select

    chunks = []
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
