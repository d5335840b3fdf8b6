"""Streams over the Docker API with real clients: `docker run -it` and `docker exec -it` on a pseudo
terminal, `docker run -i` with piped stdin, `docker logs -f/--tail/--timestamps`, `docker attach`,
exec through the CLI and docker-py (exit codes, inspect), and a client dropping mid-attach."""

from __future__ import annotations

import json
import os
import socket
import time

PTY_SESSION = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "pty_session.py")
SUM_AND_EXIT_5 = "tty; echo sum=$((40+2)); exit 5\\r"


def on_pty(dhost, *docker_args: str, api_version: str | None = None) -> str:
    """The docker CLI on a pseudo terminal: types a line that prints the tty, a sum, and exits 5."""
    import shutil
    import sys

    result = dhost.run(sys.executable, PTY_SESSION, "--type", SUM_AND_EXIT_5, "--", shutil.which("docker"),
                       *docker_args, env=dhost.docker_env(api_version), timeout=60)  # fmt: skip
    return result.stdout


def test_run_it_and_exec_it_on_a_terminal(dhost):
    out = on_pty(dhost, "run", "-it", "--rm", "--name", "term", "busybox", "sh")
    assert "sum=42" in out and "/dev/" in out, out
    assert out.strip().endswith("exit 5"), out
    dhost.docker("run", "-d", "--name", "box", "busybox", "sleep", "600")
    out = on_pty(dhost, "exec", "-it", "box", "sh")
    assert "sum=42" in out and "/dev/pts/" in out, out
    assert out.strip().endswith("exit 5"), out
    dhost.docker("rm", "-f", "box")
    assert dhost.docker("ps", "-aq").stdout == ""


def test_run_interactive_stdin_and_attach(dhost):
    result = dhost.docker("run", "-i", "--rm", "busybox", "sh", "-c", "tr a-z A-Z; echo done >&2", input="hello\n")
    assert (result.stdout, result.stderr) == ("HELLO\n", "done\n")
    # docker attach to a running container: its output from then on, and its exit ends the attach.
    dhost.docker("run", "-d", "--name", "talker", "busybox", "sh", "-c", "sleep 1; echo late; exit 7")
    attached = dhost.docker("attach", "talker", check=False, timeout=20)
    assert attached.stdout == "late\n" and attached.returncode == 7
    dhost.docker("rm", "talker")


def test_logs_tail_timestamps_since_and_follow(dhost):
    d = dhost.docker
    d("run", "-d", "--name", "chatty", "busybox", "sh", "-c",
      "echo oops >&2; sleep 0.2; for i in 1 2 3 4 5; do echo line$i; done; sleep 2; echo last")  # fmt: skip
    time.sleep(0.5)
    assert d("logs", "--tail", "2", "chatty").stdout == "line4\nline5\n"
    logs = d("logs", "chatty")
    assert logs.stdout.startswith("line1\nline2") and logs.stderr == "oops\n"
    stamped = d("logs", "--timestamps", "--tail", "1", "chatty").stdout
    assert stamped.endswith("Z line5\n") and stamped[:4].isdigit()
    assert d("logs", "--since", "2099-01-01T00:00:00Z", "chatty").stdout == ""
    follow = d("logs", "-f", "chatty", timeout=20).stdout  # returns when the container exits
    assert follow.endswith("line5\nlast\n")
    with dhost.api_client() as api:
        assert api.logs("chatty", stdout=True, stderr=False, tail=1) == b"last\n"
    d("rm", "chatty")


def test_exec_exit_codes_env_user_workdir_and_docker_py(dhost):
    d = dhost.docker
    d("run", "-d", "--name", "ex", "-e", "BASE=1", "busybox", "sleep", "600")
    result = d("exec", "-e", "EXTRA=2", "-w", "/tmp", "-u", "1000", "ex", "sh", "-c",
               "echo $BASE$EXTRA $(pwd) $(id -u); echo err >&2; exit 9", check=False)  # fmt: skip
    assert (result.returncode, result.stdout, result.stderr) == (9, "12 /tmp 1000\n", "err\n")
    missing = d("exec", "ex", "no-such-command", check=False)
    assert missing.returncode == 127 and "no-such-command" in missing.stderr
    assert d("exec", "-i", "ex", "cat", input="through stdin\n").stdout == "through stdin\n"
    d("exec", "-d", "ex", "sh", "-c", "sleep 0.2; echo detached > /tmp/d")
    deadline = time.monotonic() + 10
    while d("exec", "ex", "cat", "/tmp/d", check=False).stdout != "detached\n" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert d("exec", "ex", "cat", "/tmp/d").stdout == "detached\n"
    with dhost.api_client() as api:
        exec_id = api.exec_create("ex", ["sh", "-c", "echo out; echo err >&2; exit 3"])["Id"]
        output = api.exec_start(exec_id, demux=True)
        assert output == (b"out\n", b"err\n")
        view = api.exec_inspect(exec_id)
        assert view["ExitCode"] == 3 and view["Running"] is False and view["ContainerID"].startswith(
            d("inspect", "-f", "{{.Id}}", "ex").stdout.strip())
    client = dhost.client()
    try:
        container = client.containers.get("ex")
        # docker-py reads the reply's headers through a buffer, then the raw socket: output that came
        # with the headers would be lost (it was, 7 in 60 under load, before exec started after them)
        for _ in range(10):
            code, out = container.exec_run(["sh", "-c", "echo $BASE"])
            assert (code, out) == (0, b"1\n")
    finally:
        client.close()
    d("rm", "-f", "ex")


def test_docker_py_container_models_and_low_level_calls(dhost):
    client = dhost.client()
    try:
        container = client.containers.run("busybox", ["sh", "-c", "echo started; sleep 600"], detach=True,
                                          name="modelled", labels={"app": "t"}, environment={"K": "v"},
                                          ports={"80/tcp": None})  # fmt: skip
        container.reload()
        assert container.status == "running" and container.labels == {"app": "t"}
        host_port = container.attrs["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"]
        assert int(host_port) > 1024  # a free port chosen for HostPort ""
        deadline = time.monotonic() + 10
        while b"started" not in container.logs() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert container.logs() == b"started\n"
        assert [c.name for c in client.containers.list(filters={"label": "app=t"})] == ["modelled"]
        container.stop(timeout=1)
        assert container.wait(timeout=20)["StatusCode"] == 137
        container.remove()
        assert client.containers.run("busybox", ["echo", "hi"], remove=True) == b"hi\n"
    finally:
        client.close()
    with dhost.api_client() as api:
        created = api.create_container("busybox", ["sh", "-c", "exit 2"], name="low",
                                       host_config=api.create_host_config(restart_policy={"Name": "no"}))  # fmt: skip
        assert api.inspect_container(created["Id"])["State"]["Status"] == "created"
        api.start(created["Id"])
        assert api.wait(created["Id"], timeout=20)["StatusCode"] == 2
        api.rename(created["Id"], "lower")
        pruned = api.prune_containers()
        assert created["Id"] in pruned["ContainersDeleted"]
    assert dhost.docker("ps", "-aq").stdout == ""
    dhost.doctor_clean()


def test_a_client_dropping_mid_attach_leaves_no_trace(dhost):
    dhost.docker("run", "-d", "--name", "noisy", "busybox", "sh", "-c", "while :; do echo tick; sleep 0.05; done")
    for _ in range(3):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(dhost.outside_socket)
            sock.sendall(b"POST /v1.41/containers/noisy/attach?stream=1&stdout=1&stderr=1 HTTP/1.1\r\n"
                         b"Host: docker\r\nUpgrade: tcp\r\nConnection: Upgrade\r\nContent-Length: 0\r\n\r\n")
            sock.settimeout(5)
            head = sock.recv(4096)
            assert head.startswith(b"HTTP/1.1 101")
            time.sleep(0.2)
        # closed abruptly here
    time.sleep(0.5)
    assert dhost.docker("inspect", "-f", "{{.State.Running}}", "noisy").stdout.strip() == "true"
    events = json.loads(dhost.docker("inspect", "noisy").stdout)[0]
    assert events["State"]["Status"] == "running"
    dhost.docker("rm", "-f", "noisy")
    dhost.doctor_clean()
    dhost.assert_no_traceback()


def test_detach_keys_leave_the_container_running(dhost):
    import shutil
    import sys

    # ctrl-p ctrl-q after a command: the client detaches, the container goes on
    result = dhost.run(sys.executable, PTY_SESSION, "--type", "echo marker > /tmp/here\\r", "--type", "\\x10\\x11",
                       "--", shutil.which("docker"), "run", "-it", "--name", "stays", "busybox", "sh",
                       env=dhost.docker_env(), timeout=60)  # fmt: skip
    assert result.stdout.strip().endswith("exit 0"), result.stdout
    assert dhost.docker("inspect", "-f", "{{.State.Running}}", "stays").stdout.strip() == "true"
    assert dhost.docker("exec", "stays", "cat", "/tmp/here").stdout == "marker\n"
    dhost.docker("rm", "-f", "stays")


def test_streams_at_api_1_41(dhost):
    d = lambda *a, **kw: dhost.docker(*a, api_version="1.41", **kw)  # noqa: E731
    result = d("run", "-i", "--rm", "busybox", "sh", "-c", "cat; echo bye >&2; exit 6", input="in\n", check=False)
    assert (result.returncode, result.stdout, result.stderr) == (6, "in\n", "bye\n")
    d("run", "-d", "--name", "old", "busybox", "sh", "-c", "echo one; echo two; sleep 600")
    deadline = time.monotonic() + 10
    while d("logs", "old").stdout != "one\ntwo\n" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert d("logs", "--tail", "1", "old").stdout == "two\n"
    assert d("exec", "old", "sh", "-c", "exit 4", check=False).returncode == 4
    assert "old" in d("stats", "--no-stream", "--format", "{{.Name}}", "old").stdout
    d("kill", "old")
    assert d("wait", "old").stdout.strip() == "137"
    d("rm", "old")
