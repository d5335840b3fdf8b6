"""The name server's life with the agent: back after a restart for every existing sandbox; a container
started while no agent runs still starts and resolves its own name (from /etc/hosts); changes made
without the agent (NETCTL_NO_DAEMON=1, a library user) reach it without a poke."""

from __future__ import annotations

import time

import pytest

from dns.conftest import ROOT, wait_for

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(300)]
NO_AGENT = {"NETCTL_NO_DAEMON": "1"}


def test_after_an_agent_restart_every_sandbox_resolves_again(dns_lab):
    for name in ("web", "client"):
        dns_lab.run(name)
    assert dns_lab.addresses("client", "web")
    dns_lab.stop_agent()
    (down,) = dns_lab.stub("client", "web/A")
    assert "error" in down, down  # nothing listens: refused at once, not a stale answer
    started = time.monotonic()
    dns_lab.start_agent()
    wait_for(lambda: dns_lab.addresses("client", "web"), what="names after the restart")
    print(f"resolution back {time.monotonic() - started:.3f} s after the agent's start")


def test_a_container_started_while_no_agent_can_run_starts_resolves_itself_and_the_rest_later(dns_lab):
    """The monitor starts an agent for a container's names when none runs; here none can (a stand-in
    holds the root's agent lock, as a wedged agent would): the container starts all the same (after
    the monitor's bounded wait), resolves its own name from /etc/hosts, and others once an agent runs."""
    import subprocess
    import sys

    dns_lab.run("web")
    dns_lab.stop_agent()
    holder = dns_lab.host.popen(sys.executable, "-c", LOCK_HOLDER, f"{ROOT}/daemon.pid",
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    dns_lab.netctl("run", "-d", "--name", "late", "--network", "net", "busybox", "sleep", "600", env=NO_AGENT)
    assert dns_lab.netctl("exec", "late", "ping", "-c", "1", "-W", "2", "late", env=NO_AGENT).returncode == 0
    (meanwhile,) = dns_lab.stub("late", "web/A")
    assert "error" in meanwhile, meanwhile
    assert holder.stdin is not None
    holder.stdin.close()
    holder.wait(10)
    dns_lab.start_agent()
    wait_for(lambda: dns_lab.addresses("late", "web"), what="late to resolve web once the agent is back")
    assert dns_lab.addresses("web", "late")


LOCK_HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


def test_changes_made_without_the_agent_reach_it(dns_lab):
    dns_lab.run("client")
    # In-process CLI (NETCTL_NO_DAEMON=1): the library's names-changed event pokes the server.
    dns_lab.netctl("sandbox", "create", "--name", "cli-made", env=NO_AGENT)
    dns_lab.netctl("network", "connect", "net", "cli-made", env=NO_AGENT)
    assert dns_lab.addresses("client", "cli-made")  # no wait: connect returned after the server had it
    # A library user subscribes nothing: the store's data_version tells the server (within a second).
    dns_lab.host.py(
        "from libnetwork.controller import Controller\n"
        f"c = Controller({ROOT!r})\n"
        "c.create_sandbox('lib-made')\n"
        "c.connect('net', 'lib-made')\n"
        "c.close()\n"
    )
    started = time.monotonic()
    wait_for(lambda: dns_lab.addresses("client", "lib-made"), what="the library-made sandbox's name")
    wait_for(lambda: dns_lab.addresses("lib-made", "client"), what="names inside the library-made sandbox")
    print(f"a library user's change served after {time.monotonic() - started:.3f} s")


def test_after_the_agent_is_killed_the_next_run_brings_names_back(dns_lab):
    """kill -9 leaves ROOT/dns.sock behind with nobody reading it: the monitor's poke is refused, it
    starts an agent (as a CLI command does on first use), and the new container resolves at once."""
    import signal

    from harness import stop_group

    dns_lab.run("web")
    assert dns_lab.agent is not None
    stop_group(dns_lab.agent, signal.SIGKILL)
    dns_lab.agent = None
    assert dns_lab.host.run("test", "-S", f"{ROOT}/dns.sock", check=False).returncode == 0  # left behind
    dns_lab.run("late")
    assert dns_lab.addresses("late", "web")  # no waiting: run returned after the new agent had it
    assert dns_lab.addresses("web", "late")
