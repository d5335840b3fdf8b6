"""A multi-host overlay lab for tests: throwaway hosts on an underlay switch, state in a real etcd.

    switch host:  bridge "ul" ── ul1 ─┬─ eth0 198.18.0.1/24  host h1
                                ul2 ─┼─ eth0 198.18.0.2/24  host h2
                                ul3 ─┴─ eth0 198.18.0.3/24  host h3

198.18.0.0/15 is the benchmarking range (RFC 2544): nothing real is ever addressed. The veth pairs
are created from the switch's network namespace straight into each host's (nsenter --net only), so
no link ever exists in the machine's own namespace, even for a moment.

Two labs share that underlay:

- OverlayLab: the store lives on the machine's loopback, which hosts cannot reach, so the lab plays
  the daemon's part: it reads peers from etcd and hands them to `host_agent.py` inside each host to
  reconcile (the driver's own tests).
- NetctlLab: etcd runs INSIDE the switch's namespace on 198.18.0.254:2379 (the switch's bridge `ul`
  carries 198.18.0.254/24), so every host reaches it over the underlay and runs `netctl` against it
  as a real host would (NETCTL_STORE / NETCTL_HOST_NAME, or ROOT/global.json). `register(host)`
  does what `netctl daemon --store` does for registration: writes ROOT/global.json and keeps the
  host's lease alive from a process inside the host, stopped by its PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from harness import Host, stop_group
from libnetwork.model import CREATING, READY, Endpoint, Network, PoolConfig, Sandbox
from libnetwork.store.etcd import EtcdStore

AGENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "host_agent.py")
UNDERLAY_PREFIX = "198.18.0."
SWITCH_BRIDGE = "ul"
AGENT_TIMEOUT_S = 60
SWITCH_ADDRESS = UNDERLAY_PREFIX + "254"  # the switch's own address on the underlay: where etcd listens
REGISTER_TIMEOUT_S = 30


def mac_for(address: str) -> str:
    """Docker's MAC: 02:42 + the IPv4 address (libnetwork/controller.py does the same)."""
    octets = [int(o) for o in address.split("/")[0].split(".")]
    return "02:42:" + ":".join(f"{o:02x}" for o in octets)


def build_underlay(switch: Host, hosts: list[Host], mtu: int = 1500, *, switch_address: str = "") -> dict[str, str]:
    """Bridge `ul` in the switch, one veth per host (eth0 198.18.0.N/24 inside host N). Returns {host
    name: VTEP address}. `switch_address` also puts that address on the bridge (where etcd listens)."""
    # A fixed MAC: otherwise the bridge takes its lowest port's MAC, and a host rebooted onto a new port
    # (test_reboot) could change it under the other hosts' ARP entry for etcd's address: their etcd
    # calls went unanswered until the entry was probed again (a CI flake).
    bridge_mac = mac_for(switch_address or f"{UNDERLAY_PREFIX}254")
    switch.run("ip", "link", "add", SWITCH_BRIDGE, "address", bridge_mac, "type", "bridge")
    switch.run("ip", "link", "set", SWITCH_BRIDGE, "mtu", str(mtu), "up")
    if switch_address:
        switch.run("ip", "addr", "add", f"{switch_address}/24", "dev", SWITCH_BRIDGE)
    vteps = {}
    for i, host in enumerate(hosts, start=1):
        port, vtep = f"ul{i}", f"{UNDERLAY_PREFIX}{i}"
        subprocess.run(
            ["nsenter", f"--net=/proc/{switch.pid}/ns/net", "--", "ip", "link", "add", port, "mtu",
             str(mtu), "type", "veth", "peer", "name", "eth0", "mtu", str(mtu), "netns", str(host.pid)],
            check=True, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        switch.run("ip", "link", "set", port, "master", SWITCH_BRIDGE, "up")
        host.run("ip", "addr", "add", f"{vtep}/24", "dev", "eth0")
        host.run("ip", "link", "set", "eth0", "up")
        vteps[host.name] = vtep
    return vteps


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
        lab.vteps.update(build_underlay(switch, hosts, underlay_mtu))
        for host in hosts:
            vtep = lab.vteps[host.name]
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
                       vni: int = 0, port: int = 0, options: dict[str, str] | None = None) -> Network:
        """What `netctl network create -d overlay` will do: allocate VNI and subnets in etcd, plan on the
        creating host (device names, MTU from its underlay), record the plan."""
        import secrets

        store = self.store(creator)
        network = Network(id=secrets.token_hex(32), name=name, driver="overlay", scope="global",
                          options={**({"port": str(port)} if port else {}), **(options or {})}, ipv6=bool(subnet6),
                          created=name)

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

    def fast_path(self, host: Host, network: Network) -> dict[str, str] | None:
        """{MAC: device} of the network's fast path on `host` (None: it has none)."""
        return self.agent(host, {"op": "fastpath", "network": network.to_dict()})[0]

    # ---- probes --------------------------------------------------------------------------------

    def ping(self, source: Container, address: str, *, count: int = 1, size: int = 0, dont_fragment: bool = False,
             wait_s: int = 1, interval: float = 0) -> bool:
        argv = ["ping", "-n", "-q", "-c", str(count), "-W", str(wait_s)]
        argv += ["-i", str(interval)] if interval else []
        argv += ["-s", str(size)] if size else []
        argv += ["-M", "do"] if dont_fragment else []
        argv += ["-6"] if ":" in address else []
        proc = source.host.in_netns(source.sandbox.netns_path, *argv, address, check=False, timeout=30)
        return proc.returncode == 0


# ---------------------------------------------------------------------------------------------------
# NetctlLab: etcd inside the switch, netctl run on each host as a user would
# ---------------------------------------------------------------------------------------------------

# Runs inside a host: what `netctl daemon --store URL --vtep ADDR --host-name NAME` does for
# registration. Writes ROOT/global.json, registers the host with a lease, keeps it alive until its
# stdin (a pipe from the test) closes, then revokes the lease (unless told to leave it to expire).
REGISTER_SCRIPT = r"""
import json, os, sys
from libnetwork.store.etcd import EtcdStore
url, name, vtep, ttl, revoke = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1"
root = os.environ["NETCTL_ROOT"]
os.makedirs(root, exist_ok=True)
tmp = os.path.join(root, "global.json.tmp")
with open(tmp, "w") as f:
    json.dump({"store": url, "host": name, "vtep": vtep}, f)
os.replace(tmp, os.path.join(root, "global.json"))
store = EtcdStore(url, host=name)
store.start_keepalive(vtep, ttl=ttl)
print("registered", flush=True)
sys.stdin.read()
if revoke:
    store.unregister_host()
store.close()
"""


@dataclass
class NetctlLab:
    """A switch host with etcd on 198.18.0.254:2379 and N hosts on the underlay (VTEPs 198.18.0.N)."""

    switch: Host
    hosts: list[Host]
    etcd: "LabEtcdServer"
    underlay_mtu: int = 1500
    vteps: dict[str, str] = field(default_factory=dict)
    registrations: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def etcd_url(self) -> str:
        """What --store / NETCTL_STORE take: etcd://198.18.0.254:2379."""
        return self.etcd.store_url

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    # ---- netctl on a host ----------------------------------------------------------------------

    def env(self, host: Host, **extra: str) -> dict[str, str]:
        """The environment a netctl call on `host` gets: its store and its name (as the daemon's
        global.json would give them), plus `extra`."""
        return {"NETCTL_STORE": self.etcd_url, "NETCTL_HOST_NAME": host.name, **extra}

    def netctl(self, host: Host, *args: str, env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
        """`netctl ARGS` on `host` with NETCTL_STORE and NETCTL_HOST_NAME set (env adds/overrides)."""
        return host.netctl(*args, env={**self.env(host), **(env or {})}, **kw)

    def netctl_json(self, host: Host, *args: str, **kw):
        return json.loads(self.netctl(host, *args, **kw).stdout)

    def py(self, host: Host, code: str, **kw) -> subprocess.CompletedProcess:
        env = {**self.env(host), **kw.pop("env", {})}
        return host.py(code, env=env, **kw)

    def reconcile(self, host: Host, network: str = "") -> dict:
        """What the daemon's loop does after a change: Controller.reconcile_overlay() on `host`
        (for one network, by name or id, or for every network built there), then the name server
        told (runner.hosts.refresh). Returns {network id: ReconcileResult
        as a dict}."""
        code = (
            "import dataclasses, json, sys\n"
            "from libnetwork.controller import Controller\n"
            "from runner import hosts\n"
            "from runner.paths import Layout\n"
            "with Controller() as c:\n"
            "    ref = sys.argv[1]\n"
            "    nid = c.resolve_network(ref).id if ref else None\n"
            "    results = c.reconcile_overlay(nid)\n"
            "    hosts.refresh(c, Layout.of(c.root))\n"
            "    print(json.dumps({k: dataclasses.asdict(v) for k, v in results.items()}))\n"
        )
        return json.loads(host.run(sys.executable, "-c", code, network, env=self.env(host)).stdout)

    def reconcile_all(self, hosts: list[Host] | None = None) -> None:
        for host in hosts or self.hosts:
            self.reconcile(host)

    # ---- registration (the daemon's part) ------------------------------------------------------

    def register(self, host: Host, *, ttl: int = 10) -> subprocess.Popen:
        """Write ROOT/global.json on `host` and keep its lease alive from a process inside it."""
        if host.name in self.registrations:
            return self.registrations[host.name]
        proc = host.popen(sys.executable, "-c", REGISTER_SCRIPT, self.etcd_url, host.name, self.vteps[host.name],
                          str(ttl), "1", stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        ready, _, _ = select.select([proc.stdout], [], [], REGISTER_TIMEOUT_S)
        line = proc.stdout.readline() if ready else ""
        if line.strip() != "registered":
            err = proc.stderr.read() if proc.poll() is not None else f"(no answer within {REGISTER_TIMEOUT_S} s)"
            _stop_group(proc, signal.SIGKILL)
            raise RuntimeError(f"registering host {host.name} failed: {line}{err}")
        self.registrations[host.name] = proc
        return proc

    def unregister(self, host: Host, *, revoke: bool = True) -> None:
        """Stop keeping `host`'s lease alive: revoked at once, or (revoke=False: a crash) left to expire."""
        proc = self.registrations.pop(host.name, None)
        if proc is None:
            return
        if revoke:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # the script revokes its lease and exits
            try:
                proc.wait(timeout=REGISTER_TIMEOUT_S)
                return
            except subprocess.TimeoutExpired:
                pass
        _stop_group(proc, signal.SIGKILL)

    def write_global(self, host: Host, *, store: str = "", vtep: str = "") -> None:
        """ROOT/global.json as the daemon writes it, without registering (an unregistered host)."""
        content = json.dumps({"store": store or self.etcd_url, "host": host.name, "vtep": vtep or self.vteps[host.name]})
        host.run("sh", "-c", f'mkdir -p "$NETCTL_ROOT" && cat > "$NETCTL_ROOT/global.json"', input=content)

    # ---- looking at things ---------------------------------------------------------------------

    def etcd_dump(self) -> dict[str, str]:
        """Every /netctl/ key with its value, read inside the switch."""
        return self.etcd.dump("/netctl/")

    def overlay_netns(self, host: Host) -> list[str]:
        """Ids of the networks whose kernel side is built on `host` (ROOT/overlay/<id>)."""
        directory = host.path(f"{host.root}/overlay")
        return sorted(os.listdir(directory)) if os.path.isdir(directory) else []

    def in_sandbox(self, host: Host, sandbox: str, *argv: str, **kw) -> subprocess.CompletedProcess:
        """Run argv in a sandbox's network namespace on `host` (the sandbox by name)."""
        path = self.netctl_json(host, "sandbox", "inspect", sandbox)[0]["netns_path"]
        return host.in_netns(path, *argv, **kw)

    def ping(self, host: Host, sandbox: str, address: str, *, count: int = 1, wait_s: int = 1) -> bool:
        argv = ["ping", "-n", "-q", "-c", str(count), "-W", str(wait_s)] + (["-6"] if ":" in address else [])
        return self.in_sandbox(host, sandbox, *argv, address, check=False, timeout=30).returncode == 0

    # ---- life cycle ----------------------------------------------------------------------------

    def close(self) -> None:
        for name in list(self.registrations):
            self.unregister(self.host(name), revoke=False)
        self.etcd.close()


@contextlib.contextmanager
def _switch_and_hosts(host_names: list[str]) -> Iterator[list[Host]]:
    """Throwaway hosts "sw" and `host_names`, in that order; all closed on exit, also on failure."""
    made: list[Host] = []
    logged: list[str] = []
    try:
        for name in ["sw", *host_names]:
            made.append(Host.start(name))
        yield made
    finally:
        for host in made:
            if host.alive:  # not one the test closed itself (a reboot checks it then)
                logged.append(host.tracebacks())
            host.close()
    assert not any(logged), "\n".join(logged)


@contextlib.contextmanager
def driver_lab(etcd_url: str, host_names: list[str], *, underlay_mtu: int = 1500) -> Iterator[OverlayLab]:
    """An OverlayLab (switch "sw" and these hosts) on an empty /netctl/ in etcd at `etcd_url`. All of
    it is removed on exit, also on failure, the store's /netctl/ included."""
    from overlay.etcd_server import etcdctl

    etcdctl(etcd_url, "del", "--prefix", "/netctl/")
    try:
        with _switch_and_hosts(host_names) as made:
            lab = OverlayLab.build(made[0], made[1:], etcd_url, underlay_mtu=underlay_mtu)
            try:
                yield lab
            finally:
                lab.close()
    finally:
        etcdctl(etcd_url, "del", "--prefix", "/netctl/")


def _stop_group(proc: subprocess.Popen, sig: int) -> None:
    stop_group(proc, sig, 10)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


@contextlib.contextmanager
def netctl_lab(n: int = 3, *, underlay_mtu: int = 1500, register: bool = True, lease_ttl: int = 10,
               names: list[str] | None = None) -> Iterator[NetctlLab]:
    """A switch ("sw") running etcd on 198.18.0.254:2379 and n hosts h1..hn, each registered (unless
    register=False). Everything is removed on exit, also on failure: etcd by its PID, hosts with it."""
    from overlay.etcd_server import LabEtcdServer

    with _switch_and_hosts(names or [f"h{i}" for i in range(1, n + 1)]) as made:
        switch, hosts = made[0], made[1:]
        vteps = build_underlay(switch, hosts, underlay_mtu, switch_address=SWITCH_ADDRESS)
        lab = NetctlLab(switch, hosts, LabEtcdServer(switch, SWITCH_ADDRESS), underlay_mtu, vteps)
        try:
            lab.etcd.start()
            if register:
                for host in hosts:
                    lab.register(host, ttl=lease_ttl)
            yield lab
        finally:
            lab.close()
