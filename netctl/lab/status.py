"""`netctl lab status`: a lab that is up, inspected: hosts (daemon, lease, underlay link) and
containers (host, state, addresses). Also where a lab that must be up is found (require_up) and the
containers' addresses are read, which `test` needs as well.
"""

from __future__ import annotations

import json

from libnetwork.errors import NotFound
from netctl.lab import etcd, matrix, processes, topology
from netctl.lab.processes import Recorded
from netctl.lab.shell import HostShell, creator, each_host
from netctl.lab.state import Paths, State, read_state
from netctl.lab.topology import Topology


def require_up(root: str, file: str) -> tuple[Paths, Topology, State]:
    topo = topology.load(file)
    paths = Paths(root, topo.name)
    state = read_state(paths)
    if state is None or state.phase != "up":
        raise NotFound(f"lab {topo.name} is not up; start it with `netctl lab up {file}`")
    return paths, topo, state


def status(root: str, file: str) -> dict:
    paths, topo, state = require_up(root, file)
    fabric = paths.fabric
    leases = etcd.host_leases(fabric.switch) if state.etcd else {}
    links = fabric.link_states(topo)
    etcd_process = Recorded.from_dict(state.etcd) if state.etcd else None
    hosts = []
    for name, host in topo.hosts.items():
        daemon = Recorded.from_dict(state.daemons[name]) if name in state.daemons else None
        lease = leases.get(name, {})
        hosts.append({
            "name": name, "address": host.address, "underlay": host.underlay, "link_up": links.get(name, False),
            "daemon_pid": daemon.pid if daemon else 0, "daemon_alive": bool(daemon and daemon.alive),
            "daemon_rss_kib": processes.rss_kib(daemon.pid) if daemon and daemon.alive else 0,
            "lease": lease.get("lease", 0), "lease_ttl": lease.get("ttl", -1) if lease else -1,
        })  # fmt: skip
    containers = []
    shells = {h: HostShell(paths, topo, state, h) for h in topo.hosts}
    addresses = network_addresses(shells, topo)
    for host_name, view in each_host(list(topo.hosts), lambda h: shells[h].containers()):
        for c in view:
            containers.append({
                "name": c["Name"], "host": host_name, "state": c["State"]["Status"], "id": c["Id"][:12],
                "addresses": addresses.get(c["Name"], {}),
            })  # fmt: skip
    missing = sorted(set(topo.containers) - {c["name"] for c in containers})
    return {
        "name": topo.name, "phase": state.phase, "created": state.created, "up_seconds": state.up_seconds,
        "etcd": {"pid": etcd_process.pid if etcd_process else 0, "alive": bool(etcd_process and etcd_process.alive),
                 "healthy": etcd.healthy(fabric.switch)},
        "hosts": hosts, "containers": containers, "missing_containers": missing,
    }  # fmt: skip


def running_addresses(shells: dict[str, HostShell], topo: Topology) -> matrix.Addresses:
    """{container: {network: IPv4 address}} of running containers.

    Addresses come from `netctl network inspect` (the controller's view, which for a global network
    lists the endpoints of every host), running states from each host's container records."""
    running = {c["Name"] for _, views in each_host(list(shells), lambda h: shells[h].containers())
               for c in views if c["State"]["Running"]}  # fmt: skip
    return {name: nets for name, nets in network_addresses(shells, topo).items() if name in running}


def network_addresses(shells: dict[str, HostShell], topo: Topology) -> matrix.Addresses:
    """{endpoint name: {network: IPv4 address}} from `netctl network inspect`: each bridge network on
    its host, the global ones on the host that created them."""
    asked: dict[str, list[str]] = {}
    for network in topo.networks.values():
        asked.setdefault(network.host or creator(topo, network.name), []).append(network.name)

    def inspect(host: str) -> list[dict]:
        return json.loads(shells[host].netctl("network", "inspect", *asked[host], timeout=60).stdout or "[]")

    result: matrix.Addresses = {}
    for _, views in each_host(list(asked), inspect):
        for view in views:
            for endpoint in view.get("Containers", {}).values():
                address = endpoint.get("IPv4Address", "").split("/")[0]
                if address:
                    result.setdefault(endpoint["Name"], {})[view["Name"]] = address
    return result
