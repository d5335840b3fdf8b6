"""System endpoints through the real docker CLI and docker-py: ping and version negotiation,
version, info, events (streamed, filtered, since/until), and the socket's own behaviour."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import stat
import subprocess
import threading
import time

from harness import stop_group


def test_ping_and_version_negotiation(dhost):
    version = json.loads(dhost.docker("version", "--format", "{{json .}}").stdout)
    assert version["Server"]["ApiVersion"] == "1.47"
    assert version["Server"]["MinAPIVersion"] == "1.24"
    assert version["Server"]["Os"] == "linux"
    assert version["Client"]["ApiVersion"] == "1.47"  # negotiated down from the CLI's 1.50
    pinned = json.loads(dhost.docker("version", "--format", "{{json .}}", api_version="1.41").stdout)
    assert pinned["Client"]["ApiVersion"] == "1.41"
    too_new = dhost.docker("version", api_version="1.48", check=False)
    assert too_new.returncode == 1 and "client version 1.48 is too new. Maximum supported API version is 1.47" \
        in too_new.stderr


def test_ping_headers(dhost):
    for method in (b"GET", b"HEAD"):
        with socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(10)
            conn.connect(dhost.outside_socket)
            conn.sendall(method + b" /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := conn.recv(4096):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        assert lines[0] == "HTTP/1.1 200 OK"
        assert headers["api-version"] == "1.47" and headers["ostype"] == "linux"
        assert headers["docker-experimental"] == "false" and headers["builder-version"] == "1"
        assert headers["cache-control"] == "no-cache, no-store, must-revalidate" and headers["pragma"] == "no-cache"
        assert body == (b"OK" if method == b"GET" else b"")


def test_info_as_the_cli_shows_it(dhost):
    info = json.loads(dhost.docker("info", "--format", "{{json .}}").stdout)
    assert info["OSType"] == "linux" and info["DockerRootDir"] == dhost.root
    assert info["Images"] == 1 and info["Containers"] == 0
    assert info["Swarm"]["LocalNodeState"] == "inactive"
    dhost.netctl("run", "-d", "--name", "i1", "--network", "none", "busybox", "sleep", "600")
    assert dhost.docker("info", "--format", "{{.Containers}} {{.ContainersRunning}}").stdout.strip() == "1 1"
    dhost.netctl("rm", "-f", "i1")


def test_socket_mode_and_keep_alive(dhost):
    mode = os.stat(dhost.outside_socket).st_mode
    assert stat.S_IMODE(mode) == 0o600 and os.stat(dhost.outside_socket).st_uid == 0
    # two requests on one connection (keep-alive), then a chunked request body
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(10)
        conn.connect(dhost.outside_socket)
        reader = conn.makefile("rb")
        for _ in range(2):
            conn.sendall(b"GET /v1.41/version HTTP/1.1\r\nHost: d\r\n\r\n")
            status = reader.readline()
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            assert status.startswith(b"HTTP/1.1 200") and json.loads(reader.read(length))["ApiVersion"] == "1.47"
        body = json.dumps({"Name": "chunked"}).encode()
        conn.sendall(b"POST /v1.41/volumes/create HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        assert reader.readline().startswith(b"HTTP/1.1 201")
    assert dhost.docker("volume", "ls", "-q").stdout.split() == ["chunked"]


def _read_lines(proc: subprocess.Popen, count: int, timeout: float = 15.0) -> list[dict]:
    """`count` JSON lines of proc's stdout, or fewer after `timeout` (a reader thread: select on a
    buffered pipe would miss lines already read into the buffer)."""
    found: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stream = proc.stdout

    def read() -> None:
        for line in stream:
            found.put(line)

    threading.Thread(target=read, daemon=True).start()
    lines: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(lines) < count:
        try:
            lines.append(json.loads(found.get(timeout=max(0.01, deadline - time.monotonic()))))
        except queue.Empty:
            break
    return lines


def test_events_stream_with_filters(dhost):
    watcher = dhost.docker_popen("events", "--format", "{{json .}}", "--filter", "type=network",
                                 "--filter", "event=create", "--filter", "event=destroy", stdout=subprocess.PIPE)
    volumes = dhost.docker_popen("events", "--format", "{{json .}}", "--filter", "type=volume",
                                 stdout=subprocess.PIPE)
    time.sleep(0.5)  # the watchers subscribe (no event is missed after that: the bus queues them)
    start = time.time()
    net_id = dhost.docker("network", "create", "ev1").stdout.strip()
    dhost.docker("volume", "create", "evv")
    dhost.docker("network", "rm", "ev1")
    dhost.docker("volume", "rm", "evv")
    events = _read_lines(watcher, 2)
    assert [(e["Type"], e["Action"], e["Actor"]["ID"], e["Actor"]["Attributes"]["name"]) for e in events] == [
        ("network", "create", net_id, "ev1"), ("network", "destroy", net_id, "ev1")]
    assert [(e["Type"], e["Action"], e["Actor"]["ID"]) for e in _read_lines(volumes, 2)] == [
        ("volume", "create", "evv"), ("volume", "destroy", "evv")]
    for proc in (watcher, volumes):
        proc.terminate()
        proc.wait(timeout=10)
    # since/until replay what the agent kept, then the stream ends by itself
    replay = dhost.docker("events", "--since", str(int(start) - 1), "--until", str(int(time.time()) + 1),
                          "--format", "{{.Type}} {{.Action}}", "--filter", "network=ev1", timeout=30).stdout
    assert replay.splitlines() == ["network create", "network destroy"]
    # docker-py reads the same stream
    client = dhost.api_client()
    try:
        decoded = list(client.events(since=int(start) - 1, until=int(time.time()) + 1, decode=True,
                                     filters={"type": "volume"}))
        assert [e["Action"] for e in decoded] == ["create", "destroy"]
    finally:
        client.close()
    bad = dhost.docker("events", "--filter", "colour=red", check=False, timeout=30)
    assert bad.returncode == 1 and "invalid filter 'colour'" in bad.stderr


def test_agent_with_a_group_and_a_socket_of_its_choice(hosts):
    """--docker-socket PATH (a drop-in /var/run/docker.sock) and --group: 0660 root:GROUP, a member
    is served, a stranger refused."""
    from docker_api.conftest import close_docker_host, make_docker_host

    dh = make_docker_host("dgroup", image=False, agent_args=("--group", "4711"),
                          docker_socket="/run/docker-test/docker.sock")
    try:
        assert not os.path.exists(dh.path("/run/netctl/docker.sock"))
        st = os.stat(dh.outside_socket)
        assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == 4711
        member = dh.run("setpriv", "--reuid", "4712", "--regid", "4711", "--clear-groups", "docker", "-H",
                        f"unix://{dh.socket}", "version", "--format", "{{.Server.APIVersion}}",
                        env={"DOCKER_CONFIG": "/run/docker-test"})
        assert member.stdout.strip() == "1.47"
        stranger = dh.run("setpriv", "--reuid", "4713", "--regid", "4713", "--clear-groups", "docker", "-H",
                          f"unix://{dh.socket}", "version", check=False, env={"DOCKER_CONFIG": "/run/docker-test"})
        assert stranger.returncode != 0 and "permission denied" in stranger.stderr
        dh.stop_agent()
        assert not os.path.exists(dh.outside_socket)  # removed on the way out
    finally:
        close_docker_host(dh)


def test_system_prune_and_df(dhost):
    dhost.docker("network", "create", "unused")
    dhost.docker("volume", "create", "--label", "com.docker.volume.anonymous=", "anon")
    df = dhost.docker("system", "df", "--format", "{{.Type}} {{.TotalCount}}").stdout.splitlines()
    assert "Images 1" in df and "Local Volumes 1" in df
    out = dhost.docker("system", "prune", "-f", "--volumes").stdout
    assert "unused" in out and "anon" in out
    assert set(dhost.docker("network", "ls", "--format", "{{.Name}}").stdout.split()) == {"host", "none"}
    assert dhost.docker("volume", "ls", "-q").stdout.strip() == ""
    assert dhost.docker("images", "-q").stdout.strip() != ""  # tagged images stay (no -a)


def test_stopping_agent_ends_open_streams(dhost):
    watcher = dhost.docker_popen("events", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.5)
    started = time.monotonic()
    dhost.stop_agent()
    assert time.monotonic() - started < 10
    watcher.wait(timeout=10)  # the CLI sees its stream end with the agent
    assert not os.path.exists(dhost.outside_socket)


def test_a_docker_socket_path_that_is_a_file_is_left_alone(host):
    """--docker-socket naming a regular file: the API is not served (one line in the log), the
    file is untouched, the agent serves its netctl clients all the same."""
    import sys

    host.run("sh", "-c", "echo precious > /run/not-a-socket")
    agent = host.popen("sh", "-c", 'exec "$0" -m netctl daemon --docker-socket /run/not-a-socket 2>/run/agent.log',
                       sys.executable)
    try:
        deadline = time.monotonic() + 30
        while "listening on" not in host.run("cat", "/run/agent.log", check=False).stdout:
            assert time.monotonic() < deadline and agent.poll() is None, host.run("cat", "/run/agent.log").stdout
            time.sleep(0.05)
        log = host.run("cat", "/run/agent.log").stdout
        assert "Docker Engine API not served: /run/not-a-socket exists and is not a socket" in log
        assert "Traceback" not in log
        assert host.run("cat", "/run/not-a-socket").stdout == "precious\n"
        assert host.netctl("network", "ls", "-q").returncode == 0
    finally:
        stop_group(agent, signal.SIGTERM)


def test_malformed_http_gets_a_json_error_and_the_agent_goes_on(dhost):
    for request, status in [(b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", 414),
                            (b"GET /_ping HTTP/2.5\r\n\r\n", 505),
                            (b"BREW /_ping HTTP/1.1\r\nHost: d\r\n\r\n", 501)]:
        with socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(10)
            conn.connect(dhost.outside_socket)
            conn.sendall(request)
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.split()[1] == str(status).encode(), data[:200]
        assert set(json.loads(body)) == {"message"}
    assert dhost.docker("version", "--format", "{{.Server.APIVersion}}").stdout.strip() == "1.47"
