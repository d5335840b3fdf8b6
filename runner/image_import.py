"""Reading image archives into the image store (runner/images.py): the three kinds of input, told
apart by their contents (not their names):
  * a rootfs tarball, as `docker export` writes it (one layer, an empty config);
  * a `docker save` archive (manifest.json + a config and one tar per layer);
  * an OCI image layout, a directory or a tar of one (oci-layout + index.json + blobs/sha256/...).
Every digest the input states is checked (OCI blob digests, docker/OCI config diff ids), so a corrupt
or tampered archive is refused; layers are unpacked by runner/layers.py, which refuses members that
escape the rootfs and device nodes. Separate from the store itself: `netctl run` loads the store on
its hot path, and only an import needs the archive formats.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tarfile
from typing import Any

from libnetwork.errors import InvalidArgument, NotFound
from runner.image_refs import familiar_tag_ref
from runner.images import (
    DEFAULT_PATH,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    LAYER_BLOB,
    MAX_LAYERS,
    OCI_INDEX,
    OCI_MANIFEST,
    REF_NAME_ANNOTATION,
    Image,
    ImageStore,
    _remove_tree,
    _write_json_atomic,
    go_arch,
    normalize_reference,
    now,
)
from runner.layer_blobs import TeeReader, layer_record
from runner.layers import CorruptArchive, unpack

class _Source:
    """Named members of an archive or directory: open(name) -> binary file object."""

    def names(self) -> set[str]:
        raise NotImplementedError

    def open(self, name: str):
        raise NotImplementedError

    def close(self) -> None:
        pass

    def read_json(self, name: str, what: str) -> Any:
        with self.open(name) as f:
            data = f.read(16 << 20)
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise CorruptArchive(f"{what} ({name}) is not valid JSON; the archive is corrupt") from None


def _member_name(name: str) -> str:
    name = name.lstrip("/")
    while name.startswith("./"):
        name = name[2:]
    return name


class _DirSource(_Source):
    def __init__(self, path: str):
        self.path = os.path.realpath(path)

    def names(self) -> set[str]:
        found = set()
        for dirpath, _, files in os.walk(self.path):
            for name in files:
                found.add(os.path.relpath(os.path.join(dirpath, name), self.path))
        return found

    def open(self, name: str):
        full = os.path.realpath(os.path.join(self.path, _member_name(name)))
        if not full.startswith(self.path + os.sep):
            raise CorruptArchive(f"{self.path}: {name!r} points outside the image layout")
        try:
            return open(full, "rb")
        except FileNotFoundError:
            raise CorruptArchive(f"{self.path}: {name} is missing; the image layout is incomplete") from None


class _TarSource(_Source):
    def __init__(self, path: str, archive: tarfile.TarFile):
        self.path = path
        self.archive = archive
        self.members = {_member_name(m.name): m for m in archive.getmembers()}

    def names(self) -> set[str]:
        return set(self.members)

    def open(self, name: str):
        member = self.members.get(_member_name(name))
        # A member may be a symlink to another (docker save links shared layers); follow within the tar.
        for _ in range(8):
            if member is None or not member.issym():
                break
            target = os.path.normpath(os.path.join(os.path.dirname(member.name), member.linkname))
            member = self.members.get(_member_name(target))
        if member is None or not member.isreg():
            raise CorruptArchive(f"{self.path}: {name} is missing; the archive is incomplete")
        return self.archive.extractfile(member)

    def close(self) -> None:
        self.archive.close()


def _open_tar(path: str) -> tarfile.TarFile:
    import gzip
    import lzma
    import zlib

    try:
        archive = tarfile.open(path, "r:*")
        try:
            archive.getmembers()  # reads every header now: a truncated archive fails here, as one error
        except BaseException:
            archive.close()
            raise
        return archive
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile) as err:
        reason = str(err).splitlines()[0][:100]
        raise CorruptArchive(f"{path} is not a readable tar archive ({reason}); check the file") from None


class Import:
    """One import: finds the images in `path`, unpacks their layers, and tracks what it created so a
    failure leaves nothing behind."""

    def __init__(self, store: ImageStore, path: str):
        self.store = store
        self.layout = store.layout
        self.path = path
        self.created_layers: list[str] = []
        self.temp_dirs: list[str] = []

    def run(self, default_config: dict[str, Any]) -> list[Image]:
        if os.path.isdir(self.path):
            source: _Source = _DirSource(self.path)
            names = source.names()
            if "oci-layout" not in names or "index.json" not in names:
                raise InvalidArgument(
                    f"{self.path} is a directory but not an OCI image layout (no oci-layout/index.json)"
                )
        else:
            archive = _open_tar(self.path)
            source = _TarSource(self.path, archive)
            names = source.names()
        try:
            if "manifest.json" in names and self._is_docker_manifest(source):
                return self._docker_save(source)
            if "oci-layout" in names and "index.json" in names:
                return self._oci_layout(source)
        finally:
            source.close()
        return [self._rootfs_tarball(default_config)]

    def discard(self) -> None:
        for path in self.temp_dirs:
            _remove_tree(path)
        if self.created_layers:
            self.store._collect_layers(self.created_layers, users_of_layer=set())

    # --- formats ---

    @staticmethod
    def _is_docker_manifest(source: _Source) -> bool:
        try:
            data = source.read_json("manifest.json", "docker manifest")
        except CorruptArchive:
            return False
        return isinstance(data, list) and all(isinstance(e, dict) and "Layers" in e for e in data)

    def _rootfs_tarball(self, default_config: dict[str, Any]) -> Image:
        with open(self.path, "rb") as f:
            diff_id, size = self._layer(f, f"rootfs tarball {self.path}")
        config = {
            "architecture": go_arch(),
            "os": "linux",
            "config": {"Env": [f"PATH={DEFAULT_PATH}"], **default_config},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        }
        raw = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
        return self._image(raw, config, [diff_id], size, "rootfs-tarball", [])

    def _docker_save(self, source: _Source) -> list[Image]:
        manifest = source.read_json("manifest.json", "docker manifest")
        images = []
        for entry in manifest:
            config_name = entry.get("Config") or ""
            with source.open(config_name) as f:
                raw = f.read(16 << 20)
            layer_names = entry.get("Layers") or []
            config, expected = self._config(raw, f"{self.path}: config {config_name}", layer_names)
            layers, size = [], 0
            for name, want in zip(layer_names, expected, strict=True):
                with source.open(name) as f:
                    diff_id, n = self._layer(f, f"{self.path}: layer {name}", expected=want)
                layers.append(diff_id)
                size += n
            tags = [normalize_reference(familiar_tag_ref(t)) for t in entry.get("RepoTags") or []]
            images.append(self._image(raw, config, layers, size, "docker-save", tags))
        if not images:
            raise CorruptArchive(f"{self.path}: manifest.json lists no images")
        return images

    def _oci_layout(self, source: _Source) -> list[Image]:
        layout = source.read_json("oci-layout", "oci-layout")
        if not isinstance(layout, dict) or not str(layout.get("imageLayoutVersion", "")).startswith("1."):
            raise CorruptArchive(f"{self.path}: oci-layout has no imageLayoutVersion 1.x")
        index = source.read_json("index.json", "OCI index")
        images = []
        for descriptor, ref_name in self._manifests(source, index, depth=0):
            manifest_raw = self._blob(source, descriptor)
            manifest = _parse_json(manifest_raw, f"{self.path}: manifest {descriptor.get('digest')}")
            config_raw = self._blob(source, manifest.get("config") or {})
            blobs = manifest.get("layers") or []
            config, expected = self._config(config_raw, f"{self.path}: config", blobs)
            layers, size = [], 0
            for blob, want in zip(blobs, expected, strict=True):
                digest = _digest_hex(blob, self.path)
                with source.open(f"blobs/sha256/{digest}") as f:
                    diff_id, n = self._layer(f, f"{self.path}: layer {digest[:12]}", expected=want, blob_digest=digest)
                layers.append(diff_id)
                size += n
            # The annotation is often a bare tag ("latest"), which names no repository: then only a
            # NAME given on the command line tags the image.
            tags = [normalize_reference(familiar_tag_ref(ref_name))] if ":" in ref_name else []
            images.append(self._image(config_raw, config, layers, size, "oci-layout", tags))
        if not images:
            raise CorruptArchive(f"{self.path}: index.json lists no image for linux/{go_arch()}")
        return images

    def _config(self, raw: bytes, what: str, listed: list) -> tuple[dict, list[str]]:
        """An image's config and its layers' diff ids (hex), as many as the manifest lists layers."""
        config = _parse_config(raw, what)
        expected = config_diff_ids(config, what)
        if len(listed) != len(expected):
            raise CorruptArchive(
                f"{self.path}: manifest lists {len(listed)} layers but the config {len(expected)}; "
                "the archive is corrupt"
            )
        return config, expected

    def _manifests(self, source: _Source, index: Any, depth: int) -> list[tuple[dict, str]]:
        if depth > 4 or not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
            raise CorruptArchive(f"{self.path}: index.json has no manifests list")
        found = []
        for descriptor in index["manifests"]:
            if not isinstance(descriptor, dict):
                continue
            platform_ = descriptor.get("platform") or {}
            if platform_ and (platform_.get("os") != "linux" or platform_.get("architecture") != go_arch()):
                continue
            media = descriptor.get("mediaType", OCI_MANIFEST)
            ref_name = (descriptor.get("annotations") or {}).get(REF_NAME_ANNOTATION, "")
            if media in (OCI_INDEX, DOCKER_LIST):
                nested = _parse_json(self._blob(source, descriptor), f"{self.path}: index")
                found += [(d, r or ref_name) for d, r in self._manifests(source, nested, depth + 1)]
            elif media in (OCI_MANIFEST, DOCKER_MANIFEST):
                found.append((descriptor, ref_name))
        return found

    def _blob(self, source: _Source, descriptor: dict) -> bytes:
        import hashlib

        digest = _digest_hex(descriptor, self.path)
        with source.open(f"blobs/sha256/{digest}") as f:
            data = f.read(16 << 20)
        if hashlib.sha256(data).hexdigest() != digest:
            raise CorruptArchive(f"{self.path}: blob {digest[:12]} does not match its digest; the archive is corrupt")
        return data

    # --- building blocks ---

    def _layer(self, fileobj, what: str, *, expected: str = "", blob_digest: str = "") -> tuple[str, int]:
        """Unpack one layer into a temporary directory, then move it to its content address."""
        os.makedirs(self.layout.images_tmp, mode=0o700, exist_ok=True)
        temp = os.path.join(self.layout.images_tmp, secrets.token_hex(8))
        self.temp_dirs.append(temp)
        os.makedirs(os.path.join(temp, "diff"))
        with open(os.path.join(temp, LAYER_BLOB), "wb") as keep:
            tee = TeeReader(fileobj, keep)
            result = unpack(tee, os.path.join(temp, "diff"), what)
            tee.drain()
        result.blob_digest = tee.hash.hexdigest()
        if blob_digest and result.blob_digest != blob_digest:
            raise CorruptArchive(f"{what} does not match its digest sha256:{blob_digest[:12]}; the archive is corrupt")
        if expected and expected != result.diff_id:
            raise CorruptArchive(f"{what} does not match its diff id sha256:{expected[:12]}; the archive is corrupt")
        target = self.layout.layer_dir(result.diff_id)
        if os.path.isdir(target):
            _remove_tree(temp)  # already stored: layers are shared
        else:
            record = layer_record(result.diff_id, result.size, result.blob_digest, tee.size, tee.compression)
            _write_json_atomic(os.path.join(temp, "layer.json"), record)
            os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
            os.rename(temp, target)
            self.created_layers.append(result.diff_id)
        self.temp_dirs.remove(temp)
        return result.diff_id, result.size

    def _image(self, raw: bytes, config: dict, layers: list[str], size: int, source: str, tags: list[str]) -> Image:
        import hashlib

        if len(layers) > MAX_LAYERS:
            raise InvalidArgument(f"{self.path}: image has {len(layers)} layers; netctl supports at most {MAX_LAYERS}")
        image = Image(
            id=hashlib.sha256(raw).hexdigest(),
            layers=layers,
            config=config,
            size=size,
            imported=now(),
            source=source,
            raw_config=raw,
        )
        image.tags = tags
        return image


def _parse_json(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise CorruptArchive(f"{what} is not valid JSON; the archive is corrupt") from None


def _parse_config(raw: bytes, what: str) -> dict:
    config = _parse_json(raw, what)
    if not isinstance(config, dict):
        raise CorruptArchive(f"{what} is not an image config")
    if config.get("os", "linux") != "linux":
        raise InvalidArgument(f"{what}: image is for {config.get('os')}, not linux")
    return config


def config_diff_ids(config: dict, what: str, error: type[Exception] = CorruptArchive) -> list[str]:
    """The hex digests of an image config's rootfs.diff_ids (its layers, bottom first), for an archive
    and for a registry's image alike; `error` naming `what` when there are none or one is not
    sha256:<64 hex>."""
    ids = (config.get("rootfs") or {}).get("diff_ids")
    if not isinstance(ids, list) or not ids:
        raise error(f"{what} has no rootfs.diff_ids")
    out = []
    for d in ids:
        hexpart = d[7:] if isinstance(d, str) and d.startswith("sha256:") else ""
        if len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
            raise error(f"{what} has an invalid diff id {str(d)[:80]!r}")
        out.append(hexpart)
    return out


def _digest_hex(descriptor: dict, path: str) -> str:
    digest = str(descriptor.get("digest", ""))
    if not digest.startswith("sha256:") or not re.fullmatch(r"[0-9a-f]{64}", digest[7:]):
        raise CorruptArchive(f"{path}: descriptor has an invalid digest {digest!r} (only sha256 is supported)")
    return digest[7:]


def import_path(store: ImageStore, path: str, ref: str = "", *,
                default_config: dict[str, Any] | None = None) -> list[Image]:
    """Import every image in the file or directory `path` into `store`; tag it `ref` if given."""
    tag = normalize_reference(familiar_tag_ref(ref)) if ref else ""
    if not os.path.exists(path):
        raise NotFound(f"image file {path!r} does not exist")
    with store.locked(exclusive=True):
        importer = Import(store, path)
        try:
            images = importer.run(default_config or {})
            if tag and len(images) != 1:
                raise InvalidArgument(
                    f"{path} holds {len(images)} images; import it without a name (they keep theirs)"
                )
            store.commit(images, [tag] if tag else None)
        except BaseException:
            importer.discard()
            raise
    return images
