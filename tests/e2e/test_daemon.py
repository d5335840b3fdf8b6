"""`netctl daemon`: the CLI's thin client gets the same answers from the warm daemon as in-process."""

import json
import os
import signal
import subprocess
import sys

import pytest

from e2e.conftest import command_pid
from libnetwork import ipc
from netctl.entry import delegable

pytestmark = pytest.mark.kernel


def started(proc, limit: int = 20) -> str:
    """The agent's first lines up to "listening" (after a possible "replacing the agent started on
    first use" and the lines of the services it starts first: the name server, the Docker API);
    the last one read."""
    line = ""
    for _ in range(limit):
        line = proc.stderr.readline()
        if not line or "listening on" in line:
            break
    return line


@pytest.fixture
def daemon(lab):
    proc = lab.host.popen(sys.executable, "-m", "netctl", "daemon", stderr=subprocess.PIPE)
    assert "listening on /run/netctl/netctl.sock" in started(proc)
    proc.daemon_pid = command_pid(proc)
    yield proc
    stop(proc)


def stop(proc, sig=signal.SIGTERM) -> int:
    if proc.poll() is None:
        os.kill(getattr(proc, "daemon_pid", None) or command_pid(proc), sig)
    return proc.wait(timeout=10)


def served(proc, count: int) -> list[str]:
    return [proc.stderr.readline().strip() for _ in range(count)]


def test_commands_are_served_by_the_daemon_with_identical_results(lab, daemon):
    lab.network("blue", "--subnet", "10.60.0.0/24")
    lab.sandbox("a"), lab.sandbox("b")
    (ip_b,) = lab.connect("blue", "b")
    assert served(daemon, 4) == [
        "netctl daemon: served network create --subnet: exit 0",
        "netctl daemon: served sandbox create --name: exit 0",
        "netctl daemon: served sandbox create --name: exit 0",
        "netctl daemon: served network connect blue: exit 0",
    ]
    assert lab.ping("a", ip_b) is False  # a is not connected yet; exec ran locally (not served)
    lab.connect("blue", "a")
    assert lab.ping("a", ip_b)
    # Errors: the same single line and exit code as in-process.
    remote = lab.netctl("network", "connect", "blue", "a", check=False)
    local = lab.netctl("network", "connect", "blue", "a", check=False, env={"NETCTL_NO_DAEMON": "1"})
    assert (remote.returncode, remote.stdout, remote.stderr) == (local.returncode, local.stdout, local.stderr)
    assert remote.returncode == 4 and remote.stderr.count("\n") == 1
    listing = lab.netctl("network", "inspect", "blue").stdout
    assert listing == lab.netctl("network", "inspect", "blue", env={"NETCTL_NO_DAEMON": "1"}).stdout
    assert len(json.loads(listing)[0]["Containers"]) == 2


def test_without_the_daemon_the_cli_runs_in_process(lab, daemon):
    assert stop(daemon) == 0
    assert "netctl.sock" not in lab.host.run("ls", "/run/netctl").stdout
    lab.network("after", "--subnet", "10.61.0.0/24")
    assert lab.inspect("after")["Name"] == "after"


def test_a_stale_socket_of_a_killed_daemon_is_ignored_and_replaced(lab, daemon):
    stop(daemon, signal.SIGKILL)
    lab.network("still", "--subnet", "10.62.0.0/24")  # connection refused -> in-process
    # That in-process command started an agent for the next one; one started by hand replaces it.
    again = lab.host.popen(sys.executable, "-m", "netctl", "daemon", stderr=subprocess.PIPE)
    assert "listening" in started(again)
    lab.netctl("network", "rm", "still")
    assert served(again, 1) == ["netctl daemon: served network rm still: exit 0"]
    assert stop(again) == 0


def test_second_daemon_on_the_same_root_is_refused(lab, daemon):
    result = lab.netctl("daemon", check=False, timeout=20)
    assert result.returncode == 4
    assert result.stderr.strip() == "netctl: a netctl daemon already serves /run/netctl/netctl.sock; stop it first"


def test_daemon_refuses_commands_that_must_run_in_the_client(lab, daemon):
    # sandbox exec would replace the daemon's own process: a hand-made request for it is refused.
    code = """
import socket
from libnetwork import ipc
s = socket.socket(socket.AF_UNIX)
s.connect("/run/netctl/netctl.sock")
s.sendall(ipc.message({"op": "cli", "argv": ["sandbox", "exec", "a", "--", "true"]}))
print(list(ipc.read_frames(s)))
"""
    answer = lab.host.py(code).stdout
    assert "cannot run in the agent" in answer and '"code":2' in answer
    assert lab.netctl("network", "ls").returncode == 0  # and it keeps serving


def test_which_command_lines_are_delegated(monkeypatch):
    monkeypatch.setenv("NETCTL_ROOT", "/r")
    monkeypatch.delenv("NETCTL_NO_DAEMON", raising=False)
    monkeypatch.delenv("NETCTL_TEST_PAUSE", raising=False)
    assert delegable(["network", "create", "x"]) == "/r/netctl.sock"
    assert delegable(["--root", "/other", "network", "ls"]) == "/other/netctl.sock"
    assert delegable(["--root=/o2", "doctor"]) == "/o2/netctl.sock"
    for argv in (["sandbox", "exec", "a", "--", "sh"], ["network", "prune", "-f"], ["--debug", "network", "ls"],
                 ["network", "create", "--help"], ["--help"], ["daemon"], ["--frob", "network", "ls"], []):
        assert delegable(argv) is None, argv
    monkeypatch.setenv("NETCTL_NO_DAEMON", "1")
    assert delegable(["network", "ls"]) is None


def test_a_caller_naming_another_store_or_host_than_the_daemons_runs_in_process(monkeypatch, tmp_path):
    import json

    monkeypatch.setenv("NETCTL_ROOT", str(tmp_path))
    for name in ("NETCTL_NO_DAEMON", "NETCTL_TEST_PAUSE", "NETCTL_STORE", "NETCTL_HOST_NAME"):
        monkeypatch.delenv(name, raising=False)
    sock = str(tmp_path / "netctl.sock")
    monkeypatch.setenv("NETCTL_STORE", "etcd://192.0.2.1:2379")
    assert delegable(["network", "ls"]) is None  # a daemon without a store (no global.json)
    (tmp_path / "global.json").write_text(json.dumps({"store": "etcd://192.0.2.1:2379", "host": "h1", "vtep": "192.0.2.5"}))
    assert delegable(["network", "ls"]) == sock  # the daemon's own store
    monkeypatch.setenv("NETCTL_HOST_NAME", "h1")
    assert delegable(["network", "ls"]) == sock
    monkeypatch.setenv("NETCTL_HOST_NAME", "h2")
    assert delegable(["network", "ls"]) is None
    monkeypatch.delenv("NETCTL_HOST_NAME")
    for other in ("etcd://192.0.2.9:2379", ""):  # another store, or explicitly none
        monkeypatch.setenv("NETCTL_STORE", other)
        assert delegable(["network", "ls"]) is None, other
    (tmp_path / "global.json").write_text("{not json")
    monkeypatch.setenv("NETCTL_STORE", "etcd://192.0.2.1:2379")
    assert delegable(["network", "ls"]) is None


def test_wire_format_round_trips_any_text_and_bytes():
    import socket

    left, right = socket.socketpair()
    with left, right:
        request = {"op": "cli", "argv": ["0", "out\nwith\tstuff é", "", "\udcff"]}
        left.sendall(ipc.message(request) + ipc.frame(ipc.STDOUT, b"\xff\x00raw") + ipc.frame(ipc.STDERR, b""))
        left.shutdown(socket.SHUT_WR)
        frames = list(ipc.read_frames(right))
    assert ipc.loads(frames[0][1]) == request
    assert frames[1:] == [(ipc.STDOUT, b"\xff\x00raw"), (ipc.STDERR, b"")]


def test_daemon_with_root_flag_serves_a_client_that_names_the_root_by_environment(lab):
    """`netctl --root R daemon` in an environment without NETCTL_ROOT, clients with NETCTL_ROOT=R."""
    proc = lab.host.popen(
        "env", "-u", "NETCTL_ROOT", sys.executable, "-m", "netctl", "--root", "/run/other", "daemon",
        stderr=subprocess.PIPE,
    )
    assert "listening on /run/other/netctl.sock" in started(proc)
    try:
        out = lab.netctl("network", "ls", "-q", env={"NETCTL_ROOT": "/run/other"})
        assert out.returncode == 0 and out.stderr == ""
        assert served(proc, 1) == ["netctl daemon: served network ls -q: exit 0"]
    finally:
        stop(proc)


def test_a_served_command_returns_its_own_warnings_to_the_client_and_no_one_elses(monkeypatch):
    """In-process, a library warning (e.g. "... stays in etcd until `netctl gc`") reaches the user's
    stderr; through the daemon it must too, and what the agent's threads log meanwhile must not."""
    import logging
    import threading

    import netctl.cli
    from netctl.service import RequestServer

    def fake_cli(argv, obj=None):
        logging.getLogger("libnetwork.controller").warning("endpoint e1 stays in etcd until `netctl gc` removes it")
        other = threading.Thread(target=lambda: logging.getLogger("netctl.agent").warning("agent noise"))
        other.start()
        other.join()
        raise SystemExit(0)

    monkeypatch.setattr(netctl.cli, "main", fake_cli)
    handlers = list(logging.getLogger().handlers)
    code, out, err = RequestServer("/r", listener=None)._captured(["sandbox", "rm", "s1"])
    assert code == 0 and out == ""
    assert err == "endpoint e1 stays in etcd until `netctl gc` removes it\n"
    assert logging.getLogger().handlers == handlers  # the request's handler is gone again
