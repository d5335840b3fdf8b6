"""The name server's pure parts: the index (who sees which names), answers built from it, the
question reader, the host's resolv.conf. No kernel, no sockets."""

from __future__ import annotations

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from libnetwork.model import Endpoint, Sandbox
from netctl.dns import index, upstream, wire


def _index(remote=()):
    sandboxes = [Sandbox("s1", "web", "/ns/1"), Sandbox("s2", "client", "/ns/2"), Sandbox("s3", "db", "/ns/3"),
                 Sandbox("s4", "cni-abc", "/run/netns/x", labels={"K8S_POD_NAME": "podname"}, external=True),
                 Sandbox("s5", "lonely", "/ns/5")]
    endpoints = [
        Endpoint("e1", "web", "front", "s1", ["10.0.0.2/24", "fd00::2/64"], aliases=["api"]),
        Endpoint("e2", "client", "front", "s2", ["10.0.0.3/24"], aliases=["api"]),
        Endpoint("e3", "db", "back", "s3", ["10.1.0.3/24"]),
        Endpoint("e4", "client", "back", "s2", ["10.1.0.4/24"]),
        Endpoint("e5", "cni-abc", "front", "s4", ["10.0.0.9/24"], aliases=["svc"]),
        Endpoint("e6", "gone", "front", "s1", ["10.0.0.99/24"], state="deleting"),
    ]
    return index.build(sandboxes, endpoints, list(remote), {"s2": ("192.0.2.53",)})


def ask(view, name, qtype="A", *, rd=True, qclass=1):
    record = DNSRecord.question(name, qtype)
    record.header.rd = int(rd)
    record.q.qclass = qclass
    query = bytes(record.pack())
    reply = view.answer(query)
    if not isinstance(reply, bytes):
        return reply
    parsed = DNSRecord.parse(reply)
    assert parsed.header.id == record.header.id and parsed.header.qr == 1 and parsed.header.rd == int(rd)
    return RCODE[parsed.header.rcode], [str(r.rdata) for r in parsed.rr], str(parsed.q.qname)


def view_of(ix, sandbox):
    return ix.views[ix.listeners[sandbox].networks]


def test_listeners_only_for_sandboxes_with_endpoints_and_their_own_upstreams():
    ix = _index()
    assert set(ix.listeners) == {"s1", "s2", "s3", "s4"}
    assert ix.listeners["s2"].upstreams == ("192.0.2.53",) and ix.listeners["s1"].upstreams == ()
    assert ix.listeners["s2"].networks == frozenset({"front", "back"})
    assert view_of(ix, "s1") is view_of(ix, "s4")  # same networks, one view


def test_names_aliases_and_the_domain_within_shared_networks_only():
    ix = _index()
    web, client = view_of(ix, "s1"), view_of(ix, "s2")
    assert ask(web, "web") == ("NOERROR", ["10.0.0.2"], "web.")
    assert ask(web, "WeB.NetCtl.Internal", "AAAA") == ("NOERROR", ["fd00::2"], "WeB.NetCtl.Internal.")  # case echoed
    assert ask(web, "podname") == ("NOERROR", ["10.0.0.9"], "podname.")  # a CNI runtime's container name
    assert ask(web, "cni-abc")[0] == "NXDOMAIN"  # the external sandbox's own record name is not served
    assert ask(web, "db")[0] == "NXDOMAIN" and ask(web, "db.netctl.internal")[0] == "NXDOMAIN"
    assert ask(client, "db") == ("NOERROR", ["10.1.0.3"], "db.")  # client is on both networks
    assert ask(web, "gone")[0] == "NXDOMAIN"  # an endpoint being deleted is not served
    assert ask(web, "outside.example") == wire.FORWARD
    assert ask(web, "web", "MX")[:2] == ("NOERROR", [])  # NODATA: the name exists
    assert ask(web, "client", "AAAA")[:2] == ("NOERROR", [])
    assert ask(web, "web", rd=False)[1] == ["10.0.0.2"]


def test_a_shared_name_gives_every_address_in_turn():
    ix = _index()
    web = view_of(ix, "s1")
    answers = [ask(web, "api")[1] for _ in range(4)]
    assert all(sorted(a) == ["10.0.0.2", "10.0.0.3"] for a in answers)
    assert answers[0] != answers[1] and answers[0] == answers[2]


def test_many_holders_rotate_through_at_most_ROTATIONS_orders():
    sandboxes = [Sandbox(f"s{i}", f"n{i}", f"/ns/{i}") for i in range(40)]
    endpoints = [Endpoint(f"e{i}", f"n{i}", "net", f"s{i}", [f"10.0.{i // 200}.{i % 200 + 2}/16"], aliases=["many"])
                 for i in range(40)]
    view = view_of(index.build(sandboxes, endpoints, [], {}), "s0")
    firsts = {ask(view, "many")[1][0] for _ in range(index.ROTATIONS * 2)}
    assert len(firsts) == index.ROTATIONS
    assert len(ask(view, "many")[1]) == 40


def test_ptr_and_other_hosts_endpoints():
    remote = [Endpoint("r1", "far", "front", "", ["10.0.0.50/24"], aliases=["faraway"])]
    web = view_of(_index(remote), "s1")
    assert ask(web, "2.0.0.10.in-addr.arpa", "PTR") == ("NOERROR", ["web.netctl.internal."], "2.0.0.10.in-addr.arpa.")
    assert ask(web, "far") == ("NOERROR", ["10.0.0.50"], "far.") and ask(web, "faraway")[1] == ["10.0.0.50"]
    assert ask(web, "50.0.0.10.in-addr.arpa", "PTR")[1] == ["far.netctl.internal."]
    assert ask(web, "3.0.1.10.in-addr.arpa", "PTR") == wire.FORWARD  # not an address of its networks
    import ipaddress

    v6 = ipaddress.ip_address("fd00::2").reverse_pointer
    assert ask(web, v6, "PTR")[1] == ["web.netctl.internal."]


def test_refusals_and_errors():
    web = view_of(_index(), "s1")
    assert ask(web, "web", "ANY")[0] == "NOTIMP"
    assert ask(web, "web", "AXFR")[0] == "REFUSED" and ask(web, "web", "IXFR")[0] == "REFUSED"
    assert ask(web, "web", qclass=3)[0] == "NOTIMP"  # CHAOS
    assert ask(web, "nothing.netctl.internal")[0] == "NXDOMAIN"
    assert ask(web, "netctl.internal")[:2] == ("NOERROR", [])


@pytest.mark.parametrize("packet", [
    b"", b"\x12", b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00",  # shorter than a header
    b"\x12\x34\x81\x80\x00\x01\x00\x00\x00\x00\x00\x00\x03web\x00\x00\x01\x00\x01",  # a response
])
def test_what_is_never_answered(packet):
    assert view_of(_index(), "s1").answer(packet) == wire.DROP


@pytest.mark.parametrize("packet, rcode", [
    (b"\x12\x34\x01\x00\x00\x02\x00\x00\x00\x00\x00\x00\x03web\x00\x00\x01\x00\x01", "FORMERR"),  # two questions
    (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01", "FORMERR"),  # a pointer: a loop
    (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03web\x00\x00\x01", "FORMERR"),  # truncated question
    (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"\x3f" + b"a" * 63 + b"\x3f" + b"b" * 63 + b"\x3f"
     + b"c" * 63 + b"\x3f" + b"d" * 63 + b"\x00\x00\x01\x00\x01", "FORMERR"),  # a name over 255 bytes
    (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + (b"\x3f" + b"a" * 63) * 3 + b"\x3e" + b"b" * 62
     + b"\x00\x00\x01\x00\x01", "FORMERR"),  # 256 bytes: one past the limit (raised Malformed out of answer)
    (b"\x12\x34\x29\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03web\x00\x00\x01\x00\x01", "NOTIMP"),  # opcode UPDATE
])
def test_malformed_queries_get_an_error_with_their_id(packet, rcode):
    reply = view_of(_index(), "s1").answer(packet)
    assert isinstance(reply, bytes) and reply[:2] == packet[:2]
    assert RCODE[DNSRecord.parse(reply).header.rcode] == rcode


def test_a_name_of_255_bytes_is_read():
    name = (b"\x3f" + b"a" * 63) * 3 + b"\x3d" + b"b" * 61 + b"\x00"
    assert len(name) == 255
    packet = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + name + b"\x00\x01\x00\x01"
    assert view_of(_index(), "s1").answer(packet) == wire.FORWARD


def test_read_question():
    q = wire.read_question(b"\x00" * 12 + b"\x03WeB\x00\x00\x1c\x00\x01")
    assert (q.key, q.qtype, q.qclass, q.end) == (b"\x03web\x00", QTYPE.AAAA, 1, 21)
    for bad in (b"\x00" * 12, b"\x00" * 12 + b"\x05ab", b"\x00" * 12 + b"\x40abc\x00\x00\x01\x00\x01"):
        with pytest.raises(wire.Malformed):
            wire.read_question(bad)


def test_resolv_conf_servers_keep_loopback_ones(tmp_path):
    text = "# x\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\nnameserver bogus\nsearch a\nnameserver 192.0.2.1\n"
    assert upstream.parse_resolv_conf(text) == ["127.0.0.53", "fe80::1%eth0", "192.0.2.1"]
    path = tmp_path / "resolv.conf"
    path.write_text("nameserver 192.0.2.1\n")
    host = upstream.HostServers(str(path))
    assert host.changed() and host.servers == ("192.0.2.1",)
    assert not host.changed()
    path.write_text("nameserver 192.0.2.2\nnameserver 192.0.2.3\n")
    assert host.changed() and host.servers == ("192.0.2.2", "192.0.2.3")
    path.unlink()
    assert host.changed() and host.servers == ()


def test_the_source_forgets_the_dns_servers_of_removed_containers(tmp_path):
    """A container's --dns is read once and kept while it lives; kept forever, the agent's memory
    grew with every container it ever saw."""
    import json
    import os

    from netctl.dns.source import Source
    from runner.paths import Layout

    root = str(tmp_path)
    source = Source(root)
    try:
        for number in range(3):
            directory = Layout.of(root).container(f"c{number}")
            os.makedirs(directory)
            with open(os.path.join(directory, "config.json"), "w") as f:
                json.dump({"dns": [f"192.0.2.{number}"]}, f)
            with source.controller.store.transaction() as tx:
                tx.put_sandbox(Sandbox(f"s{number}", f"n{number}", f"/ns/{number}", container_id=f"c{number}"))
        source.load()
        assert source._dns_servers == {f"c{n}": (f"192.0.2.{n}",) for n in range(3)}
        with source.controller.store.transaction() as tx:
            tx.delete_sandbox("s0")
            tx.delete_sandbox("s2")
        source.load()
        assert source._dns_servers == {"c1": ("192.0.2.1",)}
    finally:
        source.close()


def test_a_tcp_message_trickling_in_ends_at_its_deadline():
    """Each byte comes well within the socket's idle timeout; the deadline still ends the read
    (the server gives a connection TCP_LIFE_S in all)."""
    import socket
    import threading
    import time

    reader, writer = socket.socketpair()
    stop = threading.Event()

    def trickle() -> None:
        writer.sendall(b"\x00\x40")  # 64 bytes announced
        while not stop.wait(0.02):
            writer.send(b"x")

    thread = threading.Thread(target=trickle, daemon=True)
    reader.settimeout(1.0)
    thread.start()
    try:
        with pytest.raises(TimeoutError):
            upstream.read_tcp_message(reader, time.monotonic() + 0.2)
    finally:
        stop.set()
        thread.join(5)
        reader.close()
        writer.close()
    left, right = socket.socketpair()
    with left, right:
        right.sendall(b"\x00\x03abc")
        assert upstream.read_tcp_message(left, time.monotonic() + 5) == b"abc"


def test_what_is_forwarded_is_rebuilt_from_the_question_and_edns():
    from dnslib import EDNS0, RR, A, EDNSOption

    record = DNSRecord.question("Mixed.Example", "AAAA")
    record.header.cd = 1
    record.add_answer(RR("x.example", QTYPE.A, rdata=A("192.0.2.1")))
    record.add_ar(EDNS0(udp_len=65000, flags="do", opts=[EDNSOption(65001, b"\xff" * 8)]))
    clean = DNSRecord.parse(wire.forwardable(bytes(record.pack()) + b"junk"))
    assert (clean.header.id, clean.header.rd, clean.header.cd) == (record.header.id, 1, 1)
    assert str(clean.q.qname) == "Mixed.Example." and clean.q.qtype == QTYPE.AAAA  # the asker's case kept
    assert clean.rr == [] and clean.auth == []
    (opt,) = clean.ar
    assert opt.rclass == wire.MAX_EDNS_PAYLOAD and opt.ttl & wire.EDNS_DO and opt.rdata == []
    plain = DNSRecord.parse(wire.forwardable(bytes(DNSRecord.question("a.example").pack())))
    assert plain.ar == []  # no EDNS asked, none added (a 512-byte stub must not get more)
    assert wire.forwardable(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01\x01a\x00\x00\x01\x00\x01\xc0") is None
