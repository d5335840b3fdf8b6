"""Bad input: malformed and hostile packets sent from inside a sandbox to 127.0.0.11 (hypothesis), a
query flood from one container while another is served, TCP abuse. The server answers what it can
read (FORMERR, NOTIMP, REFUSED), drops the rest, logs no traceback, keeps answering, and its memory
stays bounded."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest
from dnslib import DNSRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dns.conftest import ROOT

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(600)]

SERVER = ("127.0.0.11", 53)


def sandbox_socket(lab, sandbox: str, kind: int = socket.SOCK_DGRAM) -> socket.socket:
    return lab.socket_in(sandbox, kind)


def header(qid=0x1234, flags=0x0100, qd=1, an=0, ns=0, ar=0) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


label = st.binary(min_size=1, max_size=63).map(lambda b: bytes([len(b)]) + b)
names = st.lists(label, max_size=12).map(lambda ls: b"".join(ls) + b"\x00")
hostile = st.one_of(
    st.binary(max_size=700),  # anything
    st.binary(max_size=11),  # shorter than a header
    st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 3), st.binary(max_size=300))
    .map(lambda t: header(t[0], t[1], t[2]) + t[3]),  # any flags/opcode/counts, garbage body
    st.tuples(names, st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
    .map(lambda t: header() + t[0] + struct.pack("!HH", t[1], t[2])),  # well-formed, any type and class
    st.tuples(names, st.sampled_from([251, 252, 255])).map(lambda t: header() + t[0] + struct.pack("!HH", t[1], 1)),
    st.integers(0, 0x3FFF).map(lambda p: header() + struct.pack("!H", 0xC000 | p) + b"\x00\x01\x00\x01"),  # pointers
    st.just(header() + b"\xc0\x0c\x00\x01\x00\x01"),  # a pointer to itself: a compression loop
    st.just(header() + b"\x3f" + b"a" * 63 + b"\x3f" + b"b" * 63 + b"\x3f" + b"c" * 63 + b"\x3f" + b"d" * 63 + b"\x00"
            + b"\x00\x01\x00\x01"),  # a 257-byte name
    st.integers(1, 200).map(lambda n: header() + b"\x01a" * n),  # a name that never ends
    st.tuples(st.integers(64, 191), st.binary(max_size=200))  # a label length over 63 (reserved label types)
    .map(lambda t: header() + b"\x03web" + bytes([t[0]]) + t[1] + b"\x00\x00\x01\x00\x01"),
    st.integers(5, 40).map(lambda n: header() + (b"\x3f" + b"x" * 63) * n + b"\x00\x00\x01\x00\x01"),  # huge
)


def _check_reply(query: bytes, reply: bytes) -> None:
    """An answer carries the query's ID, is a response, has a known rcode and at most the one
    question; parsed by dnslib when its labels are printable (dnslib refuses other octets, which
    DNS allows: RFC 2181 11)."""
    assert len(reply) >= 12 and reply[:2] == query[:2], "an answer must carry the query's ID"
    flags, qd = struct.unpack("!HH", reply[2:6])
    assert flags & 0x8000 and (flags & 0xF) in (0, 1, 3, 4, 5) and qd <= 1, reply
    if all(32 < b < 127 or b < 64 for b in reply[12:]):
        DNSRecord.parse(reply)


def agent_rss_kib(lab) -> int:
    pid = lab.host.run("cat", f"{ROOT}/daemon.pid").stdout.split()[0]
    status = lab.host.run("cat", f"/proc/{pid}/status").stdout
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


def test_hostile_packets_get_an_error_or_nothing_and_the_server_goes_on(dns_lab):
    dns_lab.run("web")
    dns_lab.run("attacker")
    before = agent_rss_kib(dns_lab)
    sock = sandbox_socket(dns_lab, "attacker")
    sock.settimeout(0.3)
    try:
        @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        @given(hostile)
        def probe(packet: bytes) -> None:
            sock.sendto(packet, SERVER)
            try:
                reply = sock.recv(65535)
            except (TimeoutError, socket.timeout):
                return  # dropped: fine for what cannot be answered
            _check_reply(packet, reply)

        probe()
    finally:
        sock.close()
    assert dns_lab.addresses("attacker", "web") != []
    assert dns_lab.addresses("web", "attacker") != []
    grown = agent_rss_kib(dns_lab) - before
    assert grown < 16 * 1024, f"the agent grew by {grown} KiB answering 400 hostile packets"
    log = dns_lab.agent_log()
    assert "Traceback" not in log and "unexpected" not in log, log


def test_any_and_zone_transfers_are_refused_over_udp_and_tcp(dns_lab):
    """ANY is NOTIMP (as RFC 8482 allows a server), AXFR and IXFR REFUSED: nothing lists a network's
    names. Asked of a container's name, from inside a container, on both transports."""
    from dnslib import QTYPE

    dns_lab.run("web")
    dns_lab.run("asker")
    for qtype, rcode in (("ANY", 4), ("AXFR", 5), ("IXFR", 5)):
        query = DNSRecord.question("web.netctl.internal", qtype)
        sock = sandbox_socket(dns_lab, "asker")
        sock.settimeout(5)
        try:
            sock.sendto(query.pack(), SERVER)
            reply = DNSRecord.parse(sock.recv(65535))
        finally:
            sock.close()
        assert (reply.header.id, reply.header.rcode, reply.rr) == (query.header.id, rcode, []), (qtype, reply)
        conn = sandbox_socket(dns_lab, "asker", socket.SOCK_STREAM)
        conn.settimeout(5)
        try:
            conn.connect(SERVER)
            packet = query.pack()
            conn.sendall(struct.pack("!H", len(packet)) + packet)
            size = struct.unpack("!H", _recv_exactly(conn, 2))[0]
            reply = DNSRecord.parse(_recv_exactly(conn, size))
        finally:
            conn.close()
        assert (reply.header.rcode, reply.rr, QTYPE[reply.q.qtype]) == (rcode, [], qtype), (qtype, reply)
    assert dns_lab.addresses("asker", "web") != []


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        assert chunk, f"the server closed after {len(data)} of {size} bytes"
        data += chunk
    return data


def test_a_forwarded_query_reaches_the_upstream_as_its_question_and_edns_only(dns_lab):
    """Records in the answer and authority sections, an EDNS option and bytes past the last record:
    the upstream (possibly the host's loopback resolver, unreachable from containers otherwise) gets
    a query rebuilt from the question and the asker's EDNS size and DO bit, never the asker's bytes."""
    from dnslib import EDNS0, QTYPE, RR, A, EDNSOption

    from dns.conftest import wait_for

    dns_lab.run("client")
    record = DNSRecord.question("junk.example")
    record.add_answer(RR("junk.example", QTYPE.A, rdata=A("192.0.2.1")))
    record.add_auth(RR("junk.example", QTYPE.A, rdata=A("192.0.2.2")))
    record.add_ar(EDNS0(udp_len=1232, flags="do", opts=[EDNSOption(65001, b"\xff" * 40)]))
    packet = bytes(record.pack()) + b"\x00trailing bytes"
    sock = sandbox_socket(dns_lab, "client")
    sock.settimeout(5)
    try:
        sock.sendto(packet, SERVER)
        reply = DNSRecord.parse(sock.recv(65535))
    finally:
        sock.close()
    assert reply.header.id == record.header.id and reply.header.rcode == 3, reply  # the upstream's NXDOMAIN
    (line,) = wait_for(lambda: [q for q in dns_lab.upstream_queries(sources=True) if "junk.example." in q],
                       what="the upstream's log")
    assert line.endswith(" sections 1/0/0/1"), line


def test_tcp_abuse_leaves_the_server_answering(dns_lab):
    dns_lab.run("web")
    dns_lab.run("attacker")
    idle = []
    for _ in range(40):  # more idle connections than the server serves at once
        conn = sandbox_socket(dns_lab, "attacker", socket.SOCK_STREAM)
        conn.settimeout(2)
        try:
            conn.connect(SERVER)
        except OSError:
            conn.close()
            continue
        idle.append(conn)
    for payload in (b"\xff\xff" + b"x" * 10, b"\x00\x05abc", b"\x00\x0c" + header(qd=0), b"\x00"):
        conn = sandbox_socket(dns_lab, "attacker", socket.SOCK_STREAM)
        conn.settimeout(3)
        try:
            conn.connect(SERVER)
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)
            conn.recv(100)
        except OSError:
            pass
        finally:
            conn.close()
    assert dns_lab.addresses("web", "attacker") != []  # UDP is served meanwhile
    (tcp,) = dns_lab.stub("web", "attacker/A", tcp=True)  # and another container's TCP: a per-sandbox cap
    assert tcp["answers"], tcp
    for conn in idle:
        conn.close()
    (again,) = dns_lab.stub("attacker", "web/A", tcp=True)  # the attacker's own TCP once it let go
    assert again["answers"], again
    log = dns_lab.agent_log()
    assert "Traceback" not in log and "unexpected" not in log, log


def test_slow_tcp_senders_in_three_containers_leave_the_server_answering_others_over_tcp(dns_lab):
    """Each of three containers keeps its three allowed TCP connections busy, a byte every 0.5 s (each
    under the idle timeout), a slow query that never ends: another container is still answered over
    TCP. (With eight workers for up to 32 connections, these nine held every worker for as long as
    they trickled, and the others' connections waited behind them.)"""
    dns_lab.run("web")
    attackers = ["slow0", "slow1", "slow2"]
    for name in attackers:
        dns_lab.run(name)
    conns = []
    for name in attackers:
        for _ in range(3):
            conn = sandbox_socket(dns_lab, name, socket.SOCK_STREAM)
            conn.settimeout(2)
            conn.connect(SERVER)
            conn.sendall(b"\x02\x00")  # a query of 512 bytes is coming...
            conns.append(conn)
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.5):
            for conn in conns:
                try:
                    conn.send(b"x")  # ...one byte at a time
                except OSError:
                    pass

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        time.sleep(1.0)  # every slow connection accepted and being read
        answers = dns_lab.stub("web", "slow0/A", "slow2/A", tcp=True)
    finally:
        stop.set()
        thread.join(5)
        for conn in conns:
            conn.close()
    assert all(a.get("answers") for a in answers), answers
    log = dns_lab.agent_log()
    assert "Traceback" not in log and "unexpected" not in log, log


def test_a_flooding_container_does_not_starve_the_others_and_memory_stays_bounded(dns_lab):
    dns_lab.run("web")
    dns_lab.run("flooder")
    dns_lab.run("victim")
    before = agent_rss_kib(dns_lab)
    stop = threading.Event()
    sent = [0]
    local = DNSRecord.question("web").pack()
    outside = [DNSRecord.question(f"n{i}.flood.example").pack() for i in range(512)]  # forwarded: fills the table

    def flood() -> None:
        sock = sandbox_socket(dns_lab, "flooder")
        sock.setblocking(False)
        try:
            while not stop.is_set():
                for packet in (local, outside[sent[0] % 512], b"\x00" * 20):
                    try:
                        sock.sendto(packet, SERVER)
                        sent[0] += 1
                    except BlockingIOError:
                        time.sleep(0.0005)
        finally:
            sock.close()

    threads = [threading.Thread(target=flood, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        answers = dns_lab.stub("victim", *["web/A"] * 20)
        during = agent_rss_kib(dns_lab)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert sent[0] > 10_000, f"the flood was too weak to mean anything ({sent[0]} packets)"
    assert all(a.get("answers") for a in answers), answers
    grown = during - before
    assert grown < 64 * 1024, f"the agent grew by {grown} KiB under the flood"
    log = dns_lab.agent_log()
    assert "Traceback" not in log and "unexpected" not in log, log
    print(f"flood: {sent[0]} packets sent; agent RSS {before} -> {during} KiB; victim answered 20/20")
