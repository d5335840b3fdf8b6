"""Helpers of the CNI tests: running netctl's CNI plugins the way libcni does: an executable found in a plugin directory, the six
CNI_* variables always exported (empty when unused), the configuration on stdin, JSON on stdout.
Everything runs inside a throwaway host (tests/harness.py); netctl's state root is the host's private
/run/netctl and every IPAM data directory of the reference plugins lives under the host's /run too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import harness

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REFERENCE_DIR = "/usr/lib/cni"
NETCTL_ROOT = harness.NETCTL_ROOT
REFERENCE_PLUGINS = ("bridge", "host-local", "portmap", "tuning")


@dataclass
class Reply:
    """What a plugin run returned; .json is stdout parsed (None when empty)."""

    rc: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout) if self.stdout.strip() else None

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def error(self) -> dict[str, Any]:
        """The spec error object a failed run printed (and the assertions every error must meet)."""
        assert self.rc != 0, f"expected a failure, got {self.stdout}"
        reply = self.json
        assert isinstance(reply, dict) and isinstance(reply.get("code"), int) and isinstance(reply.get("msg"), str), self
        assert "Traceback" not in self.stdout + self.stderr
        return reply


def bridge_conf(name: str = "t1", subnet: str = "10.99.0.0/24", *, version: str = "1.1.0", bridge: str = "",
                **extra: Any) -> dict[str, Any]:
    """A netctl-bridge + netctl-ipam network configuration."""
    conf: dict[str, Any] = {
        "cniVersion": version,
        "name": name,
        "type": "netctl-bridge",
        "bridge": bridge or f"cni-{name}"[:15],
        "isGateway": True,
        "ipam": {"type": "netctl-ipam", "ranges": [[{"subnet": subnet}]], "routes": [{"dst": "0.0.0.0/0"}]},
    }
    conf.update(extra)
    return conf


def with_prev(conf: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    return dict(conf, prevResult=result)


class Cni:
    """Plugin runs and probes inside one throwaway host."""

    def __init__(self, host: harness.Host, plugin_dir: str):
        self.host = host
        self.plugin_dir = plugin_dir
        self.path = f"{plugin_dir}:{REFERENCE_DIR}"
        self.made_netns: set[str] = set()

    # --- running plugins -----------------------------------------------------------------------------

    def run(self, plugin: str, command: str, conf: dict[str, Any] | str | bytes | None, *, cid: str = "",
            netns: str = "", ifname: str = "", args: str = "", path: str | None = None,
            env: dict[str, str] | None = None, unset: tuple[str, ...] = (), timeout: float = 60) -> Reply:
        """Run one plugin (a netctl-* name, or a reference plugin by its bare name)."""
        binary = os.path.join(self.plugin_dir if plugin.startswith("netctl-") else REFERENCE_DIR, plugin)
        variables = {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": netns, "CNI_IFNAME": ifname,
                     "CNI_ARGS": args, "CNI_PATH": self.path if path is None else path, **(env or {})}
        argv = ["env"] + [f"-u{name}" for name in unset] + [f"{k}={v}" for k, v in variables.items() if k not in unset]
        data = conf if isinstance(conf, (str, bytes)) or conf is None else json.dumps(conf)
        if isinstance(data, bytes):
            data = data.decode(errors="surrogateescape")
        done = self.host.run(*argv, binary, input=data or "", check=False, timeout=timeout)
        return Reply(done.returncode, done.stdout, done.stderr)

    def add(self, conf: dict[str, Any], cid: str = "c1", netns: str = "", ifname: str = "eth0", plugin: str = "",
            **kw: Any) -> dict[str, Any]:
        reply = self.run(plugin or conf["type"], "ADD", conf, cid=cid, netns=netns or self.netns(cid), ifname=ifname, **kw)
        assert reply.ok, reply
        return reply.json

    def delete(self, conf: dict[str, Any], cid: str = "c1", netns: str | None = None, ifname: str = "eth0",
               plugin: str = "", **kw: Any) -> Reply:
        reply = self.run(plugin or conf["type"], "DEL", conf, cid=cid,
                         netns=self.netns_path(cid) if netns is None else netns, ifname=ifname, **kw)
        assert reply.ok and reply.stdout == "", reply
        return reply

    # --- namespaces and probes -------------------------------------------------------------------------

    @staticmethod
    def netns_path(name: str) -> str:
        return f"/run/netns/{name}"

    def netns(self, name: str) -> str:
        """/run/netns/NAME inside the host, made on first use (a container's namespace)."""
        if name not in self.made_netns:
            self.host.run("ip", "netns", "add", name)
            self.made_netns.add(name)
        return self.netns_path(name)

    def drop_netns(self, name: str) -> None:
        self.host.run("ip", "netns", "del", name)
        self.made_netns.discard(name)

    def inside(self, name: str, *argv: str, **kw: Any) -> subprocess.CompletedProcess:
        return self.host.run("ip", "netns", "exec", name, *argv, **kw)

    def links(self, netns: str = "") -> dict[str, dict[str, Any]]:
        argv = ["ip", "-j", "-d", "link"] if not netns else ["ip", "-n", netns, "-j", "-d", "link"]
        return {link["ifname"]: link for link in json.loads(self.host.run(*argv).stdout)}

    def addresses(self, netns: str, ifname: str = "eth0") -> list[str]:
        out = json.loads(self.host.run("ip", "-n", netns, "-j", "addr", "show", "dev", ifname, check=False).stdout or "[]")
        return [f"{a['local']}/{a['prefixlen']}" for link in out for a in link.get("addr_info", []) if a["family"] == "inet"]

    def ping(self, netns: str, address: str, tries: int = 3) -> bool:
        """A first packet right after ADD may meet a bridge port still settling: a few tries, bounded."""
        for _ in range(tries):
            if self.inside(netns, "ping", "-c", "1", "-W", "1", address, check=False).returncode == 0:
                return True
        return False

    def inspect(self, network: str) -> dict[str, Any] | None:
        done = self.host.netctl("network", "inspect", network, check=False)
        return json.loads(done.stdout)[0] if done.returncode == 0 else None

    def allocations(self) -> list[tuple[str, str, str]]:
        """Every address netctl's IPAM holds (network id, address, owner), gateways included."""
        code = ("import json\nfrom libnetwork.controller import Controller\nfrom libnetwork import ipam\n"
                "c = Controller()\nwith c.store.snapshot() as tx: print(json.dumps(ipam.allocations(tx)))")
        return [tuple(a) for a in json.loads(self.host.py(code).stdout)]

    def endpoint_addresses(self) -> list[str]:
        """Addresses held by endpoints (not gateways): what must be empty after every DEL."""
        return sorted(a for _, a, owner in self.allocations() if not owner.startswith(("gateway:", "aux:")))

    def sandboxes(self) -> list[str]:
        code = ("from libnetwork.controller import Controller\n"
                "print('\\n'.join(s.name for s, _ in Controller().list_sandboxes()))")
        return self.host.py(code).stdout.split()

    def wait_links_gone(self, names: set[str], netns: str = "", timeout: float = 5.0) -> set[str]:
        """The service deletes veths in the background: what of `names` is still there after waiting."""
        deadline = time.monotonic() + timeout
        while True:
            left = names & set(self.links(netns))
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.05)


class Service:
    """The host agent (`netctl daemon`, which serves the CNI plugins: cni_plugins/service.py) running
    inside a host, logging one line per request to a file (a pipe nobody reads could fill up and
    stall it). It replaces an agent a plugin call may have started on first use."""

    LOG = "/run/cni-service.log"
    START_TIMEOUT_S = 30.0

    def __init__(self, host: harness.Host, root: str = NETCTL_ROOT):
        self.host = host
        self.socket = f"{root}/netctl.sock"
        command = f"exec {sys.executable} -m netctl --root {root} daemon 2>>{self.LOG}"
        self.proc = host.popen("sh", "-c", command, env={"PYTHONPATH": REPO})
        deadline = time.monotonic() + self.START_TIMEOUT_S
        while "listening on" not in self._log_or_empty():
            assert self.proc.poll() is None and time.monotonic() < deadline, self._log_or_empty()
            time.sleep(0.02)

    def _log_or_empty(self) -> str:
        try:
            return self.log()
        except FileNotFoundError:
            return ""

    def log(self) -> str:
        with open(self.host.path(self.LOG)) as f:
            return f.read()

    def stop(self) -> None:
        """SIGTERM to the agent itself (the Popen is nsenter's), then wait for it to finish."""
        os.kill(_child_pid(self.proc.pid), 15)
        self.proc.wait(timeout=30)

    def kill(self) -> None:
        os.kill(_child_pid(self.proc.pid), 9)
        self.proc.wait(timeout=30)


def _child_pid(pid: int, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = f.read().split()
        if children:
            return int(children[0])
        time.sleep(0.01)
    raise AssertionError(f"process {pid} has no child")
