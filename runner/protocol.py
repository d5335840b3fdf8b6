"""The monitor's wire format, on a unix stream socket (ROOT/monitor.sock).

A frame is a 5-byte header - kind (u8) and length (u32, big-endian) - and a payload:
    kind 0  a JSON object: a request {"op": ...} from a client, an event {"event": ...} from the monitor
    kind 1  bytes the container wrote to stdout (or its terminal)
    kind 2  bytes the container wrote to stderr
File descriptors (a client's stdin, a container's terminal) travel as SCM_RIGHTS beside a JSON frame.
Errors come back as {"event": "error", "kind": "<NetctlError subclass>", "message": "..."} and are
raised again on the client side as the same class, so the CLI prints the monitor's one line.
"""

from __future__ import annotations

import _socket
import os
import struct

from libnetwork import errors

VERSION = 1
HEADER = struct.Struct("!BI")
JSON, STDOUT, STDERR = 0, 1, 2
MAX_FRAME = 1 << 24
MAX_FDS = 4


def frame(kind: int, payload: bytes) -> bytes:
    return HEADER.pack(kind, len(payload)) + payload


def message(data: dict) -> bytes:
    return frame(JSON, dumps(data).encode())


# JSON through CPython's own accelerator (_json), which the json package wraps: `import json` costs a
# `netctl run` ~7 ms, most of it `re` for the decoder's whitespace pattern, and our frames need none of
# it (compact objects of str, int, float, bool, None, lists and dicts; no surrounding whitespace).


class _DecodeContext:
    """The attributes _json.make_scanner reads (those of json.JSONDecoder's defaults)."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict = {}

    @staticmethod
    def parse_constant(name: str):
        raise ValueError(f"{name} is not allowed in a monitor frame")


def _codec():
    try:
        import _json

        encode = _json.make_encoder(None, _no_default, _json.encode_basestring_ascii, None, ":", ",", False, False, False)
        scan = _json.make_scanner(_DecodeContext())
    except (ImportError, AttributeError, TypeError):  # another Python: the json package does the same
        import json

        return lambda obj: json.dumps(obj, separators=(",", ":"), allow_nan=False), json.loads

    def dumps_c(obj) -> str:
        return "".join(encode(obj, 0))

    def loads_c(text):
        if isinstance(text, (bytes, bytearray)):
            text = text.decode("utf-8")
        try:
            value, end = scan(text, 0)
        except StopIteration as err:
            raise ValueError(f"not JSON at offset {err.value}") from None
        if end != len(text):
            raise ValueError(f"extra data after JSON at offset {end}")
        return value

    return dumps_c, loads_c


def _no_default(obj):
    raise TypeError(f"{type(obj).__name__} cannot be sent to the monitor")


dumps, loads = _codec()


class FrameReader:
    """Accumulates received bytes (and file descriptors) and yields whole frames."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.fds: list[int] = []

    def feed(self, data: bytes, fds: list[int] | None = None) -> None:
        self.buffer += data
        if fds:
            self.fds += fds

    def frames(self):
        while len(self.buffer) >= HEADER.size:
            kind, length = HEADER.unpack_from(self.buffer)
            if length > MAX_FRAME:
                raise ValueError(f"frame of {length} bytes is too large")
            if len(self.buffer) < HEADER.size + length:
                return
            payload = bytes(self.buffer[HEADER.size:HEADER.size + length])
            del self.buffer[:HEADER.size + length]
            yield kind, payload

    def take_fds(self) -> list[int]:
        fds, self.fds = self.fds, []
        return fds


def receive(sock, reader: FrameReader, size: int = 1 << 16) -> bool:
    """One recvmsg from `sock` (socket or _socket object) into `reader`; False at end of stream."""
    data, ancillary, _, _ = sock.recvmsg(size, _socket.CMSG_SPACE(MAX_FDS * 4))
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            fds += list(struct.unpack(f"{usable // 4}i", payload[:usable]))
    for fd in fds:
        os.set_inheritable(fd, False)
    reader.feed(data, fds)
    return bool(data)


def send_with_fds(sock, data: bytes, fds: list[int]) -> None:
    """Send a (small) frame with descriptors attached; blocking until all of it is sent."""
    if fds:
        sent = sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))])
        data = data[sent:]
    if data:
        sock.sendall(data)


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
