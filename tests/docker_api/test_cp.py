"""`docker cp` (the Docker API's /containers/{id}/archive): both ways, running and stopped containers, with
the docker CLI and docker-py; a container's symlinks resolve inside it and nothing reaches the host (no
/proc in the copy's view); refusals are one message with Docker's status, nothing written.

Local files live under pytest's tmp_path: the throwaway hosts share the machine's /tmp."""

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


def test_docker_cp_both_ways_running_and_stopped(dhost, tmp_path):
    d, local = dhost.docker, str(tmp_path)
    d("run", "-d", "--name", "box", "busybox", "sleep", "600")
    (tmp_path / "src/sub").mkdir(parents=True)
    (tmp_path / "src/a.txt").write_text("hello\n")
    (tmp_path / "src/sub/b.txt").write_text("deep\n")
    os.chmod(tmp_path / "src/a.txt", 0o640)
    d("cp", f"{local}/src/a.txt", "box:/tmp/")
    assert d("exec", "box", "cat", "/tmp/a.txt").stdout == "hello\n"
    assert d("exec", "box", "stat", "-c", "%a", "/tmp/a.txt").stdout.strip() == "640"
    d("cp", f"{local}/src", "box:/srv")  # a directory, under a new name
    assert d("exec", "box", "cat", "/srv/sub/b.txt").stdout == "deep\n"
    assert d("exec", "box", "stat", "-c", "%a", "/tmp").stdout.strip() == "1777"  # "." left the target alone

    d("exec", "box", "sh", "-c", "mkdir /out && echo made > /out/r.txt")
    d("cp", "box:/out/r.txt", f"{local}/r.txt")
    assert (tmp_path / "r.txt").read_text() == "made\n"
    d("cp", "box:/out/.", f"{local}/outdir")  # a directory's contents
    assert (tmp_path / "outdir/r.txt").read_text() == "made\n"
    d("cp", "box:/etc/hostname", f"{local}/hostname")  # a file the runner bind-mounts
    assert (tmp_path / "hostname").read_text().strip() == d("exec", "box", "hostname").stdout.strip()
    d("cp", "box:/", f"{local}/whole")  # the whole root: the image's files, none of the kernel's
    assert os.path.isfile(tmp_path / "whole/bin/busybox") and (tmp_path / "whole/out/r.txt").exists()
    assert os.listdir(tmp_path / "whole/proc") == [] and os.listdir(tmp_path / "whole/sys") == []

    # Stopped: what it wrote is still there, and what goes in is there at its next start.
    d("stop", "-t", "1", "box")
    d("cp", "box:/out/r.txt", f"{local}/r2.txt")
    assert (tmp_path / "r2.txt").read_text() == "made\n"
    d("cp", f"{local}/src/a.txt", "box:/a.txt")
    d("start", "box")
    assert d("exec", "box", "cat", "/a.txt").stdout == "hello\n"
    d("rm", "-f", "box")
    dhost.doctor_clean()
    dhost.assert_no_traceback()


def test_a_containers_symlinks_resolve_inside_it(dhost, tmp_path):
    d, local = dhost.docker, str(tmp_path)
    d("run", "-d", "--name", "box", "busybox", "sh", "-c",
      "ln -s / /escape; ln -s /etc/passwd /pw; ln -s /proc/1/root /hostroot; sleep 600")  # fmt: skip
    wait_for(lambda: d("exec", "box", "test", "-L", "/hostroot", check=False).returncode == 0, what="the links")
    marker = f"netctl-cp-{uuid.uuid4().hex[:12]}"
    (tmp_path / marker).write_text("inside\n")
    d("cp", f"{local}/{marker}", "box:/escape/")  # /escape is the container's "/", not the host's
    assert d("exec", "box", "cat", f"/{marker}").stdout == "inside\n"
    assert not os.path.exists(f"/{marker}") and not os.path.exists(dhost.path(f"/{marker}"))

    d("cp", "box:/pw", f"{local}/pw")  # a link is copied as a link
    assert os.readlink(tmp_path / "pw") == "/etc/passwd"
    d("cp", "-L", "box:/pw", f"{local}/pw-followed")  # -L: followed in the container (the stat's linkTarget)
    assert (tmp_path / "pw-followed").read_text() == d("exec", "box", "cat", "/etc/passwd").stdout

    # Through /proc a path could leave the container (the copy runs in the host's PID namespace): the
    # copy's view has no /proc, running or stopped.
    for _ in ("running", "stopped"):
        refused = d("cp", "box:/hostroot/etc/hostname", f"{local}/leak", check=False)
        assert refused.returncode != 0 and "Could not find the file" in refused.stderr, refused.stderr
        assert not (tmp_path / "leak").exists()
        d("stop", "-t", "0", "box")
    d("rm", "-f", "box")


def test_docker_py_put_and_get_archive(dhost):
    api = dhost.api_client()
    client = dhost.client()
    try:
        container = client.containers.run("busybox", ["sh", "-c", "ln -s /etc/passwd /tmp/link; sleep 600"],
                                          name="pybox", detach=True)  # fmt: skip
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
        # An absolute entry name lands under the destination; a symlink in the way is replaced, not
        # written through.
        passwd = container.exec_run(["cat", "/etc/passwd"]).output
        assert api.put_archive("pybox", "/tmp", _tar(("/abs.txt", b"abs\n"), ("link", b"replaced\n")))
        assert container.exec_run(["cat", "/tmp/abs.txt", "/tmp/link"]).output == b"abs\nreplaced\n"
        assert container.exec_run(["test", "-L", "/tmp/link"]).exit_code == 1
        assert container.exec_run(["cat", "/etc/passwd"]).output == passwd
        assert container.exec_run(["test", "-e", "/abs.txt"]).exit_code == 1
        container.remove(force=True)
    finally:
        client.close()
        api.close()


def test_refusals_are_one_message_with_dockers_status(dhost, tmp_path):
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
            (lambda: api.put_archive("ro", "/tmp", _tar(("a", b"a"))), 403, "container rootfs is marked read-only"),
            (lambda: api.put_archive("ro", "/tmp", _tar()), 403, "container rootfs is marked read-only"),
            (lambda: api.get_archive("nosuch", "/etc"), 404, "No such container: nosuch"),
            (lambda: api.export("box"), 400, "export (a container's file system as one tar"),
        ]  # fmt: skip
        for call, status, message in cases:
            with pytest.raises(docker.errors.APIError) as caught:
                result = call()
                if isinstance(result, tuple):  # get_archive answers before reading the stream
                    b"".join(result[0])
                elif hasattr(result, "__next__"):  # export's status is checked once its stream is read
                    b"".join(result)
            assert caught.value.status_code == status and message in caught.value.explanation, caught.value
            assert "\n" not in caught.value.explanation.strip()
        assert d("exec", "box", "ls", "/").stdout.split().count("outside") == 0
        assert d("exec", "box", "ls", "/tmp").stdout.strip() == ""
        refused = d("cp", "box:/nonexistent", str(tmp_path / "x"), check=False)
        assert refused.returncode != 0 and "Could not find the file /nonexistent in container box" in refused.stderr
    finally:
        api.close()
    d("rm", "-f", "box", "ro")
    dhost.doctor_clean()
    dhost.assert_no_traceback()
