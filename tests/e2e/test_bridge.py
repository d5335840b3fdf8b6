"""Bridge networks end to end: reachability, isolation, internal, ICC, masquerade, published ports."""

import pytest

pytestmark = pytest.mark.kernel


def test_two_sandboxes_reach_each_other_and_the_gateway(lab):
    lab.network("blue", "--subnet", "10.10.0.0/24")
    lab.sandbox("a"), lab.sandbox("b")
    (ip_a,) = lab.connect("blue", "a")
    (ip_b,) = lab.connect("blue", "b")
    assert ip_a != ip_b
    assert lab.ping("a", ip_b)
    assert lab.ping("b", ip_a)
    assert lab.ping("a", "10.10.0.1")
    routes = lab.exec("a", "ip", "route").stdout
    assert "default via 10.10.0.1 dev eth0" in routes


def test_sandbox_on_another_network_reaches_neither_and_packets_are_dropped(lab):
    lab.network("blue", "--subnet", "10.11.0.0/24")
    lab.network("red", "--subnet", "10.12.0.0/24")
    for name in ("a", "b", "c"):
        lab.sandbox(name)
    (ip_a,) = lab.connect("blue", "a")
    (ip_b,) = lab.connect("blue", "b")
    lab.connect("red", "c")
    before = lab.counters()
    assert not lab.ping("c", ip_a)
    assert not lab.ping("c", ip_b)
    after = lab.counters()
    # The pings left red's bridge, were routed towards blue's and dropped by the isolation rule —
    # not lost for want of a route.
    assert after["isolate red"] - before.get("isolate red", 0) >= 2
    assert lab.ping("a", ip_b)  # blue itself is unaffected


def test_internal_network_has_no_way_out(lab, upstream):
    lab.network("vault", "--internal", "--subnet", "10.13.0.0/24")
    lab.network("open", "--subnet", "10.14.0.0/24")
    lab.sandbox("x"), lab.sandbox("y")
    (ip_x,) = lab.connect("vault", "x")
    (ip_y,) = lab.connect("open", "y")
    assert "default" not in lab.exec("x", "ip", "route").stdout
    assert lab.ping("x", "10.13.0.1")  # the gateway address stays reachable
    assert not lab.ping("x", "198.51.100.2")  # no route to the upstream
    before = lab.counters()
    assert not lab.ping("y", ip_x)  # nothing comes in either
    after = lab.counters()
    assert after["internal vault"] > before.get("internal vault", 0)
    assert lab.ping("y", "198.51.100.2")  # while a normal network goes out


def test_icc_false_blocks_neighbours_but_not_the_gateway(lab):
    lab.network("quiet", "--subnet", "10.15.0.0/24", "-o", "icc=false")
    lab.sandbox("a"), lab.sandbox("b")
    (ip_a,) = lab.connect("quiet", "a")
    (ip_b,) = lab.connect("quiet", "b")
    before = lab.counters()
    assert not lab.ping("a", ip_b)
    assert not lab.ping("b", ip_a)
    after = lab.counters()
    assert after["icc quiet"] - before.get("icc quiet", 0) >= 2
    assert lab.ping("a", "10.15.0.1")
    assert lab.ping("b", "10.15.0.1")


def test_outbound_traffic_is_masqueraded_to_the_host_address(lab, upstream):
    lab.network("out", "--subnet", "10.16.0.0/24")
    lab.sandbox("a")
    lab.connect("out", "a")
    server = upstream.serve(8080)
    answer = lab.tcp_connect("a", "198.51.100.2", 8080).stdout.strip()
    assert answer == "198.51.100.1"  # the upstream saw the host, not 10.16.0.x
    assert server.wait(timeout=10) == 0


def test_masquerade_off_keeps_the_container_address(lab, upstream):
    lab.network("plain", "--subnet", "10.17.0.0/24", "-o", "masquerade=false")
    lab.sandbox("a")
    (ip_a,) = lab.connect("plain", "a")
    upstream.run("ip", "route", "add", "10.17.0.0/24", "via", "198.51.100.1")
    upstream.serve(8081)
    assert lab.tcp_connect("a", "198.51.100.2", 8081).stdout.strip() == ip_a


def test_published_port_answers_from_outside_the_host_and_hairpin(lab, upstream):
    lab.network("pub", "--subnet", "10.18.0.0/24")
    server = lab.sandbox("srv")
    lab.sandbox("neighbour")
    (ip_srv,) = lab.connect("pub", "srv", "-p", "8080:80", "-p", "5353:53/udp")
    (ip_nb,) = lab.connect("pub", "neighbour")
    lab.serve(server, 80, count=4)
    # From another namespace (the upstream): the client address is preserved.
    assert upstream.connect("198.51.100.1", 8080).stdout.strip() == "198.51.100.2"
    # From the host itself, on its own address and on localhost.
    assert lab.tcp_connect(None, "198.51.100.1", 8080).stdout.strip()
    assert lab.tcp_connect(None, "127.0.0.1", 8080).stdout.strip()
    # Hairpin: a container of the same network through the host's published port.
    assert lab.tcp_connect("neighbour", "198.51.100.1", 8080).stdout.strip() == "10.18.0.1"
    lab.serve(server, 53, udp=True)
    assert upstream.connect("198.51.100.1", 5353, udp=True).stdout.strip() == "198.51.100.2"


def test_published_port_on_a_given_host_address_only(lab, upstream):
    lab.network("pub", "--subnet", "10.19.0.0/24")
    server = lab.sandbox("srv")
    lab.connect("pub", "srv", "-p", "127.0.0.1:8082:80")
    lab.serve(server, 80)
    assert upstream.connect("198.51.100.1", 8082, check=False).returncode != 0
    assert lab.tcp_connect(None, "127.0.0.1", 8082).stdout.strip()


def test_flushed_firewall_is_rebuilt_by_one_command(lab, upstream):
    lab.network("out", "--subnet", "10.20.0.0/24")
    lab.sandbox("a")
    lab.connect("out", "a")
    lab.host.run("nft", "flush", "ruleset")
    problems = lab.netctl("doctor", check=False)
    assert problems.returncode == 1 and "firewall" in problems.stdout
    lab.netctl("firewall", "sync")
    upstream.serve(8083)
    assert lab.tcp_connect("a", "198.51.100.2", 8083).stdout.strip() == "198.51.100.1"
    assert lab.netctl("doctor").returncode == 0


def test_a_network_has_rules_while_it_has_endpoints(lab):
    """Creating or removing an empty network leaves nftables alone (podman's network create writes
    a file; ~2 ms of libnftables each); its first endpoint brings its rules, its last takes them."""
    tables = lambda: lab.host.run("nft", "list", "tables").stdout.strip()  # noqa: E731
    lab.network("lazy", "--subnet", "10.23.0.0/24")
    bridge = lab.inspect("lazy")["Bridge"]
    assert tables() == "" and lab.netctl("doctor").returncode == 0
    lab.sandbox("a"), lab.sandbox("b")
    lab.connect("lazy", "a")
    assert bridge in lab.host.run("nft", "list", "ruleset").stdout
    (ip_b,) = lab.connect("lazy", "b")
    assert lab.ping("a", ip_b) and lab.netctl("doctor").returncode == 0
    lab.netctl("network", "disconnect", "lazy", "a")
    assert bridge in lab.host.run("nft", "list", "ruleset").stdout  # b is still on it
    lab.netctl("sandbox", "rm", "b")
    assert tables() == "" and lab.netctl("doctor").returncode == 0
    lab.netctl("network", "rm", "lazy")
    assert tables() == ""


def test_mtu_is_set_on_bridge_and_both_veth_ends(lab):
    lab.network("jumbo", "--subnet", "10.21.0.0/24", "--mtu", "1400")
    lab.sandbox("a")
    lab.connect("jumbo", "a")
    info = lab.inspect("jumbo")
    assert info["MTU"] == 1400
    endpoint = next(iter(info["Containers"].values()))
    assert "mtu 1400" in lab.host.run("ip", "link", "show", endpoint["HostInterface"]).stdout
    assert "mtu 1400" in lab.exec("a", "ip", "link", "show", "eth0").stdout
    assert "mtu 1400" in lab.host.run("ip", "link", "show", info["Bridge"]).stdout


def test_custom_bridge_name_and_disconnect_cleans_up(lab):
    lab.network("named", "--subnet", "10.22.0.0/24", "-o", "bridge=br-named")
    lab.sandbox("a")
    lab.connect("named", "a")
    host_veth = next(iter(lab.inspect("named")["Containers"].values()))["HostInterface"]
    assert "master br-named" in lab.host.run("ip", "link", "show", host_veth).stdout
    # set in the bridge's up message (IFLA_AF_SPEC): published ports reached as 127.0.0.1 need it
    assert lab.host.run("cat", "/proc/sys/net/ipv4/conf/br-named/route_localnet").stdout.strip() == "1"
    lab.netctl("network", "disconnect", "named", "a")
    assert host_veth not in lab.host.ip_link_names()
    assert "eth0" not in lab.exec("a", "ip", "link").stdout
    assert lab.inspect("named")["Containers"] == {}
    lab.netctl("network", "rm", "named")
    assert "br-named" not in lab.host.ip_link_names()
    assert lab.host.run("nft", "list", "tables").stdout.strip() == ""


def test_null_network_gives_loopback_only(lab):
    lab.network("none", "-d", "null")
    lab.sandbox("a")
    lab.connect("none", "a")
    links = lab.exec("a", "ip", "-o", "link").stdout.splitlines()
    assert len(links) == 1 and ": lo:" in links[0] and "UP" in links[0]
    assert lab.ping("a", "127.0.0.1")


def test_dual_stack_endpoints_get_both_families(lab):
    lab.network("dual", "--subnet", "10.23.0.0/24", "--subnet", "fd00:23::/64")
    lab.sandbox("a"), lab.sandbox("b")
    addrs_a = lab.connect("dual", "a")
    addrs_b = lab.connect("dual", "b")
    assert len(addrs_a) == 2 and any(":" in a for a in addrs_a) and any("." in a for a in addrs_a)
    v6_b = next(a for a in addrs_b if ":" in a)
    assert lab.ping("a", v6_b)
    assert lab.ping("a", next(a for a in addrs_b if "." in a))
    assert "default via fd00:23::1" in lab.exec("a", "ip", "-6", "route").stdout


def test_default_ipv6_subnet_with_flag(lab):
    lab.network("six", "--ipv6")
    subnets = [c["Subnet"] for c in lab.inspect("six")["IPAM"]["Config"]]
    assert any(":" in s for s in subnets) and any("." in s for s in subnets)


def test_ls_inspect_prune_json(lab):
    import json

    lab.network("keep", "--subnet", "10.24.0.0/24", "--label", "team=net")
    lab.network("drop", "--subnet", "10.25.0.0/24")
    lab.sandbox("a")
    lab.connect("keep", "a")
    listed = json.loads(lab.netctl("network", "ls", "--format", "json").stdout)
    assert {n["name"] for n in listed} == {"keep", "drop"}
    assert lab.inspect("keep")["Labels"] == {"team": "net"}
    assert lab.netctl("network", "prune", "-f").stdout.split() == ["drop"]
    assert [n["name"] for n in json.loads(lab.netctl("network", "ls", "--format", "json").stdout)] == ["keep"]
    table = lab.netctl("network", "ls").stdout
    assert "keep" in table and "10.24.0.0/24" in table


def test_sandbox_rm_releases_endpoints_and_addresses(lab):
    lab.network("blue", "--subnet", "10.26.0.0/24")
    lab.sandbox("a")
    (ip_a,) = lab.connect("blue", "a", "--ip", "10.26.0.50")
    assert ip_a == "10.26.0.50"
    lab.netctl("sandbox", "rm", "a")
    assert lab.inspect("blue")["Containers"] == {}
    assert not any(n.startswith("nv") for n in lab.host.ip_link_names())
    lab.sandbox("b")
    assert lab.connect("blue", "b", "--ip", "10.26.0.50") == ["10.26.0.50"]  # the address was released
    assert lab.netctl("doctor").returncode == 0
