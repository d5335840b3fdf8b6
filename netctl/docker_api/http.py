"""The Docker Engine API's request and reply types (the contract in /work/notes/docker_api_interface.md).

A handler takes (api, req: Request, **path groups) and returns one of the replies below, or raises
ApiError; server.py turns either into HTTP/1.1 over the Unix socket. Nothing here does I/O except
Request's lazy body reading.
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

MAX_JSON_BODY = 16 << 20  # a JSON body larger than this is not a Docker client's


class ApiError(Exception):
    """Answered as JSON {"message": message} with `status` (304 and 204: no body)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def status_of(err: Exception) -> int:
    """The HTTP status of a netctl error (libnetwork/errors.py), as dockerd's for the same cases."""
    from libnetwork.errors import AlreadyExists, InUse, InvalidArgument, NotFound

    if isinstance(err, ApiError):
        return err.status
    if isinstance(err, NotFound):
        return 404
    if isinstance(err, (AlreadyExists, InUse)):
        return 409
    if isinstance(err, InvalidArgument):
        return 400
    return 500


def not_found(message: str) -> ApiError:
    return ApiError(404, message)


def conflict(message: str) -> ApiError:
    return ApiError(409, message)


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def not_modified() -> ApiError:
    return ApiError(304, "")


def unsupported(what: str) -> ApiError:
    """400 for something a Docker client may ask that netctl does not do: named, never ignored."""
    return ApiError(400, f"{what} is not supported by netctl")


# --- requests ------------------------------------------------------------------------------------


def version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (0,)


class BodyReader:
    """The request body as a file: Content-Length bytes or chunked transfer coding, read on demand."""

    def __init__(self, rfile: Any, length: int | None, chunked: bool):
        self._rfile = rfile
        self._left = length if length is not None else 0
        self._chunked = chunked
        self._chunk_left = 0
        self._broken = False
        self.done = not chunked and self._left == 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            parts: list[bytes] = []
            while True:
                part = self.read(1 << 16)
                if not part:
                    return b"".join(parts)
                parts.append(part)
        if self._broken:  # past a malformed chunk: where the body ends is unknown
            raise ApiError(400, "malformed chunked request body")
        if self.done or size == 0:
            return b""
        if not self._chunked:
            data = self._rfile.read(min(size, self._left))
            if not data:
                raise ConnectionError("the client closed the connection mid-body")
            self._left -= len(data)
            self.done = self._left == 0
            return data
        if self._chunk_left == 0:
            line = self._rfile.readline(1024)
            if not line:
                raise ConnectionError("the client closed the connection mid-body")
            try:
                self._chunk_left = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                self._broken = True
                raise ApiError(400, "malformed chunked request body") from None
            if self._chunk_left < 0:  # read(-n) would read to the client's close
                self._chunk_left, self._broken = 0, True
                raise ApiError(400, "malformed chunked request body: a negative chunk size")
            if self._chunk_left == 0:
                # trailer lines up to the empty one
                for _ in range(64):
                    if self._rfile.readline(1024) in (b"\r\n", b"\n", b""):
                        break
                self.done = True
                return b""
        data = self._rfile.read(min(size, self._chunk_left))
        if not data:
            raise ConnectionError("the client closed the connection mid-body")
        self._chunk_left -= len(data)
        if self._chunk_left == 0:
            self._rfile.readline(16)  # the CRLF after a chunk
        return data

    def drain(self, limit: int = 1 << 20) -> bool:
        """Read what the handler left; False if more than `limit` was left or the body is malformed
        (close instead)."""
        read = 0
        while not self.done:
            if self._broken:
                return False
            try:
                part = self.read(1 << 16)
            except ApiError:  # answered already (the handler met it first) or not: the connection goes
                return False
            read += len(part)
            if read > limit:
                return False
        return True


@dataclass
class Request:
    method: str
    path: str  # without the /v1.xx prefix
    version: str  # the negotiated API version
    query: dict[str, list[str]]
    headers: Any  # http1.Headers: .get(name) is case-insensitive
    sock: socket.socket
    rfile: Any  # the connection's buffered reader (BufferedIOBase)
    reader: BodyReader
    _body: bytes | None = field(default=None, repr=False)

    @property
    def body(self) -> bytes:
        if self._body is None:
            data = self.reader.read(MAX_JSON_BODY + 1)
            while len(data) <= MAX_JSON_BODY and not self.reader.done:
                more = self.reader.read(MAX_JSON_BODY + 1 - len(data))
                if not more:
                    break
                data += more
            if len(data) > MAX_JSON_BODY:
                raise ApiError(413, f"request body larger than {MAX_JSON_BODY} bytes")
            self._body = data
        return self._body

    def stream(self) -> BodyReader:
        """The body unread, for handlers that take a large upload (images/load)."""
        return self.reader

    def json(self, default: Any = None) -> Any:
        data = self.body
        if not data.strip():
            return default
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError) as err:
            raise ApiError(400, f"malformed JSON: {err}") from None

    def json_object(self) -> dict:
        """The body as a JSON object ({} when empty); 400 when it is another JSON value."""
        value = self.json({})
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ApiError(400, "malformed JSON: the request body must be a JSON object")
        return value

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.arg(name)
        if value is None or value == "":
            return default
        return value.lower() in ("1", "true", "yes")

    def int_arg(self, name: str, default: int | None = None) -> int | None:
        value = self.arg(name)
        if value is None or value == "":
            return default
        try:
            return int(value)
        except ValueError:
            raise ApiError(400, f"invalid value for {name!r}: {value!r} is not an integer") from None

    def filters(self) -> dict[str, list[str]]:
        """Docker's `filters` query parameter: {"key": ["v", …]} or the older {"key": {"v": true}}."""
        raw = self.arg("filters")
        if not raw:
            return {}
        try:
            value = json.loads(raw)
        except ValueError as err:
            raise ApiError(400, f"invalid filters: {err}") from None
        if not isinstance(value, dict):
            raise ApiError(400, "invalid filters: expected a JSON object")
        out: dict[str, list[str]] = {}
        for key, values in value.items():
            if isinstance(values, dict):
                out[str(key)] = [str(v) for v, on in values.items() if on]
            elif isinstance(values, list):
                out[str(key)] = [str(v) for v in values]
            elif isinstance(values, str):
                out[str(key)] = [values]
            else:
                raise ApiError(400, f"invalid filters: the value of {key!r} must be a list")
        return out

    def version_at_least(self, version: str) -> bool:
        return version_tuple(self.version) >= version_tuple(version)

    def client_gone(self) -> bool:
        """Whether the client closed its side: a streaming handler with nothing to send checks this
        now and then (events), so that a client that left does not keep a thread."""
        import select

        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
            if not readable:
                return False
            return self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (OSError, ValueError):
            return True


def check_filters(filters: dict[str, list[str]], allowed: set[str]) -> None:
    """Docker refuses a filter it does not know: 'invalid filter "x"'."""
    for key in filters:
        if key not in allowed:
            raise ApiError(400, f"invalid filter '{key}'")


# --- replies -------------------------------------------------------------------------------------


@dataclass
class Json:
    obj: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Empty:
    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Stream:
    """Chunked; the iterator ends the reply, a client closing ends the iterator (GeneratorExit)."""

    chunks: Iterator[bytes]
    content_type: str = "application/json"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Raw:
    data: bytes | BinaryIO | Iterator[bytes]
    content_type: str = "application/x-tar"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Hijack:
    """Take over the connection: 101 UPGRADED when the client asked `Upgrade: tcp`, else 200; then
    run(sock, rfile) owns the socket until it returns (the connection is closed afterwards)."""

    run: Callable[[socket.socket, Any], None]
    multiplexed: bool


Reply = Json | Empty | Stream | Raw | Hijack


def frame(stream: int, data: bytes) -> bytes:
    """One stdcopy frame: [stream, 0, 0, 0, length as u32 big-endian] + data."""
    return struct.pack(">BxxxI", stream, len(data)) + data


def json_line(obj: Any) -> bytes:
    """One line of a streamed JSON reply (progress, events)."""
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"
