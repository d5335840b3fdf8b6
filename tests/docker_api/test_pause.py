"""docker pause / unpause through the API: Docker's state, list status and filter, events and 409s."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.kernel


def test_docker_pause_and_unpause(dhost):
    d = dhost.docker
    since = str(int(time.time()) - 1)
    cid = d("run", "-d", "--name", "p", "busybox", "sleep", "600").stdout.strip()
    d("pause", "p")
    assert d("inspect", "-f", "{{.State.Status}} {{.State.Paused}} {{.State.Running}}", "p").stdout.split() == \
        ["paused", "true", "true"]
    assert "(Paused)" in d("ps").stdout
    assert d("ps", "-q", "--filter", "status=paused").stdout.split() == [cid[:12]]
    assert d("ps", "-q", "--filter", "status=running").stdout.split() == []
    for args, message in ((("pause", "p"), "is already paused"), (("exec", "p", "true"), "is paused")):
        refused = d(*args, check=False)
        assert refused.returncode != 0 and message in refused.stderr, refused.stderr

    d("unpause", "p")
    assert d("inspect", "-f", "{{.State.Status}} {{.State.Paused}}", "p").stdout.split() == ["running", "false"]
    refused = d("unpause", "p", check=False)
    assert refused.returncode != 0 and "is not paused" in refused.stderr, refused.stderr
    d("exec", "p", "true")

    d("pause", "p")
    d("stop", "-t", "1", "p")  # thawed after the signal: the KILL after 1 s ends it
    assert d("inspect", "-f", "{{.State.Status}} {{.State.Paused}}", "p").stdout.split() == ["exited", "false"]
    refused = d("pause", "p", check=False)
    assert refused.returncode != 0 and "is not running" in refused.stderr, refused.stderr
    actions = d("events", "--since", since, "--until", str(int(time.time()) + 1), "--filter", "container=p",
                "--format", "{{.Action}}").stdout.split()
    assert [a for a in actions if a in ("pause", "unpause")] == ["pause", "unpause", "pause"], actions
    d("rm", "p")
    dhost.doctor_clean()
    dhost.assert_no_traceback()
