"""OCI image layouts the tests build (then `skopeo copy` into a real registry).

  busybox_layers()   a base layer from Debian's busybox-static (runner/busybox.py's tarball: busybox
                     and its applet links), then layers with files, a whiteout (.wh.NAME) and an
                     opaque directory (.wh..wh..opq)
  write_layout()     one image (or several platforms under one index) as an OCI layout directory
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile

from runner import busybox


def _tar(entries: list[tuple[str, str, bytes]]) -> bytes:
    """entries: (name, kind "file"|"dir"|"symlink", data or link target)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1700000000
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, data.decode()
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def busybox_tar() -> bytes:
    out = io.BytesIO()
    busybox.build_tarball("/bin/busybox", out)
    return out.getvalue()


def busybox_layers(tag: str = "v1") -> list[bytes]:
    """Uncompressed layer tars: busybox, then files, then a whiteout and an opaque directory."""
    return [
        busybox_tar(),
        _tar([("data", "dir", b""), ("data/a", "file", b"to be deleted\n"), ("data/keep", "file", b"kept\n"),
              ("opaque", "dir", b""), ("opaque/old", "file", b"hidden by the opaque dir\n"),
              ("etc/motd", "file", f"layer two {tag}\n".encode())]),
        _tar([("data/.wh.a", "file", b""), ("opaque", "dir", b""), ("opaque/.wh..wh..opq", "file", b""),
              ("opaque/new", "file", b"new\n"), ("etc/release", "file", f"netctl-test {tag}\n".encode())]),
    ]


def random_layer(size: int, seed: int) -> bytes:
    """An uncompressed layer with one file of `size` incompressible bytes (for the bench and resume tests)."""
    import random

    rng = random.Random(seed)
    return _tar([(f"blob{seed}", "dir", b""), (f"blob{seed}/data.bin", "file", rng.randbytes(size))])


def _blob(directory: str, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(directory, "blobs", "sha256", digest)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _image(directory: str, layers: list[bytes], arch: str, compress: bool, marker: str, config_pad: int = 0,
           manifest_pad: int = 0) -> dict:  # fmt: skip
    diff_ids, descriptors = [], []
    for layer in layers:
        diff_ids.append("sha256:" + hashlib.sha256(layer).hexdigest())
        blob = gzip.compress(layer, compresslevel=1, mtime=0) if compress else layer
        media = "application/vnd.oci.image.layer.v1.tar+gzip" if compress else "application/vnd.oci.image.layer.v1.tar"
        descriptors.append({"mediaType": media, **_blob(directory, blob)})
    config = {
        "architecture": arch, "os": "linux", "created": "2026-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", f"MARKER={marker}"],
                   "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }  # fmt: skip
    if config_pad:
        config["config"]["Labels"] = {"pad": "x" * config_pad}
    config_desc = {"mediaType": "application/vnd.oci.image.config.v1+json", **_blob(directory, json.dumps(config).encode())}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": config_desc,
                "layers": descriptors}  # fmt: skip
    if manifest_pad:
        manifest["annotations"] = {"pad": "x" * manifest_pad}
    return {"mediaType": "application/vnd.oci.image.manifest.v1+json", **_blob(directory, json.dumps(manifest).encode()),
            "platform": {"architecture": arch, "os": "linux"}}  # fmt: skip


def write_layout(directory: str, layers: list[bytes], *, archs: tuple[str, ...] = ("amd64",), compress: bool = True,
                 tag: str = "latest", marker: str = "test", config_pad: int = 0, manifest_pad: int = 0) -> str:  # fmt: skip
    """An OCI layout at `directory`: one manifest (one arch) or an index of several; `tag` annotated.
    Returns the skopeo source oci:DIR:TAG."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion": "1.0.0"}')
    entries = [_image(directory, layers, arch, compress, f"{marker}-{arch}", config_pad, manifest_pad) for arch in archs]
    if len(entries) == 1:
        top = entries[0]
    else:
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries}
        top = {"mediaType": "application/vnd.oci.image.index.v1+json", **_blob(directory, json.dumps(index).encode())}
    top = {k: v for k, v in top.items() if k != "platform"}
    top["annotations"] = {"org.opencontainers.image.ref.name": tag}
    with open(os.path.join(directory, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [top]}, f)
    return f"oci:{directory}:{tag}"
