"""A multi-host overlay lab for tests: throwaway hosts on an underlay switch, state in a real etcd.

    switch host:  bridge "ul" ── ul1 ─┬─ eth0 198.18.0.1/24  host h1
                                ul2 ─┼─ eth0 198.18.0.2/24  host h2
                                ul3 ─┴─ eth0 198.18.0.3/24  host h3

198.18.0.0/15 is the benchmarking range (RFC 2544): nothing real is ever addressed. The veth pairs
are created from the switch's network namespace straight into each host's (nsenter --net only), so
no link ever exists in the machine's own namespace, even for a moment.

The store lives on the machine's loopback, which hosts cannot reach, so the lab plays the daemon's
part: it reads peers from etcd and hands them to `host_agent.py` inside each host to reconcile.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

from harness import Host
from libnetwork.model import CREATING, READY, Endpoint, Network, PoolConfig, Sandbox
from libnetwork.store.etcd import EtcdStore

AGENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "host_agent.py")
UNDERLAY_PREFIX = "198.18.0."
SWITCH_BRIDGE = "ul"
AGENT_TIMEOUT_S = 60


def mac_for(address: str) -> str:
    """Docker's MAC: 02:42 + the IPv4 address (libnetwork/controller.py does the same)."""
    octets = [int(o) for o in address.split("/")[0].split(".")]
    return "02:42:" + ":".join(f"{o:02x}" for o in octets)


@dataclass
class Container:
    """A sandbox joined to one overlay network, on one host."""

    host: Host
    name: str
    endpoint: Endpoint
    sandbox: Sandbox
    ready_at: float = 0.0  # time.monotonic() when marking it ready (publishing its peer) began

    @property
    def ip(self) -> str:
        return self.endpoint.address_of(4).split("/")[0]

    @property
    def ip6(self) -> str:
        return self.endpoint.address_of(6).split("/")[0]


@dataclass
class OverlayLab:
    switch: Host
    hosts: list[Host]
    etcd_url: str
    underlay_mtu: int = 1500
    vteps: dict[str, str] = field(default_factory=dict)
    stores: dict[str, EtcdStore] = field(default_factory=dict)

    @classmethod
    def build(cls, switch: Host, hosts: list[Host], etcd_url: str, *, underlay_mtu: int = 1500,
              lease_ttl: int = 30) -> "OverlayLab":
        lab = cls(switch, hosts, etcd_url, underlay_mtu)
        switch.run("ip", "link", "add", SWITCH_BRIDGE, "type", "bridge")
        switch.run("ip", "link", "set", SWITCH_BRIDGE, "mtu", str(underlay_mtu), "up")
        for i, host in enumerate(hosts, start=1):
            port, vtep = f"ul{i}", f"{UNDERLAY_PREFIX}{i}"
            subprocess.run(
                ["nsenter", f"--net=/proc/{switch.pid}/ns/net", "--", "ip", "link", "add", port, "mtu",
                 str(underlay_mtu), "type", "veth", "peer", "name", "eth0", "mtu", str(underlay_mtu),
                 "netns", str(host.pid)],
                check=True, capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            switch.run("ip", "link", "set", port, "master", SWITCH_BRIDGE, "up")
            host.run("ip", "addr", "add", f"{vtep}/24", "dev", "eth0")
            host.run("ip", "link", "set", "eth0", "up")
            lab.vteps[host.name] = vtep
            store = EtcdStore(etcd_url, host=host.name)
            lab.stores[host.name] = store
            store.start_keepalive(vtep, ttl=lease_ttl)  # what each host's daemon does
        return lab

    def close(self) -> None:
        for store in self.stores.values():
            store.close()  # stops the keep-alive threads

    # ---- running things inside hosts -----------------------------------------------------------

    def agent(self, host: Host, *ops: dict) -> list:
        for op in ops:
            op.setdefault("vtep", self.vteps[host.name])
        proc = host.run(sys.executable, AGENT, input=json.dumps(ops), timeout=AGENT_TIMEOUT_S)
        return json.loads(proc.stdout)

    def store(self, host: Host) -> EtcdStore:
        return self.stores[host.name]

    @staticmethod
    def netns_path(host: Host, network: Network) -> str:
        """Where a network's namespace is bound inside `host` (drivers/overlay.py's layout)."""
        return f"{host.root}/overlay/{network.id}"

    def in_network(self, host: Host, network: Network, *argv: str, **kw) -> subprocess.CompletedProcess:
        """Run argv inside the network's namespace on `host` (where its bridge and VXLAN device are)."""
        return host.in_netns(self.netns_path(host, network), *argv, **kw)

    # ---- networks and containers ---------------------------------------------------------------

    def create_network(self, creator: Host, name: str, *, subnet: str = "", subnet6: str = "",
                       vni: int = 0, port: int = 0) -> Network:
        """What `netctl network create -d overlay` will do: allocate VNI and subnets in etcd, plan on the
        creating host (device names, MTU from its underlay), record the plan."""
        import secrets

        store = self.store(creator)
        network = Network(id=secrets.token_hex(32), name=name, driver="overlay", scope="global",
                          options={"port": str(port)} if port else {}, ipv6=bool(subnet6), created=name)

        def allocate(tx):
            network.driver_state = {"vni": str(tx.allocate_vni(network, vni))}
            network.pools = [tx.allocate_pool(network, PoolConfig(subnet) if subnet else None, 4, [])]
            if subnet6:
                network.pools.append(tx.allocate_pool(network, PoolConfig(subnet6), 6, []))
            tx.put_network(network)

        store.atomic(allocate)
        planned = Network.from_dict(self.agent(creator, {"op": "plan", "network": network.to_dict()})[0])
        store.atomic(lambda tx: tx.put_network(planned))
        return planned

    def ensure_network(self, host: Host, network: Network) -> bool:
        return self.agent(host, {"op": "ensure", "network": network.to_dict()})[0]

    def add_container(self, host: Host, network: Network, name: str) -> Container:
        """What `netctl run --network` will do for a global network: allocate the address in etcd and
        record the endpoint as creating, build it in the kernel, then mark it ready (which publishes
        its peer record for the other hosts)."""
        import secrets

        store = self.store(host)
        path = f"{host.root}/netns/{name}"
        sandbox = Sandbox(id=secrets.token_hex(32), name=name, netns_path=path, created=name)
        endpoint = Endpoint(id=secrets.token_hex(32), name=name, network_id=network.id, sandbox_id=sandbox.id,
                            ifname="eth0", state=CREATING, created=name)

        def allocate(tx):
            endpoint.addresses = [tx.allocate_address(network, v, endpoint.id) for v in (4, 6)
                                  if network.pools_of(v)]
            endpoint.mac = mac_for(endpoint.addresses[0])
            tx.put_endpoint(endpoint)

        store.atomic(allocate)
        self.agent(host, {"op": "sandbox", "path": path},
                   {"op": "join", "network": network.to_dict(), "endpoint": endpoint.to_dict(),
                    "sandbox": sandbox.to_dict()})
        endpoint.state = READY
        ready_at = time.monotonic()
        store.atomic(lambda tx: tx.put_endpoint(endpoint))
        return Container(host, name, endpoint, sandbox, ready_at)

    def remove_container(self, container: Container, network: Network) -> None:
        self.agent(container.host, {"op": "leave", "network": network.to_dict(),
                                    "endpoint": container.endpoint.to_dict(), "sandbox": container.sandbox.to_dict()})

        def release(tx):
            tx.release_addresses(container.endpoint.id, network.id)
            tx.delete_endpoint(container.endpoint.id)

        self.store(container.host).atomic(release)

    # ---- the daemon's part ---------------------------------------------------------------------

    def peers(self, network: Network) -> list[dict]:
        with next(iter(self.stores.values())).snapshot() as tx:
            return [{"mac": p.mac, "vtep": p.vtep, "addresses": p.addresses} for p in tx.list_peers(network.id)]

    def reconcile(self, host: Host, network: Network, *, timed: bool = False, dry_run: bool = False) -> dict:
        """The driver's ReconcileResult as a dict (plus "seconds" the driver took, if `timed`)."""
        result = self.agent(host, {"op": "reconcile", "network": network.to_dict(), "peers": self.peers(network),
                                   "dry_run": dry_run})[0]
        if not timed:
            del result["seconds"]
        return result

    def reconcile_all(self, network: Network, hosts: list[Host] | None = None) -> dict[str, dict]:
        return {h.name: self.reconcile(h, network) for h in hosts or self.hosts}

    def tables(self, host: Host, network: Network) -> dict:
        return self.agent(host, {"op": "tables", "network": network.to_dict()})[0]

    # ---- probes --------------------------------------------------------------------------------

    def ping(self, source: Container, address: str, *, count: int = 1, size: int = 0, dont_fragment: bool = False,
             wait_s: int = 1) -> bool:
        argv = ["ping", "-n", "-q", "-c", str(count), "-W", str(wait_s)]
        argv += ["-s", str(size)] if size else []
        argv += ["-M", "do"] if dont_fragment else []
        argv += ["-6"] if ":" in address else []
        proc = source.host.in_netns(source.sandbox.netns_path, *argv, address, check=False, timeout=30)
        return proc.returncode == 0
