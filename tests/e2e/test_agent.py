"""The host agent as a user meets it: started on first use, replaced by one started by hand, guarded
by peer credentials, and a client that outlives an agent killed under it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from e2e.conftest import command_pid

pytestmark = pytest.mark.kernel

ROOT = "/run/netctl"
WAIT_S = 20.0  # an agent starting on a loaded 2-CPU machine imports for a few hundred ms


def agent_log(lab) -> str:
    return lab.host.run("cat", f"{ROOT}/agent.log", check=False).stdout


def wait_for(what: str, condition, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def agent_answers(lab) -> bool:
    probe = f"import socket; s = socket.socket(socket.AF_UNIX); s.connect('{ROOT}/netctl.sock')"
    return lab.host.py(probe, check=False).returncode == 0


def agent_pid(lab) -> int:
    return int(lab.host.run("cat", f"{ROOT}/daemon.pid").stdout.split()[0])


def test_the_first_command_runs_in_process_and_starts_the_agent_for_the_next(lab):
    assert not agent_answers(lab)
    lab.network("first", "--subnet", "10.63.0.0/24")  # in-process: no agent yet
    wait_for("the agent started on first use", lambda: agent_answers(lab))
    assert lab.host.run("cat", f"{ROOT}/daemon.pid").stdout.split()[1:] == ["auto"]
    listing = lab.netctl("network", "ls", "-q").stdout
    assert "served network ls -q: exit 0" in agent_log(lab)
    assert listing == lab.netctl("network", "ls", "-q", env={"NETCTL_NO_DAEMON": "1"}).stdout
    # One agent however many commands raced to start it.
    procs = [lab.host.popen(sys.executable, "-m", "netctl", "daemon", "--auto") for _ in range(3)]
    for proc in procs:
        assert proc.wait(timeout=30) == 0  # the lock is held: each leaves quietly
    assert lab.host.run("pgrep", "-fc", "netctl.*daemon").stdout.strip() == "1"


def test_no_daemon_means_in_process_and_nothing_started(lab):
    lab.netctl("network", "create", "--subnet", "10.64.0.0/24", "quiet", env={"NETCTL_NO_DAEMON": "1"})
    time.sleep(0.5)  # what would be long enough for a spawn to show up; nothing may
    assert not agent_answers(lab)
    assert lab.host.run("pgrep", "-f", "netctl.*daemon", check=False).returncode == 1


def until_listening(proc, limit: int = 20) -> str:
    """The agent's stderr up to its "listening on" line (the services it starts first, the name
    server and the Docker API, say a line or two before); that line, or the last one read."""
    line = ""
    for _ in range(limit):
        line = proc.stderr.readline()
        if not line or "listening on" in line:
            break
    return line


def test_an_agent_started_by_hand_replaces_the_auto_started_one(lab):
    lab.network("one", "--subnet", "10.65.0.0/24")
    wait_for("the agent started on first use", lambda: agent_answers(lab))
    auto = agent_pid(lab)
    proc = lab.host.popen(sys.executable, "-m", "netctl", "daemon", stderr=subprocess.PIPE)
    try:
        assert "replacing the agent started on first use" in proc.stderr.readline()
        assert "listening on" in until_listening(proc)
        assert lab.host.run("cat", f"{ROOT}/daemon.pid").stdout.split()[1:] == []  # no "auto": this one
        assert agent_pid(lab) != auto
        assert lab.host.run("kill", "-0", str(auto), check=False).returncode != 0  # it stopped
        assert lab.inspect("one")["Name"] == "one"
        # A second agent by hand is refused; it does not replace one started by hand.
        second = lab.netctl("daemon", check=False, timeout=20)
        assert (second.returncode, second.stderr.strip()) == (
            4, f"netctl: a netctl daemon already serves {ROOT}/netctl.sock; stop it first")
    finally:
        os.kill(command_pid(proc), signal.SIGTERM)
        assert proc.wait(timeout=15) == 0


def test_only_root_and_the_agents_group_may_use_it(lab):
    host = lab.host
    # A bare gid: a named group would mean writing the machine's /etc/group, which tests never do.
    proc = host.popen(sys.executable, "-m", "netctl", "daemon", "--group", "4711", stderr=subprocess.PIPE)
    try:
        assert "listening on" in until_listening(proc)
        mode = host.run("stat", "-c", "%a %u:%g", f"{ROOT}/netctl.sock").stdout.split()
        assert mode == ["660", "0:4711"]
        host.run("chmod", "711", ROOT)  # let others reach the socket file; its mode still decides
        as_member = ["setpriv", "--reuid", "4711", "--regid", "65534", "--groups", "4711", "--"]
        as_stranger = ["setpriv", "--reuid", "4712", "--regid", "65534", "--clear-groups", "--"]
        member = host.run(*as_member, sys.executable, "-m", "netctl", "network", "ls", "-q", check=False)
        assert (member.returncode, member.stderr) == (0, "")  # served: the agent runs it as root
        stranger = host.run(*as_stranger, sys.executable, "-m", "netctl", "network", "ls", check=False)
        assert stranger.returncode == 77 and stranger.stderr.count("\n") == 1
        assert "permission denied" in stranger.stderr and "--group" in stranger.stderr
        # The file mode is not the only guard: with the socket opened up, the peer check refuses.
        host.run("chmod", "666", f"{ROOT}/netctl.sock")
        refused = host.run(*as_stranger, sys.executable, "-m", "netctl", "network", "ls", check=False)
        assert refused.returncode == 77
        assert refused.stderr == "netctl: permission denied: the netctl agent serves root and the members of its group only\n"
    finally:
        os.kill(command_pid(proc), signal.SIGTERM)
        proc.wait(timeout=15)
    assert "refused a client with uid 4712" in proc.stderr.read()


def test_a_client_whose_agent_is_killed_mid_request_gets_one_line_and_nothing_is_half_made(lab):
    lab.netctl("network", "create", "--subnet", "10.66.0.0/24", "mid", env={"NETCTL_NO_DAEMON": "1"})
    lab.netctl("sandbox", "create", "--name", "s1", env={"NETCTL_NO_DAEMON": "1"})
    log = f"{ROOT}/paused-agent.log"
    agent = lab.host.popen("sh", "-c", f"exec {sys.executable} -m netctl daemon 2>{log}",
                           env={"NETCTL_TEST_PAUSE": "connect-after-join"})
    wait_for("the agent", lambda: "listening on" in lab.host.run("cat", log, check=False).stdout)
    client = lab.host.popen(sys.executable, "-m", "netctl", "network", "connect", "mid", "s1",
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for("the agent to pause mid-connect", lambda: "paused at connect-after-join" in lab.host.run("cat", log).stdout)
    os.kill(command_pid(agent), signal.SIGKILL)
    out, err = client.communicate(timeout=30)
    assert client.returncode == 70 and out == "" and err.count("\n") == 1
    assert "did not answer" in err and "netctl doctor" in err
    # The connect's transaction never committed: no endpoint, no address; the veth it had made is a
    # leftover gc removes (an agent restarted now repairs, it does not guess).
    assert lab.inspect("mid")["Containers"] == {}
    lab.netctl("gc")
    assert lab.netctl("doctor").stdout.strip() == "no problems found"
    lab.connect("mid", "s1")  # and the same request works now


def test_a_command_from_another_network_namespace_is_not_the_agents(lab):
    """`ip netns exec X netctl ...` means namespace X: no agent is started there to serve the host's
    later commands, and a running agent (in the host's namespace) leaves such a command to its caller."""
    lab.host.run("ip", "netns", "add", "elsewhere")
    inside = ["ip", "netns", "exec", "elsewhere", sys.executable, "-m", "netctl"]
    lab.host.run(*inside, "network", "ls")
    time.sleep(0.5)  # what would be long enough for a spawn to show up; nothing may
    assert not agent_answers(lab)
    lab.network("here", "--subnet", "10.67.0.0/24")  # from the host's namespace: starts the agent
    wait_for("the agent started on first use", lambda: agent_answers(lab))
    before = agent_log(lab)
    listing = lab.host.run(*inside, "network", "ls", "-q").stdout
    assert listing.split() == [lab.inspect("here")["Id"][:12]]  # the same store, run by the caller
    assert agent_log(lab)[len(before):].count("served network ls -q") == 0
    assert lab.host.run("pgrep", "-fc", "netctl.*daemon").stdout.strip() == "1"
    lab.host.run("ip", "netns", "del", "elsewhere")


def test_a_relative_root_is_the_callers_and_the_agent_serves_it(lab):
    lab.network("rel", "--subnet", "10.68.0.0/24")
    wait_for("the agent started on first use", lambda: agent_answers(lab))
    before = agent_log(lab)
    relative = lab.host.run("sh", "-c", f"cd /run && {sys.executable} -m netctl --root netctl network ls -q")
    assert relative.stdout.split() == [lab.inspect("rel")["Id"][:12]] and relative.stderr == ""
    assert "served network ls -q: exit 0" in agent_log(lab)[len(before):]
