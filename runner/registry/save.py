"""`netctl image save`: images out of the store, as files other tools read.

  docker-archive  a tar as `docker save` writes it: manifest.json, <id>.json configs, <diff id>/layer.tar
                  (uncompressed, as Docker's), repositories; `docker load`, podman, skopeo and
                  `netctl image import` read it
  oci-archive     an OCI image layout in a tar: oci-layout, index.json (ref.name annotations), blobs/sha256/
  oci-dir         the same layout as a directory

Layers are written from the blobs the store kept (ROOT/images/layers/<diff id>/blob): as they are for
OCI (digests unchanged), decompressed for docker-archive. Written to a temporary name and renamed, so a
failed save leaves no partial file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import shutil
import tarfile

from libnetwork.errors import InvalidArgument, NotFound
from runner.images import Image
from runner.registry_store import RegistryImageStore
from runner.layers import decompressed

FORMATS = ("docker-archive", "oci-archive", "oci-dir")
_OCI_LAYER = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "": "application/vnd.oci.image.layer.v1.tar",
}


def save(store: RegistryImageStore, refs: list[str], output: str, fmt: str) -> list[Image]:
    if fmt not in FORMATS:
        raise InvalidArgument(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    if fmt == "oci-dir" and os.path.exists(output) and not (os.path.isdir(output) and not os.listdir(output)):
        raise InvalidArgument(f"{output} exists and is not an empty directory; name a new one")
    with store.locked(exclusive=False):
        images = [(ref, store.get(ref)) for ref in refs]
        for _, image in images:
            for diff_id in image.layers:
                if not os.path.exists(store.layer_blob(diff_id)):
                    raise NotFound(
                        f"layer {diff_id[:12]} of image {image.short_id} has no kept archive (stored by an "
                        "older netctl); re-import or pull it"
                    )
        parent = os.path.dirname(os.path.abspath(output))
        temp = os.path.join(parent, f".{os.path.basename(output)}.{secrets.token_hex(4)}.tmp")
        try:
            if fmt == "oci-dir":
                os.makedirs(temp)
                _oci(store, images, _DirWriter(temp))
            else:
                with tarfile.open(temp, "w", format=tarfile.PAX_FORMAT) as tar:
                    writer = _TarWriter(tar)
                    if fmt == "docker-archive":
                        _docker(store, images, writer)
                    else:
                        _oci(store, images, writer)
            if fmt == "oci-dir" and os.path.isdir(output):
                os.rmdir(output)
            os.rename(temp, output)
        except BaseException:
            if os.path.isdir(temp):
                shutil.rmtree(temp, ignore_errors=True)
            elif os.path.exists(temp):
                os.unlink(temp)
            raise
    return [image for _, image in images]


class _TarWriter:
    def __init__(self, tar: tarfile.TarFile):
        self.tar = tar
        self.dirs: set[str] = set()

    def _dirs(self, name: str) -> None:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.dirs:
                info = tarfile.TarInfo(d)
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                self.tar.addfile(info)
                self.dirs.add(d)

    def bytes(self, name: str, data: bytes) -> None:
        self._dirs(name)
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), 0o644
        self.tar.addfile(info, io.BytesIO(data))

    def file(self, name: str, path: str, size: int) -> None:
        self._dirs(name)
        info = tarfile.TarInfo(name)
        info.size, info.mode = size, 0o644
        with open(path, "rb") as f:
            self.tar.addfile(info, f)

    def has(self, name: str) -> bool:
        return name in self.tar.getnames()


class _DirWriter:
    def __init__(self, root: str):
        self.root = root

    def bytes(self, name: str, data: bytes) -> None:
        path = os.path.join(self.root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)

    def file(self, name: str, path: str, size: int) -> None:
        target = os.path.join(self.root, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(path, target)

    def has(self, name: str) -> bool:
        return os.path.exists(os.path.join(self.root, name))


def _oci(store: RegistryImageStore, images: list[tuple[str, Image]], out) -> None:
    out.bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    written: set[str] = set()
    entries = []
    for ref, image in images:
        layers = []
        for diff_id in image.layers:
            blob = store.layer_info(diff_id)["blob"]
            digest = blob["digest"]
            if blob.get("compression", "") not in _OCI_LAYER:
                raise InvalidArgument(
                    f"layer {diff_id[:12]} is {blob['compression']}-compressed, which OCI layouts do not take"
                )
            if digest not in written:
                out.file(f"blobs/sha256/{digest[7:]}", store.layer_blob(diff_id), int(blob["size"]))
                written.add(digest)
            layers.append(
                {"mediaType": _OCI_LAYER[blob.get("compression", "")], "size": int(blob["size"]), "digest": digest}
            )
        raw_config = store.raw_config(image)
        config_digest = "sha256:" + hashlib.sha256(raw_config).hexdigest()
        if config_digest not in written:
            out.bytes(f"blobs/sha256/{config_digest[7:]}", raw_config)
            written.add(config_digest)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "size": len(raw_config),
                    "digest": config_digest,
                },
                "layers": layers,
            }
        ).encode()
        manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        if manifest_digest not in written:
            out.bytes(f"blobs/sha256/{manifest_digest[7:]}", manifest)
            written.add(manifest_digest)
        tag = _tag_for(ref, image)
        entry = {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "size": len(manifest),
            "digest": manifest_digest,
            "platform": {
                "os": image.config.get("os", "linux"),
                "architecture": image.config.get("architecture", "amd64"),
            },
        }
        if tag:
            entry["annotations"] = {"org.opencontainers.image.ref.name": tag}
        entries.append(entry)
    out.bytes(
        "index.json",
        json.dumps(
            {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries}
        ).encode(),
    )


def _docker(store: RegistryImageStore, images: list[tuple[str, Image]], out) -> None:
    entries: list[dict] = []
    repositories: dict[str, dict[str, str]] = {}
    written: set[str] = set()
    for ref, image in images:
        raw_config = store.raw_config(image)
        config_name = f"{image.id}.json"
        if config_name not in written:
            out.bytes(config_name, raw_config)
            written.add(config_name)
        names = []
        for diff_id in image.layers:
            name = f"{diff_id}/layer.tar"
            if name not in written:
                size = store.layer_info(diff_id)["size"]
                with open(store.layer_blob(diff_id), "rb") as f:
                    stream = decompressed(io.BufferedReader(f, 1 << 20), f"layer {diff_id[:12]}")
                    out.tar.addfile(_info(name, int(size), out), stream)
                written.add(name)
            names.append(name)
        tag = _tag_for(ref, image)
        tags = [tag] if tag else []
        for t in tags:
            repo, _, version = t.rpartition(":")
            repositories.setdefault(repo, {})[version] = image.id
        entries.append({"Config": config_name, "RepoTags": tags, "Layers": names})
    out.bytes("manifest.json", json.dumps(entries).encode())
    if repositories:
        out.bytes("repositories", json.dumps(repositories).encode())


def _info(name: str, size: int, out: _TarWriter) -> tarfile.TarInfo:
    out._dirs(name)
    info = tarfile.TarInfo(name)
    info.size, info.mode = size, 0o644
    return info


def _tag_for(ref: str, image: Image) -> str:
    """The tag to write: REF itself when it is one of the image's tags, else its first tag."""
    from runner.images import normalize_reference

    try:
        wanted = normalize_reference(ref)
    except InvalidArgument:
        wanted = ""
    if wanted in image.tags:
        return wanted
    return image.tags[0] if image.tags else ""
