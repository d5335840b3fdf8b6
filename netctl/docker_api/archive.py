"""`docker cp`: HEAD, GET and PUT /containers/{id}/archive, running or stopped containers alike.

The work is done by a process of its own (runner/archive.py) whose root is the container's file
system as Docker's copy sees it, so nothing a container's symlinks say can reach the host's files.
HEAD and GET answer with Docker's X-Docker-Container-Path-Stat header (base64 JSON); GET streams the
tar; PUT streams the body (a tar, plain or compressed) into a directory of the container. Paths as
Docker takes them: absolute in the container, "/dir/." for a directory's contents.

Every wait on the helper is bounded: it is killed after IDLE_TIMEOUT_S without a byte moved (a copy
as long as it keeps moving may take as long as it needs).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import subprocess
import sys
import threading
import time
import typing

from netctl.docker_api.containers_common import ID, find
from netctl.docker_api.http import ApiError, Empty, Json, Raw, Request, bad_request

log = logging.getLogger("netctl.docker_api")

IDLE_TIMEOUT_S = 60.0
STATUS_OF_EXIT = {2: 404, 3: 400, 4: 403}  # runner/archive.py EXIT_*; anything else is a 500
COPY_CHUNK = 1 << 16


class _Helper:
    """One run of runner/archive.py: its pipes (stdin only for put); stderr read on a thread so that
    a helper writing much there never blocks; a watchdog that kills it when no byte moved for
    IDLE_TIMEOUT_S (the caller calls moved() per chunk)."""

    def __init__(self, api, op: str, container, path: str, *flags: str, stdin: bool = False):
        self.container, self.path = container, path
        self.proc = subprocess.Popen(
            # -I: "/" (its cwd) never on sys.path, no PYTHON* variables: nothing of the container is code
            [sys.executable, "-I", "-m", "runner.archive", op, api.layout.root, container.id, path, *flags],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd="/",
        )  # fmt: skip
        self.stdout = typing.cast(io.BufferedReader, self.proc.stdout)
        self.stdin = typing.cast(io.BufferedWriter, self.proc.stdin)
        self._stderr = bytearray()
        self._last_move = time.monotonic()
        self._timed_out = False
        self._stderr_reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr_reader.start()
        threading.Thread(target=self._watch, daemon=True).start()

    def moved(self) -> None:
        self._last_move = time.monotonic()

    def _read_stderr(self) -> None:
        self._stderr.extend(typing.cast(io.BufferedReader, self.proc.stderr).read())

    def _watch(self) -> None:
        while self.proc.poll() is None:
            if time.monotonic() - self._last_move > IDLE_TIMEOUT_S:
                self._timed_out = True
                self.proc.kill()
                return
            time.sleep(0.5)

    def finish(self) -> int:
        """Its exit status, once it ended (the watchdog bounds the wait)."""
        self.proc.wait()
        self._stderr_reader.join(timeout=5)  # its last line, read to the pipe's end (a child of it may hold it)
        return self.proc.returncode

    def failure(self, req_path: str, ref: str) -> ApiError:
        """Its one line as Docker's error (a missing path worded as dockerd words it)."""
        if self._timed_out:
            return ApiError(500, f"copying {req_path} in container {ref} stalled for {IDLE_TIMEOUT_S:g} s; try again")
        lines = self._stderr.decode(errors="replace").strip().splitlines()
        line = lines[-1] if lines else f"copying failed (exit status {self.proc.returncode})"
        if line.startswith("not found: "):
            line = f"Could not find the file {req_path} in container {ref}"
        return ApiError(STATUS_OF_EXIT.get(self.proc.returncode, 500), line)


class _TarStream:
    """GET's body: the helper's tar; closing it (the reply sent, or the client gone) ends the helper.
    A helper that fails half-way ends the reply without its last chunk: the client sees an error, not
    a tar that looks whole."""

    def __init__(self, helper: _Helper, req_path: str, ref: str):
        self.helper, self.req_path, self.ref = helper, req_path, ref

    def read(self, size: int) -> bytes:
        data = self.helper.stdout.read1(size)
        self.helper.moved()
        if not data and self.helper.finish() != 0:
            log.warning("docker cp of %s from %s failed half-way: %s", self.req_path, self.ref,
                        self.helper.failure(self.req_path, self.ref).message)
            raise ConnectionAbortedError("the copy failed half-way")
        return data

    def close(self) -> None:
        if self.helper.proc.poll() is None:
            self.helper.proc.kill()
        with contextlib.suppress(OSError):
            self.helper.stdout.close()
        self.helper.finish()


def _path(req: Request) -> str:
    path = req.arg("path")
    if not path:
        raise bad_request("path is required: the file or directory in the container, e.g. ?path=/etc/hosts")
    return path


def _stat(api, ref: str, path: str) -> tuple[object, dict]:
    container = find(api, ref)
    helper = _Helper(api, "stat", container, path)
    out = helper.stdout.read()
    if helper.finish() != 0:
        raise helper.failure(path, ref)
    return container, json.loads(out)


def _stat_header(info: dict) -> dict[str, str]:
    from runner.archive import STAT_HEADER, encoded_stat

    return {STAT_HEADER: encoded_stat(info)}


def head(api, req: Request, ref: str) -> Empty:
    _, info = _stat(api, ref, _path(req))
    return Empty(200, _stat_header(info))


def get(api, req: Request, ref: str) -> Raw:
    container, path = find(api, ref), _path(req)
    helper = _Helper(api, "get", container, path)
    first = helper.stdout.readline()  # the stat, before a byte of the tar
    if not first:
        helper.finish()
        raise helper.failure(path, ref)
    body = typing.cast(typing.BinaryIO, _TarStream(helper, path, ref))  # read() and close(): all Raw uses
    return Raw(body, content_type="application/x-tar", headers=_stat_header(json.loads(first)))


def put(api, req: Request, ref: str) -> Empty:
    container, path = find(api, ref), _path(req)
    if req.flag("copyUIDGID") and container.config.user not in ("", "0", "root", "0:0", "root:root"):
        raise ApiError(400, f"copyUIDGID (docker cp -a) into container {ref}, which runs as user "
                            f"{container.config.user!r}, is not supported by netctl; copy without -a")
    flags = ["--no-overwrite-dir-non-dir"] if req.flag("noOverwriteDirNonDir") else []
    helper = _Helper(api, "put", container, path, *flags, stdin=True)
    body = req.stream()
    try:
        while chunk := body.read(COPY_CHUNK):
            helper.moved()
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
        raise helper.failure(path, ref)
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
    ("POST", f"/containers/{ID}/update", refuse("update (changing a created container's resources)")),
    ("GET", f"/containers/{ID}/export", refuse("export (a container's file system as one tar; use `docker cp "
                                                "CONTAINER:/ -`)")),
    ("GET", f"/containers/{ID}/changes", refuse("changes (a container's file system diff)")),
]
