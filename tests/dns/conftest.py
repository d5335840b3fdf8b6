"""A throwaway host for the name server's tests: its own resolv.conf (bind-mounted over /etc/resolv.conf
in the host's private mount namespace, so the agent's upstream is a server the test made, never the
machine's), a fake upstream name server at 198.51.100.53 (fake_upstream.py, in the harness's upstream
namespace), an agent started by hand with its log in /run/agent.log, busybox, and a cgroup parent."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from containers.conftest import BUSYBOX, remove_cgroup_tree, wait_for
from harness import Host, add_upstream, new_test_cgroup_parent

HERE = os.path.dirname(os.path.abspath(__file__))
STUB = os.path.join(HERE, "stub.py")
FAKE_UPSTREAM = os.path.join(HERE, "fake_upstream.py")
UPSTREAM_DNS = "198.51.100.53"
AGENT_LOG = "/run/agent.log"
ROOT = "/run/netctl"


class DnsLab:
    def __init__(self, host: Host, cgroup_parent: str):
        self.host = host
        self.env = {"NETCTL_CGROUP_PARENT": cgroup_parent}
        self.agent: subprocess.Popen | None = None
        self.upstream_proc: subprocess.Popen | None = None
        self._upstream_text = ""  # printed by the upstream, not yet a whole line

    # -- netctl ----------------------------------------------------------------------------------

    def netctl(self, *args: str, **kw) -> subprocess.CompletedProcess:
        env = {**self.env, **kw.pop("env", {})}
        return self.host.netctl(*args, env=env, **kw)

    def run(self, name: str, *args: str, network: str = "net") -> str:
        return self.netctl("run", "-d", "--name", name, "--network", network, *args, "busybox",
                           "sleep", "600").stdout.strip()

    def nslookup(self, container: str, name: str, *args: str) -> subprocess.CompletedProcess:
        return self.netctl("exec", container, "nslookup", *args, name, check=False, timeout=30)

    def stub(self, sandbox: str, *queries: str, tcp: bool = False, env: dict | None = None) -> list[dict]:
        """Answers of the Python stub resolver run in the sandbox's (container's) namespace.
        env={"NETCTL_NO_DAEMON": "1"} while no agent may run (else the command starts one)."""
        argv = [sys.executable, STUB, *(["--tcp"] if tcp else []), *queries]
        out = self.netctl("sandbox", "exec", sandbox, "--", *argv, timeout=60, env=env or {}).stdout
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def socket_in(self, sandbox: str, kind: int = socket.SOCK_DGRAM) -> socket.socket:
        """A socket of the test process made inside the sandbox's (container's) network namespace."""
        from libnetwork import netns

        info = json.loads(self.netctl("sandbox", "inspect", sandbox).stdout)[0]
        with netns.entered(self.host.path(info["netns_path"])):
            return socket.socket(socket.AF_INET, kind)

    def addresses(self, sandbox: str, name: str, qtype: str = "A") -> list[str]:
        (answer,) = self.stub(sandbox, f"{name}/{qtype}")
        return answer.get("answers", [])

    # -- agent -----------------------------------------------------------------------------------

    def start_agent(self) -> None:
        self.agent = self.host.popen("sh", "-c", f"exec {sys.executable} -m netctl daemon 2>>{AGENT_LOG}")
        wait_for(lambda: self.host.run("test", "-S", f"{ROOT}/dns.sock", check=False).returncode == 0,
                 what="the agent's name server")
        wait_for(lambda: self.host.run("test", "-S", f"{ROOT}/netctl.sock", check=False).returncode == 0,
                 what="the agent's socket")

    def stop_agent(self) -> None:
        from harness import stop_group
        import signal

        if self.agent is not None:
            stop_group(self.agent, signal.SIGTERM)
            self.agent = None

    def agent_log(self) -> str:
        return self.host.run("cat", AGENT_LOG, check=False).stdout

    # -- upstream --------------------------------------------------------------------------------

    def upstream_queries(self, *, sources: bool = False) -> list[str]:
        """Lines the fake upstream printed so far (non-blocking read of its stdout): "udp NAME TYPE",
        or with sources=True as printed ("udp NAME TYPE from ADDRESS:PORT")."""
        import select

        proc = self.upstream_proc
        assert proc is not None and proc.stdout is not None
        # os.read, not readline: readline buffers every line that came in one read, and select then
        # says nothing is left (only the first of several lines was returned).
        fd = proc.stdout.fileno()
        while select.select([fd], [], [], 0.05)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            self._upstream_text += chunk.decode()
        *complete, self._upstream_text = self._upstream_text.split("\n")
        return [line.strip() if sources else line.split(" from ")[0].strip() for line in complete]


def make_lab(name: str, *, resolv_conf: str) -> tuple[Host, DnsLab]:
    parent = new_test_cgroup_parent()
    host = Host.start(name)
    lab = DnsLab(host, parent)
    lab._parent = parent  # type: ignore[attr-defined]
    host.run("sh", "-c", "mkdir -p /run/dnstest && cat > /run/dnstest/resolv.conf && "
                         "mount --bind /run/dnstest/resolv.conf /etc/resolv.conf", input=resolv_conf)
    upstream = add_upstream(host)
    upstream.run("ip", "addr", "add", f"{UPSTREAM_DNS}/24", "dev", upstream.ifname)
    lab.upstream_proc = upstream.popen(sys.executable, FAKE_UPSTREAM, UPSTREAM_DNS, stdout=subprocess.PIPE, text=True)
    assert lab.upstream_proc.stdout is not None
    assert lab.upstream_proc.stdout.readline().strip() == "listening"
    return host, lab


@pytest.fixture
def dns_lab() -> Iterator[DnsLab]:
    """busybox imported, a dual-stack bridge network `net`, the agent running."""
    if not os.path.exists(BUSYBOX):
        pytest.skip("busybox-static is not installed (sudo bash scripts/bootstrap.sh)")
    host, lab = make_lab("dns", resolv_conf=f"nameserver {UPSTREAM_DNS}\nsearch corp.example\noptions ndots:1\n")
    try:
        lab.start_agent()
        lab.netctl("image", "build-busybox")
        lab.netctl("network", "create", "--ipv6", "--subnet", "10.89.0.0/24", "--subnet", "fd89::/64", "net")
        yield lab
        log = lab.agent_log()
        assert "Traceback" not in log, log
        logged = host.tracebacks()
        assert not logged, logged
    finally:
        host.close()
        left = remove_cgroup_tree(lab._parent)  # type: ignore[attr-defined]
        assert not left, f"cgroups left behind: {left}"
