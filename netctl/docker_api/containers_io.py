"""A container's streams over the Docker API: attach (a hijacked connection: raw with a terminal,
stdcopy frames without) and logs (the container.log the monitor writes, runner/logs.py).

Attach is the monitor's `attach` request (runner/monitor_ops.py): registered before the reply goes out,
so the docker CLI's attach-then-start (`docker run` in the foreground, `docker start -a`) loses no
output. The monitor hands over the container's terminal or stdin pipe (SCM_RIGHTS) when stdin is
asked; a thread copies the client's input to it. The attach ends with the container, or when the
client goes (a failed write): the monitor then forgets the client.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from datetime import datetime

from netctl.docker_api.containers_common import find, publish
from netctl.docker_api.http import Hijack, Request, Stream, bad_request, frame

log = logging.getLogger("netctl.docker_api")

MULTIPLEXED = "application/vnd.docker.multiplexed-stream"
RAW = "application/vnd.docker.raw-stream"


def attach(api, req: Request, ref: str) -> Hijack:
    from runner import client, protocol

    container = find(api, ref)
    stream, logs = req.flag("stream"), req.flag("logs")
    want_stdin, want = req.flag("stdin"), {1: req.flag("stdout"), 2: req.flag("stderr")}
    detach_keys = parse_detach_keys(req.arg("detachKeys") or DEFAULT_DETACH_KEYS)
    tty = container.config.tty
    session = None
    stdin_fd = -1
    if stream:
        session = client.Session(api.layout, {"op": "attach", "ref": container.id, "stdin": want_stdin})
        try:
            stdin_fd = _first_event(session)
        except BaseException:
            session.close()
            raise
    publish(api, container, "attach")
    path = os.path.join(api.layout.container(container.id), "container.log")

    def run(sock, rfile) -> None:
        from runner import logs as logs_mod

        def send(kind: int, data: bytes) -> None:
            if want.get(kind, want[1]):
                sock.sendall(data if tty else frame(kind, data))

        copier: list[threading.Thread] = []

        def detached() -> None:  # the client typed the detach keys: end the attach, the container runs on
            for end in [session.sock] if session is not None else []:
                with contextlib.suppress(OSError):
                    end.shutdown(2)
            with contextlib.suppress(OSError):
                sock.shutdown(2)

        def start_stdin(fd: int) -> None:
            thread = threading.Thread(target=_copy_in, args=(rfile, fd, detach_keys, detached), name="attach-stdin",
                                      daemon=True)  # fmt: skip
            thread.start()
            copier.append(thread)

        try:
            wait_until_read(sock)
            if logs:
                for record in logs_mod.records(path):
                    send(int(record.get("s", 1)), str(record.get("d", "")).encode("utf-8", "surrogateescape"))
            if session is None:
                return
            if stdin_fd >= 0:
                start_stdin(stdin_fd)
            for kind, payload, fds in session.frames():
                if kind in (protocol.STDOUT, protocol.STDERR):
                    send(kind, payload)
                elif kind == protocol.JSON:
                    event = protocol.loads(payload)
                    if event.get("event") == "stdin" and fds:
                        start_stdin(fds.pop(0))
                    elif event.get("event") in ("exit", "error"):
                        break
                for fd in fds:
                    os.close(fd)
        except OSError as err:
            log.info("attach to %s ended: %s", container.id[:12], err)  # the client went away
        finally:
            if session is not None:
                session.close()
            with contextlib.suppress(OSError):
                sock.shutdown(2)

    return Hijack(run, multiplexed=not tty)


SIOCOUTQ = 0x5411  # bytes we sent that the peer has not read yet (a Unix socket's peer's queue)
HEADERS_READ_WAIT_S = 1.0


def wait_until_read(sock, timeout: float = HEADERS_READ_WAIT_S) -> None:
    """Wait (bounded) until the client has read what we sent: the reply's headers. A client that
    reads them through a buffer and then reads the raw socket (docker-py, http.client) loses whatever
    arrived with them; dockerd's runtime is slow enough to start a process that this never happens,
    ours is not."""
    import fcntl
    import struct

    deadline = time.monotonic() + timeout
    delay = 0.0005
    while time.monotonic() < deadline:
        try:
            queued = struct.unpack("i", fcntl.ioctl(sock.fileno(), SIOCOUTQ, b"\0\0\0\0"))[0]
        except OSError:
            return
        if queued <= 0:
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.01)


def _first_event(session) -> int:
    """The monitor's answer to attach: raises its error; returns the stdin descriptor (or -1)."""
    from runner import protocol

    for kind, payload, fds in session.frames():
        if kind != protocol.JSON:
            for fd in fds:
                os.close(fd)
            continue
        event = protocol.loads(payload)
        if event.get("event") == "error":
            for fd in fds:
                os.close(fd)
            protocol.raise_error(event)
        return fds[0] if fds else -1
    from libnetwork.errors import NetctlError

    raise NetctlError("the container monitor closed the connection without answering; see its log")


def _copy_in(rfile, fd: int, detach_keys: bytes = b"", on_detach=None) -> None:
    """Client input -> the container's terminal or stdin, until the client's end of input, or until
    the detach keys (dockerd's ctrl-p,ctrl-q by default) arrive: on_detach() then ends the attach. A
    partial match is held back until the next byte decides."""
    held = b""
    try:
        while True:
            data = rfile.read1(65536) if hasattr(rfile, "read1") else rfile.read(65536)
            if not data:
                return
            if detach_keys:
                data, held, hit = _scan(held + data, detach_keys)
                if hit:
                    _write_all(fd, data)
                    if on_detach is not None:
                        on_detach()
                    return
            _write_all(fd, data)
    except OSError:
        return
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _scan(data: bytes, keys: bytes) -> tuple[bytes, bytes, bool]:
    """(bytes to pass on, bytes held as a possible start of `keys`, whether `keys` arrived)."""
    at = data.find(keys)
    if at >= 0:
        return data[:at], b"", True
    for size in range(min(len(keys) - 1, len(data)), 0, -1):
        if keys.startswith(data[-size:]):
            return data[:-size], data[-size:], False
    return data, b"", False


DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"


def parse_detach_keys(text: str) -> bytes:
    """dockerd's detachKeys: comma-separated `ctrl-<a-z@[\\]^_>` or single characters."""
    out = bytearray()
    for key in text.split(","):
        if key.startswith("ctrl-") and len(key) == 6:
            char = key[5].lower()
            if "a" <= char <= "z":
                out.append(ord(char) - ord("a") + 1)
            elif char in "@[\\]^_":
                out.append(ord(char) - 64)
            else:
                raise bad_request(f"invalid detach keys {text!r}: {key!r} is not a control key")
        elif len(key) == 1:
            out.append(ord(key))
        else:
            raise bad_request(f"invalid detach keys {text!r}: use e.g. ctrl-p,ctrl-q")
    return bytes(out)


def _time_arg(req: Request, name: str) -> float:
    text = req.arg(name) or ""
    if not text or text == "0":
        return 0.0
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        pass
    units = {"s": 1, "m": 60, "h": 3600}
    if text[-1] in units and text[:-1].isdigit():
        return time.time() - int(text[:-1]) * units[text[-1]]
    raise bad_request(f"invalid value for {name!r}: {text!r} (a Unix time, RFC 3339 or a duration such as 10m)")


def logs(api, req: Request, ref: str) -> Stream:
    from runner import logs as logs_mod
    from runner.state import Records

    container = find(api, ref)
    want = {1: req.flag("stdout"), 2: req.flag("stderr")}
    if not any(want.values()):
        raise bad_request("Bad parameters: you must choose at least one stream")
    tail_text = req.arg("tail") or "all"
    if tail_text != "all" and not tail_text.isdigit():
        raise bad_request(f"invalid value for 'tail': {tail_text!r} (a number or all)")
    tail = -1 if tail_text == "all" else int(tail_text)
    since, until = _time_arg(req, "since"), _time_arg(req, "until")
    timestamps, tty = req.flag("timestamps"), container.config.tty
    records = Records(api.layout)
    path = os.path.join(records.directory(container.id), "container.log")

    output_may_grow = logs_mod.follow_condition(lambda: records.state(container.id))

    def still_running() -> bool:
        return not req.client_gone() and not api.stopping.is_set() and output_may_grow()

    def chunks():
        for line in logs_mod.read(path, since=since, until=until, tail=tail, follow=req.flag("follow"),
                                  still_running=still_running):  # fmt: skip
            stream = int(line.get("s", 1))
            if not want.get(stream, want[1]):
                continue
            data = str(line.get("d", "")).encode("utf-8", "surrogateescape")
            if timestamps:
                data = logs_mod.stamp(float(line.get("t", 0))).encode() + b" " + data
            yield data if tty else frame(stream, data)

    return Stream(chunks(), content_type=RAW if tty else MULTIPLEXED)
