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
