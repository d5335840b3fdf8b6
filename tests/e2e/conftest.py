"""Helpers for driving netctl as a user does, inside the throwaway host of tests/conftest.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest

TOOLS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "tools")
TCP_PEER = os.path.join(TOOLS, "tcp_peer.py")


def command_pid(proc, timeout: float = 5.0) -> int:
    """host.popen runs argv under nsenter, which forks into the host's pid namespace: the command is
    nsenter's only child. Signals meant for the command go to that PID."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
            children = f.read().split()
        if children:
            return int(children[0])
        time.sleep(0.005)
    raise AssertionError("the command did not start under nsenter")


@dataclass
class SandboxRef:
    name: str
    id: str
    path: str


class Lab:
    """netctl commands with the output parsed, plus ping/TCP probes between sandboxes."""

    def __init__(self, host):
        self.host = host

    def netctl(self, *args, **kw):
        return self.host.netctl(*args, **kw)

    def network(self, name: str, *args: str) -> str:
        return self.netctl("network", "create", *args, name).stdout.strip()

    def inspect(self, name: str) -> dict:
        return json.loads(self.netctl("network", "inspect", name).stdout)[0]

    def sandbox(self, name: str) -> SandboxRef:
        sandbox_id = self.netctl("sandbox", "create", "--name", name).stdout.strip()
        return SandboxRef(name, sandbox_id, f"{self.host.root}/netns/{sandbox_id}")

    def connect(self, network: str, sandbox: str, *args: str) -> list[str]:
        """Returns the endpoint's addresses without prefix length."""
        out = self.netctl("network", "connect", *args, network, sandbox).stdout.split()
        return [a.split("/")[0] for a in out[1:]]

    def exec(self, sandbox: str, *argv: str, **kw):
        return self.netctl("sandbox", "exec", sandbox, "--", *argv, **kw)

    def ping(self, sandbox: str, address: str, *, count: int = 1) -> bool:
        result = self.exec(sandbox, "ping", "-c", str(count), "-W", "1", "-i", "0.2", address, check=False, timeout=15)
        return result.returncode == 0

    def serve(self, sandbox: SandboxRef | None, port: int, *, count: int = 1, udp: bool = False):
        """Start a TCP/UDP peer in a sandbox (or the host itself); returns the Popen once it listens."""
        argv = [sys.executable, TCP_PEER, "serve", str(port), "--count", str(count), "--timeout", "20"]
        if udp:
            argv.append("--udp")
        if sandbox is not None:
            argv = ["nsenter", f"--net={sandbox.path}", "--", *argv]
        proc = self.host.popen(*argv, stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == "listening"
        return proc

    def tcp_connect(self, sandbox: str | None, address: str, port: int, *, udp: bool = False, check: bool = True):
        argv = [sys.executable, TCP_PEER, "connect", address, str(port), "--timeout", "3"]
        if udp:
            argv.append("--udp")
        if sandbox is None:
            return self.host.run(*argv, check=check, timeout=15)
        return self.exec(sandbox, *argv, check=check, timeout=15)

    def counters(self) -> dict[str, int]:
        out = self.host.py("import json; from libnetwork import firewall; print(json.dumps(firewall.counters()))")
        return json.loads(out.stdout)


@pytest.fixture
def lab(host) -> Lab:
    return Lab(host)


class Upstream:
    """The fake upstream namespace of tests/conftest.py with TCP/UDP probes."""

    def __init__(self, upstream):
        self._upstream = upstream

    def __getattr__(self, name):
        return getattr(self._upstream, name)

    def serve(self, port: int, *, count: int = 1, udp: bool = False):
        argv = [sys.executable, TCP_PEER, "serve", str(port), "--count", str(count), "--timeout", "20"]
        if udp:
            argv.append("--udp")
        proc = self._upstream.popen(*argv, stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == "listening"
        return proc

    def connect(self, address: str, port: int, *, udp: bool = False, check: bool = True):
        argv = [sys.executable, TCP_PEER, "connect", address, str(port), "--timeout", "3"]
        if udp:
            argv.append("--udp")
        return self._upstream.run(*argv, check=check, timeout=15)


@pytest.fixture
def upstream(upstream):  # wraps the harness's upstream fixture of the same name
    return Upstream(upstream)
