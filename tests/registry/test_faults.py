"""Bad input and faults: each one line on stderr, nothing stored, nothing half-visible."""

from __future__ import annotations

import json
import os
import signal
import time

import layouts
import pytest
import tamper
from test_pull import REG, put

pytestmark = pytest.mark.kernel


def fails_cleanly(rhost, *args: str, code: int | None = None, env: dict | None = None) -> str:
    """`netctl ARGS` (quiet) fails with one line; no image, layer or partial layer is left."""
    layers, images = rhost.stored_layers(), rhost.image_ids()
    result = rhost.netctl(*args, check=False, env=env)
    assert result.returncode != 0, result.stdout
    if code is not None:
        assert result.returncode == code, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("netctl: "), result.stderr
    assert rhost.stored_layers() == layers and rhost.image_ids() == images
    assert [e for e in rhost.tmp_entries() if not e.endswith(".lock") and e != "blobs"] == []
    return result.stderr


def test_unknown_tag_and_repository(rhost, registry, tmp_path):
    put(rhost, tmp_path, "known:1", layouts.busybox_layers())
    err = fails_cleanly(rhost, "image", "pull", "-q", f"{REG}/known:2", code=3)
    assert f"{REG}/known:2 not found" in err
    err = fails_cleanly(rhost, "image", "pull", "-q", f"{REG}/nosuch/repo:1", code=3)
    assert "nosuch/repo" in err and "not found" in err
    err = fails_cleanly(rhost, "image", "pull", "-q", "Bad/Name:1", code=2)
    assert "invalid" in err
    run = rhost.netctl("run", "--rm", "--network", "none", f"{REG}/known:3", "true", check=False)
    assert run.returncode == 3 and run.stderr.splitlines()[-1].startswith("netctl: image '127.0.0.1:5000/known:3' not found")
    assert rhost.image_ids() == set() and rhost.netctl("ps", "-aq").stdout == ""


def test_tampered_blob_is_a_digest_mismatch(rhost, registry, tmp_path):
    put(rhost, tmp_path, "tamper:1", layouts.busybox_layers())
    manifest = json.loads(rhost.run("skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{REG}/tamper:1").stdout)
    path = registry.blob_path(manifest["layers"][0]["digest"])
    with open(path, "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    err = fails_cleanly(rhost, "image", "pull", "-q", f"{REG}/tamper:1")
    assert "does not match its digest" in err and "tampered" in err
    assert [n for n in os.listdir(rhost.path("/run/netctl/images/tmp/blobs")) if not n.endswith(".lock")] == []
    # a tampered config too
    config = registry.blob_path(manifest["config"]["digest"])
    with open(config, "r+b") as f:
        data = f.read()
        f.seek(0)
        f.write(data.replace(b"test-amd64", b"evil-amd64"))
    err = fails_cleanly(rhost, "image", "pull", "-q", f"{REG}/tamper:1")
    assert "config" in err and "does not match its digest" in err


def test_schema1_is_refused(rhost, registry, tmp_path):
    put(rhost, tmp_path, "legacy:new", layouts.busybox_layers())
    manifest = json.loads(rhost.run("skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{REG}/legacy:new").stdout)
    tamper.plant_manifest(registry.storage, "legacy", "old", tamper.schema1_manifest("legacy", "old", manifest["layers"][0]["digest"]))
    err = fails_cleanly(rhost, "image", "pull", "-q", f"{REG}/legacy:old", code=2)
    assert "schema 1" in err


def test_oversized_manifest_and_config(rhost, registry, tmp_path):
    put(rhost, tmp_path, "huge:ok", layouts.busybox_layers())
    manifest = json.loads(rhost.run("skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{REG}/huge:ok").stdout)
    big = dict(manifest, annotations={"pad": "x" * (3 << 20)})  # so the registry serves it (it reads up to 4 MiB)
    tamper.plant_manifest(registry.storage, "huge", "manifest", json.dumps(big).encode())
    err = fails_cleanly(rhost, "image", "pull", "-q", f"{REG}/huge:manifest", env={"NETCTL_MAX_MANIFEST_BYTES": str(2 << 20)})
    assert "over netctl's limit" in err and "manifest" in err, registry.log()[-1500:]
    # a config of 9 MB (skopeo will not copy one over 4 MiB; netctl imports and pushes it)
    layer = layouts.busybox_tar()
    import hashlib

    config = {"architecture": "amd64", "os": "linux", "config": {"Labels": {"pad": "y" * (9 << 20)}},
              "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]}}  # fmt: skip
    archive = tmp_path / "bigconfig.tar"
    import io
    import tarfile

    with tarfile.open(archive, "w") as tar:
        for name, data in (("config.json", json.dumps(config).encode()), ("layer.tar", layer),
                           ("manifest.json", json.dumps([{"Config": "config.json", "RepoTags": [f"{REG}/huge:config"],
                                                          "Layers": ["layer.tar"]}]).encode())):  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    os.chmod(tmp_path, 0o755)
    rhost.netctl("image", "import", str(archive))
    rhost.netctl("push", "-q", f"{REG}/huge:config")
    rhost.netctl("image", "rm", f"{REG}/huge:config")
    err = fails_cleanly(rhost, "image", "pull", "-q", f"{REG}/huge:config")
    assert "config" in err and "over netctl's limit" in err


def _hostile(kind: str) -> bytes:
    import io
    import tarfile

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        if kind == "dotdot":
            data = b"owned\n"
            info = tarfile.TarInfo("../../etc/evil")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        elif kind == "device":
            info = tarfile.TarInfo("dev/sda")
            info.type, info.devmajor, info.devminor = tarfile.BLKTYPE, 8, 0
            tar.addfile(info)
        elif kind == "symlink":
            info = tarfile.TarInfo("escape")
            info.type, info.linkname = tarfile.SYMTYPE, "../../../../etc"
            tar.addfile(info)
    return out.getvalue()


@pytest.mark.parametrize("kind", ["dotdot", "device", "symlink"])
def test_hostile_layers_are_refused(rhost, registry, tmp_path, kind):
    put(rhost, tmp_path, f"hostile:{kind}", [layouts.busybox_tar(), _hostile(kind)])
    err = fails_cleanly(rhost, "image", "pull", "-q", f"{REG}/hostile:{kind}")
    assert "refusing" in err


def _wait_for_part(rhost, digest: str, timeout: float = 30) -> str:
    path = rhost.path(f"/run/netctl/images/tmp/blobs/{digest[7:]}.part")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path) and os.path.getsize(path) > 0:
            return path
        time.sleep(0.002)
    raise AssertionError("the pull never started writing the blob")


def slow_loopback(rhost) -> None:
    """Limit the throwaway host's own loopback to ~12 MB/s (tbf), so a pull is caught mid-blob."""
    rhost.run("tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", "100mbit", "burst", "256kb", "latency", "100ms")


def _big_image(rhost, tmp_path, name: str) -> dict:
    put(rhost, tmp_path, name, [layouts.random_layer(48 << 20, seed=5)], compress=False)
    return json.loads(rhost.run("skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{REG}/{name}").stdout)


def test_registry_stopped_mid_pull_then_resumed(rhost, registry, tmp_path):
    manifest = _big_image(rhost, tmp_path, "resume:1")
    digest = manifest["layers"][0]["digest"]
    slow_loopback(rhost)  # ~4 s for the blob: the registry goes away while it streams
    proc = rhost.popen_netctl("image", "pull", f"{REG}/resume:1", stdout=-1, stderr=-1)
    part = _wait_for_part(rhost, digest)
    registry.kill()
    out, err = proc.communicate(timeout=60)
    rhost.run("tc", "qdisc", "del", "dev", "lo", "root")
    assert proc.returncode == 1
    lines = err.splitlines()
    assert sum(1 for line in lines if "Retrying in" in line) == 5  # bounded retries, then one error line
    assert lines[-1].startswith("netctl: downloading blob") and "pull again to continue" in lines[-1]
    kept = os.path.getsize(part)
    assert 0 < kept < manifest["layers"][0]["size"]
    assert rhost.image_ids() == set() and rhost.stored_layers() == set()
    # the registry is back: the next pull continues with a Range request
    registry.start()
    rhost.netctl("image", "pull", "-q", f"{REG}/resume:1")
    assert f'"GET /v2/resume/blobs/{digest} HTTP/1.1" 206' in registry.log()
    (layer,) = rhost.stored_layers()
    assert os.path.getsize(os.path.join(rhost.layers_dir(), layer, "diff/blob5/data.bin")) == 48 << 20


def test_pull_killed_half_way_leaves_nothing_visible(rhost, registry, tmp_path):
    manifest = _big_image(rhost, tmp_path, "killed:1")
    digest = manifest["layers"][0]["digest"]
    slow_loopback(rhost)
    proc = rhost.popen_netctl("image", "pull", f"{REG}/killed:1", stdout=-1, stderr=-1)
    part = _wait_for_part(rhost, digest)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    rhost.run("tc", "qdisc", "del", "dev", "lo", "root")
    assert 0 < os.path.getsize(part) < manifest["layers"][0]["size"]
    assert rhost.image_ids() == set() and rhost.stored_layers() == set()
    assert rhost.netctl("image", "ls", "-q").stdout == ""
    rhost.netctl("image", "pull", "-q", f"{REG}/killed:1")
    assert len(rhost.image_ids()) == 1
    assert [e for e in rhost.tmp_entries() if not e.endswith(".lock") and e != "blobs"] == []
