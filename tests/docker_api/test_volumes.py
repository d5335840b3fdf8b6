"""Named local volumes through the Docker API (docker CLI, docker-py) and `netctl run -v NAME:/path`."""

from __future__ import annotations

import json
import os

import pytest

ROOT = "/run/netctl"


@pytest.mark.parametrize("api_version", [None, "1.41"])
def test_volume_create_ls_inspect_rm_with_the_docker_cli(dhost, api_version):
    kw = {"api_version": api_version}
    assert dhost.docker("volume", "create", "--label", "team=blue", "v1", **kw).stdout.strip() == "v1"
    generated = dhost.docker("volume", "create", **kw).stdout.strip()
    assert len(generated) == 64
    # creating an existing volume again is not an error (as Docker)
    assert dhost.docker("volume", "create", "v1", **kw).stdout.strip() == "v1"
    names = dhost.docker("volume", "ls", "--format", "{{.Driver}} {{.Name}}", **kw).stdout.splitlines()
    assert sorted(names) == sorted(["local v1", f"local {generated}"])
    assert dhost.docker("volume", "ls", "-q", "--filter", "label=team=blue", **kw).stdout.split() == ["v1"]
    assert dhost.docker("volume", "ls", "-q", "--filter", "dangling=true", **kw).stdout.split() \
        == sorted(["v1", generated])
    view = dhost.json("volume", "inspect", "v1", **kw)[0]
    assert view["Mountpoint"] == f"{ROOT}/volumes/v1/_data" and view["Labels"] == {"team": "blue"}
    assert view["Driver"] == "local" and view["Scope"] == "local"
    assert os.path.isdir(dhost.path(view["Mountpoint"]))
    assert dhost.docker("volume", "inspect", "-f", "{{.Name}} {{index .Labels \"team\"}}", "v1").stdout.strip() \
        == "v1 blue"
    assert dhost.docker("volume", "rm", "v1", generated, **kw).stdout.split() == ["v1", generated]
    assert not os.path.exists(dhost.path(f"{ROOT}/volumes/v1"))
    assert dhost.docker("volume", "ls", "-q").stdout.strip() == ""


def test_volume_errors(dhost):
    missing = dhost.docker("volume", "rm", "nothere", check=False)
    assert missing.returncode == 1 and "no such volume" in missing.stderr
    dhost.docker("volume", "rm", "-f", "nothere")  # -f: a missing volume is not an error
    driver = dhost.docker("volume", "create", "-d", "nfs", "v", check=False)
    assert driver.returncode == 1 and "volume driver 'nfs' is not supported" in driver.stderr
    option = dhost.docker("volume", "create", "-o", "type=tmpfs", "v", check=False)
    assert option.returncode == 1 and "volume option 'type' is not supported" in option.stderr
    name = dhost.docker("volume", "create", "bad/name", check=False)
    assert name.returncode != 0
    dhost.docker("volume", "create", "--label", "a=1", "lab")
    relabel = dhost.docker("volume", "create", "--label", "a=2", "lab", check=False)
    assert relabel.returncode == 1 and "already exists" in relabel.stderr
    assert dhost.docker("volume", "ls", "-q").stdout.split() == ["lab"]


def test_netctl_run_mounts_a_named_volume_and_rm_refuses_while_used(dhost):
    dhost.docker("volume", "create", "data")
    dhost.netctl("run", "--name", "writer", "-v", "data:/data", "busybox", "sh", "-c", "echo hello > /data/f")
    with open(dhost.path(f"{ROOT}/volumes/data/_data/f")) as f:
        assert f.read() == "hello\n"
    # a second container sees it; a volume named only by -v is made on the spot (as Docker)
    out = dhost.netctl("run", "--rm", "-v", "data:/in:ro", "-v", "fresh:/out", "busybox",
                       "sh", "-c", "cat /in/f; touch /out/x; touch /in/y 2>/dev/null || echo read-only").stdout
    assert out.split() == ["hello", "read-only"]
    assert "fresh" in dhost.docker("volume", "ls", "-q").stdout.split()
    busy = dhost.docker("volume", "rm", "data", check=False)
    assert busy.returncode == 1 and "volume is in use" in busy.stderr
    busy = dhost.docker("volume", "rm", "-f", "data", check=False)  # in use: not even with -f (as Docker)
    assert busy.returncode == 1 and "volume is in use" in busy.stderr
    mount = json.loads(dhost.docker("inspect", "writer").stdout)[0]["Mounts"][0]
    assert (mount["Type"], mount["Source"], mount["Destination"]) == ("volume", f"{ROOT}/volumes/data/_data", "/data")
    dhost.netctl("rm", "writer")
    # prune: API 1.42+ removes anonymous volumes only unless --all
    assert dhost.docker("volume", "prune", "-f").stdout.count("data") == 0
    pruned = dhost.docker("volume", "prune", "-f", "--all").stdout
    assert "data" in pruned and "fresh" in pruned
    assert dhost.docker("volume", "ls", "-q").stdout.strip() == ""
    dhost.doctor_clean()


def test_docker_py_volumes(dhost):
    import docker

    client = dhost.client()
    try:
        volume = client.volumes.create("pyvol", labels={"k": "v"})
        assert volume.attrs["Mountpoint"] == f"{ROOT}/volumes/pyvol/_data"
        assert [v.name for v in client.volumes.list(filters={"label": "k=v"})] == ["pyvol"]
        assert client.volumes.get("pyvol").attrs["Labels"] == {"k": "v"}
        with pytest.raises(docker.errors.NotFound):
            client.volumes.get("ghost")
        volume.remove()
        assert client.volumes.list() == []
    finally:
        client.close()
