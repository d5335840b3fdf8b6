"""The embedded name server answers containers' queries (issue 14's acceptance, inside throwaway hosts):
busybox nslookup and a Python stub resolver inside containers, the agent serving 127.0.0.11."""

from __future__ import annotations

import ipaddress

import pytest


pytestmark = [pytest.mark.kernel, pytest.mark.timeout(300)]


def test_names_and_aliases_resolve_with_a_and_aaaa_on_a_dual_stack_network(dns_lab):
    dns_lab.run("web", "--network-alias", "api")
    dns_lab.run("client")
    web = {a.split("/")[0] for a in _addresses(dns_lab, "web")}
    v4 = next(a for a in web if ":" not in a)
    v6 = next(a for a in web if ":" in a)
    assert dns_lab.netctl("exec", "client", "cat", "/etc/resolv.conf").stdout == (
        "nameserver 127.0.0.11\nsearch netctl.internal corp.example\noptions ndots:1\n")
    hosts = dns_lab.netctl("exec", "client", "cat", "/etc/hosts").stdout
    assert "web" not in hosts.split() and "client" in hosts.split()  # only its own name, as Docker's
    for name in ("web", "api", "web.netctl.internal", "API.NETCTL.INTERNAL"):
        out = dns_lab.nslookup("client", name)  # busybox also asks NAME.corp.example (NXDOMAIN: exit 1)
        assert v4 in out.stdout and v6 in out.stdout, out.stdout + out.stderr
    assert dns_lab.addresses("client", "web", "A") == [v4]
    assert dns_lab.addresses("client", "api", "AAAA") == [v6]
    (mx,) = dns_lab.stub("client", "web/MX")
    assert mx["rcode"] == "NOERROR" and mx["answers"] == []  # the name exists: NODATA, not NXDOMAIN
    (tcp,) = dns_lab.stub("client", "web/A", tcp=True)
    assert tcp["answers"] == [v4]


def test_ptr_gives_the_container_name(dns_lab):
    dns_lab.run("web")
    dns_lab.run("client")
    v4 = next(a.split("/")[0] for a in _addresses(dns_lab, "web") if ":" not in a)
    reverse = ".".join(reversed(v4.split("."))) + ".in-addr.arpa"
    (ptr,) = dns_lab.stub("client", f"{reverse}/PTR")
    assert ptr["rcode"] == "NOERROR" and ptr["answers"] == ["web.netctl.internal."]
    out = dns_lab.nslookup("client", v4)
    assert "web.netctl.internal" in out.stdout, out.stdout + out.stderr
    v6 = next(a.split("/")[0] for a in _addresses(dns_lab, "web") if ":" in a)  # ip6.arpa, nibble by nibble
    (ptr6,) = dns_lab.stub("client", f"{ipaddress.ip_address(v6).reverse_pointer}/PTR")
    assert ptr6["rcode"] == "NOERROR" and ptr6["answers"] == ["web.netctl.internal."], ptr6
    out = dns_lab.nslookup("client", v6)
    assert "web.netctl.internal" in out.stdout, out.stdout + out.stderr


def test_a_name_on_a_network_the_asker_is_not_on_is_nxdomain(dns_lab):
    dns_lab.netctl("network", "create", "--subnet", "10.90.0.0/24", "other")
    dns_lab.run("hidden", network="other")
    dns_lab.run("client")
    for name in ("hidden", "hidden.netctl.internal"):
        (answer,) = dns_lab.stub("client", f"{name}/A")
        assert answer["rcode"] == "NXDOMAIN", answer
    out = dns_lab.nslookup("client", "hidden")
    assert out.returncode != 0 and "NXDOMAIN" in out.stdout + out.stderr, out.stdout + out.stderr
    assert dns_lab.addresses("hidden", "hidden") != []  # it resolves itself on its own network


def test_three_containers_sharing_an_alias_give_three_addresses_in_rotating_order(dns_lab):
    for name in ("s1", "s2", "s3"):
        dns_lab.run(name, "--network-alias", "svc")
    dns_lab.run("client")
    answers = [a["answers"] for a in dns_lab.stub("client", *["svc/A"] * 6)]
    expected = sorted(next(x.split("/")[0] for x in _addresses(dns_lab, n) if ":" not in x) for n in ("s1", "s2", "s3"))
    assert all(sorted(a) == expected for a in answers), answers
    assert len({a[0] for a in answers}) == 3, f"the first address should rotate: {answers}"
    out = dns_lab.nslookup("client", "svc")
    assert all(address in out.stdout for address in expected), out.stdout


def test_a_container_that_leaves_disappears_from_the_answers_at_once(dns_lab):
    dns_lab.run("web", "--network-alias", "svc")
    dns_lab.run("peer", "--network-alias", "svc")
    dns_lab.run("client")
    assert len(dns_lab.addresses("client", "svc")) == 2
    dns_lab.netctl("rm", "-f", "web")
    # No waiting: rm returns once the name server has the new state.
    (web,) = dns_lab.stub("client", "web/A")
    assert web["rcode"] == "NXDOMAIN", web
    assert len(dns_lab.addresses("client", "svc")) == 1
    dns_lab.netctl("network", "disconnect", "net", "peer")
    (svc,) = dns_lab.stub("client", "svc/A")
    assert svc["rcode"] == "NXDOMAIN", svc


def test_a_re_resolving_client_sees_a_replaced_peers_new_address(dns_lab):
    """The `resolver 127.0.0.11` idiom (nginx, HAProxy, Envoy): the same name asked again after its
    holder was replaced gives the new holder's address (TTL 0: nothing to expire)."""
    dns_lab.run("backend")
    dns_lab.run("proxy")
    first = dns_lab.addresses("proxy", "backend")
    dns_lab.netctl("rm", "-f", "backend")
    dns_lab.netctl("run", "-d", "--name", "filler", "--network", "net", "busybox", "sleep", "600")
    dns_lab.run("backend")
    second = dns_lab.addresses("proxy", "backend")
    assert second and second != first, (first, second)
    assert second == [a.split("/")[0] for a in _addresses(dns_lab, "backend") if ":" not in a]


def test_connecting_a_running_container_to_another_network_gives_it_those_names(dns_lab):
    dns_lab.netctl("network", "create", "--subnet", "10.91.0.0/24", "back")
    dns_lab.run("db", network="back")
    dns_lab.run("app")
    (before,) = dns_lab.stub("app", "db/A")
    assert before["rcode"] == "NXDOMAIN"
    dns_lab.netctl("network", "connect", "back", "app")
    assert dns_lab.addresses("app", "db") == [_addresses(dns_lab, "db")[0].split("/")[0]]


def test_plain_sandboxes_and_their_names_are_served_too(dns_lab):
    for name in ("sa", "sb"):
        dns_lab.netctl("sandbox", "create", "--name", name)
        dns_lab.netctl("network", "connect", "--alias", f"{name}-alias", "net", name)
    assert dns_lab.addresses("sa", "sb-alias") == dns_lab.addresses("sa", "sb") != []


def _addresses(lab, container: str) -> list[str]:
    """The container's addresses (with prefix length) from `netctl inspect`."""
    import json

    info = json.loads(lab.netctl("inspect", container).stdout)[0]
    found = []
    for view in info["NetworkSettings"]["Networks"].values():
        if view.get("IPAddress"):
            found.append(f"{view['IPAddress']}/{view.get('IPPrefixLen', 0)}")
        if view.get("GlobalIPv6Address"):
            found.append(view["GlobalIPv6Address"])
    return found


def test_an_answer_too_big_for_udp_is_truncated_and_complete_over_tcp(dns_lab):
    """40 holders of one alias: 40 A records do not fit 512 bytes, so UDP says TC and TCP gives all."""
    for i in range(40):
        dns_lab.netctl("sandbox", "create", "--name", f"m{i}")
        dns_lab.netctl("network", "connect", "--alias", "crowd", "net", f"m{i}")
    (udp,) = dns_lab.stub("m0", "crowd/A")
    assert udp["tc"] and udp["answers"] == [], udp
    (tcp,) = dns_lab.stub("m0", "crowd/A", tcp=True)
    assert len(set(tcp["answers"])) == 40, tcp


def test_a_container_can_run_its_own_name_server_on_port_53(dns_lab):
    """dnsmasq, CoreDNS, Pi-hole in a container listen on 0.0.0.0:53 (UDP and TCP). The embedded
    server must leave that port free (Docker's listens elsewhere and redirects 127.0.0.11:53 to it):
    bound on 127.0.0.11:53 itself, it made their bind fail with EADDRINUSE."""
    import socket

    dns_lab.run("web")
    dns_lab.run("dnsbox")
    udp = dns_lab.socket_in("dnsbox")
    tcp = dns_lab.socket_in("dnsbox", socket.SOCK_STREAM)
    peer = dns_lab.socket_in("web")
    try:
        udp.bind(("0.0.0.0", 53))
        tcp.bind(("0.0.0.0", 53))
        tcp.listen(4)
        # 127.0.0.11:53 is still the embedded server's, over UDP and TCP...
        assert dns_lab.addresses("dnsbox", "web") != []
        (over_tcp,) = dns_lab.stub("dnsbox", "web/A", tcp=True)
        assert over_tcp.get("answers"), over_tcp
        # ...and the container's own server gets what is sent to its address.
        address = next(a.split("/")[0] for a in _addresses(dns_lab, "dnsbox") if ":" not in a)
        peer.sendto(b"to the container's own server", (address, 53))
        udp.settimeout(5)
        assert udp.recvfrom(100)[0] == b"to the container's own server"
    finally:
        for sock in (udp, tcp, peer):
            sock.close()
