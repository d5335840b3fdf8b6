"""Pulling from a real docker-registry (distribution 2.8) inside a throwaway host, images put there
by skopeo from OCI layouts the tests build. Digests are compared with what skopeo reports."""

from __future__ import annotations

import hashlib
import sys
import json
import os

import layouts
import pytest

pytestmark = pytest.mark.kernel
REG = "127.0.0.1:5000"


def skopeo_digests(rhost, ref: str, *flags: str) -> tuple[str, str]:
    """(manifest digest of the top manifest, config digest of this host's platform) as skopeo sees them."""
    raw = rhost.run("skopeo", "inspect", "--raw", "--tls-verify=false", *flags, f"docker://{ref}").stdout
    top = "sha256:" + hashlib.sha256(raw.encode()).hexdigest()
    config = rhost.run("skopeo", "inspect", "--config", "--raw", "--tls-verify=false", *flags, f"docker://{ref}").stdout
    return top, "sha256:" + hashlib.sha256(config.encode()).hexdigest()


def put(rhost, tmp_path, name: str, layers: list[bytes], *, archs=("amd64",), compress=True, extra: tuple = (),
        registry: str = REG, marker: str = "test") -> None:  # fmt: skip
    src = layouts.write_layout(str(tmp_path / name.replace("/", "_").replace(":", "_")), layers, archs=archs,
                               compress=compress, marker=marker)  # fmt: skip
    flags = ["--all"] if len(archs) > 1 else []
    rhost.run("skopeo", "copy", *flags, "--dest-tls-verify=false", *extra, src, f"docker://{registry}/{name}", timeout=180)


def test_pull_multiarch_index_whiteouts_and_run(rhost, registry, tmp_path):
    put(rhost, tmp_path, "bb:1", layouts.busybox_layers(), archs=("amd64", "arm64"))
    top, config = skopeo_digests(rhost, f"{REG}/bb:1")
    out = rhost.netctl("image", "pull", f"{REG}/bb:1").stdout
    assert f"Digest: {top}" in out
    image = json.loads(rhost.netctl("image", "inspect", f"{REG}/bb:1").stdout)[0]
    assert image["Id"] == config  # the config of this host's platform, byte for byte
    assert image["Architecture"] == "amd64" and len(image["RootFS"]["Layers"]) == 3
    # by digest too, and the digest reference resolves locally
    rhost.netctl("image", "pull", "-q", f"{REG}/bb@{top}")
    assert json.loads(rhost.netctl("image", "inspect", f"{REG}/bb@{top}").stdout)[0]["Id"] == config
    # whiteouts and the opaque directory took effect; the image's env is there
    run = rhost.netctl("run", "--rm", "--network", "none", f"{REG}/bb:1", "sh", "-c",
                       "ls /data; echo --; ls /opaque; echo --; cat /etc/release; echo $MARKER")  # fmt: skip
    assert run.stdout.split("\n") == ["keep", "--", "new", "--", "netctl-test v1", "test-amd64", ""]


def test_run_pulls_missing_image_and_pings_gateway(rhost, registry, tmp_path):
    put(rhost, tmp_path, "bb:2", layouts.busybox_layers("v2"))
    rhost.netctl("network", "create", "--subnet", "10.89.0.0/24", "net")
    run = rhost.netctl("run", "--rm", "--network", "net", "localhost:5000/bb:2", "ping", "-c1", "10.89.0.1")
    assert "1 packets received" in run.stdout
    assert "Unable to find image 'localhost:5000/bb:2' locally" in run.stderr
    # present now: no second pull (no manifest GET in the log), and --pull never does not pull at all
    before = registry.log().count("GET /v2/bb/manifests/2")
    rhost.netctl("run", "--rm", "--network", "none", "localhost:5000/bb:2", "true")
    assert registry.log().count("GET /v2/bb/manifests/2") == before
    missing = rhost.netctl("run", "--rm", "--pull", "never", "--network", "none", "localhost:5000/bb:9", "true", check=False)
    assert missing.returncode == 3 and "not found" in missing.stderr
    assert "GET /v2/bb/manifests/9" not in registry.log()
    # --pull always asks the registry even though the image is present
    rhost.netctl("run", "--rm", "--pull", "always", "--network", "none", "localhost:5000/bb:2", "true")
    assert registry.log().count("GET /v2/bb/manifests/2") == before + 1


def test_platform_selection(rhost, registry, tmp_path):
    put(rhost, tmp_path, "multi:1", layouts.busybox_layers(), archs=("amd64", "arm64"))
    arm = rhost.netctl("image", "pull", "--platform", "linux/arm64", f"{REG}/multi:1")
    image = json.loads(rhost.netctl("image", "inspect", f"{REG}/multi:1").stdout)[0]
    assert image["Architecture"] == "arm64" and "Digest:" in arm.stdout
    layers = rhost.stored_layers()
    bad = rhost.netctl("image", "pull", "-q", "--platform", "linux/s390x", f"{REG}/multi:1", check=False)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and bad.stdout == ""
    assert "no image for linux/s390x; it has linux/amd64, linux/arm64" in bad.stderr
    assert rhost.stored_layers() == layers
    # a single-platform image is not an arm64 image because --platform says so
    put(rhost, tmp_path, "single:1", layouts.busybox_layers())
    wrong = rhost.netctl("image", "pull", "-q", "--platform", "linux/arm64", f"{REG}/single:1", check=False)
    assert wrong.returncode == 2 and "is an image for linux/amd64 only, not linux/arm64" in wrong.stderr
    assert wrong.stderr.count("\n") == 1


def test_shared_layers_are_not_fetched_again(rhost, registry, tmp_path):
    base = layouts.busybox_layers()
    put(rhost, tmp_path, "app:1", base)
    put(rhost, tmp_path, "app:2", base[:2] + [layouts.random_layer(4096, seed=7)])
    rhost.netctl("image", "pull", f"{REG}/app:1")
    first = registry.blob_gets()
    assert len(first) == 4  # config + 3 layers
    pulled = rhost.netctl("image", "pull", f"{REG}/app:2")
    second = registry.blob_gets()[len(first):]
    assert len(second) == 2, second  # its config and the one new layer; the two shared layers not fetched
    assert pulled.stderr.count("Already exists") == 2
    # everything present: only the manifest is asked for
    again = rhost.netctl("image", "pull", f"{REG}/app:2")
    assert registry.blob_gets()[len(first) + 2:] == [] and "Image is up to date" in again.stdout


def test_zstd_layers(rhost, registry, tmp_path):
    put(rhost, tmp_path, "zst:1", layouts.busybox_layers("z"), extra=("--dest-compress-format", "zstd"))
    manifest = json.loads(rhost.run("skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{REG}/zst:1").stdout)
    assert any("zstd" in layer["mediaType"] for layer in manifest["layers"]), manifest
    _, config = skopeo_digests(rhost, f"{REG}/zst:1")
    rhost.netctl("image", "pull", f"{REG}/zst:1")
    assert json.loads(rhost.netctl("image", "inspect", f"{REG}/zst:1").stdout)[0]["Id"] == config
    run = rhost.netctl("run", "--rm", "--network", "none", f"{REG}/zst:1", "cat", "/etc/release")
    assert run.stdout == "netctl-test z\n"


def test_progress_lines_and_quiet(rhost, registry, tmp_path):
    put(rhost, tmp_path, "quiet:1", layouts.busybox_layers())
    quiet = rhost.netctl("pull", "-q", f"{REG}/quiet:1")
    assert quiet.stderr == "" and quiet.stdout == f"{REG}/quiet:1\n"
    rhost.netctl("image", "rm", f"{REG}/quiet:1")
    loud = rhost.netctl("pull", f"{REG}/quiet:1")
    lines = loud.stderr.splitlines()
    assert sum(1 for line in lines if line.endswith(": Pull complete")) == 3
    assert len(lines) < 30  # one line per event, not per chunk


def test_concurrent_pulls_fetch_each_blob_once(rhost, registry, tmp_path):
    layers = [layouts.random_layer(6 << 20, seed=s) for s in (1, 2, 3)]
    put(rhost, tmp_path, "conc:1", layers, compress=False)
    procs = [rhost.popen_netctl("image", "pull", "-q", f"{REG}/conc:1", stdout=-1, stderr=-1) for _ in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    gets = registry.blob_gets("conc")
    manifest = json.loads(rhost.run("skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{REG}/conc:1").stdout)
    for layer in manifest["layers"]:
        assert gets.count(layer["digest"]) == 1, gets
    assert len(rhost.image_ids()) == 1 and len(rhost.stored_layers()) == 3
    assert [e for e in rhost.tmp_entries() if not e.endswith(".lock") and e != "blobs"] == []


def test_save_docker_archive_and_oci_layout(rhost, registry, tmp_path):
    put(rhost, tmp_path, "sv:1", layouts.busybox_layers())
    rhost.netctl("image", "pull", f"{REG}/sv:1")
    image_id = json.loads(rhost.netctl("image", "inspect", f"{REG}/sv:1").stdout)[0]["Id"]
    rhost.netctl("image", "save", "-o", "/run/sv.tar", f"{REG}/sv:1")
    rhost.netctl("image", "save", "--format", "oci-dir", "-o", "/run/sv-oci", f"{REG}/sv:1")
    rhost.netctl("image", "save", "--format", "oci-archive", "-o", "/run/sv-oci.tar", f"{REG}/sv:1")
    # skopeo, a reader no one here wrote, reads all three and sees the same config
    for src in ("docker-archive:/run/sv.tar", "oci:/run/sv-oci", "oci-archive:/run/sv-oci.tar"):
        config = rhost.run("skopeo", "inspect", "--config", "--raw", src).stdout
        assert "sha256:" + hashlib.sha256(config.encode()).hexdigest() == image_id, src
    # and netctl imports them back as the same image
    rhost.netctl("image", "rm", f"{REG}/sv:1")
    out = rhost.netctl("image", "import", "/run/sv.tar").stdout
    assert out.startswith(image_id)


def test_run_of_a_present_image_imports_no_registry_code(rhost):
    rhost.netctl("image", "build-busybox")
    run = rhost.host.run(sys.executable, "-X", "importtime", "-m", "netctl", "run", "--rm", "--network", "none", "busybox", "true",
                         env=rhost.env)  # fmt: skip
    imported = {line.split("|")[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")}
    assert "runner.fastcli" in imported and "runner.registry.present" in imported
    assert not {m for m in imported if m.split(".")[0] in ("requests", "urllib3", "tqdm", "zstandard", "click")}
    assert not {m for m in imported if m.startswith("runner.registry.") and m != "runner.registry.present"}
