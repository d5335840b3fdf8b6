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


def test_mount_options_that_change_the_mount_are_refused_by_name(dhost):
    """`--mount` options netctl does not carry out were dropped silently (a volume subpath mounted the
    whole volume)."""
    refused = [
        ("type=volume,src=v1,dst=/d,volume-subpath=sub", "VolumeOptions.Subpath"),
        ("type=volume,src=v1,dst=/d,volume-driver=nfs", "VolumeOptions.DriverConfig"),
        ("type=volume,src=v1,dst=/d,volume-label=a=b", "VolumeOptions.Labels"),
        ("type=bind,src=/tmp,dst=/d,bind-propagation=rshared", "BindOptions.Propagation"),
        ("type=bind,src=/tmp,dst=/d,bind-nonrecursive", "BindOptions.NonRecursive"),
    ]
    for mount, field in refused:
        result = dhost.docker("create", "--mount", mount, "busybox", "true", check=False)
        assert result.returncode != 0 and field in result.stderr, (mount, result.stderr)
    assert dhost.docker("ps", "-aq").stdout.strip() == ""
    assert dhost.docker("volume", "ls", "-q").stdout.strip() == ""
    # log options were accepted and dropped: the log grew past a max-size
    result = dhost.docker("create", "--log-opt", "max-size=1m", "busybox", "true", check=False)
    assert result.returncode != 0 and "LogConfig.Config 'max-size'" in result.stderr, result.stderr
    # every container has a cgroup namespace of its own: the host's one was accepted and not given
    result = dhost.docker("create", "--cgroupns", "host", "busybox", "true", check=False)
    assert result.returncode != 0 and "CgroupnsMode='host'" in result.stderr, result.stderr
    dhost.docker("run", "--rm", "--mount", "type=bind,src=/tmp,dst=/d,readonly,bind-propagation=rprivate",
                 "--mount", "type=volume,src=v2,dst=/v,volume-nocopy", "busybox", "true")  # fmt: skip
    dhost.docker("volume", "rm", "v2")
