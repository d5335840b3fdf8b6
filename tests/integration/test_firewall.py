"""The nftables firewall on the real kernel, inside throwaway hosts (tests/harness.py).

Bridges, veths and "containers" (plain network namespaces) are built with `ip` inside the host, the
firewall is driven through libnetwork.firewall in a Python process inside the host, and drops are
proven by the rules' own counters, not just by a ping that failed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import subprocess
import sys
import time

import pytest

from libnetwork import firewall as fw
from libnetwork.model import PortMapping

TCP_PEER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "tcp_peer.py")

# Documentation / private ranges that exist only inside the throwaway host.
NET_A = fw.BridgeNet("a", "nc-a", ["10.1.0.0/24", "fd00:1::/64"], ["10.1.0.1", "fd00:1::1"], icc=False)
NET_B = fw.BridgeNet("b", "nc-b", ["10.2.0.0/24"], ["10.2.0.1"])
NET_I = fw.BridgeNet("i", "nc-i", ["10.3.0.0/24"], ["10.3.0.1"], internal=True)

_PRELUDE = """
import json, sys
from libnetwork import firewall as fw
from libnetwork.errors import KernelError, NetctlError
from libnetwork.model import PortMapping

def nets_from(doc):
    return [fw.BridgeNet(**{**n, "endpoints": [
        fw.PublishedEndpoint(e["addresses"], [PortMapping(**p) for p in e["ports"]]) for e in n["endpoints"]]})
        for n in doc]

"""


def firewall(host, body: str, nets: list[fw.BridgeNet] = (), *, cli: bool = False, check: bool = True):
    """Run ``body`` in Python inside the host, with ``fw`` imported and ``nets`` defined."""
    doc = json.dumps([dataclasses.asdict(n) for n in nets])
    setup = f"nets = nets_from(json.loads({doc!r}))\n"
    if cli:
        setup += "from libnetwork import nftables; nftables._libnftables = lambda: None  # exercise the `nft -j -f -` fallback\n"
    return host.py(_PRELUDE + setup + body, check=check)


def sync(host, nets, **kw) -> None:
    firewall(host, "fw.sync(nets)", nets, **kw)


def counters(host, netns_path: str | None = None) -> dict[str, int]:
    return json.loads(firewall(host, f"print(json.dumps(fw.counters(netns_path={netns_path!r})))").stdout)


def ruleset(host) -> str:
    """The whole ruleset of the host without counter values (-s) and handles."""
    return host.run("nft", "-s", "list", "ruleset").stdout


def netctl_tables(host, *prefix: str) -> list[str]:
    out = host.run(*prefix, "nft", "list", "tables").stdout.split("\n")
    return sorted(line.strip() for line in out if line.strip().endswith(" netctl"))


# ---- topology helpers ------------------------------------------------------------------------------------


def bridge(host, name: str, *addresses: str) -> None:
    script = [f"ip link add {name} type bridge", f"ip link set {name} up"]
    script += [f"ip addr add {a} dev {name} nodad" if ":" in a else f"ip addr add {a} dev {name}" for a in addresses]
    host.run("sh", "-ec", "\n".join(script))


def container(host, name: str, br: str, *addresses: str) -> None:
    """A netns `name` with eth0 on bridge `br` (veth `v-name`), default routes via the .1 / ::1 gateway."""
    script = [
        f"ip netns add {name}",
        f"ip link add v-{name} type veth peer name eth0 netns {name}",
        f"ip link set v-{name} master {br} up",
        f"ip -n {name} link set lo up",
        f"ip -n {name} link set eth0 up",
    ]
    for a in addresses:
        ip, prefix = a.split("/")
        if ":" in ip:
            gateway = ip.rsplit(":", 1)[0] + ":1"
            script += [f"ip -n {name} addr add {a} dev eth0 nodad", f"ip -n {name} -6 route add default via {gateway}"]
        else:
            gateway = ip.rsplit(".", 1)[0] + ".1"
            script += [f"ip -n {name} addr add {a} dev eth0", f"ip -n {name} route add default via {gateway}"]
    host.run("sh", "-ec", "\n".join(script))


def forwarding(host) -> None:
    host.run("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")


def pings(host, netns: str, address: str) -> bool:
    done = host.run("ip", "netns", "exec", netns, "ping", "-c1", "-W1", address, check=False, timeout=10)
    return done.returncode == 0


def serve(host, netns: str, port: int, count: int) -> subprocess.Popen:
    """tcp_peer server in `netns` answering `count` clients with the address it saw; waits until listening."""
    proc = host.popen("ip", "netns", "exec", netns, sys.executable, TCP_PEER, "serve", str(port),
                      "--count", str(count), "--timeout", "30", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ready, _, _ = select.select([proc.stdout], [], [], 10)
    assert ready and proc.stdout.readline().strip() == "listening", "tcp_peer server did not start"
    return proc


def peer_seen(host, netns: str | None, address: str, port: int) -> str:
    """Connect from `netns` (None: the host itself) and return the client address the server saw."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    argv = [*prefix, sys.executable, TCP_PEER, "connect", address, str(port), "--timeout", "5"]
    done = host.run(*argv, check=False, timeout=20)
    assert done.returncode == 0, f"connect to {address}:{port} from {netns or 'host'} failed: {done.stderr}"
    return done.stdout.strip()


# ---- applying, re-applying, repairing ------------------------------------------------------------------------


def test_apply_list_and_reapply_is_idempotent(host):
    nets = [NET_A, NET_B, NET_I]
    sync(host, nets)
    first = ruleset(host)
    assert netctl_tables(host) == ["table bridge netctl", "table inet netctl"]
    for hook in ("hook forward", "hook prerouting", "hook output", "hook postrouting"):
        assert hook in first  # a chain without its hook would silently filter nothing
    assert 'iifname "nc-a" oifname @bridges counter drop comment "isolate a"' in first
    assert 'ip daddr 10.1.0.0/24 counter drop comment "icc a"' in first

    sync(host, nets)
    assert ruleset(host) == first
    sync(host, nets, cli=True)  # the nft-binary fallback produces the very same ruleset
    assert ruleset(host) == first
    assert counters(host) == {"icc a": 0, "inbound unpublished": 0, "internal i": 0, "isolate a": 0, "isolate b": 0, "isolate i": 0}


def drift(host, nets) -> list[str]:
    return json.loads(firewall(host, "print(json.dumps(fw.drift(nets)))", nets).stdout)


def test_sync_restores_a_flushed_or_deleted_table(host):
    nets = [NET_A, NET_B]
    assert drift(host, nets) == ["table bridge netctl is missing", "table inet netctl is missing"]
    sync(host, nets)
    wanted = ruleset(host)
    assert drift(host, nets) == []
    host.run("nft", "flush", "table", "inet", "netctl")
    host.run("nft", "delete", "table", "bridge", "netctl")
    host.run("nft", "add", "chain", "inet", "netctl", "intruder")
    assert ruleset(host) != wanted
    assert drift(host, nets) == [
        "table bridge netctl is missing",
        "chain inet netctl forward differs from netctl's ruleset (0 rules, expected 8)",
        "chain inet netctl intruder is not part of netctl's ruleset (added by hand or left over)",
        "chain inet netctl postrouting differs from netctl's ruleset (0 rules, expected 3)",
    ]
    sync(host, nets)
    assert ruleset(host) == wanted  # the intruder chain is gone too: the table is replaced, not patched
    assert drift(host, nets) == []
    assert drift(host, [NET_A]) == [  # a network the tables still carry
        "chain inet netctl forward differs from netctl's ruleset (8 rules, expected 6)",
        "chain inet netctl postrouting differs from netctl's ruleset (3 rules, expected 2)",
        "set inet netctl bridges differs from netctl's ruleset",
        "set inet netctl open_bridges differs from netctl's ruleset",
    ]


def test_a_failing_transaction_leaves_the_previous_ruleset_intact(host):
    sync(host, [NET_A, NET_B])
    before = ruleset(host)
    # Fails in the kernel, after the batch has already deleted and re-created both tables.
    body = """
try:
    fw.apply(fw.render(nets) + [{"create": {"table": {"family": "inet", "name": "netctl"}}}])
except KernelError as err:
    print(json.dumps(err.message))
else:
    print("applied")
"""
    for cli in (False, True):
        done = firewall(host, body, [NET_I], cli=cli)
        message = json.loads(done.stdout)
        assert message.startswith("nftables could not change netctl's tables: ") and "\n" not in message
        assert "File exists" in message, message
        assert ruleset(host) == before
    # Fails in nft's own evaluation, before anything reaches the kernel.
    bad_rule = {"add": {"rule": {"family": "inet", "table": "netctl", "chain": "forward", "expr": [
        {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "@no_such_set"}}, {"drop": None}]}}}
    done = firewall(host, body.replace("[{\"create\"", f"[{bad_rule!r}, {{\"create\""), [NET_I])
    assert "could not change" in json.loads(done.stdout)
    assert ruleset(host) == before


def test_remove_is_idempotent_and_spares_other_tables(host):
    host.run("sh", "-ec", "\n".join([
        "nft add table inet other",
        "nft add chain inet other input '{ type filter hook input priority 0; }'",
        "nft add rule inet other input counter accept",
        "nft add table bridge other",
    ]))
    others = ruleset(host)
    firewall(host, "fw.remove(); fw.remove()")  # nothing to remove: fine
    sync(host, [NET_A, NET_B])
    assert netctl_tables(host) == ["table bridge netctl", "table inet netctl"]
    assert "table inet other" in ruleset(host)
    firewall(host, "fw.remove(); fw.remove()")
    assert netctl_tables(host) == []
    assert ruleset(host) == others
    assert counters(host) == {}
    sync(host, [])  # no networks: the same as remove
    assert ruleset(host) == others


def test_netns_path_targets_another_namespace(host):
    host.run("ip", "netns", "add", "other-host")
    path = "/run/netns/other-host"
    firewall(host, f"fw.sync(nets, netns_path={path!r})", [NET_A, NET_B])
    assert netctl_tables(host) == []  # the calling namespace is untouched
    assert netctl_tables(host, "ip", "netns", "exec", "other-host") == ["table bridge netctl", "table inet netctl"]
    assert counters(host, path) == {"icc a": 0, "inbound unpublished": 0, "isolate a": 0, "isolate b": 0}
    firewall(host, f"fw.remove(netns_path={path!r})")
    assert netctl_tables(host, "ip", "netns", "exec", "other-host") == []
    # The nft-binary fallback runs its child in the namespace too.
    firewall(host, f"fw.sync(nets, netns_path={path!r})", [NET_A], cli=True)
    assert netctl_tables(host) == []
    assert netctl_tables(host, "ip", "netns", "exec", "other-host") == ["table bridge netctl", "table inet netctl"]
    body = """
try:
    fw.sync(nets, netns_path='/run/netns/missing')
except NetctlError as err:
    print(err.message)
"""
    assert "/run/netns/missing does not exist" in firewall(host, body, [NET_A]).stdout


def test_the_netlink_socket_freed_in_the_background_is_not_inherited(host):
    # The nft context is freed by a thread after apply() returns; until then its socket must not
    # leak into a process exec'd from a fork that keeps fds (a container would hold the host's nft).
    body = """
import os, stat
fw.sync(nets)
sockets = []
for fd in map(int, os.listdir("/proc/self/fd")):
    try:
        if stat.S_ISSOCK(os.fstat(fd).st_mode):
            sockets.append(os.get_inheritable(fd))
    except OSError:
        pass
print(json.dumps(sockets))
"""
    assert True not in json.loads(firewall(host, body, [NET_A]).stdout)


# ---- packets ---------------------------------------------------------------------------------------------------------


def test_counters_prove_icc_isolation_and_internal_drops(host):
    forwarding(host)
    bridge(host, "nc-a", "10.1.0.1/24", "fd00:1::1/64")  # icc off
    bridge(host, "nc-b", "10.2.0.1/24")
    bridge(host, "nc-i", "10.3.0.1/24")  # internal
    container(host, "a1", "nc-a", "10.1.0.2/24", "fd00:1::2/64")
    container(host, "a2", "nc-a", "10.1.0.3/24", "fd00:1::3/64")
    container(host, "b1", "nc-b", "10.2.0.2/24")
    container(host, "b2", "nc-b", "10.2.0.3/24")
    container(host, "i1", "nc-i", "10.3.0.2/24")
    container(host, "i2", "nc-i", "10.3.0.3/24")
    # Before the firewall: everything routes everywhere (the test would prove nothing otherwise).
    assert pings(host, "a1", "10.1.0.3") and pings(host, "a1", "10.2.0.2") and pings(host, "i1", "10.2.0.2")

    sync(host, [NET_A, NET_B, NET_I])
    assert counters(host) == {"icc a": 0, "inbound unpublished": 0, "internal i": 0, "isolate a": 0, "isolate b": 0, "isolate i": 0}

    # ICC off: neighbours on nc-a cannot talk, v4 nor v6, but the gateway (the host) still answers.
    assert not pings(host, "a1", "10.1.0.3")
    assert not pings(host, "a1", "fd00:1::3")
    assert pings(host, "a1", "10.1.0.1") and pings(host, "a1", "fd00:1::1")
    after_icc = counters(host)
    assert after_icc["icc a"] >= 2

    # ICC on (nc-b): neighbours talk; inside the internal network too.
    assert pings(host, "b1", "10.2.0.3")
    assert pings(host, "i1", "10.3.0.3") and pings(host, "i1", "10.3.0.1")

    # Isolation between networks.
    assert not pings(host, "a1", "10.2.0.2")
    assert not pings(host, "b1", "10.1.0.2")
    isolated = counters(host)
    assert isolated["isolate a"] > after_icc["isolate a"] and isolated["isolate b"] > after_icc["isolate b"]

    # Internal: no way out, no way in (from another network, dropped before isolation is even asked).
    assert not pings(host, "i1", "10.2.0.2")
    assert not pings(host, "b1", "10.3.0.2")
    internal = counters(host)
    assert internal["internal i"] >= isolated["internal i"] + 2
    assert internal["isolate b"] == isolated["isolate b"]  # b1 -> i1 counted as internal, not isolation


def test_published_ports_masquerade_and_hairpin(host):
    forwarding(host)
    # "outside": a client network on the host's uplink (TEST-NET-2, only inside this host).
    host.run("sh", "-ec", "\n".join([
        "ip netns add outside",
        "ip link add uplink type veth peer name eth0 netns outside",
        "ip addr add 198.51.100.1/24 dev uplink", "ip addr add 2001:db8::1/64 dev uplink nodad",
        "ip link set uplink up",
        "ip -n outside link set lo up", "ip -n outside link set eth0 up",
        "ip -n outside addr add 198.51.100.2/24 dev eth0", "ip -n outside addr add 2001:db8::2/64 dev eth0 nodad",
    ]))
    bridge(host, "nc-b", "10.2.0.1/24", "fd00:2::1/64")
    host.run("sysctl", "-qw", "net.ipv4.conf.nc-b.route_localnet=1")  # the bridge driver sets this
    container(host, "web", "nc-b", "10.2.0.2/24", "fd00:2::2/64")
    container(host, "peer", "nc-b", "10.2.0.3/24", "fd00:2::3/64")
    ports = [PortMapping(8080, 80), PortMapping(9090, 80, "tcp", "127.0.0.1")]
    web = fw.PublishedEndpoint(["10.2.0.2", "fd00:2::2"], ports)
    net = dataclasses.replace(NET_B, subnets=["10.2.0.0/24", "fd00:2::/64"], endpoints=[web])
    sync(host, [net])

    server = serve(host, "web", 80, count=6)
    try:
        # From outside, v4 and v6, to the host's uplink addresses: DNAT, client address preserved.
        assert peer_seen(host, "outside", "198.51.100.1", 8080) == "198.51.100.2"
        assert peer_seen(host, "outside", "2001:db8::1", 8080) == "2001:db8::2"
        # From the host itself through localhost (output chain + localhost masquerade).
        assert peer_seen(host, None, "127.0.0.1", 8080) == "10.2.0.1"
        assert peer_seen(host, None, "127.0.0.1", 9090) == "10.2.0.1"
        # Hairpin: a container of the same network through the host's address sees replies via the gateway.
        assert peer_seen(host, "peer", "198.51.100.1", 8080) == "10.2.0.1"
        # A port published on 127.0.0.1 only is not reachable on the uplink address.
        done = host.run("ip", "netns", "exec", "outside", sys.executable, TCP_PEER, "connect", "198.51.100.1", "9090",
                        "--timeout", "2", check=False, timeout=20)
        assert done.returncode != 0
        # Masquerade: the container reaching outside shows up as the host's uplink address.
        outside = serve(host, "outside", 7000, count=1)
        try:
            assert peer_seen(host, "web", "198.51.100.2", 7000) == "198.51.100.1"
        finally:
            outside.kill()
    finally:
        server.kill()
