"""The `netctl` entry point: a thin client of a running `netctl daemon`, with an in-process fallback.

A CLI call in a fresh interpreter spends ~90% of its time importing (click alone ~40 ms, the library
~30-60 ms) and ~8 ms doing the work. When `netctl daemon` serves ROOT/netctl.sock, this module — which
imports only os, sys and _socket — sends the command line there and prints the answer; the daemon runs
the very same click CLI in its warm process. Without a daemon (or for commands that need this
process's terminal, stdin or environment) the CLI runs here, as before. Same code, same output, same
exit codes either way.

Wire format (both directions): 4-byte big-endian length, then NUL-separated UTF-8 fields.
  request:  "netctl-1", argv...
  response: exit code, stdout, stderr
"""

from __future__ import annotations

import os
import sys

PROTOCOL = "netctl-1"
SOCKET_NAME = "netctl.sock"
GLOBAL_CONFIG = "global.json"  # written by `netctl daemon` (netctl/daemon.py)
DEFAULT_ROOT = "/var/lib/netctl"
REPLY_TIMEOUT_S = 300.0

# Commands the daemon may run: they read nothing but their arguments and write only stdout/stderr.
# Left out on purpose: `sandbox exec` (replaces this process), `network prune` (asks on stdin),
# `daemon` itself, and everything of the container runner (terminals, signals, the caller's cgroup).
DELEGATED = {
    ("network", "create"), ("network", "rm"), ("network", "connect"), ("network", "disconnect"),
    ("network", "ls"), ("network", "inspect"),
    ("sandbox", "create"), ("sandbox", "rm"), ("sandbox", "ls"), ("sandbox", "inspect"),
    ("doctor",), ("gc",), ("firewall", "sync"),
}


def split_globals(argv: list[str]) -> tuple[str, bool, list[str]] | None:
    """(root, debug, command words) from `netctl [--root DIR|--root=DIR] [--debug] CMD...`, or None
    for anything else (help, unknown global flags): those run in-process."""
    root = os.environ.get("NETCTL_ROOT") or DEFAULT_ROOT
    debug = False
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        arg = argv[i]
        if arg == "--debug":
            debug = True
        elif arg == "--root" and i + 1 < len(argv):
            i += 1
            root = argv[i]
        elif arg.startswith("--root="):
            root = arg[len("--root="):]
        else:
            return None
        i += 1
    return root, debug, argv[i:]


def delegable(argv: list[str]) -> str | None:
    """The daemon socket to use for this command line, or None to run in-process."""
    if os.environ.get("NETCTL_NO_DAEMON") or os.environ.get("NETCTL_TEST_PAUSE"):
        return None
    parsed = split_globals(argv)
    if parsed is None:
        return None
    root, debug, words = parsed
    if debug or "-h" in words or "--help" in words:
        return None
    if tuple(words[:2]) not in DELEGATED and tuple(words[:1]) not in DELEGATED:
        return None
    if not _same_membership_as_daemon(root):
        return None
    return os.path.join(os.path.abspath(root), SOCKET_NAME)


def _same_membership_as_daemon(root: str) -> bool:
    """The daemon answers with its own global store and host name (ROOT/global.json). A caller whose
    NETCTL_STORE / NETCTL_HOST_NAME say otherwise must run in-process, or it would get another
    store's answer. Only callers that set them pay for reading the file."""
    wanted = {key: os.environ[env] for key, env in (("store", "NETCTL_STORE"), ("host", "NETCTL_HOST_NAME"))
              if env in os.environ}  # fmt: skip
    if not wanted:
        return True
    import json

    try:
        with open(os.path.join(os.path.abspath(root), GLOBAL_CONFIG)) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        saved = {}
    if not isinstance(saved, dict):
        return False
    return all(str(saved.get(key, "")) == value for key, value in wanted.items())


def encode(fields: list[str]) -> bytes:
    payload = "\0".join(fields).encode("utf-8", "surrogateescape")
    return len(payload).to_bytes(4, "big") + payload


def read_message(sock) -> list[str] | None:
    header = _read_exact(sock, 4)
    if header is None:
        return None
    body = _read_exact(sock, int.from_bytes(header, "big"))
    if body is None:
        return None
    return body.decode("utf-8", "surrogateescape").split("\0")


def _read_exact(sock, size: int) -> bytes | None:
    chunks, missing = [], size
    while missing:
        chunk = sock.recv(min(missing, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def via_daemon(path: str, argv: list[str]) -> int | None:
    """Run argv in the daemon; None if no daemon listens there (the caller then runs it itself)."""
    # The C module, not `socket`: that one imports enum & co. and would add ~10 ms to every call.
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError, PermissionError, NotADirectoryError):
            return None  # no daemon (or a stale socket file of a dead one): nothing was sent
        sock.settimeout(REPLY_TIMEOUT_S)
        sock.sendall(encode([PROTOCOL, *argv]))
        reply = read_message(sock)
    except OSError as exc:
        reply = None
        reason = exc.strerror or str(exc)
    else:
        reason = "it closed the connection"
    finally:
        sock.close()
    if reply is None or len(reply) != 3:
        # The command may or may not have run: never retry it here.
        sys.stderr.write(f"netctl: the daemon at {path} did not answer ({reason}); run `netctl doctor` to check state\n")
        return 70
    code, out, err = reply
    sys.stdout.write(out)
    sys.stderr.write(err)
    return int(code)


def exit_now(code: int) -> None:
    """Flush and leave without the interpreter's finalisation, ~1.5 ms of a ~45 ms `netctl run`: the
    fast path holds nothing that needs it (no atexit handlers, files or sockets left open)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # a reader that went away (e.g. `| head`) must not change the container's exit code
    os._exit(code)


def main() -> None:
    argv = sys.argv[1:]
    if "run" in argv[:4] or "exec" in argv[:4]:
        # Container commands have a click-free parser generated from the same option table
        # (runner/runopts.py); it answers None for anything it does not handle, e.g. --help.
        from runner.fastcli import main as run_fast

        code = run_fast(argv)
        if code is not None:
            exit_now(code)
    path = delegable(argv)
    if path is not None:
        code = via_daemon(path, argv)
        if code is not None:
            sys.stdout.flush()
            sys.exit(code)
    from netctl.cli import main as run_in_process

    run_in_process(argv)
