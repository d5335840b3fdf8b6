"""Local sockets between netctl's processes: one framing, one peer check, one single-instance lock.

The host agent (`netctl daemon`: ROOT/netctl.sock) and the container monitor (ROOT/monitor.sock) both
serve clients over a unix stream socket with this module; the CLI's thin client and the CNI plugin
launcher talk to them with it.

A frame is a 5-byte header - kind (u8) and length (u32, big-endian) - and a payload:
    kind 0  a JSON object: a request {"op": ...} or an event {"event": ...}
    kind 1  bytes for stdout (a command's output, a container's stdout or terminal)
    kind 2  bytes for stderr
    kind 3  bytes for stdin (a CNI request's configuration)
File descriptors (a client's stdin, a container's terminal) travel as SCM_RIGHTS beside a JSON frame.

Who may connect: the socket file is 0600 (root) or 0660 with a group (`--group`), and every accepted
connection is checked again by its peer's credentials (SO_PEERCRED): root, our own uid, or a member
of that group. The file mode alone is not enough: a socket passed down to another process, or a
directory mode changed by hand, would let anyone in.

Clients import this module on their hot path (a CNI plugin starts Python with -I -S and has not even
loaded `os`), so its top level imports only C modules; servers' helpers import the rest when called.
"""

from __future__ import annotations

import _socket
import _struct

JSON, STDOUT, STDERR, STDIN = 0, 1, 2, 3
HEADER_SIZE = 5
MAX_FRAME = 1 << 24  # 16 MiB: far above any request or output chunk, far below memory trouble
MAX_FDS = 4
_HEADER = _struct.Struct("!BI")


# --- framing ------------------------------------------------------------------------------------


def frame(kind: int, payload: bytes) -> bytes:
    return _HEADER.pack(kind, len(payload)) + payload


def message(data: dict) -> bytes:
    return frame(JSON, dumps(data).encode())


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
        while len(self.buffer) >= HEADER_SIZE:
            kind, length = _HEADER.unpack_from(self.buffer)
            if length > MAX_FRAME:
                raise ValueError(f"frame of {length} bytes is too large")
            if len(self.buffer) < HEADER_SIZE + length:
                return
            payload = bytes(self.buffer[HEADER_SIZE:HEADER_SIZE + length])
            del self.buffer[:HEADER_SIZE + length]
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
            fds += list(_struct.unpack(f"{usable // 4}i", payload[:usable]))
    if fds:
        import os

        for fd in fds:
            os.set_inheritable(fd, False)
    reader.feed(data, fds)
    return bool(data)


def send_with_fds(sock, data: bytes, fds: list[int]) -> None:
    """Send a (small) frame with descriptors attached; blocking until all of it is sent."""
    if fds:
        sent = sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, _struct.pack(f"{len(fds)}i", *fds))])
        data = data[sent:]
    if data:
        sock.sendall(data)


def read_frames(sock, reader: FrameReader | None = None):
    """Blocking: yield (kind, payload) frames from `sock` until the peer closes the connection."""
    reader = reader or FrameReader()
    while True:
        yield from reader.frames()
        chunk = sock.recv(1 << 16)
        if not chunk:
            return
        reader.feed(chunk)


def call(sock, request: bytes, timeout: float) -> tuple[dict | None, bytes, bytes]:
    """Send `request` and read the answer: (the first JSON event, or None if the server closed the
    connection without one; what came as STDOUT; what came as STDERR). OSError and ValueError (a
    broken frame) are the caller's to report: whether the server did the work is then unknown."""
    sock.settimeout(timeout)
    sock.sendall(request)
    out, err = [], []
    for kind, payload in read_frames(sock):
        if kind == STDOUT:
            out.append(payload)
        elif kind == STDERR:
            err.append(payload)
        elif kind == JSON:
            event = loads(payload)
            return (event if isinstance(event, dict) else {}), b"".join(out), b"".join(err)
    return None, b"".join(out), b"".join(err)


# --- JSON through CPython's own accelerator -------------------------------------------------------
# `import json` costs a cold CLI call ~7 ms, most of it `re` for the decoder's whitespace pattern, and
# our frames need none of it (compact objects of str, int, float, bool, None, lists and dicts).


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
        raise ValueError(f"{name} is not allowed in a frame")


def _codec():
    try:
        import _json

        encode = _json.make_encoder(None, _no_default, _json.encode_basestring_ascii, None, ":", ",",
                                    False, False, False)
        # _DecodeContext has the attributes the C scanner reads; typeshed wants a JSONDecoder.
        scan = _json.make_scanner(_DecodeContext())  # type: ignore[arg-type]
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
    raise TypeError(f"{type(obj).__name__} cannot be sent in a frame")


dumps, loads = _codec()


# --- clients ------------------------------------------------------------------------------------


def try_connect(path: str):
    """A connected _socket to the server at `path`, or None when nobody listens there (no file, a
    stale file of a dead server, a path too long). Permission errors are raised: they need a word."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
        return sock
    except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
        sock.close()
        return None
    except OSError as err:
        sock.close()
        if err.errno == 13:  # EACCES: there is a server, we may not talk to it
            raise
        return None


# --- servers ------------------------------------------------------------------------------------


def lock_instance(lock_path: str, note: str = "") -> int | None:
    """Hold `lock_path` (flock) for the life of the process, with our PID (and `note`) in it; None
    when another process holds it. The file is never removed: removing a locked file lets a third
    process lock a new one while a second still waits on the old."""
    import fcntl
    import os

    os.makedirs(os.path.dirname(lock_path), mode=0o700, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}{' ' + note if note else ''}\n".encode())
    return fd


def lock_holder(lock_path: str) -> tuple[int, str]:
    """(pid, note) written by the process holding `lock_path`; (0, "") if unreadable."""
    try:
        with open(lock_path) as f:
            pid, _, note = f.read().strip().partition(" ")
        return int(pid), note
    except (OSError, ValueError):
        return 0, ""


def listen(path: str, *, group: str = "", nonblocking: bool = False, backlog: int = 128):
    """A listening socket at `path`. Call with the instance lock held: a file already there is then a
    stale one of a dead server, and is replaced. Mode 0600, or 0660 owned by `group`."""
    import os
    import shutil
    import socket
    import tempfile

    gid = group_id(group) if group else -1
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    flags = socket.SOCK_STREAM | socket.SOCK_CLOEXEC | (socket.SOCK_NONBLOCK if nonblocking else 0)
    sock = socket.socket(socket.AF_UNIX, flags)
    # Bound in a private (0700) directory beside `path`, given its mode there and renamed into place:
    # never a moment with a wider mode than 0600/0660 at `path`, without os.umask, which is the whole
    # process's (the agent's other threads would create their files with it meanwhile).
    private = tempfile.mkdtemp(prefix=".", dir=os.path.dirname(os.path.abspath(path)))
    try:
        temporary = os.path.join(private, "s")
        if len(os.fsencode(temporary)) > 107:  # longer than `path` and than AF_UNIX takes: bind in place,
            temporary = path  # the moment before the chmod has the umask's mode (the peer check holds)
        sock.bind(temporary)
        if gid >= 0:
            os.chown(temporary, 0, gid)
        os.chmod(temporary, 0o660 if gid >= 0 else 0o600)
        if temporary != path:
            os.rename(temporary, path)
    except OSError:
        sock.close()
        raise
    finally:
        shutil.rmtree(private, ignore_errors=True)
    sock.listen(backlog)
    return sock


def group_id(group: str) -> int:
    """The gid of a group name, or a number taken as it is; InvalidArgument naming an unknown name."""
    import grp

    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        from libnetwork.errors import InvalidArgument

        raise InvalidArgument(f"group {group!r} does not exist; create it or pass another --group") from None


def peer_credentials(sock) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a unix socket."""
    raw = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
    pid, uid, gid = _struct.unpack("3i", raw)
    return pid, uid, gid


def same_network_namespace(sock) -> bool:
    """Whether the peer runs in our network namespace. A host's agent acts on the host's namespace:
    a command run with `ip netns exec X netctl ...` means X, which the agent is not in, so such a
    client runs its command itself. A peer we cannot see (another PID namespace) counts as ours: it
    reached a socket inside our root."""
    import os

    pid, _, _ = peer_credentials(sock)
    if pid <= 0:
        return True
    try:
        theirs = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        return True
    ours = os.stat("/proc/self/ns/net")
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def authorized(sock, gid: int = -1) -> bool:
    """Whether the peer may use this server: root, our own uid, or (with gid >= 0) a member of that
    group, by its primary group or a supplementary one (read from /proc: SO_PEERCRED has only the
    primary)."""
    import os

    pid, uid, peer_gid = peer_credentials(sock)
    if uid in (0, os.getuid()):
        return True
    if gid < 0:
        return False
    if peer_gid == gid:
        return True
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Groups:"):
                    return str(gid) in line.split()[1:]
    except OSError:
        pass
    return False
