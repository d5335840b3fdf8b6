"""The CLI's side of the monitor: connect (starting the monitor if none runs), send a request, follow
the answer. Every `netctl run` imports this module, so it takes the C modules under the standard
library's wrappers: _socket, not socket (which imports enum, selectors & co.), _signal, not signal
(enum again), and protocol's JSON (not the json package, which imports re): ~10 ms per call on our VMs.
"""

from __future__ import annotations

import _signal
import _socket
import os
import select
import sys
import time

from libnetwork import ipc
from libnetwork.errors import NetctlError
from runner import protocol
from runner.paths import Layout

CONNECT_TIMEOUT_S = 10.0
FORWARDED_SIGNALS = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT, _signal.SIGUSR1, _signal.SIGUSR2)


def connect(layout: Layout, *, start: bool = True) -> _socket.socket:
    """A connection to the host's monitor; starts one (detached from us) if none answers."""
    sock = _try_connect(layout.monitor_socket)
    if sock is not None or not start:
        if sock is None:
            raise NetctlError(f"no monitor runs for {layout.root}")
        return sock
    spawn_monitor(layout)
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    delay = 0.002
    while time.monotonic() < deadline:
        sock = _try_connect(layout.monitor_socket)
        if sock is not None:
            return sock
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    raise NetctlError(
        f"the container monitor did not start within {CONNECT_TIMEOUT_S:.0f} s; see {layout.monitor_log}"
    )


def _try_connect(path: str) -> _socket.socket | None:
    try:
        return ipc.try_connect(path)
    except OSError as err:
        raise NetctlError(f"cannot reach the container monitor at {path}: {err.strerror}; run netctl as root") from None


def spawn_monitor(layout: Layout) -> None:
    """Start the host's monitor, detached; it answers on layout.monitor_socket once up (a second one
    started meanwhile leaves: one monitor per root). A thread waits for it: in a long-lived caller
    (the agent, whose Docker API starts it on first use) its end would otherwise leave a zombie."""
    import subprocess
    import threading

    os.makedirs(layout.root, mode=0o700, exist_ok=True)
    with open(layout.monitor_log, "ab") as log:
        monitor = subprocess.Popen(
            [sys.executable, "-m", "runner.monitor", layout.root],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            close_fds=True,
            start_new_session=True,  # not in our session or process group: our ^C is not its
            cwd="/",
        )
    threading.Thread(target=monitor.wait, name="monitor-reaper", daemon=True).start()


class Session:
    """One request and the frames that answer it."""

    def __init__(self, layout: Layout, request: dict, fds: list[int] | None = None):
        self.sock = connect(layout)
        self.reader = protocol.FrameReader()
        protocol.send_with_fds(self.sock, protocol.message(request), fds or [])

    def close(self) -> None:
        self.sock.close()
        for fd in self.reader.take_fds():
            os.close(fd)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def frames(self, extra_fds=lambda: (), on_extra=None):
        """Yield (kind, payload, fds) until the monitor closes. `extra_fds()` names descriptors to
        watch as well (a terminal to copy in); `on_extra(fd)` handles them, False to stop watching."""
        done: set[int] = set()
        while True:
            for kind, payload in self.reader.frames():
                yield kind, payload, self.reader.take_fds()
            extra = [fd for fd in extra_fds() if fd not in done]
            try:
                readable, _, _ = select.select([self.sock, *extra], [], [])
            except InterruptedError:
                continue
            for fd in extra:
                if fd in readable and on_extra is not None and not on_extra(fd):
                    done.add(fd)
            if self.sock in readable and not protocol.receive(self.sock, self.reader):
                for kind, payload in self.reader.frames():
                    yield kind, payload, self.reader.take_fds()
                return

    def reply(self) -> dict:
        """The first JSON event; errors are raised."""
        for kind, payload, fds in self.frames():
            for fd in fds:
                os.close(fd)
            if kind == protocol.JSON:
                event = protocol.loads(payload)
                if event.get("event") == "error":
                    protocol.raise_error(event)
                return event
        raise NetctlError("the container monitor closed the connection without answering; see its log")

    def send(self, request: dict) -> None:
        try:
            self.sock.sendall(protocol.message(request))
        except OSError:
            pass  # the monitor went away: the frames loop reports it


def call(layout: Layout, request: dict) -> dict:
    with Session(layout, request) as session:
        return session.reply()


def run(layout: Layout, request: dict, *, detach: bool, interactive: bool, tty: bool) -> tuple[str, int]:
    """Send a run request and follow it: returns (container id, exit code). Detached: returns at
    start with code 0. Attached: the container's output goes to our stdout/stderr, our signals to it."""
    fds = [0] if interactive and not tty else []
    with Session(layout, {"op": "run", "request": request}, fds) as session:
        container_id = ""
        master = -1
        restore = None
        previous = {}

        def forward(number, _frame):
            session.send({"op": "signal", "signal": number})

        def copy_in(fd: int) -> bool:
            try:
                data = os.read(fd, 4096)
            except OSError:
                data = b""
            if not data:
                return False
            try:
                os.write(master, data)
            except OSError:
                return False
            return True

        try:
            stdin_to_terminal = lambda: (0,) if master >= 0 and interactive else ()  # noqa: E731
            for kind, payload, fds in session.frames(stdin_to_terminal, copy_in):
                if kind == protocol.STDOUT:
                    _write_all(1, payload)
                elif kind == protocol.STDERR:
                    _write_all(2, payload)
                elif kind == protocol.JSON:
                    event = protocol.loads(payload)
                    name = event.get("event")
                    if name == "error":
                        protocol.raise_error(event)
                    if name == "started":
                        container_id = event["id"]
                        if detach:
                            return container_id, 0
                        if fds:
                            master = fds[0]
                            restore = _terminal_setup(master, interactive)
                        if not tty:
                            previous = {s: _signal.signal(s, forward) for s in FORWARDED_SIGNALS}
                    elif name == "exit":
                        return container_id, int(event.get("code", 0))
                else:
                    for fd in fds:
                        os.close(fd)
        finally:
            for number, handler in previous.items():
                _signal.signal(number, handler)
            if restore is not None:
                restore()
            if master >= 0:
                os.close(master)
    raise NetctlError(
        "lost the connection to the container monitor"
        f"{' while container ' + container_id[:12] + ' ran' if container_id else ''}; "
        "`netctl ps -a` shows its state"
    )


def _terminal_setup(master: int, interactive: bool):
    """Our terminal raw (if stdin is one and -i), the container's window size like ours; returns the undo."""
    import fcntl
    import struct
    import termios
    import tty as tty_mod

    def resize(*_):
        try:
            size = fcntl.ioctl(1 if os.isatty(1) else 0, termios.TIOCGWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
            fcntl.ioctl(master, termios.TIOCSWINSZ, size)
        except OSError:
            pass  # not a terminal: the container keeps the default size

    resize()
    old_winch = _signal.signal(_signal.SIGWINCH, resize)
    saved = None
    if interactive and os.isatty(0):
        saved = termios.tcgetattr(0)
        tty_mod.setraw(0)

    def restore():
        _signal.signal(_signal.SIGWINCH, old_winch)
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)

    return restore


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BrokenPipeError:
            return
        view = view[n:]
