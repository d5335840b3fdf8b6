"""The monitor's messages, on a unix stream socket (ROOT/monitor.sock), in libnetwork/ipc.py's frames.

    kind 0  a JSON object: a request {"op": ...} from a client, an event {"event": ...} from the monitor
    kind 1  bytes the container wrote to stdout (or its terminal)
    kind 2  bytes the container wrote to stderr
File descriptors (a client's stdin, a container's terminal) travel as SCM_RIGHTS beside a JSON frame.
Errors come back as {"event": "error", "kind": "<NetctlError subclass>", "message": "..."} and are
raised again on the client side as the same class, so the CLI prints the monitor's one line.
"""

from __future__ import annotations

from libnetwork import errors
from libnetwork.ipc import JSON, STDERR, STDOUT, FrameReader, dumps, frame, loads, message, receive, send_with_fds

__all__ = ["JSON", "STDERR", "STDOUT", "VERSION", "FrameReader", "dumps", "error_event", "frame", "loads",
           "message", "raise_error", "receive", "send_with_fds"]

VERSION = 1


def error_event(err: errors.NetctlError) -> dict:
    return {"event": "error", "kind": type(err).__name__, "message": err.message}


def raise_error(event: dict) -> None:
    """Raise the NetctlError an error event describes (its class by name, else NetctlError)."""
    kind = getattr(errors, str(event.get("kind", "")), errors.NetctlError)
    if not (isinstance(kind, type) and issubclass(kind, errors.NetctlError)):
        kind = errors.NetctlError
    err = kind(str(event.get("message", "the monitor reported an error")))
    if isinstance(event.get("exit_code"), int):
        err.exit_code = event["exit_code"]  # e.g. 127 for a command that is not found, as Docker
    raise err
