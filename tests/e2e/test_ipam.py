"""IPAM as a user meets it: concurrency, exhaustion, overlaps, default pools, static addresses."""

import json

import pytest

pytestmark = pytest.mark.kernel

# Runs inside the host: creates N sandboxes through the library (fast), prints their names.
MAKE_SANDBOXES = """
import sys
from libnetwork.controller import Controller
with Controller() as c:
    for i in range({n}):
        c.create_sandbox(f"s{{i}}")
"""

CONCURRENT_CONNECTS = """
import subprocess, sys, json
procs = [subprocess.Popen([sys.executable, "-m", "netctl", "network", "connect", "{net}", f"s{{i}}"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range({n})]
results = []
for p in procs:
    out, err = p.communicate(timeout=120)
    results.append((p.returncode, out.strip(), err.strip()))
print(json.dumps(results))
"""


def test_fifty_concurrent_connects_get_fifty_distinct_addresses(lab):
    lab.network("busy", "--subnet", "10.30.0.0/24")
    lab.host.py(MAKE_SANDBOXES.format(n=50), timeout=120)
    results = json.loads(lab.host.py(CONCURRENT_CONNECTS.format(net="busy", n=50), timeout=180).stdout)
    failures = [r for r in results if r[0] != 0]
    assert not failures, failures[:3]
    addresses = [r[1].split()[1] for r in results]
    assert len(set(addresses)) == 50
    containers = lab.inspect("busy")["Containers"]
    assert len(containers) == 50
    assert sorted(c["IPv4Address"] for c in containers.values()) == sorted(addresses)
    assert len([n for n in lab.host.ip_link_names() if n.startswith("nv")]) == 50


def test_slash24_gives_exactly_253_endpoints_then_a_clear_error(lab):
    lab.network("small", "--subnet", "10.31.0.0/24")
    lab.host.py(
        MAKE_SANDBOXES.format(n=254)
        + """
with Controller() as c:
    for i in range(253):
        c.connect("small", f"s{i}")
""",
        timeout=300,
    )
    before = lab.host.snapshot()
    result = lab.netctl("network", "connect", "small", "s253", check=False)
    assert result.returncode != 0
    assert "exhausted" in result.stderr and "small" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert lab.host.snapshot() == before
    assert len(lab.inspect("small")["Containers"]) == 253


def test_subnet_overlapping_a_network_is_refused_naming_it(lab):
    lab.network("wide", "--subnet", "10.32.0.0/16")
    result = lab.netctl("network", "create", "--subnet", "10.32.5.0/24", "narrow", check=False)
    assert result.returncode != 0
    assert "10.32.0.0/16" in result.stderr and "wide" in result.stderr


def test_subnet_overlapping_a_host_route_is_refused_naming_it(lab):
    lab.host.run("ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan1")
    lab.host.run("ip", "addr", "add", "10.33.0.1/16", "dev", "lan0")
    lab.host.run("ip", "link", "set", "lan0", "up")
    lab.host.run("ip", "link", "set", "lan1", "up")
    result = lab.netctl("network", "create", "--subnet", "10.33.7.0/24", "clash", check=False)
    assert result.returncode != 0
    assert "10.33.0.0/16" in result.stderr and "lan0" in result.stderr


def test_default_pool_skips_subnets_routed_on_the_host(lab):
    lab.host.run("ip", "link", "add", "vpn0", "type", "veth", "peer", "name", "vpn1")
    lab.host.run("ip", "addr", "add", "172.17.0.1/16", "dev", "vpn0")
    lab.host.run("ip", "addr", "add", "172.18.5.1/24", "dev", "vpn0")
    lab.host.run("ip", "link", "set", "vpn0", "up")
    lab.host.run("ip", "link", "set", "vpn1", "up")
    lab.network("auto")
    assert lab.inspect("auto")["IPAM"]["Config"][0]["Subnet"] == "172.19.0.0/16"
    lab.network("auto2")
    assert lab.inspect("auto2")["IPAM"]["Config"][0]["Subnet"] == "172.20.0.0/16"


def test_ip_range_gateway_and_aux_addresses_are_honoured(lab):
    lab.network(
        "ranged",
        "--subnet", "10.34.0.0/24",
        "--gateway", "10.34.0.254",
        "--ip-range", "10.34.0.128/30",
        "--aux-address", "printer=10.34.0.129",
    )
    config = lab.inspect("ranged")["IPAM"]["Config"][0]
    assert config["Gateway"] == "10.34.0.254"
    got = []
    for name in ("a", "b", "c"):
        lab.sandbox(name)
        got += lab.connect("ranged", name)
    # 10.34.0.128/30 holds .128-.131; .129 is reserved for the printer.
    assert sorted(got) == ["10.34.0.128", "10.34.0.130", "10.34.0.131"]
    lab.sandbox("d")
    result = lab.netctl("network", "connect", "ranged", "d", check=False)
    assert result.returncode != 0 and "exhausted" in result.stderr
    assert lab.connect("ranged", "d", "--ip", "10.34.0.10") == ["10.34.0.10"]  # static outside the range
    assert lab.ping("a", "10.34.0.254")


def test_a_subnet_on_a_host_route_is_refused_naming_the_route_and_its_link(lab):
    lab.host.run("ip", "link", "add", "uplink7", "type", "veth", "peer", "name", "uplink7p")  # no dummy module here
    lab.host.run("ip", "addr", "add", "192.0.2.1/24", "dev", "uplink7")
    for link in ("uplink7", "uplink7p"):
        lab.host.run("ip", "link", "set", link, "up")
    refused = lab.netctl("network", "create", "--subnet", "192.0.2.0/25", "clash", check=False)
    assert refused.returncode == 2, refused.stderr
    assert "overlaps host route 192.0.2.0/24 dev uplink7" in refused.stderr, refused.stderr
    lab.network("free", "--subnet", "192.0.3.0/24")  # next to it is fine
