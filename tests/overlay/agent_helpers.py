"""Helpers of the daemon/agent tests: `netctl daemon --store` on lab hosts, started with host.popen and
stopped by the PID of the daemon process itself (not nsenter's), and the kernel tables of a host
compared with what the store says they should be."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from e2e.conftest import command_pid
from harness import Host

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


@dataclass
class Daemon:
    host: Host
    proc: subprocess.Popen
    pid: int  # the daemon's own PID (machine-side)
    log_path: str  # its stderr, a file outside the host
    args: list[str] = field(default_factory=list)

    def log(self) -> str:
        with contextlib.suppress(OSError), open(self.log_path) as f:
            return f.read()
        return ""

    def lines(self, needle: str) -> list[str]:
        return [line for line in self.log().splitlines() if needle in line]

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, sig: int) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Signal the daemon and wait for it (and nsenter) to exit; its exit status."""
        self.send(sig)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.send(signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT_S)
            raise AssertionError(f"daemon on {self.host.name} ignored signal {sig}; its log:\n{self.log()}") from None

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")


def start_daemon(lab, host: Host, log_dir: str, *, lease_ttl: int = 10, extra: tuple[str, ...] = (),
                 wait_registered: bool = True) -> Daemon:
    """`netctl daemon --store URL --vtep ADDR --host-name NAME --lease-ttl S` on `host`, ready to serve
    (and registered in etcd, unless wait_registered is False)."""
    args = ["daemon", "--store", lab.etcd_url, "--vtep", lab.vteps[host.name], "--host-name", host.name,
            "--lease-ttl", str(lease_ttl), *extra]
    n = len([p for p in os.listdir(log_dir) if p.startswith(f"daemon-{host.name}-")])
    log_path = os.path.join(log_dir, f"daemon-{host.name}-{n}.log")
    with open(log_path, "w") as log:
        # Without NETCTL_STORE/NETCTL_HOST_NAME in its environment (the test process has none): the
        # daemon finds everything in its options and writes ROOT/global.json for what follows.
        proc = host.popen(sys.executable, "-m", "netctl", *args, stdout=subprocess.DEVNULL, stderr=log)
    daemon = Daemon(host, proc, command_pid(proc), log_path, args)
    deadline = time.monotonic() + START_TIMEOUT_S
    wanted = ["listening on"] + (["registered in"] if wait_registered else [])
    while not all(daemon.lines(w) for w in wanted):
        if not daemon.alive or time.monotonic() > deadline:
            daemon.stop(signal.SIGKILL) if daemon.alive else None
            raise AssertionError(f"daemon on {host.name} did not come up; its log:\n{daemon.log()}")
        time.sleep(0.02)
    return daemon


@dataclass
class Attached:
    host: Host
    name: str
    netns: str  # path inside the host
    ip: str


def attach(lab, host: Host, name: str, network: str, *, ip: str = "") -> Attached:
    """A sandbox `name` on `host` connected to `network`."""
    lab.netctl(host, "sandbox", "create", "--name", name)
    out = lab.netctl(host, "network", "connect", *(["--ip", ip] if ip else []), network, name).stdout.split()
    address = next(a.split("/")[0] for a in out[1:] if ":" not in a)
    return Attached(host, name, sandbox_netns(lab, host, name), address)


def sandbox_netns(lab, host: Host, name: str) -> str:
    return lab.netctl_json(host, "sandbox", "inspect", name)[0]["netns_path"]


def pings(source: Attached, target: Attached | str, *, wait_s: int = 1) -> bool:
    address = target if isinstance(target, str) else target.ip
    proc = source.host.in_netns(source.netns, "ping", "-n", "-q", "-c", "1", "-W", str(wait_s), address,
                                check=False, timeout=30)
    return proc.returncode == 0


def wait_for(predicate, timeout: float, what: str, interval: float = 0.02):
    """Poll predicate() until truthy (returned) or fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


# Runs inside a host: the kernel tables of one network's VXLAN device and what the store says they
# should be (peers of other hosts), both as JSON.
TABLES_SCRIPT = r"""
import dataclasses, json, sys
from drivers.overlay import OverlayDriver
from libnetwork.model import Network
from libnetwork.store.etcd import EtcdStore
url, host, vtep, network_id = sys.argv[1:5]
with EtcdStore(url, host=host) as store, store.snapshot() as tx:
    network = tx.get_network(network_id)
    peers = tx.list_peers(network_id)
driver = OverlayDriver(vtep)
have = driver.kernel_tables(network)
want = driver.desired_tables(peers)
print(json.dumps({"have": dataclasses.asdict(have), "want": dataclasses.asdict(want)}))
"""


def tables(lab, host: Host, network_id: str) -> dict:
    """{"have": kernel tables, "want": desired tables} of `network_id` on `host`."""
    proc = host.run(sys.executable, "-c", TABLES_SCRIPT, lab.etcd_url, host.name, lab.vteps[host.name], network_id,
                    timeout=30)
    return json.loads(proc.stdout)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]
