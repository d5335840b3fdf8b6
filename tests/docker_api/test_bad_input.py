"""Bad input over netctl's Docker Engine API: the status code Docker clients act on, a body of dockerd's
shape (`{"message": one line}`), nothing half-made (containers, networks, volumes, images as before,
`netctl doctor` clean) and no traceback in the agent's log (the dhost fixture checks that last one at
teardown). Also clients that vanish mid-attach or mid-load, and a client that is neither root nor in
the agent's group.

Requests are sent byte for byte over the agent's socket (http.client on an AF_UNIX socket, from the
test process through /proc/PID/root) where a real client would never send them (malformed JSON, a
truncated upload); what real clients do send is sent by them (the docker CLI inside the host).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import struct
import subprocess
import time
from typing import Any

import pytest

from harness import stop_group

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(300)]



class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 30):
        super().__init__("docker", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def call(dhost, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:  # fmt: skip
    """One request; (status, parsed JSON body or the raw bytes when it is not JSON)."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    conn = UnixHTTPConnection(dhost.outside_socket)
    try:
        conn.request(method, f"/v1.47{path}", body=data,
                     headers={"Content-Type": "application/json", **(headers or {})})  # fmt: skip
        response = conn.getresponse()
        content = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(content) if content else None
    except ValueError:
        return response.status, content


def assert_error(result: tuple[int, Any], statuses: int | tuple[int, ...], *words: str) -> str:
    """dockerd's error shape: the expected status, {"message": one line naming `words`}."""
    status, body = result
    statuses = statuses if isinstance(statuses, tuple) else (statuses,)
    assert status in statuses, f"status {status}, expected {statuses}: {body!r}"
    assert isinstance(body, dict) and set(body) == {"message"}, body
    message = body["message"]
    assert message and "\n" not in message.strip() and "Traceback" not in message, message
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}"
    return message


def state(dhost) -> dict[str, Any]:
    """What a failed request must not change: containers, networks, volumes, images. The default network
    `bridge` is made first if it is not there yet (netctl makes it on first use; dockerd always has it)."""
    if dhost.docker("network", "inspect", "bridge", check=False).returncode != 0:
        dhost.docker("run", "--rm", "busybox", "true")
    return {
        "containers": sorted((c["Id"], c["State"]) for c in call(dhost, "GET", "/containers/json?all=1")[1]),
        "networks": sorted(n["Name"] for n in call(dhost, "GET", "/networks")[1]),
        "volumes": sorted(v["Name"] for v in call(dhost, "GET", "/volumes")[1]["Volumes"] or []),
        "images": sorted(i["Id"] for i in call(dhost, "GET", "/images/json")[1]),
    }


def assert_unchanged(dhost, before: dict[str, Any]) -> None:
    assert state(dhost) == before
    dhost.doctor_clean()


def test_malformed_json_and_wrong_types(dhost):
    before = state(dhost)
    for path in ("/containers/create", "/networks/create", "/volumes/create"):
        message = assert_error(call(dhost, "POST", path, raw=b'{"Name": "half", "Image": '), 400)
        assert "json" in message.lower(), message
    assert_error(call(dhost, "POST", "/containers/create", raw=b"[1, 2]"), 400)
    assert_error(call(dhost, "POST", "/containers/create", {"Image": "busybox", "HostConfig": {"Memory": "lots"}}),
                 400, "Memory")  # fmt: skip
    assert_error(call(dhost, "POST", "/networks/create", {"Name": 42}), 400)
    assert_unchanged(dhost, before)


def test_unknown_container_network_image(dhost):
    before = state(dhost)
    for method, path in (("GET", "/containers/ghost/json"), ("POST", "/containers/ghost/start"),
                         ("POST", "/containers/ghost/stop"), ("POST", "/containers/ghost/kill"),
                         ("DELETE", "/containers/ghost"), ("GET", "/containers/ghost/logs?stdout=1"),
                         ("POST", "/containers/ghost/wait")):  # fmt: skip
        assert_error(call(dhost, method, path), 404, "ghost")
    assert_error(call(dhost, "POST", "/containers/ghost/exec", {"Cmd": ["true"]}), 404, "ghost")
    assert_error(call(dhost, "GET", "/exec/0123456789abcdef/json"), 404)
    for method, path in (("GET", "/networks/nowhere"), ("DELETE", "/networks/nowhere")):
        assert_error(call(dhost, method, path), 404, "nowhere")
    assert_error(call(dhost, "POST", "/networks/nowhere/connect", {"Container": "ghost"}), 404)
    for method, path in (("GET", "/images/phantom:1/json"), ("DELETE", "/images/phantom:1"),
                         ("POST", "/images/phantom:1/tag?repo=other&tag=2")):  # fmt: skip
        assert_error(call(dhost, method, path), 404, "phantom")
    # a container create naming what does not exist makes no container
    assert_error(call(dhost, "POST", "/containers/create?name=c1", {"Image": "phantom:1"}), 404, "phantom")
    assert_error(call(dhost, "POST", "/containers/create?name=c2",
                      {"Image": "busybox", "HostConfig": {"NetworkMode": "nowhere"}}), 404, "nowhere")  # fmt: skip
    # the docker CLI shows the same as one line
    out = dhost.docker("inspect", "ghost", check=False)
    assert out.returncode != 0 and "ghost" in out.stderr and "Traceback" not in out.stderr
    out = dhost.docker("network", "rm", "nowhere", check=False)
    assert out.returncode != 0 and "nowhere" in out.stderr
    assert_unchanged(dhost, before)


def test_name_conflicts(dhost):
    status, made = call(dhost, "POST", "/containers/create?name=dup", {"Image": "busybox", "Cmd": ["sleep", "60"]})
    assert status == 201, made
    status, net = call(dhost, "POST", "/networks/create", {"Name": "dupnet", "CheckDuplicate": True})
    assert status == 201, net
    before = state(dhost)
    assert_error(call(dhost, "POST", "/containers/create?name=dup", {"Image": "busybox"}), 409, "dup")
    assert_error(call(dhost, "POST", "/networks/create", {"Name": "dupnet", "CheckDuplicate": True}), 409, "dupnet")
    status, other = call(dhost, "POST", "/containers/create?name=other", {"Image": "busybox"})
    assert status == 201, other
    before = state(dhost)
    assert_error(call(dhost, "POST", f"/containers/{other['Id']}/rename?name=dup"), 409, "dup")
    assert_unchanged(dhost, before)
    out = dhost.docker("create", "--name", "dup", "busybox", check=False)
    assert out.returncode != 0 and "dup" in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    for name in ("dup", "other"):
        assert call(dhost, "DELETE", f"/containers/{name}?force=1")[0] == 204
    assert call(dhost, "DELETE", "/networks/dupnet")[0] == 204


def test_port_already_published(dhost):
    dhost.docker("network", "create", "--subnet", "10.125.0.0/24", "pubnet")
    dhost.docker("run", "-d", "--name", "first", "--network", "pubnet", "-p", "8095:80", "busybox",
                 "httpd", "-f", "-p", "80", "-h", "/etc")  # fmt: skip
    status, second = call(dhost, "POST", "/containers/create?name=second", {
        "Image": "busybox", "Cmd": ["sleep", "60"], "ExposedPorts": {"80/tcp": {}},
        "HostConfig": {"NetworkMode": "pubnet", "PortBindings": {"80/tcp": [{"HostPort": "8095"}]}}})
    assert status == 201, second  # as dockerd: created; the port is taken at start
    # dockerd answers 500 ("port is already allocated"); a conflict is what it is, and 500 here means a bug
    assert_error(call(dhost, "POST", "/containers/second/start"), 409, "host port 8095/tcp is already published")
    view = call(dhost, "GET", "/containers/second/json")[1]
    assert view["State"]["Running"] is False
    # nothing of the second left on the network or in the rules; the first still serves
    members = call(dhost, "GET", "/networks/pubnet")[1]["Containers"] or {}
    assert [m["Name"] for m in members.values()] == ["first"]
    code = "import urllib.request as u; print(u.urlopen('http://10.125.0.1:8095/hostname', timeout=5).read().decode())"
    assert dhost.host.py(code, timeout=20).returncode == 0
    out = dhost.docker("run", "-d", "--network", "pubnet", "-p", "8095:80", "busybox", "sleep", "60", check=False)
    assert out.returncode != 0 and "8095" in out.stderr, out.stderr
    dhost.docker("rm", "-f", "first", "second")
    for leftover in dhost.docker("ps", "-aq").stdout.split():  # the CLI's failed run, created not started
        dhost.docker("rm", "-f", leftover)
    dhost.docker("network", "rm", "pubnet")
    dhost.doctor_clean()


def test_invalid_ipam(dhost):
    taken = {"Name": "taken", "IPAM": {"Config": [{"Subnet": "10.127.0.0/24"}]}}
    status, made = call(dhost, "POST", "/networks/create", taken)
    assert status == 201, made
    before = state(dhost)
    bad = [
        ({"Subnet": "10.500.0.0/24"}, 400, "10.500.0.0/24"),
        ({"Subnet": "10.126.0.0/24", "Gateway": "10.9.9.1"}, 400, "10.9.9.1"),
        ({"Subnet": "10.126.0.0/24", "IPRange": "10.128.0.0/25"}, 400, "10.128.0.0/25"),
        ({"Subnet": "10.126.0.0/24", "Gateway": "not-an-address"}, 400, "not-an-address"),
        ({"Subnet": "10.127.0.0/25"}, (400, 403, 409), "10.127.0.0"),  # overlaps `taken`
    ]
    for i, (config, statuses, word) in enumerate(bad):
        assert_error(call(dhost, "POST", "/networks/create", {"Name": f"bad{i}", "IPAM": {"Config": [config]}}),
                     statuses, word)  # fmt: skip
    assert_unchanged(dhost, before)
    out = dhost.docker("network", "create", "--subnet", "10.126.0.0/24", "--gateway", "10.9.9.1", "clibad", check=False)
    assert out.returncode != 0 and "10.9.9.1" in out.stderr
    assert call(dhost, "DELETE", "/networks/taken")[0] == 204


def test_unsupported_options_are_refused_by_name(dhost):
    before = state(dhost)
    refusals = [
        ({"Image": "busybox", "HostConfig": {"Devices": [{"PathOnHost": "/dev/null", "PathInContainer": "/dev/x",
                                                          "CgroupPermissions": "rwm"}]}}, "Devices"),
        ({"Image": "busybox", "HostConfig": {"Runtime": "kata"}}, "Runtime"),
        ({"Image": "busybox", "HostConfig": {"VolumeDriver": "flocker"}}, "VolumeDriver"),
    ]
    for body, field in refusals:
        assert_error(call(dhost, "POST", "/containers/create?name=refused", body), (400, 501), field)
    assert_error(call(dhost, "POST", "/networks/create", {"Name": "mv", "Driver": "macvlan"}), (400, 404, 501),
                 "macvlan")  # fmt: skip
    assert_error(call(dhost, "POST", "/build", raw=b"", headers={"Content-Type": "application/x-tar"}), (400,),
                 "image build (POST /build) is not supported")  # fmt: skip
    assert_error(call(dhost, "POST", "/swarm/init", {"ListenAddr": "0.0.0.0:2377"}), (400,), "swarm is not supported")
    assert_error(call(dhost, "GET", "/services"), (400,), "swarm is not supported")
    refused = dhost.docker("swarm", "init", check=False)
    assert refused.returncode != 0 and "swarm is not supported" in refused.stderr, refused.stderr
    assert_unchanged(dhost, before)


# ---- clients that vanish ----------------------------------------------------------------------------


def raw_request(dhost, head: str, body: bytes = b"") -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(dhost.outside_socket)
    sock.sendall(head.encode() + body)
    return sock


def read_until(sock: socket.socket, marker: bytes, limit: int = 1 << 16) -> bytes:
    data = b""
    deadline = time.monotonic() + 10
    while marker not in data and len(data) < limit and time.monotonic() < deadline:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def slam(sock: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0), the rudest way a client can go."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def agent_serves(dhost) -> bool:
    return call(dhost, "GET", "/_ping")[0] == 200


def test_client_dropping_mid_attach_and_mid_logs(dhost):
    dhost.docker("run", "-d", "--name", "talker", "busybox", "sh", "-c",
                 "trap 'exit 0' TERM; while true; do echo tick; sleep 0.1; done")  # fmt: skip
    for _ in range(3):
        sock = raw_request(dhost, "POST /v1.47/containers/talker/attach?stream=1&stdout=1&stderr=1 HTTP/1.1\r\n"
                                  "Host: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n")
        got = read_until(sock, b"tick")
        assert got.startswith(b"HTTP/1.1 101") and b"tick" in got, got[:200]
        slam(sock)
        sock = raw_request(dhost, "GET /v1.47/containers/talker/logs?stdout=1&follow=1 HTTP/1.1\r\n"
                                  "Host: docker\r\n\r\n")
        got = read_until(sock, b"tick")
        assert got.startswith(b"HTTP/1.1 200") and b"tick" in got, got[:200]
        slam(sock)
    assert agent_serves(dhost)
    assert call(dhost, "GET", "/containers/talker/json")[1]["State"]["Running"] is True
    # a client that goes away between its request and reading the answer
    sock = raw_request(dhost, "GET /v1.47/containers/talker/logs?stdout=1 HTTP/1.1\r\nHost: docker\r\n\r\n")
    slam(sock)
    # attach still works for the next client, and the container stops and goes
    attach = dhost.docker_popen("attach", "--no-stdin", "talker", stdout=subprocess.PIPE)
    try:
        assert "tick" in attach.stdout.readline()
    finally:
        attach.kill()
        attach.wait(timeout=10)
    dhost.docker("rm", "-f", "talker")
    assert agent_serves(dhost)
    assert dhost.docker("ps", "-aq").stdout.split() == []
    dhost.doctor_clean()


def image_archive(dhost) -> bytes:
    status, archive = call(dhost, "GET", "/images/busybox/get")
    assert status == 200 and isinstance(archive, bytes) and len(archive) > 100_000
    return archive


def leftovers(dhost) -> list[str]:
    """Files in the image store's temporary directory (a load in progress writes there)."""
    from runner.paths import Layout

    tmp = dhost.path(Layout(dhost.root).images_tmp)
    return sorted(os.listdir(tmp)) if os.path.isdir(tmp) else []


def test_client_dropping_mid_load(dhost):
    archive = image_archive(dhost)
    state(dhost)  # the default network made while busybox is there to make it
    assert call(dhost, "DELETE", "/images/busybox")[0] == 200  # the load would add it back
    before = state(dhost)
    # Content-Length: half sent, then gone
    sock = raw_request(dhost, "POST /v1.47/images/load?quiet=1 HTTP/1.1\r\nHost: docker\r\n"
                              f"Content-Type: application/x-tar\r\nContent-Length: {len(archive)}\r\n\r\n",
                       archive[: len(archive) // 2])  # fmt: skip
    time.sleep(0.3)
    slam(sock)
    # chunked (as the docker CLI sends `load -i`): a few chunks, then gone
    sock = raw_request(dhost, "POST /v1.47/images/load?quiet=1 HTTP/1.1\r\nHost: docker\r\n"
                              "Content-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\n\r\n")
    for start in range(0, len(archive) // 2, 65536):
        piece = archive[start:start + 65536]
        sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
    time.sleep(0.3)
    slam(sock)
    # the docker CLI itself, killed while `docker load` streams its stdin
    loader = dhost.docker_popen("load", stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                text=False)  # fmt: skip
    assert loader.stdin is not None
    loader.stdin.write(archive[: len(archive) // 2])
    loader.stdin.flush()
    time.sleep(0.3)
    stop_group(loader, signal.SIGKILL)
    loader.stdin.close()
    # a complete request whose archive is cut short: refused with a message, nothing stored
    message = assert_error(call(dhost, "POST", "/images/load?quiet=1", raw=archive[: len(archive) // 2],
                                headers={"Content-Type": "application/x-tar"}), (400, 500))  # fmt: skip
    assert message
    deadline = time.monotonic() + 10
    while leftovers(dhost) and time.monotonic() < deadline:  # the agent notices the drop, bounded
        time.sleep(0.1)
    assert leftovers(dhost) == []
    assert agent_serves(dhost)
    assert_unchanged(dhost, before)
    # the whole archive still loads afterwards
    status, body = call(dhost, "POST", "/images/load?quiet=1", raw=archive,
                        headers={"Content-Type": "application/x-tar"})
    assert status == 200, body
    assert dhost.docker("run", "--rm", "busybox", "echo", "back").stdout == "back\n"
    dhost.doctor_clean()


# ---- who may connect --------------------------------------------------------------------------------

GROUP_NAME, GROUP_ID = "nctest-docker", 4711
NOBODY = ["setpriv", "--reuid", "65534", "--regid", "65534"]
NOBODY_CONFIG = "/run/nobody-docker-config"  # the CLI's own config dir, readable by nobody


def test_non_root_non_group_client_refused(dhost):
    dhost.run("install", "-d", "-m", "0777", NOBODY_CONFIG)
    env = dhost.docker_env(env={"DOCKER_CONFIG": NOBODY_CONFIG})
    # as the socket is made: 0600 root (no --group); nobody cannot even connect
    out = dhost.run(*NOBODY, "--clear-groups", "docker", "version", env=env, check=False)
    assert out.returncode != 0 and "permission denied" in out.stderr.lower(), out.stderr
    # with --group: a group of the host's own (/etc/group bind-mounted in its private mount namespace)
    with open("/etc/group") as f:
        groups = f.read()
    with open(dhost.path("/run/group"), "w") as f:
        f.write(groups + f"{GROUP_NAME}:x:{GROUP_ID}:\n")
    dhost.run("mount", "--bind", "/run/group", "/etc/group")
    dhost.stop_agent()
    dhost.start_agent("--group", GROUP_NAME)
    member = dhost.run(*NOBODY, "--groups", str(GROUP_ID), "docker", "version", "--format", "{{.Server.Version}}",
                       env=env, check=False)  # fmt: skip
    assert member.returncode == 0, member.stderr
    stranger = dhost.run(*NOBODY, "--clear-groups", "docker", "version", env=env, check=False)
    assert stranger.returncode != 0 and "permission denied" in stranger.stderr.lower(), stranger.stderr
    # past the file mode (a socket made world-writable by mistake), the peer check still refuses
    dhost.run("chmod", "0666", dhost.socket)
    stranger = dhost.run(*NOBODY, "--clear-groups", "docker", "network", "ls", env=env, check=False)
    assert stranger.returncode != 0 and "permission denied" in stranger.stderr.lower(), stranger.stderr
    assert len(stranger.stderr.strip().splitlines()) == 1, stranger.stderr
    dhost.doctor_clean()
