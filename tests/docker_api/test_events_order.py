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
    return out.split()


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
