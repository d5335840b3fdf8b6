"""`docker cp` (the Docker API's /containers/{id}/archive): both ways, running and stopped containers, with
the docker CLI and docker-py; a container's symlinks resolve inside it; refusals are one message with
Docker's status, nothing written."""

from __future__ import annotations

import io
import os
import tarfile
import uuid

import pytest

from containers.conftest import wait_for

pytestmark = pytest.mark.kernel


def _tar(*members: tuple[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _members(stream) -> dict[str, bytes]:
    data = b"".join(stream)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else b"") for m in tar.getmembers()}


def test_docker_cp_both_ways_running_and_stopped(dhost):
    d = dhost.docker
    d("run", "-d", "--name", "box", "busybox", "sleep", "600")
    dhost.run("sh", "-c", "rm -rf /tmp/cp && mkdir -p /tmp/cp/src/sub && echo hello > /tmp/cp/src/a.txt && "
                          "echo deep > /tmp/cp/src/sub/b.txt && chmod 640 /tmp/cp/src/a.txt")  # fmt: skip
    d("cp", "/tmp/cp/src/a.txt", "box:/tmp/")
    assert d("exec", "box", "cat", "/tmp/a.txt").stdout == "hello\n"
    assert d("exec", "box", "stat", "-c", "%a", "/tmp/a.txt").stdout.strip() == "640"
    d("cp", "/tmp/cp/src", "box:/srv")  # a directory, under a new name
    assert d("exec", "box", "cat", "/srv/sub/b.txt").stdout == "deep\n"

    d("exec", "box", "sh", "-c", "mkdir /out && echo made > /out/r.txt")
    d("cp", "box:/out/r.txt", "/tmp/cp/r.txt")
    assert dhost.run("cat", "/tmp/cp/r.txt").stdout == "made\n"
    d("cp", "box:/out/.", "/tmp/cp/outdir")  # a directory's contents
    assert dhost.run("cat", "/tmp/cp/outdir/r.txt").stdout == "made\n"
    d("cp", "box:/etc/hostname", "/tmp/cp/hostname")  # a file the runner bind-mounts
    assert dhost.run("cat", "/tmp/cp/hostname").stdout.strip() == d("exec", "box", "hostname").stdout.strip()

    # Stopped: what it wrote is still there, and what goes in is there at its next start.
    d("stop", "-t", "1", "box")
    d("cp", "box:/out/r.txt", "/tmp/cp/r2.txt")
    assert dhost.run("cat", "/tmp/cp/r2.txt").stdout == "made\n"
    d("cp", "/tmp/cp/src/a.txt", "box:/a.txt")
    d("start", "box")
    assert d("exec", "box", "cat", "/a.txt").stdout == "hello\n"
    d("rm", "-f", "box")
    dhost.doctor_clean()
    dhost.assert_no_traceback()


def test_a_containers_symlinks_resolve_inside_it(dhost):
    d = dhost.docker
    d("run", "-d", "--name", "box", "busybox", "sh", "-c", "ln -s / /escape; ln -s /etc/passwd /pw; sleep 600")
    wait_for(lambda: d("exec", "box", "test", "-L", "/pw", check=False).returncode == 0, what="the links")
    marker = f"netctl-cp-{uuid.uuid4().hex[:12]}"
    dhost.run("sh", "-c", f"echo inside > /tmp/{marker}")
    d("cp", f"/tmp/{marker}", "box:/escape/")  # /escape is the container's "/", not the host's
    assert d("exec", "box", "cat", f"/{marker}").stdout == "inside\n"
    assert not os.path.exists(f"/{marker}") and not os.path.exists(dhost.path(f"/{marker}"))

    d("cp", "box:/pw", "/tmp/pw")  # a link is copied as a link
    assert dhost.run("readlink", "/tmp/pw").stdout.strip() == "/etc/passwd"
    d("cp", "-L", "box:/pw", "/tmp/pw-followed")  # -L: followed in the container (the stat's linkTarget)
    assert dhost.run("cat", "/tmp/pw-followed").stdout == d("exec", "box", "cat", "/etc/passwd").stdout
    d("rm", "-f", "box")


def test_docker_py_put_and_get_archive(dhost):
    api = dhost.api_client()
    client = dhost.client()
    try:
        container = client.containers.run("busybox", ["sleep", "600"], name="pybox", detach=True)
        assert container.put_archive("/tmp", _tar(("greeting.txt", b"hi\n"), ("dir/inner.txt", b"in\n")))
        assert container.exec_run(["cat", "/tmp/greeting.txt", "/tmp/dir/inner.txt"]).output == b"hi\nin\n"
        stream, info = container.get_archive("/tmp/dir")
        assert info["name"] == "dir" and info["mode"] & (1 << 31)  # Go's os.ModeDir
        assert _members(stream) == {"dir": b"", "dir/inner.txt": b"in\n"}
        stream, info = api.get_archive("pybox", "/tmp/greeting.txt")
        assert info["size"] == 3 and info["mode"] & 0o777 == 0o644 and not info["linkTarget"]
        assert _members(stream) == {"greeting.txt": b"hi\n"}
        assert api.put_archive("pybox", "/tmp", _tar(("greeting.txt", b"again\n")))  # overwrites a file
        assert container.exec_run(["cat", "/tmp/greeting.txt"]).output == b"again\n"
        container.remove(force=True)
    finally:
        client.close()
        api.close()


def test_refusals_are_one_message_with_dockers_status(dhost):
    import docker

    d = dhost.docker
    d("run", "-d", "--name", "box", "busybox", "sleep", "600")
    d("run", "-d", "--name", "ro", "--read-only", "busybox", "sleep", "600")
    api = dhost.api_client()
    missing = "Could not find the file"
    try:
        cases = [
            (lambda: api.get_archive("box", "/nonexistent"), 404, f"{missing} /nonexistent in container box"),
            (lambda: api.put_archive("box", "/nope", _tar(("a", b"a"))), 404, f"{missing} /nope in container box"),
            (lambda: api.put_archive("box", "/etc/hostname", _tar(("a", b"a"))), 400, "is not a directory"),
            (lambda: api.put_archive("box", "/tmp", _tar(("../../outside", b"x"))), 400, "would land outside /tmp"),
            (lambda: api.put_archive("box", "/tmp", b"this is not a tar archive" * 40), 400, "cannot be read as tar"),
            (lambda: api.put_archive("ro", "/tmp", _tar(("a", b"a"))), 403, "read-only"),
            (lambda: api.get_archive("nosuch", "/etc"), 404, "No such container: nosuch"),
            (lambda: api.pause("box"), 400, "pause (freezing a container) is not supported by netctl"),
        ]  # fmt: skip
        for call, status, message in cases:
            with pytest.raises(docker.errors.APIError) as caught:
                call()
            assert caught.value.status_code == status and message in caught.value.explanation, caught.value
            assert "\n" not in caught.value.explanation.strip()
        assert d("exec", "box", "ls", "/").stdout.split().count("outside") == 0
        assert d("exec", "box", "ls", "/tmp").stdout.strip() == ""
        refused = d("cp", "box:/nonexistent", "/tmp/x", check=False)
        assert refused.returncode != 0 and "Could not find the file /nonexistent in container box" in refused.stderr
    finally:
        api.close()
    d("rm", "-f", "box", "ro")
    dhost.doctor_clean()
    dhost.assert_no_traceback()
