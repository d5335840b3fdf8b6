"""Every field of every JSON body the Docker API reads, given a value of each wrong JSON type in turn:
a 4xx with one line naming what is wrong (or, where the value is usable, the object made and removed),
never a 500, and no traceback in the agent's log (the dhost fixture checks that at teardown).

The bodies are sent byte for byte (http.client over the agent's socket): no real client sends these,
but a script hand-writing JSON for the API does.
"""

from __future__ import annotations

import copy
import http.client
import json
import socket
import time
from typing import Any

import pytest

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(600)]

WRONG: list[Any] = [5, "x", True, [1], {"a": 1}, [{"b": [2]}], -1]


class _Unix(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("docker", timeout=60)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def _call(dhost, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    conn = _Unix(dhost.outside_socket)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        reply = conn.getresponse()
        raw = reply.read()
        try:
            return reply.status, json.loads(raw) if raw else None
        except ValueError:
            return reply.status, raw
    finally:
        conn.close()


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path in a JSON value (lists by index)."""
    out = []
    if isinstance(value, dict):
        for key, inner in value.items():
            out.append((*prefix, key))
            out += _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            out.append((*prefix, index))
            out += _paths(inner, (*prefix, index))
    return out


def _with(body: Any, path: tuple, value: Any) -> Any:
    out = copy.deepcopy(body)
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return out


def _sweep(dhost, method: str, url: str, body: dict, undo) -> list[str]:
    """Problems: 5xx answers or 4xx without a one-line message."""
    problems = []
    for path in _paths(body):
        for value in WRONG:
            status, reply = _call(dhost, method, url, _with(body, path, value))
            where = f"{method} {url} {'.'.join(map(str, path))}={json.dumps(value)}"
            if status >= 500:
                problems.append(f"{where}: {status} {reply}")
            elif status >= 400:
                message = reply.get("message", "") if isinstance(reply, dict) else ""
                if not message or "\n" in message:
                    problems.append(f"{where}: {status} without a one-line message: {reply!r}")
            else:
                undo(reply)
    return problems


def test_wrong_json_types_in_every_field_answer_4xx(dhost):
    dhost.docker("network", "create", "--subnet", "10.77.0.0/24", "fz")
    dhost.docker("run", "-d", "--name", "fzc", "--network", "fz", "busybox", "sleep", "600")
    dhost.docker("volume", "create", "fzv")

    def rm_container(reply: Any) -> None:
        _call(dhost, "DELETE", f"/containers/{reply['Id']}?force=1")

    def rm_network(reply: Any) -> None:
        _call(dhost, "DELETE", f"/networks/{reply['Id']}")

    def rm_volume(reply: Any) -> None:
        _call(dhost, "DELETE", f"/volumes/{reply['Name']}")

    def reconnect(_: Any) -> None:  # a connect or disconnect that went through: back as it was
        _call(dhost, "POST", "/networks/bridge/disconnect", {"Container": "fzc", "Force": True})

    problems = []
    container = {
        "Image": "busybox", "Cmd": ["true"], "Env": ["A=1"], "Labels": {"l": "v"}, "Entrypoint": ["sh"],
        "ExposedPorts": {"80/tcp": {}}, "Healthcheck": {"Test": ["CMD", "true"], "Interval": 1000000000},
        "Volumes": {"/data": {}}, "StopSignal": "TERM", "StopTimeout": 3,
        "HostConfig": {
            "Binds": ["fzv:/data"], "Memory": 67108864, "NanoCpus": 500000000, "PidsLimit": 64,
            "CapAdd": ["NET_ADMIN"], "CapDrop": ["MKNOD"], "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
            "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "18080"}]}, "ExtraHosts": ["h:10.0.0.1"],
            "Dns": ["10.0.0.2"], "DnsSearch": ["example"], "DnsOptions": ["ndots:2"], "NetworkMode": "fz",
            "Mounts": [{"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1048576, "Mode": 448}}],
            "Tmpfs": {"/run2": "size=1m"}, "Sysctls": {"net.ipv4.ip_forward": "1"},
            "Ulimits": [{"Name": "nofile", "Soft": 1024, "Hard": 1024}], "LogConfig": {"Type": "json-file"},
        },
        "NetworkingConfig": {"EndpointsConfig": {"fz": {"Aliases": ["al"], "IPAMConfig": {"IPv4Address": "10.77.0.9"},
                                                        "MacAddress": "02:42:ac:11:00:09"}}},
    }  # fmt: skip
    problems += _sweep(dhost, "POST", "/containers/create", container, rm_container)
    network = {"Name": "fz2", "Driver": "bridge", "Internal": False, "EnableIPv6": False, "Attachable": True,
               "CheckDuplicate": True, "Scope": "local", "ConfigFrom": {"Network": ""},
               "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.78.0.0/24", "Gateway": "10.78.0.1",
                                                         "IPRange": "10.78.0.128/25",
                                                         "AuxiliaryAddresses": {"a": "10.78.0.2"}}]},
               "Options": {"com.docker.network.driver.mtu": "1400"}, "Labels": {"l": "v"}}  # fmt: skip
    problems += _sweep(dhost, "POST", "/networks/create", network, rm_network)
    connect = {"Container": "fzc", "EndpointConfig": {"Aliases": ["x"], "IPAMConfig": {"IPv4Address": ""},
                                                      "MacAddress": ""}}  # fmt: skip
    problems += _sweep(dhost, "POST", "/networks/bridge/connect", connect, reconnect)
    problems += _sweep(dhost, "POST", "/networks/fz/disconnect", {"Container": "nope", "Force": False},
                       lambda _: None)
    problems += _sweep(dhost, "POST", "/volumes/create",
                       {"Name": "fzv2", "Driver": "local", "DriverOpts": {}, "Labels": {"l": "v"}}, rm_volume)
    exec_body = {"Cmd": ["true"], "Env": ["A=1"], "User": "", "WorkingDir": "/", "Tty": False,
                 "AttachStdout": True, "AttachStderr": True, "AttachStdin": False, "Privileged": False,
                 "DetachKeys": "", "ConsoleSize": [24, 80]}  # fmt: skip
    problems += _sweep(dhost, "POST", "/containers/fzc/exec", exec_body, lambda _: None)
    status, reply = _call(dhost, "POST", "/containers/fzc/exec", {"Cmd": ["true"]})
    assert status == 201, reply
    problems += _sweep(dhost, "POST", f"/exec/{reply['Id']}/start", {"Detach": True, "Tty": False,
                                                                     "ConsoleSize": [24, 80]}, lambda _: None)
    assert not problems, "\n".join(problems)
    dhost.docker("rm", "-f", "fzc")


def test_malformed_query_arguments_answer_4xx(dhost):
    dhost.docker("run", "-d", "--name", "fzq", "busybox", "sleep", "600")
    problems = []
    urls = [
        "/containers/fzq/stop?t=abc", "/containers/fzq/kill?signal=NOPE", "/containers/fzq/kill?signal=999",
        "/containers/fzq/restart?t=1e3", "/containers/fzq/resize?h=abc&w=1", "/containers/fzq/resize?h=-1&w=-1",
        "/containers/fzq/rename?name=", "/containers/fzq/rename?name=a/b", "/containers/fzq/wait?condition=bogus",
        "/containers/fzq/attach?stream=maybe&logs=2", "/containers/create?name=%00x", "/containers/create?name=a%20b",
        "/networks/create", "/volumes/create", "/images/busybox/tag?repo=UPPER&tag=x",
        "/images/busybox/tag?repo=ok&tag=bad%20tag", "/images/create?fromImage=&tag=x",
        "/containers/prune?filters=notjson", "/networks/prune?filters=%5B1%5D",
        "/volumes/prune?filters={\"until\":[\"x\"]}",
        "/images/prune?filters={\"dangling\":[\"maybe\"]}", "/containers/fzq/exec",
    ]  # fmt: skip
    gets = [
        "/containers/json?filters=notjson", "/containers/json?limit=abc",
        "/containers/json?filters={\"status\":[\"x\"]}",
        "/containers/json?filters={\"before\":[\"nope\"]}", "/containers/json?filters={\"exited\":[\"x\"]}",
        "/containers/fzq/logs?stdout=1&tail=abc", "/containers/fzq/logs?stdout=1&since=abc",
        "/containers/fzq/logs?stdout=1&until=-", "/containers/fzq/stats?stream=0&one-shot=maybe",
        "/containers/fzq/top?ps_args=%00", "/networks?filters={\"dangling\":[\"x\"]}", "/volumes?filters={\"x\":[1]}",
        "/images/json?filters={\"before\":[\"nope\"]}", "/images/json?filters={\"reference\":[\"[\"]}",
        "/events?since=abc&until=1", "/events?filters={\"type\":[\"x\"]}&until=1", "/images/get?names=nope%3A%3A",
        "/containers/fzq/archive?path=/etc/hostname", "/system/df?type=x",
    ]  # fmt: skip
    for method, url in [("POST", u) for u in urls] + [("GET", u) for u in gets]:
        status, reply = _call(dhost, method, url, {} if method == "POST" else None)
        if status >= 500 or (status >= 400 and not (isinstance(reply, dict) and reply.get("message"))):
            problems.append(f"{method} {url}: {status} {reply!r}"[:300])
    assert not problems, "\n".join(problems)
    dhost.docker("rm", "-f", "fzq")


@pytest.mark.parametrize("framing, expected", [
    (b"Content-Length: -5\r\n\r\n", b"invalid Content-Length header"),
    (b"Content-Length: abc\r\n\r\n", b"invalid Content-Length header"),
    (b"Transfer-Encoding: chunked\r\n\r\n-5\r\n", b"a negative chunk size"),
    (b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", b"malformed chunked request body"),  # was a traceback
])  # fmt: skip
def test_a_bad_body_length_is_400_at_once(dhost, framing, expected):
    """A negative length (or chunk size) made the body reader wait for the client's close (read(-5)
    reads to the end), holding a connection thread for the idle timeout; a non-number was read as an
    empty body."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(dhost.outside_socket)
        sock.sendall(b"POST /networks/create HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"
                     + framing + b"{\"Name\": \"cl\"}")  # fmt: skip
        reply = b""
        for _ in range(100):  # the server closes the connection after its answer
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 400 "), reply
    assert expected in reply, reply
    assert "cl" not in dhost.docker("network", "ls", "--format", "{{.Name}}").stdout.split()


def test_output_read_after_the_server_closed_ends_with_eof_not_a_reset(dhost):
    """A Unix socket closed with unread bytes makes the client's next read fail with ECONNRESET instead
    of the end of the reply: under load, http.client lost the output of an attach sent with a body the
    attach never reads. The server reads what is queued before it closes. Here the body comes once the
    server is past reading the request (it has written its reply's head) and before it goes on (it waits
    until the head is read whole), and the client reads the output only after the close."""
    dhost.docker("run", "--name", "eofc", "busybox", "echo", "hi")
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(dhost.outside_socket)
            sock.sendall(b"POST /containers/eofc/attach?logs=1&stream=0&stdout=1 HTTP/1.1\r\nHost: docker\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n")  # fmt: skip
            head = b""
            while not head.endswith(b"\r\n\r") and len(head) < 4096:  # all of the head but its last byte
                head += sock.recv(1)
            sock.sendall(b"{}")
            head += sock.recv(1)  # the last byte: the server goes on, sends the logs and closes
            time.sleep(0.5)  # read only once it has closed
            output = b""
            for _ in range(100):
                chunk = sock.recv(4096)  # ConnectionResetError here, before
                if not chunk:
                    break
                output += chunk
        assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n"), head
        assert output.endswith(b"hi\n"), output
    finally:
        dhost.docker("rm", "-f", "eofc")


STRANGER_CLIENT = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
ping = b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n"
s.sendall(ping + ping)  # two requests: only the first may be answered
received, end = b"", "closed"
try:
    while chunk := s.recv(65536):  # to the server's close (or the 10 s timeout: left open)
        received += chunk
except TimeoutError:
    end = "left open"
except ConnectionResetError:  # closed with the second request unread (the server reads it first)
    end = "reset"
print(received.split(b"\r\n")[0].decode(), "|", received.count(b"HTTP/1.1 "), "answer(s) |", end)
"""


def test_a_refused_client_gets_one_answer_and_the_connection_closes(dhost):
    """A client past the socket's mode but refused by the peer check could keep its connection (and a
    connection slot of the 128) open for more 403s."""
    import sys

    dhost.run("chmod", "666", dhost.socket)
    out = dhost.run("setpriv", "--reuid", "4712", "--regid", "4712", "--clear-groups", sys.executable, "-c",
                    STRANGER_CLIENT, dhost.socket).stdout.strip()  # fmt: skip
    assert out == "HTTP/1.1 403 Forbidden | 1 answer(s) | closed", out


def test_filter_values_that_are_not_of_their_kind_are_400(dhost):
    """exited=x listed nothing and dangling=maybe pruned as if true: dockerd answers 400."""
    for method, url in [("GET", "/containers/json?all=1&filters={\"exited\":[\"x\"]}"),
                        ("POST", "/images/prune?filters={\"dangling\":[\"maybe\"]}"),
                        ("GET", "/images/json?filters={\"dangling\":[\"maybe\"]}")]:  # fmt: skip
        status, reply = _call(dhost, method, url, {} if method == "POST" else None)
        assert status == 400 and "invalid filter" in reply["message"], (url, status, reply)
    assert dhost.docker("images", "-q", "busybox").stdout.strip()  # nothing pruned
