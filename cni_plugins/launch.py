"""What a netctl CNI plugin executable runs first. Start-up time is this module's whole point.

Runtimes exec a plugin for every VERSION probe and every ADD/DEL, so this module imports nothing
beyond what the interpreter has already loaded until it knows what the request needs:

  * VERSION is answered from constants (not even `os` is imported: with -I -S the interpreter
    has not loaded it, and it costs ~1.5 ms of a ~10 ms start; its built-in half `posix` is free);
  * any other command goes to the host agent (`netctl daemon`, cni_plugins/service.py) if one
    listens on ROOT/netctl.sock: one connect, the environment and stdin out, the answer back
    (libnetwork/ipc.py's frames: C modules only, no json package, no libnetwork proper);
  * otherwise (no agent, or one serving another root) the request runs in this process
    (cni_plugins/plugins.py), which pays for importing libnetwork; with no agent at all, one is
    started in the background for the next call (NETCTL_NO_DAEMON=1: in-process, nothing started).

The executables are tiny scripts (cni_plugins/install.py writes them) starting Python with -I -S:
no site, no .pth processing, no user environment; they put the package's directory on sys.path.
Output goes straight to fds 1 and 2 and the process ends with _exit: interpreter finalization
(tearing down every module) costs ~2 ms of a ~12 ms call, for nothing that matters here.
"""

import posix

from cni_plugins import SUPPORTED, version_reply  # the package, imported already: nothing more to load

# = libnetwork.rootdir.DEFAULT_ROOT, not imported (rootdir needs `os`); tests/unit/test_imports.py checks they agree
DEFAULT_ROOT = "/var/lib/netctl"
SOCKET_NAME = "netctl.sock"  # = libnetwork.rootdir.AGENT_SOCKET
AGENT_LOG = "agent.log"  # = libnetwork.rootdir.AGENT_LOG
ROOT_KEY = b'"netctlRoot"'
SERVICE_TIMEOUT_S = 150.0  # longer than the agent's own bounds (delegated plugins: 120 s)
NOT_MINE = (255, b"", b"")  # _ask_service: an agent runs, but leaves this request to us (another root)
NAMES = {"bridge": "netctl-bridge", "overlay": "netctl-overlay", "null": "netctl-null", "ipam": "netctl-ipam"}


def main(plugin: str, agent_python: str = "") -> None:
    """`agent_python`: the interpreter (with netctl's packages on its site path) that runs the agent
    started on first use; the installer names it, pip's console scripts run in it already."""
    command = posix.environ.get(b"CNI_COMMAND", b"")
    if command == b"VERSION":
        _write(1, version_reply(b"" if posix.isatty(0) else _read_stdin()))
        posix._exit(0)
    if not command:  # what the Go skel does: an "about" banner on stderr, nothing done, success
        _write(2, f"CNI {NAMES.get(plugin, plugin)} plugin (netctl)\nCNI protocol versions supported: "
                  f"{SUPPORTED.decode()}\n".encode())
        posix._exit(0)
    stdin = _read_stdin()
    root = state_root(stdin)
    # NETCTL_NO_DAEMON: in-process, no agent asked or started (as for the CLI); NETCTL_TEST_PAUSE: a
    # test stops this very process half-way, which an agent's work could not be.
    alone = posix.environ.get(b"NETCTL_NO_DAEMON") or posix.environ.get(b"NETCTL_TEST_PAUSE")
    answer = None if alone else _ask_service(plugin, root, stdin)
    no_agent = not alone and answer is None
    if answer is None or answer is NOT_MINE:
        try:
            from cni_plugins.plugins import run_in_process

            answer = run_in_process(plugin, None, stdin)
        except Exception as exc:  # a broken installation: still a spec error, never a traceback
            answer = 1, _error(999, f"netctl plugin cannot run: {type(exc).__name__}: {exc}"), b""
    status, out, err = answer
    _write(2, err)
    _write(1, out)
    if no_agent:  # after the answer: spawned first, its imports competed with this call's for the CPUs
        _start_agent(root, agent_python)
    posix._exit(status)


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
        # typeshed types the argument as a JSONDecoder; any object with its attributes will do
        return _json.make_scanner(Context())(text, 0)[0]  # type: ignore[arg-type]
    except Exception:  # not JSON: the in-process run reports it properly
        return None


def _ask_service(plugin: str, root: str, stdin: bytes):
    """(status, stdout, stderr) from the host agent; None when there is none to ask; NOT_MINE when it
    serves another root or namespace (either way the request is this process's)."""
    from libnetwork import ipc

    path = root.rstrip("/") + "/" + SOCKET_NAME
    try:
        sock = ipc.try_connect(path)
    except OSError:
        sock = None  # a socket we may not use: run the request here, where the kernel decides
    if sock is None:
        return None
    env = {k.decode(errors="surrogateescape"): v.decode(errors="surrogateescape") for k, v in posix.environ.items()}
    request = ipc.message({"op": "cni", "plugin": plugin, "env": env}) + ipc.frame(ipc.STDIN, stdin)
    try:
        event, out, err = ipc.call(sock, request, SERVICE_TIMEOUT_S)
    except (OSError, ValueError) as exc:
        return 1, _error(11, f"netctl agent at {path} failed mid-request ({exc}); retry"), b""
    finally:
        sock.close()
    if event is None:  # closed without an answer: the agent may or may not have done the work
        return 1, _error(11, f"netctl agent at {path} gave no answer; retry"), b""
    if event.get("event") == "exit":
        return int(event.get("code", 1)), out, err
    if event.get("event") == "not-mine":
        return NOT_MINE
    return 1, _error(999, f"netctl agent at {path}: {event.get('message', 'refused')}"), b""


def _start_agent(root: str, python: str) -> None:
    """The agent for the next call (netctl/entry.py's start_agent, without `os`): detached, its output
    to ROOT/agent.log. A failure only costs later calls their speed; it is not this call's error."""
    import sys

    try:  # only from the host's own network namespace (init's), as netctl/entry.py's start_agent
        ours, init = posix.stat("/proc/self/ns/net"), posix.stat("/proc/1/ns/net")
        if (ours.st_dev, ours.st_ino) != (init.st_dev, init.st_ino):
            return
    except OSError:
        return
    python = python or sys.executable
    env = {k: v for k, v in posix.environ.items()
           if not k.startswith(b"CNI_") and k not in (b"NETCTL_STORE", b"NETCTL_HOST_NAME")}
    log = root.rstrip("/") + "/" + AGENT_LOG
    try:
        # A fresh root (a host's very first call) has no directory yet for the log: without it the
        # spawn failed and only the second call started the agent (found by bench/bench_cni.py).
        posix.mkdir(root, 0o700)
    except OSError:
        pass  # there already (or a parent missing: then the spawn below fails, quietly, as before)
    try:
        # -P: the runtime's working directory is not put first on the root agent's sys.path.
        posix.posix_spawn(python, [python, "-P", "-m", "netctl", "--root", root, "daemon", "--auto"], env,
                          file_actions=[(posix.POSIX_SPAWN_OPEN, 0, "/dev/null", posix.O_RDONLY, 0),
                                        (posix.POSIX_SPAWN_OPEN, 1, log,
                                         posix.O_WRONLY | posix.O_CREAT | posix.O_APPEND, 0o600),
                                        (posix.POSIX_SPAWN_DUP2, 1, 2)],
                          setsid=True)
    except OSError:
        pass


def _error(code: int, message: str) -> bytes:
    """A spec error object without the json module: quotes and control characters are dropped."""
    text = "".join(c if c.isprintable() and c not in '"\\' else " " for c in message)
    return b'{"cniVersion":"1.1.0","code":%d,"msg":"%s"}' % (code, text.encode(errors="replace"))
