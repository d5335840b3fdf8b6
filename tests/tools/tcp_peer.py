"""A tiny TCP/UDP peer for tests: `serve PORT [udp]` answers each client with the address it saw;
`connect HOST PORT [udp]` prints the answer. Bounded: a server exits after --count clients or
--timeout seconds, a client after --timeout seconds."""

import argparse
import socket
import sys


def serve(port: int, udp: bool, count: int, timeout: float) -> None:
    family = socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", port))
    sock.settimeout(timeout)
    if not udp:
        sock.listen(16)
    print("listening", flush=True)
    for _ in range(count):
        if udp:
            _, peer = sock.recvfrom(512)
            sock.sendto(peer_text(peer).encode(), peer)
        else:
            conn, peer = sock.accept()
            with conn:
                conn.sendall(peer_text(peer).encode())
        print(peer_text(peer), flush=True)


def peer_text(peer) -> str:
    host = peer[0]
    return host[7:] if host.startswith("::ffff:") else host


def connect(host: str, port: int, udp: bool, timeout: float) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    sock.settimeout(timeout)
    if udp:
        sock.sendto(b"hi", (host, port))
        data, _ = sock.recvfrom(512)
    else:
        sock.connect((host, port))
        data = sock.recv(512)
    print(data.decode())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["serve", "connect"])
    parser.add_argument("args", nargs="+")
    parser.add_argument("--udp", action="store_true")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=10.0)
    opts = parser.parse_args()
    try:
        if opts.mode == "serve":
            serve(int(opts.args[0]), opts.udp, opts.count, opts.timeout)
        else:
            connect(opts.args[0], int(opts.args[1]), opts.udp, opts.timeout)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
