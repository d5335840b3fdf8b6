"""A stub resolver for the DNS tests and the bench: what a program's resolver library does, in Python.

    python stub.py [--server 127.0.0.11] [--tcp] [--timeout 2] NAME[/TYPE] ...

Sends each query (one at a time) and prints one JSON line per answer:
    {"name", "type", "rcode", "answers": [rdata...], "tc"}
or {"name", "type", "error": "timeout"} when nothing came back. Run inside a container's namespace
(nsenter --net=...), as the tests do.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct

from dnslib import QTYPE, RCODE, DNSRecord


def ask(server: str, name: str, qtype: str, *, tcp: bool = False, timeout: float = 2.0) -> dict:
    query = DNSRecord.question(name, qtype)
    data = query.pack()
    try:
        if tcp:
            with socket.create_connection((server, 53), timeout=timeout) as sock:
                sock.sendall(struct.pack("!H", len(data)) + data)
                size = struct.unpack("!H", _exactly(sock, 2))[0]
                reply = _exactly(sock, size)
        else:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(timeout)
                sock.sendto(data, (server, 53))
                reply = sock.recv(65535)
    except (TimeoutError, socket.timeout):
        return {"name": name, "type": qtype, "error": "timeout"}
    except OSError as err:
        return {"name": name, "type": qtype, "error": err.strerror or str(err)}
    parsed = DNSRecord.parse(reply)
    if parsed.header.id != query.header.id:
        return {"name": name, "type": qtype, "error": "wrong id"}
    return {"name": name, "type": qtype, "rcode": RCODE[parsed.header.rcode], "tc": bool(parsed.header.tc),
            "answers": [str(rr.rdata) for rr in parsed.rr if rr.rtype == getattr(QTYPE, qtype)]}


def _exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("connection closed")
        data += chunk
    return data


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", default="127.0.0.11")
    parser.add_argument("--tcp", action="store_true")
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("queries", nargs="+")
    args = parser.parse_args()
    for item in args.queries:
        name, _, qtype = item.partition("/")
        print(json.dumps(ask(args.server, name, qtype or "A", tcp=args.tcp, timeout=args.timeout)), flush=True)


if __name__ == "__main__":
    main()
