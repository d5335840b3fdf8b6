"""Image archives built by the tests themselves (there is no registry): layer tars, `docker save`
archives and OCI image layouts, good and bad."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile

from runner import busybox

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tar_bytes(entries: list[dict]) -> bytes:
    """entries: {"name", "type": file|dir|symlink|hardlink|chardev|fifo, "data", "target", "mode"}."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry["name"])
            info.mtime = 946684800
            info.mode = entry.get("mode", 0o644)
            kind = entry.get("type", "file")
            data = entry.get("data", b"")
            if kind == "file":
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                         "chardev": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}[kind]  # fmt: skip
            if kind == "dir":
                info.mode = entry.get("mode", 0o755)
            if kind in ("symlink", "hardlink"):
                info.linkname = entry["target"]
            if kind == "chardev":
                info.devmajor, info.devminor = entry.get("dev", (1, 3))
            tar.addfile(info)
    return buffer.getvalue()


def busybox_layer() -> bytes:
    buffer = io.BytesIO()
    busybox.build_tarball(busybox.DEFAULT_BUSYBOX, buffer)
    return buffer.getvalue()


def layered_layers() -> list[bytes]:
    """Three layers: busybox; files and an opaque-to-be dir; whiteouts, an opaque dir, a change."""
    second = tar_bytes([
        {"name": "data", "type": "dir"},
        {"name": "data/a", "data": b"a\n"},
        {"name": "data/b", "data": b"b\n"},
        {"name": "opaque", "type": "dir"},
        {"name": "opaque/x", "data": b"x\n"},
        {"name": "etc/motd", "data": b"layer two\n"},
        {"name": "etc/abs-link", "type": "symlink", "target": "/etc/motd"},
    ])  # fmt: skip
    third = tar_bytes([
        {"name": "data/.wh.a"},
        {"name": "opaque", "type": "dir"},
        {"name": "opaque/.wh..wh..opq"},
        {"name": "opaque/y", "data": b"y\n"},
        {"name": "etc/motd", "data": b"layer three\n"},
    ])  # fmt: skip
    return [busybox_layer(), second, third]


def config_for(layers: list[bytes], **run) -> bytes:
    config = {
        "architecture": "amd64" if os.uname().machine == "x86_64" else "arm64",
        "os": "linux",
        "config": {"Env": [PATH_ENV], "Cmd": ["sh"], **run},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha(layer)}" for layer in layers]},
    }
    return json.dumps(config).encode()


def docker_save(path: str, layers: list[bytes], tag: str, *, tamper: bool = False, **run) -> str:
    """Write a `docker save` archive to path; returns the image id (sha256 of the config)."""
    config = config_for(layers, **run)
    names = []
    with tarfile.open(path, "w") as tar:
        for i, layer in enumerate(layers):
            name = f"{sha(layer)[:40]}{i}/layer.tar"
            names.append(name)
            data = layer
            if tamper and i == len(layers) - 1:
                data = tar_bytes([{"name": "etc/motd", "data": b"tampered\n"}])
            _add(tar, name, data)
        _add(tar, f"{sha(config)}.json", config)
        manifest = [{"Config": f"{sha(config)}.json", "RepoTags": [tag], "Layers": names}]
        _add(tar, "manifest.json", json.dumps(manifest).encode())
    return sha(config)


def oci_layout(directory: str, layers: list[bytes], ref_name: str, *, compress: bool = True, **run) -> str:
    """Write an OCI image layout (gzip layers) into directory; returns the image id."""
    blobs = os.path.join(directory, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)

    def put(data: bytes) -> str:
        digest = sha(data)
        with open(os.path.join(blobs, digest), "wb") as f:
            f.write(data)
        return digest

    descriptors = []
    for layer in layers:
        data = gzip.compress(layer, mtime=0) if compress else layer
        media = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if compress else "")
        descriptors.append({"mediaType": media, "digest": f"sha256:{put(data)}", "size": len(data)})
    config = config_for(layers, **run)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": f"sha256:{put(config)}", "size": len(config)},
        "layers": descriptors,
    }
    manifest_bytes = json.dumps(manifest).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": f"sha256:{put(manifest_bytes)}",
            "size": len(manifest_bytes),
            "annotations": {"org.opencontainers.image.ref.name": ref_name},
        }],
    }  # fmt: skip
    with open(os.path.join(directory, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(directory, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    return sha(config)


def tar_directory(directory: str, path: str) -> None:
    with tarfile.open(path, "w") as tar:
        for name in sorted(os.listdir(directory)):
            tar.add(os.path.join(directory, name), arcname=name)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 946684800
    tar.addfile(info, io.BytesIO(data))
