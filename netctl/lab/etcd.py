"""The lab's etcd: one member inside the switch namespace, serving clients on the switch's address of
every underlay (so each host reaches it over its own underlay) and on the switch namespace's loopback
(for the lab tool itself). Its peer port is on that loopback: nothing outside the lab can talk to it.
The data directory is under the lab directory and goes with it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import time
import urllib.request

from libnetwork.errors import NetctlError
from netctl.lab import processes
from netctl.lab.model import ETCD_PORT, Topology
from netctl.lab.processes import Recorded

ETCD = "etcd"
LOCAL_URL = f"http://127.0.0.1:{ETCD_PORT}"  # inside the switch namespace
PEER_URL = "http://127.0.0.1:2380"
START_TIMEOUT_S = 20.0
HOSTS_PREFIX = "/netctl/v1/hosts/"  # libnetwork/store/ETCD_SCHEMA.md


def binary() -> str:
    path = shutil.which(ETCD) or ("/usr/bin/etcd" if os.access("/usr/bin/etcd", os.X_OK) else "")
    if not path:
        raise NetctlError("etcd is not installed (a lab keeps its global store in it); install etcd-server")
    return path


def start(topology: Topology, switch_netns: str, data_dir: str, log_path: str) -> Recorded:
    """Start etcd in the switch namespace and wait until it answers; returns the recorded process."""
    clients = [f"http://{u.switch_address}:{ETCD_PORT}" for u in topology.underlays.values()]
    argv = [
        binary(), "--name", f"lab-{topology.name}", "--data-dir", data_dir,
        "--listen-client-urls", ",".join(clients + [LOCAL_URL]), "--advertise-client-urls", ",".join(clients),
        "--listen-peer-urls", PEER_URL, "--initial-advertise-peer-urls", PEER_URL,
        "--initial-cluster", f"lab-{topology.name}={PEER_URL}", "--initial-cluster-state", "new",
        "--log-outputs", log_path, "--logger", "zap",
    ]  # fmt: skip
    proc, recorded = processes.spawn(processes.in_netns(switch_netns, argv), log_path=log_path + ".stdout")
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise NetctlError(f"etcd exited at start (status {proc.returncode}); see {log_path}")
        if healthy(switch_netns):
            return recorded
        time.sleep(0.05)
    processes.stop(recorded)
    raise NetctlError(f"etcd did not become ready within {START_TIMEOUT_S:.0f} s; see {log_path}")


def _request(switch_netns: str, path: str, body: dict | None = None, timeout: float = 2.0) -> dict:
    """One HTTP request to etcd from inside the switch namespace (the socket is made there)."""
    from libnetwork import netns

    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(LOCAL_URL + path, data=data, method="POST" if data is not None else "GET")
    with netns.entered(switch_netns):
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return json.loads(reply.read() or b"{}")


def healthy(switch_netns: str) -> bool:
    with contextlib.suppress(OSError, ValueError, NetctlError):
        return _request(switch_netns, "/health", timeout=1.0).get("health") == "true"
    return False


def host_leases(switch_netns: str) -> dict[str, dict]:
    """{host name: {"vtep", "lease", "ttl"}} from the hosts' records; ttl -1 when the lease is gone.
    {} if etcd does not answer."""
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    end = HOSTS_PREFIX[:-1] + chr(ord(HOSTS_PREFIX[-1]) + 1)
    try:
        reply = _request(switch_netns, "/v3/kv/range", {"key": b64(HOSTS_PREFIX), "range_end": b64(end)})
    except (OSError, ValueError, NetctlError):
        return {}
    result = {}
    for kv in reply.get("kvs", []):
        with contextlib.suppress(ValueError, KeyError):
            record = json.loads(base64.b64decode(kv["value"]))
            lease = int(kv.get("lease", 0) or record.get("lease", 0) or 0)
            result[record["name"]] = {"vtep": record.get("vtep", ""), "lease": lease, "ttl": _ttl(switch_netns, lease)}
    return result


def _ttl(switch_netns: str, lease: int) -> int:
    if not lease:
        return -1
    with contextlib.suppress(OSError, ValueError, NetctlError):
        return int(_request(switch_netns, "/v3/lease/timetolive", {"ID": lease}).get("TTL", -1))
    return -1
