"""What a netctl CNI plugin executable runs first. Start-up time is this module's whole point.

Runtimes exec a plugin for every VERSION probe and every ADD/DEL, so this module imports nothing
beyond what the interpreter has already loaded until it knows what the request needs:

  * VERSION is answered from constants (not even `os` is imported: with -I -S the interpreter
    has not loaded it, and it costs ~1.5 ms of a ~10 ms start; its built-in half `posix` is free);
  * any other command goes to the CNI service (cni_plugins/server.py) if one listens on
    ROOT/cni.sock: one connect, the raw environment and stdin out, the raw answer back (only
    `_socket`, no JSON, no libnetwork);
  * otherwise (no service, or one serving another root) the request runs in this process
    (cni_plugins/skel.py), which pays for importing libnetwork.

The executables are tiny scripts (cni_plugins/install.py writes them) starting Python with -I -S:
no site, no .pth processing, no user environment; they put the package's directory on sys.path.
Output goes straight to fds 1 and 2 and the process ends with _exit: interpreter finalization
(tearing down every module) costs ~2 ms of a ~12 ms call, for nothing that matters here.
"""

import posix

DEFAULT_ROOT = "/var/lib/netctl"
SOCKET_NAME = "cni.sock"
ROOT_KEY = b'"netctlRoot"'
SUPPORTED = b'["0.1.0","0.2.0","0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]'
SERVICE_TIMEOUT_S = 150.0  # longer than the service's own bounds (delegated plugins: 120 s)
NOT_SERVED = 255  # the service's answer for "not my root: run it yourself"
NAMES = {"bridge": "netctl-bridge", "overlay": "netctl-overlay", "null": "netctl-null", "ipam": "netctl-ipam"}


def main(plugin: str) -> None:
    command = posix.environ.get(b"CNI_COMMAND", b"")
    if command == b"VERSION":
        _write(1, version_reply(b"" if posix.isatty(0) else _read_stdin()))
        posix._exit(0)
    if not command:  # what the Go skel does: an "about" banner on stderr, nothing done, success
        _write(2, f"CNI {NAMES.get(plugin, plugin)} plugin (netctl)\nCNI protocol versions supported: "
                  f"{SUPPORTED.decode()}\n".encode())
        posix._exit(0)
    stdin = _read_stdin()
    answer = _ask_service(plugin, stdin)
    if answer is None:
        try:
            from cni_plugins.skel import run_in_process

            answer = run_in_process(plugin, None, stdin)
        except Exception as err:  # a broken installation: still a spec error, never a traceback
            answer = 1, _error(999, f"netctl plugin cannot run: {type(err).__name__}: {err}"), b""
    status, out, err = answer
    _write(2, err)
    _write(1, out)
    posix._exit(status)


def version_reply(stdin: bytes) -> bytes:
    """Spec §5: VERSION's cniVersion echoes the request's when supported, else the newest. Found by a
    byte scan of `"cniVersion": "X"`: parsing JSON here would cost more than the whole answer."""
    version = b"1.1.0"
    at = stdin.find(b'"cniVersion"')
    if at >= 0:
        rest = stdin[at + 12 :].lstrip()
        if rest.startswith(b":"):
            rest = rest[1:].lstrip()
            if rest.startswith(b'"'):
                asked = rest[1 : rest.find(b'"', 1)]
                if b'"' + asked + b'"' in SUPPORTED:
                    version = asked
    return b'{"cniVersion":"' + version + b'","supportedVersions":' + SUPPORTED + b"}"


def bridge() -> None:
    main("bridge")


def overlay() -> None:
    main("overlay")


def null() -> None:
    main("null")


def ipam() -> None:
    main("ipam")


def _read_stdin() -> bytes:
    chunks = []
    while True:
        try:
            chunk = posix.read(0, 1 << 16)
        except OSError:  # no stdin at all (closed): an empty configuration, refused later
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = posix.write(fd, view)
        except OSError:  # the runtime stopped listening; nothing left to tell it
            return
        view = view[written:]


def state_root(stdin: bytes) -> str:
    """netctlRoot from the configuration, else NETCTL_ROOT, else the default. The configuration is
    only parsed (with the C scanner, not the json package) when it mentions the key at all."""
    root = posix.environ.get(b"NETCTL_ROOT", b"").decode(errors="surrogateescape") or DEFAULT_ROOT
    if ROOT_KEY in stdin:
        config = _parse_json(stdin)
        value = config.get("netctlRoot") if isinstance(config, dict) else None
        if isinstance(value, str) and value.startswith("/"):
            root = value
    return root


def _parse_json(data: bytes):
    import _json

    class Context:  # the attributes json.decoder.JSONDecoder gives its C scanner
        strict = True
        object_hook = object_pairs_hook = None
        parse_float, parse_int, parse_constant = float, int, float

    try:
        text = data.decode().strip()
        return _json.make_scanner(Context())(text, 0)[0]
    except Exception:  # not JSON: the in-process run reports it properly
        return None


def _ask_service(plugin: str, stdin: bytes):
    """(status, stdout, stderr) from the CNI service, or None when there is none to ask."""
    import _socket

    path = state_root(stdin).rstrip("/") + "/" + SOCKET_NAME
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        try:
            sock.connect(path)
        except OSError:  # no service (no socket, nobody listening, path too long): do it here
            return None
        env = b"\0".join(b"%s=%s" % kv for kv in posix.environ.items())
        head = plugin.encode()
        sock.settimeout(SERVICE_TIMEOUT_S)
        try:
            sock.sendall(b"%010d%010d%010d" % (len(head), len(env), len(stdin)) + head + env + stdin)
            sock.shutdown(_socket.SHUT_WR)
            answer = _receive_all(sock)
        except OSError as err:
            return 1, _error(11, f"netctl CNI service at {path} failed mid-request ({err}); retry"), b""
    finally:
        sock.close()
    try:
        status, out_length = int(answer[:3]), int(answer[3:13])
    except ValueError:  # nothing, or not our protocol: the service may or may not have done the work
        return 1, _error(11, f"netctl CNI service at {path} gave no answer; retry"), b""
    if status == NOT_SERVED:
        return None
    return status, answer[23 : 23 + out_length], answer[23 + out_length :]


def _receive_all(sock) -> bytes:
    chunks = []
    while True:
        chunk = sock.recv(1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _error(code: int, message: str) -> bytes:
    """A spec error object without the json module: quotes and control characters are dropped."""
    text = "".join(c if c.isprintable() and c not in '"\\' else " " for c in message)
    return b'{"cniVersion":"1.1.0","code":%d,"msg":"%s"}' % (code, text.encode(errors="replace"))
