"""A container create that fails leaves nothing it made: a named volume its -v would have made is not
left behind when the name is taken, the image unknown or a later check refuses (dockerd reserves the
name and finds the image before it makes any volume)."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(300)]


def _volumes(dhost) -> list[str]:
    return dhost.docker("volume", "ls", "-q").stdout.split()


def test_a_failed_create_leaves_no_volume_it_made(dhost):
    dhost.docker("create", "--name", "taken", "busybox", "true")
    dhost.docker("volume", "create", "kept")
    before = _volumes(dhost)
    failures = [
        ("--name", "taken", "-v", "fresh1:/data", "busybox", "true"),  # 409: name in use
        ("-v", "fresh2:/data", "nosuchimage:1", "true"),  # 404: no image
        ("-v", "fresh3:/data", "--add-host", "bad host:1.2.3.4", "busybox", "true"),  # 400
        ("-v", "fresh4:/data", "--network", "nosuchnet", "busybox", "true"),  # 404: no network
        ("-v", "kept:/data", "--name", "taken", "busybox", "true"),  # an existing volume stays
    ]
    for args in failures:
        result = dhost.docker("create", "--pull", "never", *args, check=False)
        assert result.returncode != 0, (args, result.stdout)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert _volumes(dhost) == before
    dhost.docker("rm", "taken")
    dhost.docker("volume", "rm", "kept")


def test_an_unknown_stop_signal_is_refused_at_create(dhost):
    """It was accepted and then made every `docker stop` of the container fail."""
    result = dhost.docker("run", "-d", "--name", "sig", "--stop-signal", "NOPE", "busybox", "sleep", "600",
                          check=False)  # fmt: skip
    assert result.returncode != 0 and "'NOPE' is unknown" in result.stderr, result.stderr
    assert dhost.docker("ps", "-aq").stdout.strip() == ""
    dhost.docker("run", "-d", "--name", "sig", "--stop-signal", "usr1", "busybox", "sleep", "600")
    dhost.docker("stop", "-t", "1", "sig")  # USR1 (PID 1 ignores it), then KILL
    assert dhost.docker("inspect", "-f", "{{.State.ExitCode}}", "sig").stdout.strip() == "137"
    result = dhost.docker("kill", "-s", "NOPE", "sig", check=False)
    assert result.returncode != 0 and "invalid signal: NOPE" in result.stderr, result.stderr
    dhost.docker("rm", "sig")
