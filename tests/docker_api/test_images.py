"""Images through the Docker API: images/inspect/tag/rmi/save/load with the docker CLI, docker-py's
image models, and the bad cases (in use, unknown, a broken archive, a client leaving mid-load)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import pytest

ROOT = "/run/netctl"


def _busybox_id(dhost) -> str:
    return dhost.docker("image", "inspect", "-f", "{{.Id}}", "busybox").stdout.strip()


@pytest.mark.parametrize("api_version", [None, "1.41"])
def test_images_inspect_tag_rmi_save_load_with_the_docker_cli(dhost, api_version):
    kw = {"api_version": api_version}
    image_id = _busybox_id(dhost)
    assert image_id.startswith("sha256:") and len(image_id) == 71
    rows = dhost.docker("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}", **kw).stdout.splitlines()
    assert rows == [f"busybox:latest {image_id[7:19]}"]
    view = dhost.json("image", "inspect", "busybox", **kw)[0]
    assert view["RepoTags"] == ["busybox:latest"] and view["Os"] == "linux"
    assert view["RootFS"]["Type"] == "layers" and len(view["RootFS"]["Layers"]) == 1
    assert view["Config"]["Cmd"] == ["sh"] and view["Config"]["Entrypoint"] is None
    dhost.docker("tag", "busybox", "mybox:1", **kw)
    dhost.docker("tag", image_id, "registry.example:5000/team/box", **kw)
    assert dhost.docker("images", "mybox", "--format", "{{.Repository}}:{{.Tag}}", **kw).stdout.split() \
        == ["mybox:1"]
    assert dhost.docker("images", "--filter", "reference=registry.example:5000/*/*", "--format",
                        "{{.Repository}}:{{.Tag}}", **kw).stdout.split() == ["registry.example:5000/team/box:latest"]
    # netctl sees the same tags (one store)
    assert ["mybox", "1"] in [line.split()[:2] for line in dhost.netctl("image", "ls").stdout.splitlines()]
    assert dhost.docker("rmi", "mybox:1", **kw).stdout.split() == ["Untagged:", "mybox:1"]
    dhost.docker("rmi", "registry.example:5000/team/box", **kw)
    dhost.docker("save", "-o", "/run/bb.tar", "busybox", **kw)
    out = dhost.docker("rmi", "busybox", **kw).stdout
    assert "Untagged: busybox:latest" in out and f"Deleted: {image_id}" in out
    assert dhost.docker("images", "-q", **kw).stdout.strip() == ""
    loaded = dhost.docker("load", "-i", "/run/bb.tar", **kw).stdout
    assert loaded.strip() == "Loaded image: busybox:latest"
    assert _busybox_id(dhost) == image_id  # the same content, the same id
    # and it runs
    assert dhost.netctl("run", "--rm", "--network", "none", "busybox", "echo", "ok").stdout.strip() == "ok"


def test_image_errors(dhost):
    missing = dhost.docker("image", "inspect", "nothere", check=False)
    assert missing.returncode == 1 and "No such image: nothere" in missing.stderr
    missing = dhost.docker("rmi", "nothere:1", check=False)
    assert missing.returncode == 1 and "No such image: nothere:1" in missing.stderr
    missing = dhost.docker("tag", "nothere", "x", check=False)
    assert missing.returncode == 1 and "No such image: nothere" in missing.stderr
    bad_tag = dhost.docker("tag", "busybox", "box:-bad!", check=False)
    assert bad_tag.returncode != 0
    # used by a container: refused; with -f while it runs: refused too (as Docker)
    dhost.netctl("run", "-d", "--name", "user", "--network", "none", "busybox", "sleep", "600")
    used = dhost.docker("rmi", "busybox", check=False)
    assert used.returncode == 1 and "conflict" in used.stderr and "user" in used.stderr
    forced = dhost.docker("rmi", "-f", "busybox", check=False)
    assert forced.returncode == 1 and "cannot be forced" in forced.stderr
    dhost.netctl("rm", "-f", "user")
    # a broken archive: 400 with the importer's line, nothing imported, nothing left in tmp
    dhost.run("sh", "-c", "head -c 5000 /dev/urandom > /run/junk.tar")
    junk = dhost.docker("load", "-i", "/run/junk.tar", check=False)
    assert junk.returncode == 1 and junk.stderr.count("\n") == 1
    assert dhost.docker("images", "-q").stdout.split() == [_busybox_id(dhost)[7:19]]
    assert os.listdir(dhost.path(f"{ROOT}/images/tmp")) == []
    pull = dhost.docker("pull", "--platform", "windows/amd64", "127.0.0.1:1/nothing", check=False)
    assert pull.returncode == 1 and pull.stderr.strip()
    dhost.doctor_clean()


def test_a_client_dropping_mid_load_leaves_nothing(dhost):
    dhost.docker("save", "-o", "/run/bb.tar", "busybox")
    dhost.docker("rmi", "busybox")
    with open(dhost.path("/run/bb.tar"), "rb") as f:
        archive = f.read()
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(dhost.outside_socket)
        conn.sendall(b"POST /v1.47/images/load HTTP/1.1\r\nHost: d\r\nContent-Type: application/x-tar\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(archive) + archive[: len(archive) // 2])
    # the agent notices, deletes its temporary file, imports nothing (bounded wait)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.listdir(dhost.path(f"{ROOT}/images/tmp")):
        time.sleep(0.05)
    assert os.listdir(dhost.path(f"{ROOT}/images/tmp")) == []
    assert dhost.docker("images", "-q").stdout.strip() == ""
    assert dhost.netctl("image", "ls", "-q", check=False).stdout.strip() == ""
    # the same upload in full works
    assert "Loaded image: busybox:latest" in dhost.docker("load", "-i", "/run/bb.tar").stdout


def test_docker_py_images(dhost):
    import docker

    client = dhost.client()
    try:
        image = client.images.get("busybox")
        assert image.tags == ["busybox:latest"] and image.id.startswith("sha256:")
        assert image.tag("pybox", "2") is True
        assert sorted(client.images.get("pybox:2").tags) == ["busybox:latest", "pybox:2"]
        assert [i.id for i in client.images.list(name="pybox")] == [image.id]
        data = b"".join(image.save(named=True))
        client.images.remove("pybox:2")
        client.images.remove("busybox")
        with pytest.raises(docker.errors.ImageNotFound):
            client.images.get("busybox")
        loaded = client.images.load(data)
        assert [i.id for i in loaded] == [image.id]
        low = dhost.api_client()
        assert low.inspect_image("busybox")["Id"] == image.id
        assert json.loads(json.dumps(low.history("busybox")))[0]["Id"] == image.id
        assert low.prune_images() == {"ImagesDeleted": None, "SpaceReclaimed": 0}
        low.close()
    finally:
        client.close()


def test_pull_from_a_registry_in_the_host(dhost):
    """docker pull / docker-py pull through the API from a real docker-registry inside the host
    (netctl push put busybox there): Docker's progress lines, the same image id, events."""
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "registry"))
    from registry_server import REGISTRY, Registry

    if not os.path.exists(REGISTRY):
        pytest.skip("docker-registry is not installed (sudo bash scripts/bootstrap.sh)")
    image_id = _busybox_id(dhost)
    with Registry(dhost.host, port=5000) as registry:
        registry.start()
        dhost.netctl("push", "-q", "busybox", "127.0.0.1:5000/bb:1")
        dhost.docker("rmi", "busybox")
        events = dhost.docker_popen("events", "--format", "{{.Type}} {{.Action}} {{.Actor.ID}}",
                                    "--filter", "type=image", stdout=subprocess.PIPE)
        time.sleep(0.5)
        out = dhost.docker("pull", "127.0.0.1:5000/bb:1").stdout
        lines = out.splitlines()
        assert lines[0] == "1: Pulling from bb"
        assert any(line.endswith(": Pull complete") for line in lines)
        assert lines[-3].startswith("Digest: sha256:")
        assert lines[-2:] == ["Status: Downloaded newer image for 127.0.0.1:5000/bb:1", "127.0.0.1:5000/bb:1"]
        assert dhost.docker("image", "inspect", "-f", "{{.Id}}", "127.0.0.1:5000/bb:1").stdout.strip() == image_id
        again = dhost.docker("pull", "127.0.0.1:5000/bb:1").stdout
        assert "Status: Image is up to date for 127.0.0.1:5000/bb:1" in again
        missing = dhost.docker("pull", "127.0.0.1:5000/nothere:1", check=False)
        assert missing.returncode == 1 and missing.stderr.strip() and "Traceback" not in missing.stderr
        client = dhost.client()
        try:
            pulled = client.images.pull("127.0.0.1:5000/bb", tag="1")
            assert pulled.id == image_id
        finally:
            client.close()
        assert events.stdout is not None
        first = events.stdout.readline().split()
        assert first == ["image", "pull", "127.0.0.1:5000/bb:1"]
        events.terminate()
        events.wait(timeout=10)


def test_image_prune_and_events(dhost):
    start = int(time.time()) - 1
    image_id = _busybox_id(dhost)
    dhost.docker("tag", "busybox", "keep:1")
    assert dhost.docker("images", "-q", "--filter", "dangling=true").stdout.strip() == ""
    assert dhost.docker("image", "prune", "-f").stdout.strip().endswith("Total reclaimed space: 0B")
    dhost.netctl("run", "-d", "--name", "holder", "--network", "none", "busybox", "sleep", "600")
    assert dhost.docker("image", "prune", "-a", "-f").stdout.count("Deleted") == 0  # in use: kept
    dhost.netctl("rm", "-f", "holder")
    pruned = dhost.docker("image", "prune", "-a", "-f").stdout
    assert "untagged: busybox:latest" in pruned and "untagged: keep:1" in pruned and f"deleted: {image_id}" in pruned
    assert dhost.docker("images", "-q").stdout.strip() == ""
    replay = dhost.docker("events", "--since", str(start), "--until", str(int(time.time()) + 1), "--filter",
                          "type=image", "--format", "{{.Action}} {{.Actor.Attributes.name}}", timeout=30).stdout
    assert replay.splitlines() == ["tag keep:1", "untag busybox:latest", "untag keep:1", f"delete {image_id}"]
