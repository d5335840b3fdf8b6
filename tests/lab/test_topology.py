"""Topology files: the examples parse; every kind of mistake is one clear line naming file and key."""

from __future__ import annotations

import glob
import os
import textwrap

import pytest

from lab.conftest import EXAMPLES
from netctl.lab import matrix, topology
from netctl.lab.topology import TopologyError

GOOD = """
name: t
hosts:
  h1:
  h2: {address: 198.18.0.20}
networks:
  blue: {driver: overlay, subnet: 10.10.0.0/24}
  web: {driver: bridge, host: h1}
containers:
  a1: {host: h1, networks: [blue, web]}
  a2: {host: h2, networks: [blue]}
  w1: {host: h1, networks: [web]}
expect:
  reach: [[a1, a2], [a1, w1]]
  isolated: [[[a2], [w1]]]
"""


def load_text(tmp_path, text: str) -> topology.Topology:
    path = tmp_path / "lab.yaml"
    path.write_text(textwrap.dedent(text))
    return topology.load(str(path))


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(EXAMPLES, "*.yaml"))), ids=os.path.basename)
def test_examples_parse(path):
    topo = topology.load(path)
    assert topo.hosts and topo.containers and topo.expect.reach_pairs()


def test_defaults_and_addresses(tmp_path):
    topo = load_text(tmp_path, GOOD)
    assert topo.underlays["ul"].subnet == "198.18.0.0/24" and topo.underlays["ul"].switch_address == "198.18.0.254"
    assert topo.hosts["h1"].address == "198.18.0.1" and topo.hosts["h2"].address == "198.18.0.20"
    assert topo.store_url("h2") == "etcd://198.18.0.254:2379"
    assert topo.containers["a1"].command == ("sleep", "infinity") and topo.containers["a1"].image == "busybox"
    assert [n.name for n in topo.networks_on("h2")] == ["blue"]


def test_pairs_and_rows(tmp_path):
    topo = load_text(tmp_path, GOOD)
    assert topo.expect.reach_pairs() == [("a1", "a2"), ("a2", "a1"), ("a1", "w1"), ("w1", "a1")]
    assert topo.expect.isolated_pairs() == [("a2", "w1"), ("w1", "a2")]
    addresses = {"a1": {"blue": "10.10.0.2", "web": "172.18.0.2"}, "a2": {"blue": "10.10.0.3"}, "w1": {"web": "172.18.0.3"}}
    rows = matrix.plan(topo, topo.expect, addresses)
    # a1 -> a2: a2's blue address and its name; a2 -> w1 (isolated): every address of w1 and its name.
    assert [(r.via, r.expected) for r in rows if (r.source, r.target) == ("a1", "a2")] == [("10.10.0.3", True), ("a2", True)]
    assert [(r.via, r.expected) for r in rows if (r.source, r.target) == ("w1", "a2")] == [("10.10.0.3", False), ("a2", False)]
    assert [(r.via, r.expected) for r in rows if (r.source, r.target) == ("a2", "a1")] == [("10.10.0.2", True), ("a1", True)]


def test_ping_output_parsing():
    script = matrix.ping_script(["10.0.0.1", "x y"])
    assert "xargs -n 1 -P" in script and "'x y'" in script
    assert matrix.parse_output("ok 10.0.0.1\nno b\ngarbage\n", ["10.0.0.1", "b", "c"]) == {"10.0.0.1": True, "b": False, "c": False}


def test_settle_retries_only_missing_reach():
    rows = [matrix.Row("a", "b", True, "b", "name"), matrix.Row("a", "c", False, "c", "name")]
    calls = []

    def probe(source, targets):
        calls.append(list(targets))
        return {"b": len(calls) > 1, "c": True}

    rounds = matrix.run(rows, probe, settle_s=5)
    assert rounds == 2 and calls == [["b", "c"], ["b"]]
    assert rows[0].ok and not rows[1].ok  # c reached but must not: a failure, never retried


BAD = [
    ("unknown top-level key", "name: t\nhosts: {h1: }\nfoo: 1\n", "lab.yaml: foo: unknown key (allowed: name, underlays"),
    ("unknown host key", "name: t\nhosts: {h1: {adress: 198.18.0.3}}\n", "hosts.h1.adress: unknown key"),
    ("container on unknown host", "name: t\nhosts: {h1: }\nnetworks: {n: {driver: overlay}}\ncontainers: {c: {host: h9, networks: [n]}}\n",
     "containers.c.host: unknown host 'h9' (defined: h1)"),
    ("duplicate host", "name: t\nhosts:\n  h1:\n  h1:\n", "line 4: 'h1' is defined twice"),
    ("duplicate container", "name: t\nhosts: {h1: }\nnetworks: {n: {driver: overlay}}\ncontainers:\n  c: {host: h1, networks: [n]}\n  c: {host: h1, networks: [n]}\n",
     "'c' is defined twice"),
    ("container named like a network", "name: t\nhosts: {h1: }\nnetworks: {n: {driver: overlay}}\ncontainers: {n: {host: h1, networks: [n]}}\n",
     "containers.n: 'n' is also a network's name"),
    ("bad subnet", "name: t\nhosts: {h1: }\nnetworks: {n: {driver: overlay, subnet: 10.0.0.1/24}}\n",
     "networks.n.subnet: '10.0.0.1/24' is not a subnet in CIDR form"),
    ("overlapping subnets", "name: t\nhosts: {h1: }\nnetworks: {n: {driver: overlay, subnet: 198.18.0.0/16}}\n",
     "networks.n.subnet: 198.18.0.0/16 overlaps 198.18.0.0/24 (underlays.ul.subnet)"),
    ("bridge on another host", "name: t\nhosts: {h1: , h2: }\nnetworks: {b: {driver: bridge, host: h1}}\ncontainers: {c: {host: h2, networks: [b]}}\n",
     "bridge network 'b' is on host 'h1', not on 'h2'"),
    ("host address is the switch's", "name: t\nhosts: {h1: {address: 198.18.0.254}}\n", "is the switch's own address"),
    ("reach without a common network", "name: t\nhosts: {h1: }\nnetworks: {a: {driver: overlay}, b: {driver: overlay}}\n"
     "containers: {x: {host: h1, networks: [a]}, y: {host: h1, networks: [b]}}\nexpect: {reach: [[x, y]]}\n", "x and y share no network"),
    ("unknown container in expect", "name: t\nhosts: {h1: }\nnetworks: {a: {driver: overlay}}\ncontainers: {x: {host: h1, networks: [a]}}\n"
     "expect: {isolated: [[x, z]]}\n", "expect.isolated.0.1: unknown container 'z'"),
    ("cut of unknown host", "name: t\nhosts: {h1: }\nscenarios: [{name: s, cut: [h7]}]\n", "scenarios.0.cut: unknown host 'h7'"),
    ("bad lab name", "name: My Lab\nhosts: {h1: }\n", "name: invalid lab name 'My Lab'"),
    ("not YAML", "name: t\nhosts: [h1\n", "not valid YAML at line 3"),
    ("vni out of range", "name: t\nhosts: {h1: }\nnetworks: {a: {driver: overlay, vni: 16777216}}\n", "networks.a.vni: must be a whole number"),
]


@pytest.mark.parametrize("text,expected", [(t, e) for _, t, e in BAD], ids=[i for i, _, _ in BAD])
def test_bad_topologies(tmp_path, text, expected):
    with pytest.raises(TopologyError) as info:
        load_text(tmp_path, text)
    message = info.value.message
    assert expected in message and "\n" not in message and message.startswith(str(tmp_path))
    assert info.value.exit_code == 2


def test_waves_bound_new_neighbours():
    def rows(source, n):
        return [matrix.Row(source, f"t{i}", True, f"10.0.0.{i}", "address") for i in range(n)]

    by_source = {"a": rows("a", 100), "b": rows("b", 100), "c": rows("c", 300), "d": rows("d", 10)}
    assert matrix.neighbour_cost(by_source["a"]) == 200
    assert matrix.waves(by_source, budget=400) == [["a", "b"], ["c"], ["d"]]
