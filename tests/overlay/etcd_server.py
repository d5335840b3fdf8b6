"""A real etcd for tests, stopped and killed by its PID, with a private data directory.

Two kinds:
- EtcdServer: one member on the machine's 127.0.0.1 (loopback only), random free ports; for tests
  that talk to etcd from the test process itself.
- LabEtcdServer: one member INSIDE a throwaway host (the lab's switch), listening on an address of
  that host's namespace (the underlay's 198.18.0.254:2379), so the lab's hosts reach it over the
  underlay the way real hosts would. Started with host.popen, probed and stopped from inside.
No other address is ever listened on or contacted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

from harness import stop_group

ETCD = "/usr/bin/etcd"
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
PORT_ATTEMPTS = 3  # a free port can be taken between picking and binding it; try again with others


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fast_tmp() -> str | None:
    # etcd fsyncs its WAL on every commit: on tmpfs that costs nothing, on a disk it dominates the test.
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


class EtcdServer:
    """`start()` it, then use `.url`; `stop()` (graceful), `kill()` (SIGKILL) and `start()` again keep
    the data directory, so a restart resumes at the same revision. `close()` removes everything."""

    def __init__(self, name: str = "netctl-test"):
        self.name = name
        self.data_dir = tempfile.mkdtemp(prefix="netctl-etcd-", dir=_fast_tmp())
        self.client_port = 0
        self.peer_port = 0
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(self.data_dir, "etcd.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    def start(self) -> "EtcdServer":
        if self.proc is not None and self.proc.poll() is None:
            return self
        ports_fixed = bool(self.client_port)  # a restart must come back on the same address
        for attempt in range(1 if ports_fixed else PORT_ATTEMPTS):
            if not ports_fixed:
                self.client_port, self.peer_port = free_port(), free_port()
            self._spawn()
            if self._wait_ready():
                return self
            self._terminate(signal.SIGKILL)
        raise RuntimeError(f"etcd did not become ready on {self.url}; its log:\n{self.log()}")

    def _spawn(self) -> None:
        client, peer = f"http://127.0.0.1:{self.client_port}", f"http://127.0.0.1:{self.peer_port}"
        argv = [
            ETCD, "--name", self.name, "--data-dir", os.path.join(self.data_dir, "data"),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"{self.name}={peer}", "--initial-cluster-state", "new",
            "--log-outputs", self.log_path, "--logger", "zap",
        ]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(self.url + "/health", timeout=1) as reply:
                    if b'"true"' in reply.read():
                        return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        """Graceful stop (SIGTERM), bounded; SIGKILL if it lingers."""
        self._terminate(signal.SIGTERM)

    def kill(self) -> None:
        self._terminate(signal.SIGKILL)

    def _terminate(self, sig: int) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)

    def log(self) -> str:
        with contextlib.suppress(OSError), open(self.log_path) as f:
            return f.read()[-4000:]
        return ""

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> "EtcdServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class LabEtcdServer:
    """etcd inside `host` (a harness.Host), listening on ADDRESS:2379 (clients) and 127.0.0.1:2380
    (its own peer port, loopback of that namespace). Same life cycle as EtcdServer: start(), stop()
    (SIGTERM), kill() (SIGKILL), start() again on the same data directory (same revision), close().

    The process runs as `nsenter ... -- etcd` in its own process group (host.popen): stop and kill
    signal that group by its PID, so nothing else is ever touched."""

    def __init__(self, host, address: str, *, port: int = 2379, name: str = "netctl-lab"):
        self.host = host
        self.address = address
        self.port = port
        self.name = name
        self.data_dir = tempfile.mkdtemp(prefix="netctl-lab-etcd-", dir=_fast_tmp())
        self.log_path = os.path.join(self.data_dir, "etcd.log")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    @property
    def store_url(self) -> str:
        """The form netctl's --store takes."""
        return f"etcd://{self.address}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> "LabEtcdServer":
        if self.running:
            return self
        peer = "http://127.0.0.1:2380"
        argv = [
            ETCD, "--name", self.name, "--data-dir", os.path.join(self.data_dir, "data"),
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"{self.name}={peer}", "--initial-cluster-state", "new",
            "--log-outputs", self.log_path, "--logger", "zap",
        ]  # fmt: skip
        self.proc = self.host.popen(*argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not self._wait_ready():
            self.kill()
            raise RuntimeError(f"etcd did not become ready on {self.url} inside {self.host.name}; its log:\n{self.log()}")
        return self

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if not self.running:
                return False
            probe = self.host.run("etcdctl", f"--endpoints={self.url}", "--dial-timeout=1s", "--command-timeout=1s",
                                  "endpoint", "health", check=False, timeout=10, env={"ETCDCTL_API": "3"})
            if probe.returncode == 0:
                return True
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        self._terminate(signal.SIGTERM)

    def kill(self) -> None:
        self._terminate(signal.SIGKILL)

    def _terminate(self, sig: int) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        # nsenter and etcd: one group, started by us. Until etcd itself is gone it holds its ports,
        # and a start() right after would fail with "address already in use".
        stop_group(proc, sig, STOP_TIMEOUT_S)

    def ctl(self, *args: str, check: bool = True) -> str:
        """etcdctl against this server, run inside its host."""
        proc = self.host.run("etcdctl", f"--endpoints={self.url}", *args, check=check, timeout=30,
                             env={"ETCDCTL_API": "3"})
        return proc.stdout

    def dump(self, prefix: str = "/netctl/") -> dict[str, str]:
        """Every key under prefix with its value (the before/after picture of a test)."""
        import base64
        import json

        out = self.ctl("get", "--prefix", prefix, "-w", "json")
        kvs = json.loads(out).get("kvs", []) if out.strip() else []
        return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode() for kv in kvs}

    def wipe(self, prefix: str = "/netctl/") -> None:
        self.ctl("del", "--prefix", prefix)

    def log(self) -> str:
        with contextlib.suppress(OSError), open(self.log_path) as f:
            return f.read()[-4000:]
        return ""

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def etcdctl(url: str, *args: str) -> str:
    env = {**os.environ, "ETCDCTL_API": "3"}
    return subprocess.run(["etcdctl", f"--endpoints={url}", *args], env=env, capture_output=True, text=True,
                          check=True, timeout=30).stdout
