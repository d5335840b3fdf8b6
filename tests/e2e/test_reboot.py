"""Repair at agent start (libnetwork/repair.py): a host rebooted with its state root intact.

A "reboot" here is a throwaway host destroyed - its links, namespaces, nftables tables and processes
vanish with it - and a new one started on the same root, a directory under pytest's tmp_path (not the
host's /run, which dies with it). Starting `netctl daemon` there must bring every network back and
release the endpoints of the namespaces that are gone, with no `netctl gc`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from cni.helpers import Cni, bridge_conf
from containers.conftest import BUSYBOX, remove_cgroup_tree
from harness import Host, diff_snapshots, new_test_cgroup_parent

from e2e.conftest import command_pid

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(240)]

START_TIMEOUT_S = 30.0
# What the agent does at start, run by hand inside a host: every line it would log, one per line.
REPAIR = "from libnetwork.repair import repair_root; r = repair_root(); print(*r.actions + r.failures, sep='\\n')"


class Agent:
    """`netctl daemon` inside a host, its stderr in a file outside; stopped by its own PID."""

    def __init__(self, host: Host, log_path: str, env: dict[str, str]):
        self.log_path = log_path
        with open(log_path, "w") as log:
            self.proc = host.popen(sys.executable, "-m", "netctl", "daemon", stdout=subprocess.DEVNULL, stderr=log,
                                   env=env)
        self.pid = command_pid(self.proc)
        deadline = time.monotonic() + START_TIMEOUT_S
        while "listening on" not in self.log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"the agent did not come up; its log:\n{self.log()}")
            time.sleep(0.02)

    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def repairs(self) -> list[str]:
        return [line.split("repair: ", 1)[1] for line in self.log().splitlines() if "repair: " in line]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
        self.proc.wait(timeout=15)


class Machine:
    """One root, and the throwaway host currently running on it (replaced by reboot())."""

    def __init__(self, root: str, cgroup_parent: str, plugin_dir: str):
        self.root = root
        # Commands run in-process: what is tested is what the agent does when the test starts it, so
        # no command may start one on first use before (it would do the repair itself).
        self.env = {"NETCTL_CGROUP_PARENT": cgroup_parent, "NETCTL_NO_DAEMON": "1"}
        self.cgroup_parent = cgroup_parent
        self.plugin_dir = plugin_dir
        self.host = self._boot()

    def _boot(self) -> Host:
        host = Host.start("reboot")
        host.root = self.root
        return host

    def reboot(self) -> None:
        """Everything of the kernel goes (links, namespaces, nftables, processes); the root stays."""
        self.host.close()
        remove_cgroup_tree(self.cgroup_parent)  # the containers' cgroups outlive the host's processes
        self.host = self._boot()

    def netctl(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.host.netctl(*args, env={**self.env, **kw.pop("env", {})}, **kw)

    def inspect(self, network: str) -> dict:
        return json.loads(self.netctl("network", "inspect", network).stdout)[0]

    def cni(self) -> "MachineCni":
        return MachineCni(self.host, self.plugin_dir, self.env)

    def close(self) -> None:
        logged = ""
        try:
            logged = self.host.tracebacks()  # the root's logs, every boot's
        finally:
            self.host.close()
            left = remove_cgroup_tree(self.cgroup_parent)
        assert not left, f"cgroups left behind: {left}"
        assert not logged, logged


class MachineCni(Cni):
    """CNI plugin runs with the machine's environment."""

    def __init__(self, host: Host, plugin_dir: str, env: dict[str, str]):
        super().__init__(host, plugin_dir)
        self.env = env

    def run(self, *args, **kw):
        return super().run(*args, **{**kw, "env": {**self.env, **(kw.get("env") or {})}})


@pytest.fixture
def machine(tmp_path):
    if not os.path.exists(BUSYBOX):
        pytest.skip("busybox-static is not installed (sudo bash scripts/bootstrap.sh)")
    plugin_dir = str(tmp_path / "cni-bin")
    subprocess.run([sys.executable, "-m", "cni_plugins.install", plugin_dir], check=True, capture_output=True,
                   timeout=60, cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    made = Machine(str(tmp_path / "root"), new_test_cgroup_parent(), plugin_dir)
    try:
        yield made
    finally:
        made.close()


CNI_NET = bridge_conf("cninet", "10.79.0.0/24", version="1.0.0")


def cni_conf_of(name: str, subnet: str) -> dict:
    """A CNI configuration for a network made by `netctl network create` (masquerade as it has)."""
    return {"cniVersion": "1.0.0", "name": name, "type": "netctl-bridge", "ipMasq": True,
            "ipam": {"type": "netctl-ipam", "ranges": [[{"subnet": subnet}]]}}


def bridge_of(host: Host, name: str) -> dict:
    (link,) = json.loads(host.run("ip", "-j", "addr", "show", "dev", name).stdout)
    return link


def test_reboot_restores_networks_and_releases_vanished_endpoints(machine, tmp_path):
    m = machine
    m.netctl("image", "build-busybox")
    m.netctl("network", "create", "--subnet", "10.77.0.0/24", "web")
    m.netctl("network", "create", "--internal", "--subnet", "10.78.0.0/24", "back")
    m.netctl("run", "-d", "--name", "db", "--network", "web", "-p", "8080:80", "busybox", "sleep", "600")
    m.netctl("sandbox", "create", "--name", "alpha")
    m.netctl("network", "connect", "back", "alpha")
    m.netctl("network", "connect", "-p", "8081:80/tcp", "web", "alpha")
    m.cni().add(CNI_NET, cid="c1")
    before = {name: m.inspect(name) for name in ("web", "back", "cninet")}
    assert [len(before[n]["Containers"]) for n in ("web", "back", "cninet")] == [2, 1, 1]
    assert "dport 8080" in m.host.run("nft", "list", "ruleset").stdout

    m.reboot()
    assert not m.host.ip_link_names() - {"lo"}  # a new kernel: nothing of netctl's is left
    agent = Agent(m.host, str(tmp_path / "agent.log"), m.env)
    try:
        repairs = agent.repairs()
        # Every vanished endpoint is released, by name, and every bridge is back with its gateway.
        for name, network in before.items():
            for endpoint in network["Containers"].values():
                released = (f"released endpoint {endpoint['EndpointID'][:12]} of network {name}, "
                            f"{endpoint['IPv4Address']} (sandbox {endpoint['Sandbox']}: namespace gone)")
                assert released in repairs, agent.log()
            gateway = network["IPAM"]["Config"][0]["Gateway"]
            assert f"network {name}: bridge {network['Bridge']} recreated ({gateway}/24)" in repairs, agent.log()
            bridge = bridge_of(m.host, network["Bridge"])
            assert "UP" in bridge["flags"] and bridge["mtu"] == network["MTU"]
            assert [a["local"] for a in bridge["addr_info"]] == [gateway]
            assert m.inspect(name)["Containers"] == {}  # addresses free again
        assert {"removed sandbox db", "removed sandbox alpha", "removed sandbox c1"} <= {
            line.split(" (")[0] for line in repairs}
        assert not [line for line in agent.log().splitlines() if "WARNING" in line or "not repaired" in line]
        ruleset = m.host.run("nft", "list", "ruleset").stdout
        # Every network is empty again, and an empty network has no rules: netctl's tables are gone,
        # with the port published by a container that is gone.
        assert "table inet netctl" not in ruleset and "dport 8080" not in ruleset, ruleset
        assert m.netctl("doctor").stdout == "no problems found\n"

        # New containers and a new CNI attachment on every network reach the gateway; the host port of
        # the vanished container is free for a new one.
        m.netctl("run", "--rm", "--network", "web", "busybox", "ping", "-c1", "-W2", "10.77.0.1", timeout=60)
        m.netctl("run", "--rm", "--network", "back", "busybox", "ping", "-c1", "-W2", "10.78.0.1", timeout=60)
        m.netctl("run", "-d", "--name", "web2", "--network", "web", "-p", "8080:80", "busybox", "sleep", "600")
        assert "dport 8080" in m.host.run("nft", "list", "ruleset").stdout
        cni = m.cni()
        for name, subnet in (("web", "10.77.0.0/24"), ("back", "10.78.0.0/24"), ("cninet", "10.79.0.0/24")):
            conf = CNI_NET if name == "cninet" else cni_conf_of(name, subnet)
            result = cni.add(conf, cid=f"new-{name}")
            assert result["ips"][0]["address"].startswith(subnet.rsplit(".", 2)[0]), result
            assert cni.ping(f"new-{name}", subnet.replace("0/24", "1")), name
            cni.delete(conf, cid=f"new-{name}")
        m.netctl("rm", "-f", "web2")
    finally:
        agent.stop()

    # A warm restart with everything in place repairs nothing.
    again = Agent(m.host, str(tmp_path / "agent-2.log"), m.env)
    try:
        assert again.repairs() == []
    finally:
        again.stop()


def test_repair_of_an_intact_host_changes_nothing(machine):
    m = machine
    m.netctl("network", "create", "--subnet", "10.77.0.0/24", "web")
    m.netctl("network", "create", "--internal", "-o", "icc=false", "back")
    m.netctl("network", "create", "-d", "null", "nothing")
    m.netctl("sandbox", "create", "--name", "alpha")
    m.netctl("network", "connect", "-p", "8080:80/tcp", "web", "alpha")
    m.netctl("network", "connect", "back", "alpha")
    m.netctl("network", "connect", "nothing", "alpha")
    m.cni().add(CNI_NET, cid="c1")
    m.netctl("image", "build-busybox")
    m.netctl("run", "-d", "--name", "db", "--network", "web", "-p", "8081:80", "busybox", "sleep", "600")
    before = m.host.snapshot()
    for _ in range(2):
        out = m.host.py("from libnetwork.repair import repair_root; r = repair_root(); print(r.actions, r.failures)")
        assert out.stdout == "[] []\n"
    assert diff_snapshots(before, m.host.snapshot()) == ""


def test_repair_of_a_running_host_rebuilds_what_was_removed_under_live_sandboxes(machine):
    """Not a reboot: the agent restarts after someone deleted a bridge and flushed nftables while the
    sandboxes lived on. The bridge comes back with its gateway, the live endpoints' veths are attached
    to it again, and the published port's rules are back. A network that cannot be repaired (a veth
    took its bridge's name) is reported, and the others are repaired all the same."""
    m = machine
    m.netctl("network", "create", "--subnet", "10.76.0.0/24", "other")
    other = m.inspect("other")["Bridge"]
    m.host.run("ip", "link", "del", other)
    m.host.run("ip", "link", "add", other, "type", "veth", "peer", "name", "intruder")
    m.netctl("network", "create", "--subnet", "10.77.0.0/24", "web")
    for name in ("alpha", "beta"):
        m.netctl("sandbox", "create", "--name", name)
    m.netctl("network", "connect", "-p", "8080:80/tcp", "web", "alpha")
    m.netctl("network", "connect", "web", "beta")
    bridge = m.inspect("web")["Bridge"]
    m.host.run("ip", "link", "del", bridge)
    m.host.run("nft", "flush", "ruleset")
    beta = json.loads(m.netctl("sandbox", "inspect", "beta").stdout)[0]
    m.host.run("ip", "link", "del", beta["endpoints"][0]["HostInterface"])  # and one veth pair

    lines = m.host.py(REPAIR).stdout.splitlines()
    refused = (f"network other: not repaired: link {other} of network 'other' is a veth link, not a bridge; "
               f"delete it (`ip link del {other}`), then restart the agent")
    assert [line for line in lines if "not repaired" in line] == [refused]
    assert f"network web: bridge {bridge} recreated (10.77.0.1/24)" in lines
    assert any(line.startswith("network web: endpoint ") and "(sandbox alpha): veth nv" in line
               and line.endswith(f"attached to bridge {bridge} again") for line in lines), lines
    assert any("(sandbox beta): veth nv" in line and line.endswith("recreated") for line in lines), lines
    assert any(line.startswith("nftables: netctl's tables rebuilt") for line in lines), lines
    assert "dport 8080" in m.host.run("nft", "list", "ruleset").stdout
    containers = m.inspect("web")["Containers"]
    addresses = {e["Sandbox"]: e["IPv4Address"].split("/")[0] for e in containers.values()}
    for name, peer in (("alpha", addresses["beta"]), ("beta", "10.77.0.1")):
        m.netctl("sandbox", "exec", name, "--", "ping", "-c1", "-W2", peer, timeout=30)
    m.host.run("ip", "link", "del", other)
    assert m.host.py(REPAIR).stdout == f"network other: bridge {other} recreated (10.76.0.1/24)\n"
    assert m.netctl("doctor").stdout == "no problems found\n"


def test_reboot_starts_the_containers_whose_restart_policy_says_so(machine, tmp_path):
    """As dockerd at its start: the agent has the monitor settle what the earlier boot left running.
    always, unless-stopped and on-failure containers run again on their network; one without a policy
    is shown exited (255, its status lost), not Up; one stopped by hand stays stopped."""
    m = machine
    m.netctl("image", "build-busybox")
    m.netctl("network", "create", "--subnet", "10.81.0.0/24", "web")
    policies = {"always": "always", "unless": "unless-stopped", "failing": "on-failure:3", "plain": "no",
                "stopped": "unless-stopped"}
    for name, policy in policies.items():
        m.netctl("run", "-d", "--name", name, "--restart", policy, "--network", "web", "busybox", "sleep", "600")
    m.netctl("stop", "-t", "1", "stopped")
    m.reboot()

    agent = Agent(m.host, str(tmp_path / "agent.log"), m.env)
    try:
        def state(name: str) -> dict:
            return json.loads(m.netctl("inspect", name).stdout)[0]["State"]

        def settled() -> bool:
            return all(state(name)["Status"] == "running" for name in ("always", "unless", "failing")) and \
                state("plain")["Status"] == "exited"

        deadline = time.monotonic() + START_TIMEOUT_S
        while not settled():
            assert time.monotonic() < deadline, (agent.log(), m.netctl("ps", "-a").stdout)
            time.sleep(0.1)
        left = "containers left running by an earlier boot or a monitor that was killed (always, failing, plain, unless)"
        assert left in agent.log()
        assert state("plain")["ExitCode"] == 255 and state("stopped")["Status"] == "exited"
        for name in ("always", "unless", "failing"):  # on their network again: the gateway answers
            m.netctl("exec", name, "ping", "-c", "1", "-W", "5", "10.81.0.1")
        m.netctl("rm", "-f", *policies)
        assert json.loads(m.netctl("network", "inspect", "web").stdout)[0]["Containers"] == {}
    finally:
        agent.stop()
