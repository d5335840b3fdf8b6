"""Images from files: rootfs tarballs, `docker save` archives, OCI layouts (dir and tar) with several
layers and whiteouts; content-addressed layers shared between images; unsafe or corrupt archives
refused with one line and nothing left behind."""

from __future__ import annotations

import gzip
import json
import os

import pytest

from containers.conftest import RunnerHost
from containers import archives

pytestmark = pytest.mark.kernel


def layer_dirs(rhost: RunnerHost) -> list[str]:
    path = rhost.path("/run/netctl/images/layers")
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def image_tags(rhost: RunnerHost) -> list[str]:
    return sorted(t for i in json.loads(rhost.netctl("image", "ls", "--format", "json").stdout) for t in i["tags"])


def test_docker_save_and_oci_layout_share_layers_and_honour_whiteouts(rhost, tmp_path):
    layers = archives.layered_layers()
    saved = tmp_path / "saved.tar"
    docker_id = archives.docker_save(str(saved), layers, "layered:docker", WorkingDir="/data")
    oci_dir = tmp_path / "oci"
    oci_id = archives.oci_layout(str(oci_dir), layers, "layered:oci", WorkingDir="/data")
    oci_tar = tmp_path / "oci.tar"
    archives.tar_directory(str(oci_dir), str(oci_tar))
    base = layer_dirs(rhost)  # the busybox image's layer, already there

    out = rhost.netctl("image", "import", str(saved)).stdout
    assert docker_id in out and "layered:docker" in out
    rhost.netctl("image", "import", str(oci_dir))
    rhost.netctl("image", "import", str(oci_tar), "layered:from-tar")
    assert oci_id == docker_id  # same config bytes: same image
    assert {"layered:docker", "layered:oci", "layered:from-tar"} <= set(image_tags(rhost))
    # Three layers, the busybox one shared with the busybox image (same bytes, same digest).
    assert len(layer_dirs(rhost)) == len(set(base) | {archives.sha(layer) for layer in layers})
    listing = rhost.container("--rm", "--network", "none", "layered:oci", "sh", "-c",
                              "pwd; ls /data; ls /opaque; cat /etc/motd; cat /etc/abs-link").stdout.split()  # fmt: skip
    assert listing == ["/data", "b", "y", "layer", "three", "layer", "three"]
    view = json.loads(rhost.netctl("image", "inspect", "layered:docker").stdout)[0]
    assert view["RootFS"]["Layers"] == [f"sha256:{archives.sha(layer)}" for layer in layers]


def test_rootfs_tarball_gzip_and_tags(rhost, tmp_path):
    tarball = tmp_path / "rootfs.tar.gz"
    tarball.write_bytes(gzip.compress(archives.busybox_layer()))
    rhost.netctl("image", "import", str(tarball), "mybox:1")
    assert rhost.container("--rm", "--network", "none", "mybox:1", "echo", "hi").stdout == "hi\n"
    # An exported rootfs has no command: run needs one.
    missing = rhost.container("--rm", "--network", "none", "mybox:1", check=False)
    assert missing.returncode == 2 and "no command given" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


def test_image_rm_keeps_shared_layers_and_refuses_images_in_use(rhost, tmp_path):
    layers = archives.layered_layers()
    saved = tmp_path / "saved.tar"
    archives.docker_save(str(saved), layers, "layered:one")
    rhost.netctl("image", "import", str(saved))
    before = layer_dirs(rhost)
    rhost.start("user", network="none", command=("sleep", "600"))
    # busybox:latest is used by the container
    refused = rhost.netctl("image", "rm", "busybox", check=False)
    assert refused.returncode == 5 and "used by container" in refused.stderr
    rhost.netctl("rm", "-f", "user")
    rhost.netctl("image", "rm", "layered:one")
    # The busybox layer is shared with busybox:latest and stays; the other two go.
    assert len(layer_dirs(rhost)) == len(before) - 2
    rhost.netctl("image", "rm", "busybox")
    assert layer_dirs(rhost) == [] and image_tags(rhost) == []


@pytest.mark.parametrize(
    "case",
    ["dotdot", "symlink-escape", "write-through-symlink", "device", "hardlink-outside", "corrupt-gzip", "truncated",
     "not-a-tar", "tampered-docker-save", "oci-bad-digest"],
)  # fmt: skip
def test_unsafe_or_corrupt_archives_are_refused(rhost, tmp_path, case):
    path = str(tmp_path / f"{case}.tar")
    good = archives.tar_bytes([{"name": "etc/ok", "data": b"ok\n"}])
    entries = {
        "dotdot": [{"name": "../../escape", "data": b"x"}],
        "symlink-escape": [{"name": "etc", "type": "dir"}, {"name": "etc/evil", "type": "symlink", "target": "../../../../etc/shadow"}],
        "write-through-symlink": [{"name": "link", "type": "symlink", "target": "/tmp"}, {"name": "link/owned", "data": b"x"}],
        "device": [{"name": "dev", "type": "dir"}, {"name": "dev/sda", "type": "chardev", "dev": (8, 0)}],
        "hardlink-outside": [{"name": "x", "type": "hardlink", "target": "../../etc/passwd"}],
    }
    if case in entries:
        data = archives.tar_bytes(entries[case])
    elif case == "corrupt-gzip":
        data = gzip.compress(good)[:-30] + b"\0" * 30
    elif case == "truncated":
        data = archives.busybox_layer()[:150_000]
    elif case == "not-a-tar":
        data = b"this is not an image\n" * 100
    elif case == "tampered-docker-save":
        archives.docker_save(path, archives.layered_layers()[1:], "bad:one", tamper=True)
        data = None
    else:  # oci-bad-digest: a blob whose bytes do not match its name
        oci = tmp_path / "oci"
        archives.oci_layout(str(oci), [good], "bad:oci")
        blobs = oci / "blobs" / "sha256"
        victim = max(blobs.iterdir(), key=lambda p: p.stat().st_size)
        victim.write_bytes(victim.read_bytes()[:-5] + b"XXXXX")
        path = str(oci)
        data = None
    if data is not None:
        with open(path, "wb") as f:
            f.write(data)
    before = (layer_dirs(rhost), image_tags(rhost))
    result = rhost.netctl("image", "import", path, "bad:image", check=False)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("netctl: "), result.stderr
    assert (layer_dirs(rhost), image_tags(rhost)) == before
    assert os.listdir(rhost.path("/run/netctl/images/tmp")) == []
    assert not os.path.exists("/tmp/owned")


def test_absolute_symlinks_inside_the_rootfs_are_fine(rhost, tmp_path):
    layer = archives.tar_bytes([
        {"name": "etc", "type": "dir"},
        {"name": "etc/real", "data": b"real\n"},
        {"name": "etc/alias", "type": "symlink", "target": "/etc/real"},
        {"name": "etc/up", "type": "symlink", "target": "../etc/real"},
        {"name": "etc/fifo", "type": "fifo"},
    ])  # fmt: skip
    saved = tmp_path / "links.tar"
    archives.docker_save(str(saved), [archives.busybox_layer(), layer], "links:1")
    rhost.netctl("image", "import", str(saved))
    out = rhost.container("--rm", "--network", "none", "links:1", "sh", "-c", "cat /etc/alias /etc/up; test -p /etc/fifo && echo fifo").stdout
    assert out.split() == ["real", "real", "fifo"]
