"""Docker's exec endpoints, on the monitor's exec requests (runner/monitor_exec.py, which forks the
process with the same plan and spawn as `netctl exec`): create records it, start runs it (a hijacked
stream: raw with a terminal, stdcopy frames without; or detached), inspect gives its exit code, resize
sets its terminal's size.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading

from libnetwork.errors import InUse
from netctl.docker_api.containers_common import ID, find, monitor_call, publish
from netctl.docker_api.containers_config import refuse
from netctl.docker_api.containers_io import (
    DEFAULT_DETACH_KEYS,
    _copy_in,
    _first_event,
    parse_detach_keys,
    wait_until_read,
)
from netctl.docker_api.http import Empty, Hijack, Json, Request, bad_request, conflict, frame

log = logging.getLogger("netctl.docker_api")

EXEC = r"(?P<exec_id>[0-9a-f]+)"


def create(api, req: Request, ref: str) -> Json:
    from runner import spec

    container = find(api, ref)
    body = req.json_object()
    if body.get("Privileged"):
        raise refuse("Privileged exec")
    argv = body.get("Cmd") or []
    if isinstance(argv, str):
        argv = [argv]
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise bad_request("No exec command specified")
    for key in ("User", "WorkingDir"):
        if not isinstance(body.get(key) or "", str):
            raise bad_request(f"invalid {key}: expected a string")
    if not isinstance(body.get("Env") or [], list):
        raise bad_request("invalid Env: expected a list of strings")
    env = [e for e in body.get("Env") or [] if isinstance(e, str) and "=" in e]
    given_keys = body.get("DetachKeys") or body.get("detachKeys") or ""  # docker-py sends detachKeys (Go
    if not isinstance(given_keys, str):  # reads JSON names without regard to case)
        raise bad_request("invalid DetachKeys: expected a string")
    detach_keys = parse_detach_keys(given_keys or DEFAULT_DETACH_KEYS)
    user = spec.parse_user(body.get("User") or "") if body.get("User") else ""
    workdir = spec.check_workdir(body.get("WorkingDir") or "")
    if container.state.status != "running":
        raise conflict(f"Container {container.id} is not running")
    if container.state.paused:
        raise conflict(f"Container {container.id} is paused, unpause the container before exec")
    try:
        event = monitor_call(api, {"op": "exec_create", "ref": container.id, "argv": argv, "env": env, "user": user,
                                   "workdir": workdir, "tty": bool(body.get("Tty")),
                                   "stdin": bool(body.get("AttachStdin"))})  # fmt: skip
    except InUse as err:
        raise conflict(err.message if "paused" in err.message else f"Container {container.id} is not running") \
            from None
    publish(api, container, "exec_create: " + " ".join(argv), execID=event["id"])
    with _keys_lock:
        _detach_keys_of(api)[event["id"]] = detach_keys
    return Json({"Id": event["id"]}, status=201)


_keys_lock = threading.Lock()
MAX_UNSTARTED = 4096  # detach keys kept for execs created and not started yet (the oldest go first)


def _detach_keys_of(api) -> dict[str, bytes]:
    """Exec id -> its detach keys (exec create's DetachKeys, dockerd's ctrl-p,ctrl-q by default), until
    its start; bounded."""
    keys: dict[str, bytes] = api.__dict__.setdefault("exec_detach_keys", {})
    while len(keys) > MAX_UNSTARTED:
        keys.pop(next(iter(keys)))
    return keys


def _record(api, exec_id: str) -> dict:
    from libnetwork.errors import NotFound

    try:
        return monitor_call(api, {"op": "exec_inspect", "id": exec_id})
    except NotFound:
        from netctl.docker_api.http import not_found

        raise not_found(f"No such exec instance: {exec_id}") from None


def start(api, req: Request, exec_id: str) -> Empty | Hijack:
    """Detached: started before the answer. Attached: the answer (101) goes out first and the process
    starts after it, as dockerd does: a client reading the reply's headers through a buffer (docker-py)
    would otherwise find a quick process's output in that buffer, past the headers, and lose it. What
    can be refused is checked before: an unknown or started exec, a container not running."""
    from runner import client

    body = req.json_object()
    record = _record(api, exec_id)
    container = find(api, record["container"])
    if record.get("pid") or record.get("running"):
        raise conflict(f"exec {exec_id[:12]} has already been started")
    if container.state.status != "running":
        raise conflict(f"Container {container.id} is not running")
    detach = bool(body.get("Detach"))
    command = " ".join(record.get("argv", []))
    if detach:
        with client.Session(api.layout, {"op": "exec_start", "id": exec_id, "detach": True}) as session:
            try:
                _first_event(session)
            except InUse as err:
                raise conflict(err.message) from None
        publish(api, container, "exec_start: " + command, execID=exec_id)
        _watch_die(api, container, exec_id, command)
        return Empty(200)
    tty = bool(record.get("tty"))
    with _keys_lock:
        detach_keys = _detach_keys_of(api).pop(exec_id, parse_detach_keys(DEFAULT_DETACH_KEYS))

    def run(sock, rfile) -> None:
        from libnetwork.errors import NetctlError
        from runner import protocol

        code = None
        session = None
        try:
            try:
                wait_until_read(sock)  # then start: its first output must not ride with the headers
                session = client.Session(api.layout, {"op": "exec_start", "id": exec_id, "detach": False})
                stdin_fd = _first_event(session)
            except NetctlError as err:  # after the 101: the stream carries the error, as dockerd's
                message = f"exec failed: {err.message}\n".encode()
                sock.sendall(message if tty else frame(protocol.STDERR, message))
                return
            publish(api, container, "exec_start: " + command, execID=exec_id)
            if stdin_fd >= 0:  # the detach keys end this stream; the process goes on, as with dockerd
                def detached() -> None:
                    for end in (session.sock, sock):
                        with contextlib.suppress(OSError):
                            end.shutdown(2)

                threading.Thread(target=_copy_in, args=(rfile, stdin_fd, detach_keys, detached), name="exec-stdin",
                                 daemon=True).start()  # fmt: skip
            for kind, payload, fds in session.frames():
                for fd in fds:
                    os.close(fd)
                if kind in (protocol.STDOUT, protocol.STDERR):
                    sock.sendall(payload if tty else frame(kind, payload))
                elif kind == protocol.JSON:
                    event = protocol.loads(payload)
                    if event.get("event") == "exit":
                        code = event.get("code")
                        break
        except OSError as err:
            log.info("exec %s stream ended: %s", exec_id[:12], err)
        finally:
            if session is not None:
                session.close()
            with contextlib.suppress(OSError):
                sock.shutdown(2)
            if code is not None:
                publish(api, container, "exec_die", execID=exec_id, exitCode=code)

    return Hijack(run, multiplexed=not tty)


def _watch_die(api, container, exec_id: str, command: str) -> None:
    """A detached exec: exec_die when it ends (polled: the monitor keeps no waiter for execs). The poll
    backs off from 0.1 to 2 s: a hundred long-lived `docker exec -d` would otherwise ask the monitor a
    thousand times a second."""
    import time

    def watch() -> None:
        delay, deadline = 0.1, time.monotonic() + 3600.0  # at most an hour of polling
        while time.monotonic() < deadline:
            if api.stopping.wait(delay):
                return
            delay = min(delay * 1.5, 2.0)
            try:
                record = monitor_call(api, {"op": "exec_inspect", "id": exec_id})
            except Exception:  # noqa: BLE001 - the monitor or the record went: nothing to report
                return
            if not record.get("running"):
                publish(api, container, "exec_die", execID=exec_id, exitCode=record.get("exit_code"))
                return

    threading.Thread(target=watch, name=f"exec-{exec_id[:12]}", daemon=True).start()


def inspect(api, req: Request, exec_id: str) -> Json:
    record = _record(api, exec_id)
    argv = record.get("argv") or [""]
    return Json({
        "ID": record["id"], "Running": bool(record.get("running")), "ExitCode": record.get("exit_code"),
        "ProcessConfig": {"tty": bool(record.get("tty")), "entrypoint": argv[0], "arguments": argv[1:],
                          "privileged": False, "user": record.get("user", "")},
        "OpenStdin": bool(record.get("stdin")), "OpenStderr": True, "OpenStdout": True, "CanRemove": False,
        "ContainerID": record.get("container", ""), "DetachKeys": "", "Pid": record.get("pid", 0),
    })  # fmt: skip


def resize(api, req: Request, exec_id: str) -> Empty:
    _record(api, exec_id)
    monitor_call(api, {"op": "exec_resize", "id": exec_id, "h": req.int_arg("h", 0), "w": req.int_arg("w", 0)})
    return Empty(200)


ROUTES = [
    ("POST", f"/containers/{ID}/exec", create),
    ("POST", f"/exec/{EXEC}/start", start),
    ("GET", f"/exec/{EXEC}/json", inspect),
    ("POST", f"/exec/{EXEC}/resize", resize),
]
