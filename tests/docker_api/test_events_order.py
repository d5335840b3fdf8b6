"""Container events in dockerd's order for `run --rm` (create, attach, start, die, destroy: destroy was
missing) and `rm -f` of a running container the API started (kill, die, destroy: its exit's watcher
published a second die, before the kill)."""

from __future__ import annotations

import time

import pytest

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(300)]


def _events(dhost, since: str, name: str) -> list[str]:
    until = str(time.time() + 0.5)
    out = dhost.docker("events", "--since", since, "--until", until, "--filter", f"container={name}",
                       "--format", "{{.Action}}").stdout  # fmt: skip
    return out.splitlines()


def test_run_rm_and_rm_force_events(dhost):
    since = str(time.time() - 1)
    dhost.docker("run", "--rm", "--name", "x", "busybox", "true")
    deadline = time.monotonic() + 10
    while "destroy" not in _events(dhost, since, "x") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _events(dhost, since, "x") == ["create", "attach", "start", "die", "destroy"]

    dhost.docker("run", "-d", "--name", "y", "busybox", "sleep", "600")
    dhost.docker("restart", "-t", "0", "y")
    since = str(time.time())
    dhost.docker("rm", "-f", "y")
    time.sleep(0.5)  # a watcher's late die would come now
    assert _events(dhost, since, "y") == ["kill", "die", "destroy"]


def test_detached_exec_events(dhost):
    dhost.docker("run", "-d", "--name", "ex", "busybox", "sleep", "600")
    since = str(time.time())
    dhost.docker("exec", "-d", "ex", "sh", "-c", "sleep 3; exit 3")
    deadline = time.monotonic() + 20
    while not any(a.startswith("exec_die") for a in _events(dhost, since, "ex")) and time.monotonic() < deadline:
        time.sleep(0.5)
    actions = _events(dhost, since, "ex")
    assert [a.split(":")[0] for a in actions] == ["exec_create", "exec_start", "exec_die"], actions
    out = dhost.docker("events", "--since", since, "--until", str(time.time()), "--filter", "event=exec_die",
                       "--format", "{{.Actor.Attributes.exitCode}}").stdout.split()  # fmt: skip
    assert out == ["3"], out
    dhost.docker("rm", "-f", "ex")


def test_network_prune_events_name_the_network_by_id(dhost):
    """They named it by its name, where network rm's (and dockerd's) give its id."""
    network_id = dhost.docker("network", "create", "gone").stdout.strip()
    since = str(time.time())
    dhost.docker("network", "prune", "-f")
    out = dhost.docker("events", "--since", since, "--until", str(time.time() + 0.5), "--filter", "type=network",
                       "--format", "{{.Action}} {{.Actor.ID}} {{.Actor.Attributes.name}} {{.Actor.Attributes.type}}"
                       ).stdout.splitlines()  # fmt: skip
    assert out == [f"destroy {network_id} gone bridge"], out


def test_detach_keys_end_an_exec_stream_and_leave_its_process(dhost):
    """An exec's stream ends at its detach keys (exec create's DetachKeys, ctrl-p,ctrl-q by default) and
    its process goes on, as dockerd does for an API client (the docker CLI also catches them itself);
    the keys went to the process, and DetachKeys was dropped."""
    import socket as socket_module

    dhost.docker("run", "-d", "--name", "host", "busybox", "sleep", "600")
    api = dhost.api_client()
    for keys, sequence in ((None, b"\x10\x11"), ("ctrl-x", b"\x18")):
        exec_id = api.exec_create("host", "sh", stdin=True, tty=True, detach_keys=keys)["Id"]
        sock = api.exec_start(exec_id, socket=True, tty=True)._sock
        sock.settimeout(10)
        sock.sendall(b"echo marker > /tmp/here\n")
        time.sleep(0.5)
        sock.sendall(sequence)
        ended = False
        try:
            for _ in range(1000):
                if not sock.recv(4096):
                    ended = True
                    break
        except socket_module.timeout:
            pass
        sock.close()
        assert ended, f"the stream went on after {sequence!r}"
        assert api.exec_inspect(exec_id)["Running"] is True
        assert dhost.docker("exec", "host", "cat", "/tmp/here").stdout == "marker\n"
        dhost.docker("exec", "host", "rm", "/tmp/here")
    result = dhost.docker("exec", "--detach-keys", "ctrl-", "host", "true", check=False)
    assert result.returncode != 0 and "invalid detach keys" in result.stderr, result.stderr
    api.close()
    dhost.docker("rm", "-f", "host")
