"""Names the server does not own go upstream: to the host's resolvers (loopback ones included, since
the agent forwards from the host's side), or to a container's --dns servers; --dns-search and
--dns-option end up in the container's resolv.conf. The upstream is fake_upstream.py at 198.51.100.53."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from dns.conftest import FAKE_UPSTREAM, UPSTREAM_DNS, make_lab, remove_cgroup_tree, wait_for

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(300)]


def test_an_outside_name_is_answered_by_the_hosts_upstream_through_the_embedded_server(dns_lab):
    dns_lab.run("client")
    (answer,) = dns_lab.stub("client", "outside.example/A")
    assert answer["rcode"] == "NOERROR" and answer["answers"] == ["203.0.113.7"], answer
    (missing,) = dns_lab.stub("client", "nowhere.example/A")
    assert missing["rcode"] == "NXDOMAIN", missing
    out = dns_lab.nslookup("client", "outside.example")
    assert "203.0.113.7" in out.stdout, out.stdout + out.stderr
    assert "udp outside.example. A" in wait_for(dns_lab.upstream_queries, what="the upstream's log")


def test_each_forwarded_query_leaves_from_its_own_source_port(dns_lab):
    """RFC 5452: a spoofed answer must guess the source port as well as the ID. One socket for every
    forwarded query kept one port for the agent's life (found by any container, then only the 16-bit
    ID stood between it and the answers of containers on other networks)."""
    dns_lab.run("client")
    names = [f"n{i}.spoof.example" for i in range(8)]
    answers = dns_lab.stub("client", *[f"{name}/A" for name in names])
    assert [a.get("rcode") for a in answers] == ["NXDOMAIN"] * 8, answers
    seen: list[str] = []

    def all_logged() -> bool:
        seen.extend(dns_lab.upstream_queries(sources=True))
        return len(seen) >= 8

    wait_for(all_logged, what="the upstream to log the eight queries")
    ports = {re.search(r" from [^ ]+:(\d+)", line).group(1) for line in seen if ".spoof.example." in line}  # type: ignore[union-attr]
    assert len(ports) >= 6, f"forwarded queries should leave from random ports: {seen}"


def test_an_answer_too_big_for_udp_comes_over_tcp(dns_lab):
    """The upstream truncates big.example over UDP; the asker's resolver retries over TCP to
    127.0.0.11, which the server forwards over TCP."""
    dns_lab.run("client")
    (udp,) = dns_lab.stub("client", "big.example/A")
    assert udp["tc"] and udp["answers"] == [], udp
    (tcp,) = dns_lab.stub("client", "big.example/A", tcp=True)
    assert len(tcp["answers"]) == 40, tcp


def test_a_loopback_only_host_resolver_is_reached_from_the_host_side():
    """The host's resolv.conf names only 127.0.0.53 (a systemd-resolved stand-in that forwards to the
    fake upstream): unreachable from a container's namespace, reached by the agent."""
    from containers.conftest import BUSYBOX

    if not __import__("os").path.exists(BUSYBOX):
        pytest.skip("busybox-static is not installed")
    host, lab = make_lab("dnslo", resolv_conf="nameserver 127.0.0.53\n")
    try:
        forwarder = host.popen(sys.executable, FAKE_UPSTREAM, "127.0.0.53", "--forward-to", UPSTREAM_DNS,
                               stdout=subprocess.PIPE, text=True)
        assert forwarder.stdout is not None and forwarder.stdout.readline().strip() == "listening"
        lab.start_agent()
        lab.netctl("image", "build-busybox")
        lab.netctl("network", "create", "--subnet", "10.92.0.0/24", "net")
        lab.run("client")
        (answer,) = lab.stub("client", "outside.example/A")
        assert answer["answers"] == ["203.0.113.7"], answer
        out = lab.nslookup("client", "outside.example")
        assert "203.0.113.7" in out.stdout, out.stdout + out.stderr
        assert "udp outside.example. A" in forwarder.stdout.readline()
        assert "Traceback" not in lab.agent_log()
        logged = host.tracebacks()
        assert not logged, logged
    finally:
        host.close()
        assert not remove_cgroup_tree(lab._parent)  # type: ignore[attr-defined]


def test_dns_dns_search_and_dns_option_of_run(dns_lab):
    # A second fake upstream, on another address, only this container uses.
    own = "198.51.100.54"
    dns_lab.host.run("ip", "netns", "exec", "upstream", "ip", "addr", "add", f"{own}/24", "dev", "eth0")
    proc = dns_lab.host.popen("ip", "netns", "exec", "upstream", sys.executable, FAKE_UPSTREAM, own,
                              stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "listening"
    dns_lab.run("custom", "--dns", own, "--dns-search", "example.net", "--dns-option", "ndots:2",
                "--dns-option", "timeout:1")
    assert dns_lab.netctl("exec", "custom", "cat", "/etc/resolv.conf").stdout == (
        "nameserver 127.0.0.11\nsearch netctl.internal example.net\noptions ndots:2 timeout:1\n")
    (answer,) = dns_lab.stub("custom", "outside.example/A")
    assert answer["answers"] == ["203.0.113.7"], answer
    assert "udp outside.example. A" in proc.stdout.readline()  # its own server was asked...
    assert "udp outside.example. A" not in dns_lab.upstream_queries()  # ...not the host's
    bad = dns_lab.netctl("run", "--dns", "not-an-address", "--network", "net", "busybox", "true", check=False)
    assert bad.returncode != 0 and bad.stderr.strip().splitlines()[-1].startswith("netctl: --dns 'not-an-address'")
