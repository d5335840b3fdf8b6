"""Pushing to a real docker-registry, checked by skopeo (inspect, copy back)."""

from __future__ import annotations

import hashlib
import json

import layouts
import pytest
from test_pull import REG, put

pytestmark = pytest.mark.kernel


def raw_digest(rhost, ref: str) -> str:
    raw = rhost.run("skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}").stdout
    return "sha256:" + hashlib.sha256(raw.encode()).hexdigest()


def config_digest(rhost, ref: str) -> str:
    raw = rhost.run("skopeo", "inspect", "--config", "--raw", "--tls-verify=false", f"docker://{ref}").stdout
    return "sha256:" + hashlib.sha256(raw.encode()).hexdigest()


def test_push_imported_image_and_copy_back(rhost, registry, tmp_path):
    image_id = rhost.netctl("image", "build-busybox").stdout.split()[0]
    rhost.netctl("image", "tag", "busybox", f"{REG}/pushed:1")
    out = rhost.netctl("image", "push", f"{REG}/pushed:1")
    digest = out.stdout.split("digest: ")[1].split()[0]
    assert raw_digest(rhost, f"{REG}/pushed:1") == digest
    assert config_digest(rhost, f"{REG}/pushed:1") == image_id  # the image id survives the trip
    assert "Pushed" in out.stderr
    # skopeo copies it back to a docker archive (config bytes as they are); netctl imports the same image
    rhost.run("skopeo", "copy", "--src-tls-verify=false", f"docker://{REG}/pushed:1", "docker-archive:/run/back.tar:back:1")
    rhost.netctl("image", "rm", "-f", f"{REG}/pushed:1")
    assert rhost.netctl("image", "import", "/run/back.tar").stdout.split()[0] == image_id
    # a second push sends nothing: HEAD finds every blob
    again = rhost.netctl("push", "back:1", f"{REG}/pushed:1")
    assert again.stderr.count("Layer already exists") == 2 and "Pushed" not in again.stderr
    assert digest in again.stdout


def test_push_pulled_image_mounts_across_repositories_and_chunks(rhost, registry, tmp_path):
    put(rhost, tmp_path, "src:1", layouts.busybox_layers())
    rhost.netctl("image", "pull", f"{REG}/src:1")
    image_id = json.loads(rhost.netctl("image", "inspect", f"{REG}/src:1").stdout)[0]["Id"]
    out = rhost.netctl("image", "push", f"{REG}/src:1", f"{REG}/other/copy:7")
    assert out.stderr.count("Mounted from src") == 3, out.stderr
    assert "mount=sha256:" in registry.log()
    assert config_digest(rhost, f"{REG}/other/copy:7") == image_id
    pushed = json.loads(rhost.run("skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{REG}/other/copy:7").stdout)
    source = json.loads(rhost.run("skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{REG}/src:1").stdout)
    assert pushed["layers"] == source["layers"] and pushed["mediaType"] == source["mediaType"]  # same blobs, OCI kept
    # chunked upload: a new repository on a fresh image, 64 KiB chunks
    put(rhost, tmp_path, "big:1", [layouts.random_layer(300_000, seed=3)], compress=False)
    rhost.netctl("image", "pull", f"{REG}/big:1")
    rhost.netctl("image", "tag", f"{REG}/big:1", "127.0.0.1:5000/fresh:1")
    rhost.netctl("image", "push", "--chunk-size", "65536", "127.0.0.1:5000/fresh:1")  # mount first: big's blob...
    assert config_digest(rhost, f"{REG}/fresh:1") == json.loads(rhost.netctl("image", "inspect", f"{REG}/big:1").stdout)[0]["Id"]


def test_push_chunked_upload(rhost, registry, tmp_path):
    import os

    path = tmp_path / "rootfs.tar"
    path.write_bytes(layouts.random_layer(400_000, seed=11))
    os.chmod(tmp_path, 0o755)
    image_id = rhost.netctl("image", "import", str(path), f"{REG}/chunked:1").stdout.split()[0]
    rhost.netctl("push", "--chunk-size", "65536", f"{REG}/chunked:1")
    assert registry.log().count('"PATCH /v2/chunked/blobs/uploads/') >= 6
    assert config_digest(rhost, f"{REG}/chunked:1") == image_id
    rhost.run("skopeo", "copy", "--src-tls-verify=false", f"docker://{REG}/chunked:1", "dir:/run/chunked")
