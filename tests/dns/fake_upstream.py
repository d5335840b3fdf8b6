"""A fake upstream name server for the DNS tests (dnslib), run inside a throwaway host's namespaces.

    python fake_upstream.py ADDRESS [--port 53] [--forward-to ADDRESS]

Answers over UDP and TCP:
    outside.example   A 203.0.113.7        (any case)
    big.example       40 A records: over UDP truncated (TC), complete over TCP
    anything else     NXDOMAIN
With --forward-to it is instead a tiny forwarder (a host's 127.0.0.53 stand-in): every query is sent
on to that server over UDP and its answer relayed. Prints "listening" once bound, then one line per
query ("udp NAME TYPE from ADDRESS:PORT sections QD/AN/NS/AR", "tcp ..." likewise) so tests can
tell what reached it, from which source port, and what else the query carried.
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
import threading

from dnslib import QTYPE, RCODE, RR, A, DNSRecord

ANSWERS = {"outside.example.": "203.0.113.7"}
BIG = "big.example."


def answer(data: bytes, tcp: bool) -> bytes:
    query = DNSRecord.parse(data)
    reply = query.reply()
    name = str(query.q.qname).lower()
    if name in ANSWERS and query.q.qtype == QTYPE.A:
        reply.add_answer(RR(query.q.qname, QTYPE.A, ttl=30, rdata=A(ANSWERS[name])))
    elif name == BIG and query.q.qtype == QTYPE.A:
        if tcp:
            for i in range(40):
                reply.add_answer(RR(query.q.qname, QTYPE.A, ttl=30, rdata=A(f"203.0.113.{i + 10}")))
        else:
            reply.header.tc = 1
    else:
        reply.header.rcode = RCODE.NXDOMAIN
    return reply.pack()


def log(kind: str, data: bytes, client: tuple) -> None:
    source = f"from {client[0]}:{client[1]}"
    try:
        record = DNSRecord.parse(data)
        q, h = record.q, record.header
        sections = f"sections {h.q}/{h.a}/{h.auth}/{h.ar}"
        print(f"{kind} {str(q.qname).lower()} {QTYPE[q.qtype]} {source} {sections}", flush=True)
    except Exception:  # noqa: BLE001
        print(f"{kind} unparsable {source}", flush=True)


def serve_udp(sock: socket.socket, forward_to: str) -> None:
    while True:
        data, client = sock.recvfrom(4096)
        log("udp", data, client)
        if forward_to:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
                up.settimeout(2)
                up.sendto(data, (forward_to, 53))
                try:
                    sock.sendto(up.recv(4096), client)
                except OSError:
                    pass
            continue
        sock.sendto(answer(data, tcp=False), client)


def serve_tcp(listener: socket.socket) -> None:
    while True:
        conn, client = listener.accept()
        with conn:
            conn.settimeout(3)
            try:
                size = struct.unpack("!H", conn.recv(2))[0]
                data = b""
                while len(data) < size:
                    chunk = conn.recv(size - len(data))
                    if not chunk:
                        break
                    data += chunk
                log("tcp", data, client)
                reply = answer(data, tcp=True)
                conn.sendall(struct.pack("!H", len(reply)) + reply)
            except (OSError, struct.error):
                pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("--port", type=int, default=53)
    parser.add_argument("--forward-to", default="")
    args = parser.parse_args()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((args.address, args.port))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((args.address, args.port))
    tcp.listen(8)
    threading.Thread(target=serve_tcp, args=(tcp,), daemon=True).start()
    print("listening", flush=True)
    try:
        serve_udp(udp, args.forward_to)
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
