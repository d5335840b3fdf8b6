"""The host agent's request server: one socket (ROOT/netctl.sock), one framing (libnetwork/ipc.py).

Requests, one per connection, each a JSON frame first:

    {"op": "cli", "argv": [...]}                  a netctl command line (netctl/entry.py's thin client)
    {"op": "cni", "plugin": NAME, "env": {...}}   a CNI plugin call (cni_plugins/launch.py), followed by
                                                  one STDIN frame: the configuration, verbatim
Answers: STDOUT and STDERR frames, then {"event": "exit", "code": N}; or {"event": "not-mine"} when
the request is another root's or comes from another network namespace (`ip netns exec X netctl ...`
means X): the client then runs it itself; or {"event": "refused", "message": ...}.

CLI commands run through the very click CLI a cold `netctl` runs, so output and exit codes cannot
differ; they take turns (stdout/stderr are redirected for the whole process while one runs) and share
one warm controller: its store connection, netlink socket and etcd client stay open between requests.
CNI requests run side by side on a pool of warm plugin contexts (cni_plugins/service.py). A client
killed mid-request does not stop the operation half-way: it runs to its end (or its rollback).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING

from libnetwork import ipc

if TYPE_CHECKING:
    from libnetwork.controller import Controller

log = logging.getLogger("netctl.daemon")
REQUEST_TIMEOUT_S = 30.0  # a client that connects and never sends is dropped after this
MAX_CONNECTIONS = 64  # requests served at once; more wait in the listen backlog
MAX_ARGS = 4096
STOP_WAIT_S = 30.0  # a stopping agent waits this long at most for the requests it is serving


class RequestServer:
    def __init__(self, root: str, listener: socket.socket, *, gid: int = -1):
        from cni_plugins.service import CniService

        self.root = root
        self.listener = listener
        self.gid = gid
        self.cni = CniService(root)
        self._cli_turn = threading.Lock()
        self._controller: Controller | None = None  # the CLI's warm controller, made on first use
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def serve(self, stopping: threading.Event) -> None:
        """Accept until `stopping` is set (and the listener closed to wake us)."""
        self.cni.start()
        try:
            while not stopping.is_set():
                self._slots.acquire()
                try:
                    conn, _ = self.listener.accept()
                except OSError:
                    self._slots.release()
                    if stopping.is_set():
                        break
                    raise
                threading.Thread(target=self._serve_one, args=(conn,), name="netctl-request", daemon=True).start()
        finally:
            # Requests in flight run to their end (or their rollback) before their contexts close:
            # wait for every slot, bounded.
            deadline = time.monotonic() + STOP_WAIT_S
            for _ in range(MAX_CONNECTIONS):
                if not self._slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
                    log.warning("stopping with requests still running after %.0f s", STOP_WAIT_S)
                    break
            self.cni.stop()
            with self._cli_turn:
                self._close_controller()

    def _serve_one(self, conn: socket.socket) -> None:
        try:
            with conn:
                conn.settimeout(REQUEST_TIMEOUT_S)
                frames = ipc.read_frames(conn)
                # Read before judging: a refusal sent before the client has written its request would
                # meet its write with EPIPE, and it would never read why.
                request = self._request(frames)
                if request is None:
                    return
                if not ipc.authorized(conn, self.gid):
                    _, uid, _ = ipc.peer_credentials(conn)
                    log.warning("refused a client with uid %d: neither root nor in the agent's group", uid)
                    conn.sendall(ipc.message({"event": "refused", "message": (
                        "permission denied: the netctl agent serves root and the members of its group only")}))
                    return
                if not ipc.same_network_namespace(conn):  # its command means another namespace than ours
                    conn.sendall(ipc.message({"event": "not-mine"}))
                    return
                # The kernel deletions the request hands to the background thread start after its
                # answer, and the agent counts as busy meanwhile (cni_plugins/service.py).
                with self.cni.holding():
                    self._serve_request(conn, request, frames)
        except OSError as err:  # a client that vanished must not take a thread's slot for good
            log.warning("request failed: %s", err)
        except Exception:  # a bug: logged, the agent keeps serving
            log.exception("request failed")
        finally:
            self._slots.release()

    def _serve_request(self, conn: socket.socket, request: dict, frames) -> None:
        if request.get("op") == "cli":
            conn.settimeout(None)
            self._answer(conn, *self._run_cli(request))
        elif request.get("op") == "cni":
            # Plugins run as root with the caller's CNI_PATH, CNI_NETNS...: only for callers who
            # could run them as root themselves. Anyone else (a --group member) runs its plugin
            # call itself, with its own privileges, as without an agent.
            if ipc.peer_credentials(conn)[1] not in (0, os.getuid()):
                conn.sendall(ipc.message({"event": "not-mine"}))
                return
            self._serve_cni(conn, request, frames)
        else:
            conn.sendall(ipc.message({"event": "refused", "message": "the agent does not understand this client"}))

    @staticmethod
    def _request(frames) -> dict | None:
        for kind, payload in frames:
            if kind != ipc.JSON:
                return None
            try:
                request = ipc.loads(payload)
            except (ValueError, UnicodeDecodeError):
                return None
            return request if isinstance(request, dict) else None
        return None

    @staticmethod
    def _answer(conn: socket.socket, code: int, out: bytes, err: bytes) -> None:
        data = b""
        if out:
            data += ipc.frame(ipc.STDOUT, out)
        if err:
            data += ipc.frame(ipc.STDERR, err)
        try:
            conn.sendall(data + ipc.message({"event": "exit", "code": code}))
        except OSError:
            log.warning("client left before its answer")

    # --- CLI ----------------------------------------------------------------------------------------

    def _run_cli(self, request: dict) -> tuple[int, bytes, bytes]:
        from netctl.delegated import agent_socket_for, split_globals

        argv = request.get("argv")
        if not isinstance(argv, list) or len(argv) > MAX_ARGS or not all(isinstance(a, str) for a in argv):
            return 2, b"", b"netctl: the agent does not understand this client's request\n"
        # The client chose this socket by its root (--root or NETCTL_ROOT, which the agent's own
        # environment need not share); judge the command as if run with the agent's root, which a
        # different --root in argv still overrides.
        if agent_socket_for(["--root", self.root, *argv]) != ipc_path(self.root):
            # Never run what the client must run itself (exec would replace the agent) or another root's.
            return 2, b"", b"netctl: this command cannot run in the agent\n"
        parsed = split_globals(argv)
        words = parsed[2] if parsed else argv  # the command without the global options
        with self._cli_turn:
            if words[:1] in (["doctor"], ["gc"]):
                self.cni.flush_removals()  # veths being deleted after a DEL or disconnect are not leftovers
            code, out, err = self._captured(argv)
        log.info("served %s: exit %d", " ".join(words[:3]), code)
        return code, out.encode("utf-8", "surrogateescape"), err.encode("utf-8", "surrogateescape")

    def _captured(self, argv: list[str]) -> tuple[int, str, str]:
        """Run one command line through the CLI with the warm controller, capturing its output."""
        from netctl.cli import main as cli_main

        out, err = io.StringIO(), io.StringIO()
        # In-process, the library's warnings (e.g. "... stays in etcd until `netctl gc`") reach the
        # user's stderr through logging's last resort; here the agent's own handler would keep them in
        # its log. Give the client what this request's thread warns, as the in-process run prints it.
        warnings = logging.StreamHandler(err)
        warnings.setLevel(logging.WARNING)
        serving = threading.get_ident()
        warnings.addFilter(lambda record: record.thread == serving)
        root_logger = logging.getLogger()
        root_logger.addHandler(warnings)
        healthy = False
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    cli_main(["--root", self.root, *argv], obj={"warm_controller": self._warm_controller(),
                                                              "remove_links": self.cni.defer_link_removal,
                                                              "later": self.cni.later_when_quiet})
                    code = 0
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            # 70: an internal error, 8: the store failed (etcd restarted, a stale connection): the next
            # command starts on fresh connections.
            healthy = code not in (70, 8)
        finally:
            root_logger.removeHandler(warnings)
            if not healthy:
                self._close_controller()
        return code, out.getvalue(), err.getvalue()

    def _warm_controller(self) -> Controller:
        if self._controller is None:
            from libnetwork.controller import Controller
            from netctl.names import keep_hosts_files_current

            controller = Controller(self.root)
            keep_hosts_files_current(controller)  # containers' hosts files follow names-changed
            self._controller = controller
        return self._controller

    def _close_controller(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            with contextlib.suppress(Exception):
                controller.close()

    # --- CNI ----------------------------------------------------------------------------------------

    def _serve_cni(self, conn: socket.socket, request: dict, frames) -> None:
        from cni_plugins.service import NotMine

        env = request.get("env")
        plugin = request.get("plugin")
        stdin = b""
        for kind, payload in frames:
            if kind == ipc.STDIN:
                stdin = payload
            break
        if not isinstance(env, dict) or not isinstance(plugin, str):
            conn.sendall(ipc.message({"event": "refused", "message": "malformed CNI request"}))
            return
        env = {str(k): str(v) for k, v in env.items()}
        conn.settimeout(None)  # the work itself is bounded by the plugins (delegated IPAM: 120 s)
        try:
            status, out, err = self.cni.handle(plugin, env, stdin)
        except NotMine:
            conn.sendall(ipc.message({"event": "not-mine"}))
            return
        self._answer(conn, status, out, err)


def ipc_path(root: str) -> str:
    from libnetwork import rootdir

    return rootdir.path(root, rootdir.AGENT_SOCKET)
