"""render(): the nft JSON ruleset derived from bridge networks (pure logic), plus nft's own check mode
(`nft -c`, run inside a throwaway `unshare --net` so that nothing of the machine is even looked at)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from libnetwork import firewall as fw
from libnetwork import firewall_live, firewall_rules, nftables
from libnetwork.errors import AlreadyExists, InvalidArgument
from libnetwork.model import PortMapping

BR_A, BR_B, BR_C = "nc-aaaaaaaaaaaa", "nc-bbbbbbbbbbbb", "nc-cccccccccccc"


def plain(name: str = "a", bridge: str = BR_A, subnets: list[str] | None = None, **kw) -> fw.BridgeNet:
    subnets = subnets or ["172.18.0.0/16"]
    kw.setdefault("gateways", [])  # not part of any rule: the gateway is reached through INPUT
    return fw.BridgeNet(name=name, bridge=bridge, subnets=subnets, **kw)


def published(*ports: PortMapping, addresses: tuple[str, ...] = ("172.18.0.2",)) -> fw.PublishedEndpoint:
    return fw.PublishedEndpoint(addresses=list(addresses), ports=list(ports))


# ---- reading the rendered commands -------------------------------------------------------------------


def added(commands: list[dict], kind: str) -> list[dict]:
    return [c["add"][kind] for c in commands if kind in c.get("add", {})]


def rules(commands: list[dict], family: str, chain: str) -> list[dict]:
    return [r for r in added(commands, "rule") if r["family"] == family and r["chain"] == chain]


def chains(commands: list[dict]) -> dict[tuple[str, str], dict]:
    return {(c["family"], c["name"]): c for c in added(commands, "chain")}


def sets(commands: list[dict]) -> dict[str, list[str]]:
    return {s["name"]: s["elem"] for s in added(commands, "set")}


def text(rule: dict) -> str:
    """A rule as compact nft-like text, good enough to assert on (not nft's exact syntax)."""
    words = []
    for e in rule["expr"]:
        if "match" in e:
            m = e["match"]
            words.append(f"{_operand(m['left'])} {m['op']} {_operand(m['right'])}")
        else:
            (verb, arg), = e.items()
            words.append(verb if arg is None else f"{verb} {json.dumps(arg, sort_keys=True)}")
    return " ; ".join(words)


def _operand(x) -> str:
    if isinstance(x, dict):
        if "meta" in x:
            return x["meta"]["key"]
        if "payload" in x:
            return f"{x['payload']['protocol']} {x['payload']['field']}"
        if "prefix" in x:
            return f"{x['prefix']['addr']}/{x['prefix']['len']}"
        if "ct" in x:
            return f"ct {x['ct']['key']}"
        if "fib" in x:
            return "fib daddr type"
    if isinstance(x, list):
        return ",".join(x)
    return str(x)


def forward(commands: list[dict]) -> list[str]:
    return [text(r) for r in rules(commands, "inet", "forward")]


# ---- the shape of the transaction ---------------------------------------------------------------------


def test_both_tables_are_replaced_with_the_atomic_idiom():
    commands = fw.render([plain()])
    table = {"family": "inet", "name": "netctl"}
    bridge = {"family": "bridge", "name": "netctl"}
    assert commands[:4] == [
        {"add": {"table": table}}, {"delete": {"table": table}},
        {"add": {"table": bridge}}, {"delete": {"table": bridge}},
    ]  # fmt: skip
    assert {"add": {"table": table}} in commands[4:] and {"add": {"table": bridge}} in commands[4:]
    # Only netctl's own tables are ever named.
    for c in commands:
        for verb in c.values():
            for obj in verb.values():
                assert obj.get("table", obj.get("name")) == "netctl"
    json.dumps(commands)  # plain JSON


def test_no_networks_means_no_tables():
    assert fw.render([]) == [
        {"add": {"table": {"family": "inet", "name": "netctl"}}},
        {"delete": {"table": {"family": "inet", "name": "netctl"}}},
        {"add": {"table": {"family": "bridge", "name": "netctl"}}},
        {"delete": {"table": {"family": "bridge", "name": "netctl"}}},
    ]


def test_base_chains_hook_with_numeric_priorities():
    # A named priority in JSON is silently dropped by nft 1.0.6, leaving a chain with no hook.
    c = chains(fw.render([plain(icc=False)]))
    expected = {
        ("inet", "forward"): ("filter", "forward", 0),
        ("inet", "prerouting"): ("nat", "prerouting", -100),
        ("inet", "output"): ("nat", "output", -100),
        ("inet", "postrouting"): ("nat", "postrouting", 100),
        ("bridge", "forward"): ("filter", "forward", 0),
    }
    for key, (kind, hook, prio) in expected.items():
        assert (c[key]["type"], c[key]["hook"], c[key]["prio"], c[key]["policy"]) == (kind, hook, prio, "accept")
    assert "hook" not in c[("inet", "published")]  # a regular chain, reached by jumps only


def test_output_does_not_depend_on_input_order():
    nets = [plain("a", BR_A, ["10.1.0.0/24"]), plain("b", BR_B, ["10.2.0.0/24"], internal=True),
            plain("c", BR_C, ["10.3.0.0/24"], icc=False)]
    assert fw.render(nets) == fw.render(list(reversed(nets)))


# ---- one plain network --------------------------------------------------------------------------------


def test_one_plain_network():
    commands = fw.render([plain()])
    assert forward(commands) == [
        f"iifname == {BR_A} ; oifname == {BR_A} ; accept",
        f"iifname == {BR_A} ; oifname == @bridges ; counter ; drop",
        "oifname == @open_bridges ; ct status in dnat ; accept",
        "oifname == @open_bridges ; ct state in established,related ; accept",
        "iifname == @open_bridges ; accept",
        "oifname == @open_bridges ; counter ; drop",  # inbound to unpublished ports, last
    ]
    assert sets(commands) == {"bridges": [BR_A], "open_bridges": [BR_A]}
    assert [text(r) for r in rules(commands, "inet", "postrouting")] == [
        f"ip saddr == 172.18.0.0/16 ; oifname != {BR_A} ; masquerade",
    ]
    assert rules(commands, "inet", "prerouting") == rules(commands, "inet", "output") == []
    assert rules(commands, "inet", "published") == []
    assert ("bridge", "forward") not in chains(commands)  # ICC on: no bridge-family hook at all


def test_counted_rules_carry_their_comment():
    commands = fw.render([plain()])
    isolate = rules(commands, "inet", "forward")[1]
    assert isolate["comment"] == "isolate a"
    assert {"counter": None} in isolate["expr"]


# ---- internal, icc, masquerade ---------------------------------------------------------------------------


def test_internal_network_has_no_way_in_or_out():
    net = plain(internal=True, endpoints=[published(PortMapping(8080, 80))])
    commands = fw.render([net])
    internal = [r for r in rules(commands, "inet", "forward") if r.get("comment") == "internal a"]
    assert [text(r) for r in internal] == [f"iifname == {BR_A} ; counter ; drop", f"oifname == {BR_A} ; counter ; drop"]
    assert forward(commands)[0] == f"iifname == {BR_A} ; oifname == {BR_A} ; accept"  # inside stays open
    assert rules(commands, "inet", "postrouting") == []  # no masquerade, no hairpin
    assert rules(commands, "inet", "published") == [] and rules(commands, "inet", "prerouting") == []
    assert "open_bridges" not in sets(commands)
    assert not any("open_bridges" in t for t in forward(commands))


def test_drops_of_every_network_come_before_any_accept_of_another():
    nets = [plain("a", BR_A, ["10.1.0.0/24"]), plain("i", BR_B, ["10.2.0.0/24"], internal=True)]
    lines = forward(fw.render(nets))
    # The catch-all "inbound unpublished" drop closes the chain; every other drop precedes the accepts.
    last_drop = max(i for i, t in enumerate(lines) if t.endswith("drop") and not t.startswith("oifname == @open_bridges"))
    first_set_accept = min(i for i, t in enumerate(lines) if "@open_bridges" in t)
    same_bridge = [i for i, t in enumerate(lines) if t.count("==") == 2 and "@" not in t]
    assert max(same_bridge) < min(i for i, t in enumerate(lines) if t.endswith("drop"))
    assert last_drop < first_set_accept


def test_icc_off_drops_bridged_traffic_between_ports_of_each_subnet():
    net = plain(subnets=["172.18.0.0/16", "fd00:18::/64"], icc=False)
    commands = fw.render([net])
    icc = rules(commands, "bridge", "forward")
    assert [text(r) for r in icc] == [
        "ip daddr == 172.18.0.0/16 ; counter ; drop",
        "ip6 daddr == fd00:18::/64 ; counter ; drop",
    ]
    assert {r["comment"] for r in icc} == {"icc a"}


def test_icc_on_networks_get_no_bridge_rule():
    commands = fw.render([plain("a", BR_A, ["10.1.0.0/24"], icc=False), plain("b", BR_B, ["10.2.0.0/24"])])
    assert [r["comment"] for r in rules(commands, "bridge", "forward")] == ["icc a"]


def test_masquerade_off():
    commands = fw.render([plain(masquerade=False)])
    assert rules(commands, "inet", "postrouting") == []


def test_masquerade_covers_v4_and_v6_subnets():
    commands = fw.render([plain(subnets=["172.18.0.0/16", "fd00:18::/64"])])
    assert [text(r) for r in rules(commands, "inet", "postrouting")] == [
        f"ip saddr == 172.18.0.0/16 ; oifname != {BR_A} ; masquerade",
        f"ip6 saddr == fd00:18::/64 ; oifname != {BR_A} ; masquerade",
    ]


def test_subnet_with_host_bits_is_rendered_as_its_network():
    commands = fw.render([plain(subnets=["172.18.5.1/16"])])
    assert "ip saddr == 172.18.0.0/16" in text(rules(commands, "inet", "postrouting")[0])


# ---- isolation ---------------------------------------------------------------------------------------------


def test_three_networks_are_isolated_from_each_other():
    nets = [plain("a", BR_A, ["10.1.0.0/24"]), plain("b", BR_B, ["10.2.0.0/24"]), plain("c", BR_C, ["10.3.0.0/24"])]
    commands = fw.render(nets)
    assert sets(commands)["bridges"] == [BR_A, BR_B, BR_C]
    forward_rules = rules(commands, "inet", "forward")
    isolate = {r["comment"]: text(r) for r in forward_rules if r.get("comment", "").startswith("isolate")}
    assert isolate == {
        f"isolate {n}": f"iifname == {br} ; oifname == @bridges ; counter ; drop"
        for n, br in (("a", BR_A), ("b", BR_B), ("c", BR_C))
    }
    # Each network's own hairpin traffic is accepted before any isolation drop.
    lines = forward(commands)
    for br in (BR_A, BR_B, BR_C):
        assert lines.index(f"iifname == {br} ; oifname == {br} ; accept") < lines.index(
            f"iifname == {BR_A} ; oifname == @bridges ; counter ; drop")


# ---- published ports ------------------------------------------------------------------------------------------


def test_published_ports_v4_and_v6_with_and_without_host_ip():
    endpoint = published(
        PortMapping(8080, 80),  # every address, both families
        PortMapping(5353, 53, "udp", "127.0.0.1"),
        PortMapping(8443, 443, "tcp", "fd00:99::1"),
        addresses=("172.18.0.2/16", "fd00:18::2/64"),
    )
    commands = fw.render([plain(subnets=["172.18.0.0/16", "fd00:18::/64"], endpoints=[endpoint])])
    assert [text(r) for r in rules(commands, "inet", "published")] == [
        'nfproto == ipv4 ; l4proto == tcp ; th dport == 8080 ; dnat {"addr": "172.18.0.2", "family": "ip", "port": 80}',
        'nfproto == ipv6 ; l4proto == tcp ; th dport == 8080 ; dnat {"addr": "fd00:18::2", "family": "ip6", "port": 80}',
        'ip daddr == 127.0.0.1 ; l4proto == udp ; th dport == 5353 ; dnat {"addr": "172.18.0.2", "family": "ip", "port": 53}',
        'ip6 daddr == fd00:99::1 ; l4proto == tcp ; th dport == 8443 ; dnat {"addr": "fd00:18::2", "family": "ip6", "port": 443}',
    ]
    jump = 'fib daddr type == local ; jump {"target": "published"}'
    assert [text(r) for r in rules(commands, "inet", "prerouting")] == [jump]
    assert [text(r) for r in rules(commands, "inet", "output")] == [jump]
    assert [text(r) for r in rules(commands, "inet", "postrouting")][2:] == [
        f"oifname == {BR_A} ; ip saddr == 172.18.0.0/16 ; ct status in dnat ; masquerade",  # hairpin
        f"oifname == {BR_A} ; ip6 saddr == fd00:18::/64 ; ct status in dnat ; masquerade",
        f"oifname == {BR_A} ; ip saddr == 127.0.0.0/8 ; masquerade",  # the host via localhost
    ]


def test_v6_only_publishing_needs_no_localhost_masquerade():
    endpoint = published(PortMapping(8080, 80), addresses=("fd00:18::2",))
    commands = fw.render([plain(subnets=["fd00:18::/64"], endpoints=[endpoint])])
    assert not any("127.0.0.0/8" in text(r) for r in rules(commands, "inet", "postrouting"))


def test_publishing_on_a_family_the_endpoint_lacks_is_refused():
    endpoint = published(PortMapping(8080, 80, "tcp", "::1"), addresses=("172.18.0.2",))
    with pytest.raises(InvalidArgument, match="no IPv6 address"):
        fw.render([plain(endpoints=[endpoint])])


def test_a_host_port_published_twice_is_refused():
    a = plain("a", BR_A, ["10.1.0.0/24"], endpoints=[published(PortMapping(8080, 80), addresses=("10.1.0.2",))])
    on_localhost = PortMapping(8080, 81, "tcp", "127.0.0.1")
    b = plain("b", BR_B, ["10.2.0.0/24"], endpoints=[published(on_localhost, addresses=("10.2.0.2",))])
    with pytest.raises(AlreadyExists, match="8080/tcp"):
        fw.render([a, b])


def test_the_same_host_port_on_other_addresses_or_protocols_is_fine():
    on_one = published(PortMapping(8080, 80, "tcp", "127.0.0.1"), addresses=("10.1.0.2",))
    on_other_and_udp = published(PortMapping(8080, 80, "tcp", "127.0.0.2"), PortMapping(8080, 80, "udp"),
                                 addresses=("10.2.0.2",))
    a = plain("a", BR_A, ["10.1.0.0/24"], endpoints=[on_one])
    b = plain("b", BR_B, ["10.2.0.0/24"], endpoints=[on_other_and_udp])
    assert len(rules(fw.render([a, b]), "inet", "published")) == 3


# ---- validation ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bridge", ["", "nc-0123456789abc", "nc-a*", 'nc-"a', "nc a", "nc\\a", "..", "nc-a\n", "nc-ä", None]
)
def test_bad_bridge_names_are_refused(bridge):
    with pytest.raises(InvalidArgument, match="bridge name"):
        fw.render([plain(bridge=bridge)])


@pytest.mark.parametrize("name", ["", 'a"b', "a\\b", "a\nb", "x" * 120])
def test_names_that_cannot_be_comments_are_refused(name):
    with pytest.raises(InvalidArgument, match="network name"):
        fw.render([plain(name=name)])


def test_longest_acceptable_name_fits_every_comment():
    commands = fw.render([plain(name="x" * firewall_rules._NAME_MAX, internal=True, icc=False)])
    assert max(len(r.get("comment", "").encode()) for r in added(commands, "rule")) <= 128


@pytest.mark.parametrize(
    "net",
    [
        plain(subnets=["172.18.0.0/33"]),
        plain(subnets=["not-a-cidr"]),
        fw.BridgeNet("a", BR_A, [], []),
        fw.BridgeNet("a", BR_A, ["10.0.0.0/8"], ["10.0.0.300"]),
        plain(endpoints=[published(PortMapping(8080, 80), addresses=("172.18.0.256",))]),
        plain(endpoints=[published(PortMapping(0, 80))]),
        plain(endpoints=[published(PortMapping(8080, 65536))]),
        plain(endpoints=[published(PortMapping(8080, 80, "icmp"))]),
        plain(endpoints=[published(PortMapping(8080, 80, "tcp", "localhost"))]),
    ],
    ids=["prefix", "cidr", "no-subnet", "gateway", "address", "host-port", "container-port", "protocol", "host-ip"],
)
def test_bad_addresses_and_ports_are_refused(net):
    with pytest.raises(InvalidArgument):
        fw.render([net])


def test_two_networks_on_one_bridge_are_refused():
    with pytest.raises(InvalidArgument, match="bridge"):
        fw.render([plain("a", BR_A, ["10.1.0.0/24"]), plain("b", BR_A, ["10.2.0.0/24"])])


def test_two_networks_with_one_name_are_refused():
    with pytest.raises(InvalidArgument, match="name"):
        fw.render([plain("a", BR_A, ["10.1.0.0/24"]), plain("a", BR_B, ["10.2.0.0/24"])])


# ---- small pure helpers -----------------------------------------------------------------------------------------


def test_first_error_line_drops_the_meaningless_json_position():
    error = "internal:0:0-0: Error: Could not process rule: Operation not supported\n\nmore\n"
    assert nftables._first_error_line(error) == "Error: Could not process rule: Operation not supported"
    assert nftables._first_error_line("") == "nft failed without a message"


def test_rule_counters_sum_rules_sharing_a_comment():
    def rule(comment, packets):
        return {"rule": {"comment": comment, "expr": [{"counter": {"packets": packets, "bytes": 1}}, {"drop": None}]}}

    listing = {"nftables": [{"metainfo": {}}, rule("icc a", 2), rule("icc a", 3), rule("isolate a", 0),
                            {"rule": {"expr": [{"counter": {"packets": 9, "bytes": 9}}]}},  # no comment
                            {"rule": {"comment": "c", "expr": [{"accept": None}]}}]}  # no counter
    assert firewall_live._rule_counters(listing) == {"icc a": 5, "isolate a": 0}


# ---- nft check mode ------------------------------------------------------------------------------------------------


def nft_check(commands: list[dict]) -> subprocess.CompletedProcess:
    document = json.dumps({"nftables": [{"metainfo": {"json_schema_version": 1}}, *commands]})
    # -c: parse, evaluate and let the kernel validate, but commit nothing; in a throwaway netns anyway.
    return subprocess.run(["unshare", "--net", "--", "nft", "-c", "-j", "-f", "-"], input=document,
                          capture_output=True, text=True, timeout=30, check=False)


needs_nft = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("unshare"),
    reason="nft check mode needs root (CAP_NET_ADMIN), nft and unshare",
)


def everything() -> list[fw.BridgeNet]:
    return [
        plain("a", BR_A, ["10.1.0.0/24", "fd00:1::/64"], icc=False, endpoints=[
            published(PortMapping(8080, 80), PortMapping(5353, 53, "udp", "127.0.0.1"),
                      PortMapping(8443, 443, "sctp", "fd00:99::1"), addresses=("10.1.0.2", "fd00:1::2")),
        ]),
        plain("b", BR_B, ["10.2.0.0/24"], masquerade=False),
        plain("i", BR_C, ["10.3.0.0/24"], internal=True, icc=False),
    ]


@needs_nft
@pytest.mark.parametrize(
    "nets",
    [[], [plain()], everything(),
     [plain(f"n{i}", f"nc-{i:012x}", [f"10.{i // 250}.{i % 250}.0/24"], icc=bool(i % 2)) for i in range(100)]],
    ids=["none", "plain", "everything", "100-networks"],
)
def test_nft_accepts_the_rendered_json(nets):
    done = nft_check(fw.render(nets))
    assert done.returncode == 0, done.stderr


@needs_nft
def test_nft_check_mode_does_catch_bad_json():
    # Guards the test above against a check mode that accepts anything.
    to_missing_set = {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "@no_such_set"}}
    rule = {"family": "inet", "table": "netctl", "chain": "forward", "expr": [to_missing_set, {"drop": None}]}
    bad = fw.render([plain()]) + [{"add": {"rule": rule}}]
    assert nft_check(bad).returncode != 0
