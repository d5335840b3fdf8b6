"""HTTP/1.1 framing for the Docker API socket: a request's head read and checked, a reply's head written.

Hand-written on purpose, where the rest of the project uses libraries. The stdlib's
http.server.BaseHTTPRequestHandler served this socket first. Measured in the agent with the docker CLI's
`network create` + `rm` (five requests a round), its parse_request, which hands the header block to
email.parser, took a median 0.23 ms per request, and send_response/send_header ~0.1 ms more: about
1.5 ms of the ~6 ms the agent spent on a round, the margin by which podman's Go server was ahead. This
module reads the same head in a few tens of microseconds. It keeps http.server's limits and answers:
a request line over 64 KiB is a 414, a header line over 64 KiB or more than 100 fields a 431, a
malformed line a 400, an HTTP version other than 1.x a 505. Bodies (Content-Length, chunked) are
BodyReader's (http.py).
"""

from __future__ import annotations

import time
from email.utils import formatdate
from http import HTTPStatus
from typing import BinaryIO, overload

MAX_LINE = 65536  # bytes in the request line or in one header line (http.server's _MAXLINE)
MAX_HEADERS = 100  # header fields in one request (http.client's _MAXHEADERS)


class BadRequest(Exception):
    """A request head that cannot be served: answered with `status`, then the connection is closed
    (where the next request would start is unknown)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class Headers:
    """A request's header fields. get(name) is case-insensitive and gives the first field of that name,
    as email.message.Message's did."""

    __slots__ = ("_fields",)

    def __init__(self) -> None:
        self._fields: dict[str, str] = {}

    def add(self, name: str, value: str) -> None:
        self._fields.setdefault(name.lower(), value)

    @overload
    def get(self, name: str) -> str | None: ...

    @overload
    def get(self, name: str, default: str) -> str: ...

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._fields.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._fields

    def __repr__(self) -> str:
        return f"Headers({self._fields!r})"


class RequestHead:
    __slots__ = ("method", "target", "version", "headers", "keep_alive", "expects_continue")

    def __init__(self, method: str, target: str, version: str, headers: Headers):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        connection = (headers.get("Connection") or "").lower()
        # HTTP/1.1 keeps the connection unless told otherwise; 1.0 only when asked (http.server's rule)
        self.keep_alive = "close" not in connection and (version == "HTTP/1.1" or "keep-alive" in connection)
        self.expects_continue = version == "HTTP/1.1" and (headers.get("Expect") or "").lower() == "100-continue"


def read_head(rfile: BinaryIO) -> RequestHead | None:
    """The next request's line and header fields; None if the client closed the connection before
    sending one. Raises BadRequest for a head that breaks the limits or the syntax."""
    line = rfile.readline(MAX_LINE + 1)
    for _ in range(8):  # a few empty lines before a request line are tolerated (RFC 9112, 2.2)
        if line not in (b"\r\n", b"\n"):
            break
        line = rfile.readline(MAX_LINE + 1)
    if not line:
        return None
    if len(line) > MAX_LINE:
        raise BadRequest(414, "request line too long")
    words = line.decode("latin-1").rstrip("\r\n").split()
    if len(words) != 3:
        raise BadRequest(400, f"bad request line {line[:80].decode('latin-1').rstrip()!r}")
    method, target, version = words
    if not version.startswith("HTTP/") or version.count(".") != 1:
        raise BadRequest(400, f"bad request version {version[:20]!r}")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequest(505, f"HTTP version {version[5:20]} is not supported")
    headers = Headers()
    for _ in range(MAX_HEADERS + 1):
        line = rfile.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise BadRequest(431, "header line too long")
        if line in (b"\r\n", b"\n"):
            return RequestHead(method, target, version, headers)
        if not line:
            raise ConnectionError("the client closed the connection mid-head")
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon or not name or name != name.strip() or " " in name:
            raise BadRequest(400, f"malformed header line {line[:80].decode('latin-1').rstrip()!r}")
        headers.add(name, value.strip())
    raise BadRequest(431, f"more than {MAX_HEADERS} header fields")


_date_cache: tuple[int, str] = (0, "")


def http_date() -> str:
    """The Date field's value, formatted once a second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]


def reply_head(status: int, fields: list[tuple[str, str]]) -> bytes:
    """The status line and `fields`, ending with the blank line."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    lines = [f"HTTP/1.1 {status} {reason}\r\n"]
    lines += [f"{name}: {value}\r\n" for name, value in fields]
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")
