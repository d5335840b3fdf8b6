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


def test_a_pause_does_not_fail_the_healthcheck(dhost):
    """Probes are not started while paused, and one the pause froze half-way (its timeout passing
    while frozen) is not judged: the container stays healthy (dockerd's behaviour)."""
    d = dhost.docker
    d("run", "-d", "--name", "h", "--health-cmd", "sleep 0.3", "--health-interval", "50ms", "--health-retries", "1",
      "--health-timeout", "1s", "busybox", "sleep", "600")  # fmt: skip
    status = lambda: d("inspect", "-f", "{{.State.Health.Status}}", "h").stdout.strip()  # noqa: E731
    deadline = time.monotonic() + 15
    while status() != "healthy":
        assert time.monotonic() < deadline, status()
        time.sleep(0.1)
    for _ in range(3):  # a probe is running during most of each 0.35 s cycle
        d("pause", "h")
        assert "(Paused)" in d("ps", "--filter", "name=h", "--format", "{{.Status}}").stdout
        time.sleep(1.5)  # longer than the probe's timeout
        d("unpause", "h")
        time.sleep(0.8)  # the frozen probe ends, and another runs
        health = dhost.json("inspect", "h")[0]["State"]["Health"]  # its Log: the last five probes
        assert health["Status"] == "healthy" and all(p["ExitCode"] == 0 for p in health["Log"]), health["Log"]
    d("rm", "-f", "h")
    dhost.assert_no_traceback()
