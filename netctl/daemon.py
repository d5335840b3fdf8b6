"""`netctl daemon`: a warm process that runs CLI commands for thin clients (netctl/entry.py).

It listens on ROOT/netctl.sock (mode 0600, so only root talks to it) and runs each request through the
same click CLI a cold `netctl` process would, with stdout and stderr captured — one code path, so output
and exit codes cannot differ. Requests are served one at a time: every operation takes the store's
write lock anyway, so serving them in parallel would gain nothing. A client killed mid-request does not
stop the operation half-way: the daemon finishes it (or rolls it back) as a single transaction.

Later the daemon also hosts the overlay reconcile loop and name resolution (see DESIGN.md).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import socket

from libnetwork.errors import AlreadyExists
from netctl.entry import PROTOCOL, SOCKET_NAME, delegable, encode, read_message

log = logging.getLogger("netctl.daemon")
REQUEST_TIMEOUT_S = 30.0  # a client that connects and never sends is dropped after this


def socket_path(root: str) -> str:
    return os.path.join(os.path.abspath(root), SOCKET_NAME)


def bind(root: str) -> socket.socket:
    """Listen on ROOT/netctl.sock; refuse if another daemon already answers there."""
    path = socket_path(root)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        pass  # nobody there; a leftover file of a dead daemon is replaced below
    else:
        raise AlreadyExists(f"a netctl daemon already serves {path}; stop it first")
    finally:
        probe.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket file is created 0600: root only
    try:
        server.bind(path)
    finally:
        os.umask(old_umask)
    server.listen(64)
    return server


def run_captured(root: str, argv: list[str]) -> tuple[int, str, str]:
    """Run one command line through the CLI, returning (exit code, stdout, stderr)."""
    from netctl.cli import main as cli_main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli_main(["--root", root, *argv])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, out.getvalue(), err.getvalue()


def handle(conn: socket.socket, root: str) -> None:
    conn.settimeout(REQUEST_TIMEOUT_S)
    request = read_message(conn)
    if not request or request[0] != PROTOCOL:
        conn.sendall(encode(["2", "", "netctl: the daemon does not understand this client's protocol\n"]))
        return
    argv = request[1:]
    # The client chose this socket by its root (--root or NETCTL_ROOT, which the daemon's own
    # environment need not share); judge the command as if run with the daemon's root, which a
    # different --root in argv still overrides.
    if delegable(["--root", root, *argv]) != socket_path(root):
        # Never run what the client must run itself (exec would replace the daemon) or another root's.
        conn.sendall(encode(["2", "", "netctl: this command cannot run in the daemon\n"]))
        return
    conn.settimeout(None)
    code, out, err = run_captured(root, argv)
    log.info("served %s: exit %d", " ".join(argv[:3]), code)
    try:
        conn.sendall(encode([str(code), out, err]))
    except OSError:
        log.warning("client left before the answer to %s", argv[:3])


def serve(root: str, *, on_ready=None) -> None:
    """Serve until SIGTERM or SIGINT; removes the socket file on the way out."""
    import netctl.cli  # noqa: F401  (warm up: the point of the daemon)
    from libnetwork import controller, firewall, ipam, netlink  # noqa: F401
    from libnetwork.store import sqlite  # noqa: F401

    server = bind(root)
    stopping = False

    def stop(signum, frame):
        nonlocal stopping
        stopping = True
        server.close()  # wakes accept()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    path = socket_path(root)
    try:
        if on_ready is not None:
            on_ready(path)
        while not stopping:
            try:
                conn, _ = server.accept()
            except OSError:
                if stopping:
                    break
                raise
            with conn:
                try:
                    handle(conn, root)
                except OSError as exc:  # a client that vanished must not take the daemon down
                    log.warning("request failed: %s", exc)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
