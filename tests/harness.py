"""Throwaway "hosts" for tests: a network + mount + PID + UTS namespace that vanishes afterwards.

A host is a holder process started by ``unshare``. Inside it ``/proc``, ``/sys`` and ``/run`` are fresh
(``/run`` an empty tmpfs, so ``NETCTL_ROOT=/run/netctl`` is private to the host), everything else of the
file system - the repository, the venv - is shared. Commands run inside with ``nsenter``.

Why it cannot leak:
- the holder is PID 1 of its PID namespace: when it dies the kernel kills every process started inside;
- the holder reads its stdin, a pipe whose only writer is the test process: if the test process dies
  (even by SIGKILL) the holder sees EOF and exits, so no host outlives its session;
- teardown kills the holder through a pidfd (no PID-reuse race) and waits for it, bounded;
- mounts (netns handles, /run) live in the host's private mount namespace and disappear with it.

Also usable from the shell, for demos and poking around (stdio is passed through)::

    python tests/harness.py [--name NAME] -- CMD [ARG...]
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import json
import os
import re
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

NETCTL_ROOT = "/run/netctl"
START_TIMEOUT = 10.0  # seconds for a host to come up
SERVICE_LOGS = ("monitor.log", "agent.log")  # under NETCTL_ROOT: runner/paths.py, libnetwork/rootdir.py
STOP_TIMEOUT = 10.0  # seconds for a host (and everything in it) to be gone

# Runs as the host's PID 1 once the mounts are in place. It reaps orphans (daemons that double-fork end
# up as its children; unreaped they would linger as zombies) and exits when its stdin, a pipe from the
# test process, reaches EOF. Passed through the environment so that `ps` inside shows a short line.
_INIT_LOOP = r"""
import os, select, signal
wake_r, wake_w = os.pipe()
os.set_blocking(wake_r, False); os.set_blocking(wake_w, False)
signal.set_wakeup_fd(wake_w)
signal.signal(signal.SIGCHLD, lambda *_: None)
def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
reap()
os.write(1, b"ready\n")
while True:
    readable, _, _ = select.select([0, wake_r], [], [])
    reap()
    if wake_r in readable:
        try:
            os.read(wake_r, 512)
        except BlockingIOError:
            pass
    if 0 in readable and not os.read(0, 512):
        break
"""
_INIT_ENV = "NETCTL_TEST_HOST_INIT"

# The holder's set-up, passed through the environment (like _INIT_LOOP) to keep `ps` lines short.
# /sys is remounted so that /sys/class/net shows the host's own links, not the machine's; the cgroup
# mounts under /sys/fs/cgroup are carried over (a bind kept aside on the fresh /run) so that a runner
# inside the host still finds them.
_HOLDER_SETUP = r"""
set -e
mount -t proc proc /proc
mount -t tmpfs -o mode=0755 tmpfs /run
if [ -d /sys/fs/cgroup ]; then
    mkdir /run/.cgroup
    mount --rbind /sys/fs/cgroup /run/.cgroup
fi
mount -t sysfs sysfs /sys
if [ -d /run/.cgroup ]; then
    mount --move /run/.cgroup /sys/fs/cgroup
    rmdir /run/.cgroup
fi
ip link set lo up
hostname "$1"
unset NETCTL_TEST_HOST_SETUP
exec "$2" -I -S -c "import os; exec(os.environ.pop('$3'))" netctl-test-host-init
"""
_SETUP_ENV = "NETCTL_TEST_HOST_SETUP"


class CommandFailed(AssertionError):
    """A command inside a host exited non-zero (or timed out); the message shows everything."""

    def __init__(self, argv: list[str], returncode: int | None, stdout: str, stderr: str, why: str = ""):
        self.argv, self.returncode, self.stdout, self.stderr = argv, returncode, stdout, stderr
        head = why or f"exit status {returncode}"
        super().__init__(
            f"command failed ({head}): {argv!r}\n--- stdout ---\n{stdout}--- stderr ---\n{stderr}"
        )


class CommandTimedOut(CommandFailed):
    pass


def require_cmd(name: str) -> str:
    """Skip the calling test unless ``name`` is on PATH; return its path."""
    import pytest

    path = shutil.which(name)
    if path is None:
        pytest.skip(f"command {name!r} not found on PATH; install it (sudo bash scripts/bootstrap.sh)")
    return path


def missing_host_prerequisites() -> str:
    """Why throwaway hosts cannot be made here, or "" if they can."""
    if os.geteuid() != 0:
        return "needs root: creates kernel objects in a throwaway namespace (run: sudo bash scripts/test.sh)"
    for cmd in ("unshare", "nsenter", "ip", "mount"):
        if shutil.which(cmd) is None:
            return f"command {cmd!r} not found; run: sudo bash scripts/bootstrap.sh"
    return ""


def _inner_cwd() -> str:
    """The caller's cwd if it means the same inside a host (only /run, /proc, /sys differ)."""
    cwd = os.getcwd()
    if any(cwd == p or cwd.startswith(p + "/") for p in ("/run", "/proc", "/sys")):
        return "/"
    return cwd


def _host_env(extra: dict[str, str] | None, root: str) -> dict[str, str]:
    env = dict(os.environ)
    # The venv's bin first, so the `netctl` console script is found inside as outside.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    env["NETCTL_ROOT"] = root
    env.update(extra or {})
    return env


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL nsenter and the command it started (same process group), then reap, bounded."""
    stop_group(proc, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(proc: subprocess.Popen, sig: int, timeout: float = STOP_TIMEOUT) -> None:
    """Signal the process group of a host.popen() command (nsenter and the command it forked) and
    wait, bounded, until every member is gone; SIGKILL what is left after `timeout`.

    Waiting for nsenter alone is not enough: with -p it forks, dies of the signal at once, and the
    command may still be shutting down (holding its ports) when proc.wait() returns."""
    for signum in (sig, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signum)
        if _wait_group_gone(proc, timeout):
            return


def _wait_group_gone(proc: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)
    while _group_alive(proc.pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


@dataclass
class Host:
    """One throwaway host. Create with ``Host.start(name)``; ``close()`` (or ``with``) removes it."""

    name: str
    pid: int  # host PID of the namespace's init
    root: str = NETCTL_ROOT
    _holder: subprocess.Popen | None = field(default=None, repr=False)
    _pidfd: int = field(default=-1, repr=False)
    _background: list[subprocess.Popen] = field(default_factory=list, repr=False)

    # ---- life cycle -------------------------------------------------------------------------------

    @classmethod
    def start(cls, name: str = "host", timeout: float = START_TIMEOUT) -> "Host":
        argv = [
            "unshare", "--net", "--mount", "--pid", "--uts", "--fork", "--kill-child",
            "--propagation", "private", "--",
            "sh", "-c", f'eval "${_SETUP_ENV}"', "netctl-test-host", name, sys.executable, _INIT_ENV,
        ]  # fmt: skip
        holder = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, _SETUP_ENV: _HOLDER_SETUP, _INIT_ENV: _INIT_LOOP},
            start_new_session=True,  # ^C at a terminal must not kill it behind the teardown's back
        )
        try:
            _await_ready(holder, timeout)
            pid, pidfd = _find_init(holder, timeout)
        except BaseException:
            _stop_holder(holder, -1)  # closing its stdin ends init, should it be running
            raise
        return cls(name=name, pid=pid, _holder=holder, _pidfd=pidfd)

    def close(self) -> None:
        """Kill everything in the host and wait until it is gone. Idempotent."""
        holder, self._holder = self._holder, None
        if holder is None:
            return
        _stop_holder(holder, self._pidfd)
        self._pidfd = -1
        for proc in self._background:
            _kill_group(proc)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        self._background.clear()

    @property
    def alive(self) -> bool:
        return self._holder is not None and self._holder.poll() is None

    def __enter__(self) -> "Host":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- running things inside --------------------------------------------------------------------

    def nsenter_argv(self) -> list[str]:
        """The prefix that runs a command inside this host (net, mount, pid and uts namespaces)."""
        return ["nsenter", "-t", str(self.pid), "-n", "-m", "-p", "-u", f"--wdns={_inner_cwd()}", "--"]

    def run(
        self,
        *argv: str,
        check: bool = True,
        input: str | None = None,
        timeout: float = 60,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess:
        """Run argv inside the host (text mode, NETCTL_ROOT set; ``env`` adds to the environment).

        Raises CommandFailed (an AssertionError) on a non-zero exit when ``check``, and
        CommandTimedOut after ``timeout`` seconds whatever ``check`` says.
        """
        argv_list = [str(a) for a in argv]
        proc = subprocess.Popen(
            self.nsenter_argv() + argv_list,
            stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_host_env(env, self.root),
            start_new_session=True,  # one process group to kill: nsenter and its child
        )
        try:
            stdout, stderr = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            stdout, stderr = _drain(proc)
            raise CommandTimedOut(argv_list, None, stdout, stderr, f"timed out after {timeout}s")
        except BaseException:  # e.g. the per-test timeout or ^C: leave nothing running
            _kill_group(proc)
            raise
        if check and proc.returncode != 0:
            raise CommandFailed(argv_list, proc.returncode, stdout, stderr)
        return subprocess.CompletedProcess(argv_list, proc.returncode, stdout, stderr)

    def netctl(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "netctl", *args, **kw)

    def py(self, code: str, **kw) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-c", code, **kw)

    def in_netns(self, netns_path: str, *argv: str, **kw) -> subprocess.CompletedProcess:
        """Run argv in the network namespace bound at ``netns_path`` (a path inside the host)."""
        return self.run("nsenter", f"--net={netns_path}", "--", *argv, **kw)

    def popen(self, *argv: str, env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
        """Start argv inside the host in the background. Killed at teardown at the latest.

        Defaults: stdin from /dev/null, text mode; stdout/stderr as given (default: inherited).
        ``proc.pid`` is nsenter's PID; the command itself is its child.
        """
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("text", True)
        proc = subprocess.Popen(
            self.nsenter_argv() + [str(a) for a in argv],
            env=_host_env(env, self.root),
            start_new_session=True,
            **kw,
        )
        self._background.append(proc)
        return proc

    def attach(self, *argv: str, env: dict[str, str] | None = None) -> int:
        """Run argv inside with the caller's stdio (terminal, ^C); return its exit status."""
        proc = subprocess.Popen(self.nsenter_argv() + [str(a) for a in argv], env=_host_env(env, self.root))
        try:
            return proc.wait()
        except BaseException:
            _kill_and_reap(proc)
            raise

    # ---- looking at the host ----------------------------------------------------------------------

    def path(self, inner_path: str) -> str:
        """Where a path inside the host (e.g. /run/netctl/netctl.db) is reachable from outside."""
        return f"/proc/{self.pid}/root{inner_path}"

    def tracebacks(self) -> str:
        """The logs of this host's netctl services under its root that hold a traceback, whole ("" when
        none does): the container monitor's and the agent's. Their errors reach no command's output,
        so a fixture reads them before it closes the host."""
        if not self.alive:  # its /run is gone: reading nothing here would pass a check that saw nothing
            raise RuntimeError(f"host {self.name} is closed: read its logs before closing it")
        found = []
        for name in SERVICE_LOGS:
            try:
                with open(self.path(f"{self.root}/{name}"), errors="replace") as f:
                    text = f.read()
            except OSError:  # never written, or the host is already gone
                continue
            if "Traceback" in text:
                found.append(f"--- {self.root}/{name} in host {self.name}:\n{text}")
        return "\n".join(found)

    def processes(self) -> list[int]:
        """Machine-side PIDs of every process now in this host's PID namespace (init included)."""
        inode = os.stat(f"/proc/{self.pid}/ns/pid").st_ino
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    if os.stat(f"/proc/{entry}/ns/pid").st_ino == inode:
                        pids.append(int(entry))
        return pids

    def ip_link_names(self) -> set[str]:
        return {link["ifname"] for link in json.loads(self.run("ip", "-j", "link").stdout)}

    def snapshot(self) -> dict:
        """The host's state for before/after comparisons (see diff_snapshots).

        Keys: links, addrs, routes4, routes6, nft (lists of normalised lines), netns (names of files
        under ROOT/netns) and store ({table: sorted rows} of ROOT/netctl.db, {} when there is none).
        """
        state = collect_network_state(lambda *argv: self.run(*argv, check=False))
        netns_dir = self.path(f"{self.root}/netns")
        state["netns"] = sorted(os.listdir(netns_dir)) if os.path.isdir(netns_dir) else []
        state["store"] = self._dump_store()
        return state

    def _dump_store(self) -> dict[str, list[tuple]]:
        # Read inside the host: SQLite resolves /proc/PID/root/... to a path of *our* mount namespace.
        db = f"{self.root}/netctl.db"
        if not os.path.exists(self.path(db)):
            return {}
        here = os.path.dirname(os.path.abspath(__file__))
        code = f"import sys; sys.path.insert(0, {here!r}); import harness; print(repr(harness.dump_sqlite({db!r})))"
        return ast.literal_eval(self.py(code).stdout)


def _drain(proc: subprocess.Popen) -> tuple[str, str]:
    """What a killed command wrote, without waiting forever for a daemon that inherited its pipes."""
    try:
        stdout, stderr = proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        return "", "(output unavailable: a process that escaped the kill still holds the pipes)"
    return stdout or "", stderr or ""


def _kill_and_reap(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_TIMEOUT)


def _await_ready(holder: subprocess.Popen, timeout: float) -> None:
    """Wait for the holder's "ready" line; on failure report what its set-up printed."""
    assert holder.stdout is not None and holder.stderr is not None
    deadline = time.monotonic() + timeout
    seen = b""
    while b"\n" not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"throwaway host did not come up within {timeout}s (holder said {seen!r})")
        readable, _, _ = select.select([holder.stdout], [], [], left)
        if readable:
            chunk = os.read(holder.stdout.fileno(), 64)
            if not chunk:
                break
            seen += chunk
    if seen.strip() != b"ready":
        with contextlib.suppress(subprocess.TimeoutExpired):
            holder.wait(timeout=2)
        err = holder.stderr.read().decode(errors="replace") if holder.poll() is not None else ""
        raise RuntimeError(
            f"throwaway host failed to start (rc={holder.poll()}): {err.strip() or seen!r}; "
            "it needs root, unshare/nsenter (util-linux) and iproute2"
        )


def _find_init(holder: subprocess.Popen, timeout: float) -> tuple[int, int]:
    """The host PID of the holder's child (the namespace's init) and a pidfd on it."""
    children = f"/proc/{holder.pid}/task/{holder.pid}/children"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(children) as f:
            pids = f.read().split()
        if len(pids) == 1:
            pid = int(pids[0])
            pidfd = os.pidfd_open(pid)
            # Re-check after opening: the pidfd now pins exactly this process, not a reused PID.
            with open(children) as f:
                if f.read().split() == pids:
                    return pid, pidfd
            os.close(pidfd)
        time.sleep(0.01)
    raise RuntimeError(f"could not find the init process of throwaway host (unshare pid {holder.pid})")


def _stop_holder(holder: subprocess.Popen, pidfd: int) -> None:
    """Kill the namespace's init (and with it everything inside), then reap unshare. Bounded."""
    if pidfd >= 0:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        os.close(pidfd)
    for stream in (holder.stdin, holder.stdout, holder.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()  # stdin EOF alone also makes init exit
    try:
        holder.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        # unshare --kill-child takes its child along when it dies.
        holder.kill()
        holder.wait(timeout=STOP_TIMEOUT)


# ---- upstream ("the internet") --------------------------------------------------------------------


@dataclass
class Upstream:
    """A fake upstream network inside a host, reached over a veth; the host routes everything to it.

    Uses TEST-NET-2 (198.51.100.0/24, a documentation range) so nothing real is ever addressed.
    """

    host: Host
    netns_path: str = "/run/netns/upstream"
    address: str = "198.51.100.2"  # upstream's side
    host_address: str = "198.51.100.1"  # the host's side
    host_ifname: str = "eth0"  # the host's uplink, named like a real machine's
    ifname: str = "eth0"  # upstream's side

    def run(self, *argv: str, **kw) -> subprocess.CompletedProcess:
        return self.host.in_netns(self.netns_path, *argv, **kw)

    def popen(self, *argv: str, **kw) -> subprocess.Popen:
        return self.host.popen("nsenter", f"--net={self.netns_path}", "--", *argv, **kw)


def add_upstream(host: Host) -> Upstream:
    up = Upstream(host)
    script = f"""
set -e
ip netns add upstream
ip link add {up.host_ifname} type veth peer name {up.ifname} netns upstream
ip addr add {up.host_address}/24 dev {up.host_ifname}
ip link set {up.host_ifname} up
ip route add default via {up.address} dev {up.host_ifname}
ip -n upstream link set lo up
ip -n upstream addr add {up.address}/24 dev {up.ifname}
ip -n upstream link set {up.ifname} up
ip -n upstream route add default via {up.host_address} dev {up.ifname}
"""
    host.run("sh", "-c", script)
    return up


# ---- state snapshots (host and machine) -----------------------------------------------------------

_VOLATILE_LINK_FLAGS = {"LOWER_UP", "NO-CARRIER", "DORMANT", "M-DOWN"}  # carrier, not configuration
_VOLATILE_TEXT = [
    (re.compile(r"\bexpires \S+"), "expires"),
    (re.compile(r"\bcounter packets \d+ bytes \d+"), "counter"),
    (re.compile(r"\bpackets \d+ bytes \d+"), "packets"),
    # A route's "linkdown" mirrors its device's carrier, which the kernel updates late (linkwatch
    # batches carrier changes for up to a second): a bridge made just now may gain it afterwards.
    (re.compile(r" linkdown\b"), ""),
]

RunFn = Callable[..., subprocess.CompletedProcess]


def _normalise(text: str) -> list[str]:
    lines = []
    for line in text.splitlines():
        for pattern, repl in _VOLATILE_TEXT:
            line = pattern.sub(repl, line)
        line = " ".join(line.split())
        if line:
            lines.append(line)
    return lines


def _output(run: RunFn, *argv: str) -> str:
    """stdout of argv, or a marker line saying why it is unavailable (same marker before and after)."""
    try:
        proc = run(*argv)
    except (OSError, subprocess.SubprocessError) as err:
        return f"<unavailable: {type(err).__name__}>"
    if proc.returncode != 0:
        return f"<unavailable: {' '.join(argv)} exit {proc.returncode}>"
    return proc.stdout


def _links(text: str) -> list[str]:
    if text.startswith("<unavailable"):
        return [text]
    lines = []
    for link in json.loads(text):
        kind = link.get("linkinfo", {}).get("info_kind", "-")
        flags = ",".join(sorted(set(link.get("flags", [])) - _VOLATILE_LINK_FLAGS))
        lines.append(
            f"{link['ifname']} kind={kind} mtu={link.get('mtu')} master={link.get('master', '-')} flags={flags}"
        )
    return sorted(lines)


def _addrs(text: str) -> list[str]:
    if text.startswith("<unavailable"):
        return [text]
    return sorted(
        f"{link['ifname']} {a['family']} {a['local']}/{a['prefixlen']} scope={a.get('scope')}"
        for link in json.loads(text)
        for a in link.get("addr_info", [])
    )


def collect_network_state(run: RunFn) -> dict[str, list[str]]:
    """Links, addresses, routes and nftables ruleset as seen by ``run`` (a namespace's view)."""
    return {
        "links": _links(_output(run, "ip", "-j", "-d", "link")),
        "addrs": _addrs(_output(run, "ip", "-j", "addr")),
        "routes4": sorted(_normalise(_output(run, "ip", "route"))),
        "routes6": sorted(_normalise(_output(run, "ip", "-6", "route"))),
        "nft": _normalise(_output(run, "nft", "list", "ruleset")),
    }


def dump_sqlite(path: str) -> dict[str, list[tuple]]:
    """Every table of a SQLite file as sorted rows, plus the schema version; {} if there is no file."""
    if not os.path.exists(path):
        return {}
    # Not mode=ro: a read-only connection cannot open a WAL database whose -shm file is gone (the last
    # writer removed it). Only SELECTs are issued; closing may checkpoint, which changes no content.
    conn = sqlite3.connect(path, timeout=10)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        dump: dict[str, list[tuple]] = {
            "user_version": [tuple(conn.execute("PRAGMA user_version").fetchone())]
        }
        for table in tables:
            if table.startswith("sqlite_"):
                continue
            rows = conn.execute(f'SELECT * FROM "{table}"').fetchall()
            dump[table] = sorted(rows, key=repr)
        return dump
    finally:
        conn.close()


def _local_run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def _netctl_cgroups(base: str = "/sys/fs/cgroup", depth: int = 3) -> list[str]:
    found = []
    for dirpath, dirnames, _ in os.walk(base):
        level = dirpath[len(base):].count("/")
        if level >= depth:
            dirnames.clear()
            continue
        found += [os.path.join(dirpath, d) for d in dirnames if d.startswith("netctl")]
    return sorted(found)


TEST_CGROUP_PREFIX = "netctl-t"  # a test's own cgroup parent: netctl-t<hex>, made and removed by that test
NESTED_SESSION_ENV = "NETCTL_TEST_NESTED"  # set for a pytest session run by a test of the suite


def new_test_cgroup_parent() -> str:
    """A cgroup parent name for one test's containers (NETCTL_CGROUP_PARENT), unique in the machine."""
    import secrets

    return f"{TEST_CGROUP_PREFIX}{secrets.token_hex(4)}"


def root_snapshot(*, test_cgroups: bool = True) -> dict[str, list[str]]:
    """The machine's own state (this process's namespaces), for the session-wide root guard.

    cgroup trees are the one part of the machine that tests share while they run: a check made while
    other xdist workers run (a test's own, or a nested session's) passes test_cgroups=False to leave
    their parents out; the outermost session's guard sees everything."""
    state = collect_network_state(_local_run)
    state["netns"] = sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else ["<no /run/netns>"]
    with open("/proc/self/mounts") as f:
        state["mounts"] = f.read().splitlines()
    cgroups = _netctl_cgroups()
    if not test_cgroups:
        cgroups = [path for path in cgroups if not os.path.basename(path).startswith(TEST_CGROUP_PREFIX)]
    state["cgroups"] = cgroups
    return state


def _lines(value: object) -> list[str]:
    if isinstance(value, dict):
        return [f"{table}: {row!r}" for table, rows in value.items() for row in rows]
    return [str(v) for v in value]  # type: ignore[union-attr]


def diff_snapshots(before: dict, after: dict) -> str:
    """A readable unified diff per key that changed; "" when the snapshots are equal."""
    parts = []
    for key in sorted(set(before) | set(after)):
        old, new = _lines(before.get(key, [])), _lines(after.get(key, []))
        if old != new:
            parts += difflib.unified_diff(old, new, f"{key} (before)", f"{key} (after)", lineterm="")
    return "\n".join(parts)


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Run a command inside a throwaway host namespace.")
    parser.add_argument("--name", default="netctl-host", help="hostname inside")
    parser.add_argument("--upstream", action="store_true", help="add the fake upstream (198.51.100.0/24)")
    parser.add_argument("command", nargs="+", help="command and arguments (put -- before them)")
    args = parser.parse_args(argv)
    reason = missing_host_prerequisites()
    if reason:
        print(f"harness: {reason}", file=sys.stderr)
        return 1
    try:
        with Host.start(args.name) as host:
            if args.upstream:
                add_upstream(host)
            return host.attach(*args.command)
    except KeyboardInterrupt:
        return 130  # the host is gone already: Host.__exit__ ran


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
