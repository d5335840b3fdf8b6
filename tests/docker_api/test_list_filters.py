"""`docker ps --filter` keys beyond the common ones, with the docker CLI: before, since, volume, publish,
expose, is-task (each was accepted and ignored: every container listed)."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(300)]


def _ps(dhost, *filters: str, **kw) -> list[str]:
    args = [a for f in filters for a in ("--filter", f)]
    return sorted(dhost.docker("ps", "-a", "--format", "{{.Names}}", *args, **kw).stdout.split())


@pytest.mark.parametrize("api_version", [None, "1.41"])
def test_ps_before_since_volume_publish_expose_is_task(dhost, api_version):
    dhost.docker("create", "--name", "first", "-v", "vol1:/data", "busybox", "true")
    dhost.docker("run", "-d", "--name", "second", "-p", "18081:80", "busybox", "sleep", "600")
    dhost.docker("create", "--name", "third", "--expose", "7000/udp", "-v", "/tmp:/hosttmp", "busybox", "true")
    v = {"api_version": api_version}
    assert _ps(dhost, **v) == ["first", "second", "third"]
    assert _ps(dhost, "before=third", **v) == ["first", "second"]
    assert _ps(dhost, "since=first", **v) == ["second", "third"]
    assert _ps(dhost, "since=first", "before=third", **v) == ["second"]
    assert _ps(dhost, "volume=vol1", **v) == ["first"]
    assert _ps(dhost, "volume=/hosttmp", **v) == ["third"]
    assert _ps(dhost, "publish=80", **v) == ["second"]
    assert _ps(dhost, "publish=79-81/tcp", **v) == ["second"]
    assert _ps(dhost, "publish=80/udp", **v) == []
    assert _ps(dhost, "expose=7000/udp", **v) == ["third"]
    assert _ps(dhost, "expose=80", **v) == ["second"]
    assert _ps(dhost, "is-task=true", **v) == []
    assert _ps(dhost, "is-task=false", **v) == ["first", "second", "third"]
    result = dhost.docker("ps", "--filter", "before=nosuch", check=False, **v)
    assert result.returncode != 0 and "No such container: nosuch" in result.stderr, result.stderr
    result = dhost.docker("ps", "--filter", "publish=eighty", check=False, **v)
    assert result.returncode != 0 and "eighty" in result.stderr, result.stderr
    dhost.docker("rm", "-f", "first", "second", "third")
    dhost.docker("volume", "rm", "vol1")


def test_container_prune_filters(dhost):
    dhost.docker("create", "--name", "p1", "--label", "keep=no", "busybox", "true")
    dhost.docker("create", "--name", "p2", "--label", "keep=yes", "busybox", "true")
    dhost.docker("create", "--name", "p3", "busybox", "true")
    dhost.docker("container", "prune", "-f", "--filter", "until=2000-01-01T00:00:00Z")  # older ones only: none
    assert _ps(dhost) == ["p1", "p2", "p3"]
    dhost.docker("container", "prune", "-f", "--filter", "label=keep=no")
    assert _ps(dhost) == ["p2", "p3"]
    dhost.docker("container", "prune", "-f", "--filter", "label!=keep")
    assert _ps(dhost) == ["p2"]
    dhost.docker("container", "prune", "-f", "--filter", f"until={4102444800}")  # before 2100
    assert _ps(dhost) == []
