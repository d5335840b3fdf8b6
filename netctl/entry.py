"""The `netctl` entry point: a thin client of the host agent, with an in-process fallback.

A CLI call in a fresh interpreter spends ~90% of its time importing (click alone ~40 ms, the library
~30-60 ms) and ~8 ms doing the work. When the agent (`netctl daemon`) serves ROOT/netctl.sock, this
module - which imports only os, sys and C modules - sends the command line there and prints the answer;
the agent runs the very same click CLI in its warm process. Same code, same output, same exit codes.

No agent yet? The command runs here, in-process, and starts one in the background (as `netctl run`
starts the monitor), so the next command finds it warm: nothing has to be started by hand.
NETCTL_NO_DAEMON=1 keeps every command in-process and starts nothing. Commands that need this
process's terminal, stdin or environment always run here.

Frames (libnetwork/ipc.py): request {"op": "cli", "argv": [...]}; answer STDOUT and STDERR frames,
then {"event": "exit", "code": N}.
"""

from __future__ import annotations

import os
import sys

from libnetwork import ipc, rootdir
from netctl.delegated import agent_socket_for, split_globals

REPLY_TIMEOUT_S = 300.0
NOT_SERVED = -1  # via_daemon: an agent runs but leaves this command to us (another network namespace)


def delegable(argv: list[str]) -> str | None:
    """The agent socket to use for this command line, or None to run in-process."""
    if os.environ.get("NETCTL_NO_DAEMON") or os.environ.get("NETCTL_TEST_PAUSE"):
        return None
    path = agent_socket_for(argv)
    if path is None or not _same_membership_as_daemon(os.path.dirname(path)):
        return None
    return path


def _same_membership_as_daemon(root: str) -> bool:
    """The daemon answers with its own global store and host name (ROOT/global.json). A caller whose
    NETCTL_STORE / NETCTL_HOST_NAME say otherwise must run in-process, or it would get another
    store's answer. Only callers that set them pay for reading the file."""
    wanted = {key: os.environ[env] for key, env in (("store", "NETCTL_STORE"), ("host", "NETCTL_HOST_NAME"))
              if env in os.environ}  # fmt: skip
    if not wanted:
        return True
    try:
        saved = rootdir.read_global_config(root)
    except rootdir.UnreadableConfig:
        saved = {}  # the agent could not have read it either: only a caller that wants no store matches
    return all(saved.get(key, "") == value for key, value in wanted.items())


def via_daemon(path: str, argv: list[str]) -> int | None:
    """Run argv in the agent: its exit code; None if no agent listens there, NOT_SERVED if it leaves
    the command to us (either way the caller runs it itself)."""
    try:
        sock = ipc.try_connect(path)
    except OSError:  # an agent runs, and we may not talk to it: whatever we did here would fail too
        sys.stderr.write(f"netctl: permission denied on {path}: run netctl as root, or as a member of the "
                         "group the agent was started with (netctl daemon --group)\n")
        return 77
    if sock is None:
        return None  # no agent (or a stale socket file of a dead one): nothing was sent
    code, reason = None, "it closed the connection"
    out = err = b""
    try:
        event, out, err = ipc.call(sock, ipc.message({"op": "cli", "argv": argv}), REPLY_TIMEOUT_S)
        if event is not None and event.get("event") == "exit":
            code = int(event.get("code", 1))
        elif event is not None and event.get("event") == "refused":
            sys.stderr.write(f"netctl: {event.get('message', 'the agent refused the request')}\n")
            return 77
        elif event is not None and event.get("event") == "not-mine":
            return NOT_SERVED
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
    finally:
        sock.close()
    if code is None:
        # The command may or may not have run: never retry it here.
        sys.stderr.write(f"netctl: the agent at {path} did not answer ({reason}); run `netctl doctor` to check state\n")
        return 70
    sys.stdout.flush()
    _write(1, out)
    _write(2, err)
    return code


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except OSError:  # a reader that went away (`| head`): the exit code still counts
            return


def start_agent(root: str) -> None:
    """The host's agent for the next command (libnetwork/agent_spawn.py)."""
    from libnetwork.agent_spawn import spawn_agent

    spawn_agent(root)


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
    if "run" in argv[:4] or "exec" in argv[:4] or "pull" in argv[:4]:
        # Container commands (a parser generated from runner/runopts.py's option table) and a pull of
        # an image already up to date have a click-free path; it answers None for anything it does
        # not handle, e.g. --help, and the full CLI runs.
        from runner.fastcli import main as run_fast

        code = run_fast(argv)
        if code is not None:
            exit_now(code)
    path = delegable(argv)
    code = None
    if path is not None:
        # The agent runs in "/": name the root absolutely (a relative --root is the caller's).
        parsed = split_globals(argv)
        words = parsed[2] if parsed else argv  # delegable() parsed it already
        code = via_daemon(path, ["--root", os.path.dirname(path), *words])
        if code is not None and code != NOT_SERVED:
            exit_now(code)
    from netctl.program import main as run_in_process

    if path is None or code is not None:
        run_in_process(argv)
        return
    try:
        run_in_process(argv)
    finally:
        # No agent answered: start one for the next command, once this one's work is done (spawned
        # first, its imports competed with ours for the CPUs: measured 10-50 ms on the first call).
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass  # a reader that went away (`| true`) must not change the command's exit code
        start_agent(os.path.dirname(path))


def cni_server_alias() -> None:
    """`netctl-cni-server [--root DIR]`: the CNI service of earlier versions, now the host agent.
    --workers and --verbose are accepted and ignored (the agent sizes its pool itself, logs each call)."""
    argv, root, i = sys.argv[1:], None, 0
    while i < len(argv):
        if argv[i] == "--root" and i + 1 < len(argv):
            root, i = argv[i + 1], i + 2
        elif argv[i].startswith("--root="):
            root, i = argv[i][len("--root="):], i + 1
        elif argv[i] == "--workers" and i + 1 < len(argv):
            i += 2
        elif argv[i] in ("--verbose",) or argv[i].startswith("--workers="):
            i += 1
        else:
            sys.stderr.write(f"netctl-cni-server: unknown argument {argv[i]!r}; "
                             "it is `netctl daemon` now, see its --help\n")
            sys.exit(2)
    from netctl.program import main as run_in_process

    run_in_process([*(["--root", root] if root else []), "daemon"])
