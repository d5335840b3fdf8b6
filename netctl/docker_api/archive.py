"""`docker cp`: HEAD, GET and PUT /containers/{id}/archive, running or stopped containers alike.

The work is done by a process of its own (runner/archive.py) that sees the container's file system as
its root, so nothing a container's symlinks say can reach the host's files. HEAD and GET answer with
Docker's X-Docker-Container-Path-Stat header (base64 JSON); GET streams the tar; PUT streams the body
(a tar, plain or compressed) into a directory of the container. Paths as Docker takes them: absolute
in the container, "/dir/." for a directory's contents.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import threading
import typing

from netctl.docker_api.containers_common import ID, find
from netctl.docker_api.http import ApiError, Empty, Json, Raw, Request, bad_request

HELPER_TIMEOUT_S = 30.0  # stat, or the helper's exit after the tar ended
STATUS_OF_EXIT = {2: 404, 3: 400, 4: 403}  # runner/archive.py EXIT_*; anything else is a 500
COPY_CHUNK = 1 << 16


class _Helper:
    """One run of runner/archive.py: its pipes (stdin only for put), its stderr read on a thread so
    that a helper writing much there never blocks while we read or write its other pipes."""

    def __init__(self, api, op: str, container, path: str, *flags: str, stdin: bool = False):
        self.container = container
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runner.archive", op, api.layout.root, container.id, path, *flags],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd="/",
        )  # fmt: skip
        self.stdout = typing.cast(io.BufferedReader, self.proc.stdout)
        self.stdin = typing.cast(io.BufferedWriter, self.proc.stdin)
        self._stderr = bytearray()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        self._stderr.extend(typing.cast(io.BufferedReader, self.proc.stderr).read())

    def finish(self) -> int:
        """Its exit status, waited for (bounded: then killed)."""
        try:
            self.proc.wait(timeout=HELPER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=HELPER_TIMEOUT_S)
        return self.proc.returncode

    def failure(self) -> ApiError:
        """Its one line as Docker's error; a missing path names the container as Docker's message does."""
        lines = self._stderr.decode(errors="replace").strip().splitlines()
        line = lines[-1] if lines else f"copying failed (exit status {self.proc.returncode})"
        if line.startswith("Could not find the file"):
            line += f" in container {self.container.name}"
        return ApiError(STATUS_OF_EXIT.get(self.proc.returncode, 500), line)


def _path(req: Request) -> str:
    path = req.arg("path")
    if not path:
        raise bad_request("path is required: the file or directory in the container, e.g. ?path=/etc/hosts")
    return path


def _stat(api, container, path: str) -> dict:
    helper = _Helper(api, "stat", container, path)
    out = helper.stdout.read()
    if helper.finish() != 0:
        raise helper.failure()
    return json.loads(out)


def _stat_header(info: dict) -> dict[str, str]:
    from runner.archive import STAT_HEADER, encoded_stat

    return {STAT_HEADER: encoded_stat(info)}


def head(api, req: Request, ref: str) -> Empty:
    container = find(api, ref)
    return Empty(200, _stat_header(_stat(api, container, _path(req))))


def get(api, req: Request, ref: str) -> Raw:
    container = find(api, ref)
    helper = _Helper(api, "get", container, _path(req))
    first = helper.stdout.readline()  # the stat, before a byte of the tar
    if not first:
        helper.finish()
        raise helper.failure()
    info = json.loads(first)

    def chunks():
        try:
            while chunk := helper.stdout.read1(COPY_CHUNK):
                yield chunk
        finally:  # the tar's end, or the client gone (the generator closed): the helper goes too
            helper.stdout.close()
            helper.finish()

    return Raw(chunks(), content_type="application/x-tar", headers=_stat_header(info))


def put(api, req: Request, ref: str) -> Empty:
    container = find(api, ref)
    flags = ["--no-overwrite-dir-non-dir"] if req.flag("noOverwriteDirNonDir") else []
    helper = _Helper(api, "put", container, _path(req), *flags, stdin=True)
    body = req.stream()
    try:
        while chunk := body.read(COPY_CHUNK):
            try:
                helper.stdin.write(chunk)
            except BrokenPipeError:  # the helper stopped (a refused entry): its message says why; the
                break  # server closes the connection if much of the body is left unread
    except BaseException:  # the client went mid-body: the helper must not take a part for the whole
        helper.proc.kill()
        raise
    finally:
        with contextlib.suppress(BrokenPipeError):
            helper.stdin.close()
        helper.finish()
    if helper.proc.returncode != 0:
        raise helper.failure()
    return Empty(200)


def refuse(what: str):
    def handler(api, req: Request, ref: str) -> Json:
        find(api, ref)  # an unknown container is a 404 first, as dockerd's
        raise ApiError(400, f"{what} is not supported by netctl")

    return handler


ROUTES = [
    ("HEAD", f"/containers/{ID}/archive", head),
    ("GET", f"/containers/{ID}/archive", get),
    ("PUT", f"/containers/{ID}/archive", put),
    ("POST", f"/containers/{ID}/pause", refuse("pause (freezing a container)")),
    ("POST", f"/containers/{ID}/unpause", refuse("unpause (freezing a container)")),
    ("POST", f"/containers/{ID}/update", refuse("update (changing a created container's resources)")),
    ("GET", f"/containers/{ID}/export", refuse("export (a container's file system as one tar; use `docker cp "
                                                "CONTAINER:/ -`)")),
    ("GET", f"/containers/{ID}/changes", refuse("changes (a container's file system diff)")),
]
