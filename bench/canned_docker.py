"""A canned Docker API server for bench_docker_api's spread figure: it answers the five requests of
`docker network create NAME` + `docker network rm NAME` (_ping twice, create, inspect, delete) at once,
from memory, doing nothing. Two of them measured round-robin like netctl and podman show how far apart
the bench puts two identical engines: the ratio that noise alone gives the network operation.

stdlib http.server on a Unix socket, one thread per connection: the same for both copies, so its own
cost cancels out of the ratio.
"""

from __future__ import annotations

import json
import os
import socketserver
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler

API_VERSION = "1.41"  # podman's: the docker CLI then sends the same requests to every engine


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the CLI sends a command's requests on one connection
    server_version = "canned"
    networks: dict[str, str] = {}  # replaced per server (serve)

    def _reply(self, status: int, body: object = None) -> None:
        data = json.dumps(body).encode() + b"\n" if body is not None else b""
        self.send_response(status)
        self.send_header("Api-Version", API_VERSION)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        if status != 204:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data and self.command != "HEAD":
            self.wfile.write(data)

    def do_HEAD(self) -> None:  # /_ping
        self._reply(200, "OK")

    def do_POST(self) -> None:  # /vX/networks/create
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        network_id = os.urandom(32).hex()
        self.networks[body.get("Name", "")] = network_id
        self._reply(201, {"Id": network_id, "Warning": ""})

    def _name(self) -> str:  # /vX/networks/NAME[?...]
        return urllib.parse.urlsplit(self.path).path.rsplit("/", 1)[-1]

    def do_GET(self) -> None:  # /vX/networks/NAME
        name = self._name()
        if name not in self.networks:
            self._reply(404, {"message": f"network {name} not found"})
            return
        self._reply(200, {"Name": name, "Id": self.networks[name], "Scope": "local", "Driver": "bridge",
                          "EnableIPv6": False, "IPAM": {"Driver": "default", "Options": {}, "Config": []},
                          "Internal": False, "Attachable": False, "Ingress": False, "ConfigOnly": False,
                          "Containers": {}, "Options": {}, "Labels": {}})  # fmt: skip

    def do_DELETE(self) -> None:  # /vX/networks/NAME
        found = self.networks.pop(self._name(), None)
        self._reply(204) if found else self._reply(404, {"message": "network not found"})

    def address_string(self) -> str:  # a Unix socket's peer has no address
        return "local"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's name
        pass


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def serve(socket_path: str) -> _Server:
    """A canned server on `socket_path`, answering in a background thread; .shutdown() stops it."""
    handler = type("Handler", (_Handler,), {"networks": {}})
    server = _Server(socket_path, handler)
    threading.Thread(target=server.serve_forever, name=f"canned {socket_path}", daemon=True).start()
    return server
