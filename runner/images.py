"""The image store: images imported from files, layers stored once by content (sha256 diff id).

Three kinds of input, told apart by their contents (not their names):
  * a rootfs tarball, as `docker export` writes it (one layer, an empty config);
  * a `docker save` archive (manifest.json + a config and one tar per layer);
  * an OCI image layout, a directory or a tar of one (oci-layout + index.json + blobs/sha256/...).
Every digest the input states is checked (OCI blob digests, docker/OCI config diff ids), so a corrupt
or tampered archive is refused; layers are unpacked by runner/layers.py, which refuses members that
escape the rootfs and device nodes.

Registry support (runner/registry/ uses it): each layer directory also keeps the layer as it was
imported or pulled (`blob`, described in layer.json), each image its config bytes as hashed
(images/configs/<id>.json), and digests.json maps NAME@sha256:<manifest digest> to image ids, so push
and save send exactly what came in and `NAME@DIGEST` references resolve.

An image id is the sha256 of its config JSON, as with Docker. Mutations (import, rm) hold an exclusive
flock on ROOT/images/.lock for their whole duration, so a layer is never collected while an import that
will use it is in flight; `run` holds the lock shared while it resolves an image and records its use.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import json
import os
import platform
import re
import secrets
import shutil
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from libnetwork.errors import InUse, InvalidArgument, NotFound
from runner.image_refs import familiar_digest_ref, familiar_tag_ref
from runner.layer_blobs import TeeReader, layer_record, write_bytes_atomic
from runner.layers import CorruptArchive, unpack
from runner.paths import Layout

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_LAYERS = 40  # overlayfs mount options must fit in a page; 40 layer paths under ROOT do
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
LAYER_BLOB = "blob"  # ROOT/images/layers/<diff id>/blob: the layer as it was imported or pulled (for push, save)
_NAME_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"^(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?{_NAME_COMPONENT}(?:/{_NAME_COMPONENT})*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_HEX = re.compile(r"^[0-9a-f]{3,64}$")


@dataclass
class Image:
    id: str  # hex sha256 of the config JSON
    layers: list[str]  # diff ids (hex), bottom layer first
    config: dict[str, Any] = field(default_factory=dict)  # the OCI image config
    size: int = 0  # bytes of all layers, uncompressed
    imported: str = ""
    source: str = ""  # rootfs-tarball | docker-save | oci-layout
    tags: list[str] = field(default_factory=list)  # filled from repositories.json when listed
    raw_config: bytes = field(default=b"", repr=False)  # the config exactly as hashed (kept for push/save)

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def run_config(self) -> dict[str, Any]:
        """The part of the config that says how to run it: Env, Cmd, Entrypoint, WorkingDir, User."""
        return self.config.get("config") or {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "layers": list(self.layers),
            "config": self.config,
            "size": self.size,
            "imported": self.imported,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Image":
        return cls(
            id=data["id"],
            layers=list(data["layers"]),
            config=data.get("config") or {},
            size=data.get("size", 0),
            imported=data.get("imported", ""),
            source=data.get("source", ""),
        )


def normalize_reference(ref: str) -> str:
    """NAME[:TAG] -> NAME:TAG (tag latest by default); InvalidArgument if it is not a valid name."""
    name, tag = split_reference(ref)
    return f"{name}:{tag}"


def split_reference(ref: str) -> tuple[str, str]:
    name, tag = ref, "latest"
    colon = ref.rfind(":")
    if colon > ref.rfind("/"):
        name, tag = ref[:colon], ref[colon + 1:]
    if not _REPOSITORY.match(name) or not _TAG.match(tag):
        raise InvalidArgument(
            f"invalid image name {ref!r}: use lowercase NAME[:TAG], e.g. busybox or busybox:1.35"
        )
    return name, tag


def now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def go_arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


class ImageStore:
    def __init__(self, layout: Layout):
        self.layout = layout

    # --- locking --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self, exclusive: bool) -> Iterator[None]:
        os.makedirs(self.layout.images, mode=0o700, exist_ok=True)
        fd = os.open(self.layout.images_lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    # --- reading --------------------------------------------------------------------------------

    def _repositories(self) -> dict[str, str]:
        try:
            with open(self.layout.repositories) as f:
                return json.load(f)
        except FileNotFoundError:
            return {}

    def _write_repositories(self, repos: dict[str, str]) -> None:
        _write_json_atomic(self.layout.repositories, dict(sorted(repos.items())))

    def _load(self, image_id: str) -> Image | None:
        try:
            with open(self.layout.image_file(image_id)) as f:
                return Image.from_dict(json.load(f))
        except FileNotFoundError:
            return None

    def _all_ids(self) -> list[str]:
        directory = os.path.join(self.layout.images, "images")
        try:
            return sorted(n[:-5] for n in os.listdir(directory) if n.endswith(".json"))
        except FileNotFoundError:
            return []

    def list(self) -> list[Image]:
        repos = self._repositories()
        images = []
        for image_id in self._all_ids():
            image = self._load(image_id)
            if image is not None:
                image.tags = sorted(t for t, i in repos.items() if i == image_id)
                images.append(image)
        images.sort(key=lambda i: i.imported, reverse=True)
        return images

    def get(self, ref: str) -> Image:
        """By NAME[:TAG], then by id or unique id prefix (sha256: optional)."""
        if not ref:
            raise InvalidArgument("an image name is required, e.g. busybox")
        repos = self._repositories()
        image_id = None
        bare = ref[len("sha256:"):] if ref.startswith("sha256:") else ref
        if "@" in ref:
            image_id = self._digests().get(familiar_digest_ref(ref))
            if image_id is None:
                raise NotFound(f"image {ref!r} not found; `netctl image pull {ref}` fetches it")
            bare = ""
        try:
            if image_id is None:
                image_id = repos.get(normalize_reference(familiar_tag_ref(ref)))
        except InvalidArgument:
            if not _HEX.match(bare):
                raise
        if image_id is None and _HEX.match(bare):
            matches = [i for i in self._all_ids() if i.startswith(bare)]
            if len(matches) > 1:
                raise InvalidArgument(f"image reference {ref!r} is ambiguous; use more characters of the id")
            image_id = matches[0] if matches else None
        image = self._load(image_id) if image_id else None
        if image is None:
            raise NotFound(
                f"image {ref!r} not found; `netctl image ls` lists images, `netctl image import FILE NAME` adds one"
            )
        image.tags = sorted(t for t, i in repos.items() if i == image.id)
        return image

    def lowerdirs(self, image: Image) -> builtins.list[str]:
        """The image's layer directories, top layer first (overlayfs' lowerdir order)."""
        dirs = []
        for diff_id in reversed(image.layers):
            path = self.layout.layer_diff(diff_id)
            if not os.path.isdir(path):
                raise NotFound(f"layer {diff_id[:12]} of image {image.short_id} is missing; re-import the image")
            dirs.append(path)
        return dirs

    # --- importing ------------------------------------------------------------------------------

    def import_path(
        self, path: str, ref: str = "", *, default_config: dict[str, Any] | None = None
    ) -> builtins.list[Image]:
        """Import every image in the file or directory `path`; tag it `ref` if given."""
        tag = normalize_reference(familiar_tag_ref(ref)) if ref else ""
        if not os.path.exists(path):
            raise NotFound(f"image file {path!r} does not exist")
        with self.locked(exclusive=True):
            importer = _Import(self, path)
            try:
                images = importer.run(default_config or {})
                if tag and len(images) != 1:
                    raise InvalidArgument(
                        f"{path} holds {len(images)} images; import it without a name (they keep theirs)"
                    )
                self._commit(images, [tag] if tag else None)
            except BaseException:
                importer.discard()
                raise
        return images

    def _commit(self, images: builtins.list[Image], override_tags: builtins.list[str] | None) -> None:
        repos = self._repositories()
        for image in images:
            if image.raw_config and not os.path.exists(self.config_file(image.id)):
                write_bytes_atomic(self.config_file(image.id), image.raw_config)
            if self._load(image.id) is None:
                _write_json_atomic(self.layout.image_file(image.id), image.to_dict())
            for tag in override_tags if override_tags is not None else image.tags:
                repos[tag] = image.id
            image.tags = sorted(t for t, i in repos.items() if i == image.id)
        self._write_repositories(repos)

    # --- registry support (runner/registry): raw configs, kept blobs, tags, digests -----------------

    def config_file(self, image_id: str) -> str:
        return os.path.join(self.layout.images, "configs", image_id + ".json")

    @property
    def _digests_file(self) -> str:
        return os.path.join(self.layout.images, "digests.json")

    def _digests(self) -> dict[str, str]:
        """{"NAME@sha256:<manifest digest>": image id} of pulled and pushed images."""
        try:
            with open(self._digests_file) as f:
                return json.load(f)
        except FileNotFoundError:
            return {}

    def repo_digests(self, image_id: str) -> builtins.list[str]:
        return sorted(k for k, v in self._digests().items() if v == image_id)

    # --- removing -------------------------------------------------------------------------------

    def remove(
        self, ref: str, *, force: bool, containers: Callable[[], builtins.list[tuple[str, str, builtins.list[str]]]]
    ) -> builtins.list[str]:
        """Untag `ref` (when it is a tag of an image with others), else delete the image and the layers
        nothing else uses. `containers()` lists (name, image id, layers) of every container, read under
        the lock. Returns what was done, one line per step."""
        done = []
        with self.locked(exclusive=True):
            image = self.get(ref)
            repos = self._repositories()
            try:
                as_tag = normalize_reference(ref)
            except InvalidArgument:
                as_tag = ""
            if as_tag in repos and len(image.tags) > 1:
                del repos[as_tag]
                self._write_repositories(repos)
                return [f"untagged {as_tag}"]
            uses = containers()
            using = [name for name, image_id, _ in uses if image_id == image.id]
            if using and not force:
                raise InUse(
                    f"image {ref!r} is used by container(s) {', '.join(sorted(using))}; remove them first "
                    "(netctl rm) or use -f"
                )
            for tag in image.tags:
                del repos[tag]
                done.append(f"untagged {tag}")
            self._write_repositories(repos)
            os.unlink(self.layout.image_file(image.id))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.config_file(image.id))
            digests = self._digests()
            if any(i == image.id for i in digests.values()):
                _write_json_atomic(self._digests_file, {k: v for k, v in digests.items() if v != image.id})
            done.append(f"deleted {image.id}")
            in_use = {layer for _, _, layers in uses for layer in layers}
            done += self._collect_layers(image.layers, users_of_layer=in_use)
        return done

    def _collect_layers(self, candidates: builtins.list[str], *, users_of_layer: set[str]) -> builtins.list[str]:
        wanted = set(users_of_layer)
        for image_id in self._all_ids():
            image = self._load(image_id)
            if image is not None:
                wanted.update(image.layers)
        removed = []
        for diff_id in dict.fromkeys(candidates):
            if diff_id not in wanted and os.path.isdir(self.layout.layer_dir(diff_id)):
                _remove_tree(self.layout.layer_dir(diff_id))
                removed.append(f"deleted layer {diff_id}")
        return removed


# --- import machinery -------------------------------------------------------------------------------


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


class _Import:
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
            config = _parse_config(raw, f"{self.path}: config {config_name}")
            expected = _diff_ids(config, f"{self.path}: config {config_name}")
            layer_names = entry.get("Layers") or []
            if len(layer_names) != len(expected):
                raise CorruptArchive(
                    f"{self.path}: manifest lists {len(layer_names)} layers but the config {len(expected)}; "
                    "the archive is corrupt"
                )
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
            config = _parse_config(config_raw, f"{self.path}: config")
            expected = _diff_ids(config, f"{self.path}: config")
            blobs = manifest.get("layers") or []
            if len(blobs) != len(expected):
                raise CorruptArchive(
                    f"{self.path}: manifest lists {len(blobs)} layers but the config {len(expected)}; "
                    "the archive is corrupt"
                )
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


def _diff_ids(config: dict, what: str) -> list[str]:
    ids = (config.get("rootfs") or {}).get("diff_ids")
    if not isinstance(ids, list) or not ids:
        raise CorruptArchive(f"{what} has no rootfs.diff_ids")
    out = []
    for d in ids:
        if not isinstance(d, str) or not d.startswith("sha256:") or not re.fullmatch(r"[0-9a-f]{64}", d[7:]):
            raise CorruptArchive(f"{what} has an invalid diff id {d!r}")
        out.append(d[7:])
    return out


def _digest_hex(descriptor: dict, path: str) -> str:
    digest = str(descriptor.get("digest", ""))
    if not digest.startswith("sha256:") or not re.fullmatch(r"[0-9a-f]{64}", digest[7:]):
        raise CorruptArchive(f"{path}: descriptor has an invalid digest {digest!r} (only sha256 is supported)")
    return digest[7:]


def _write_json_atomic(path: str, data: Any) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    temp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    with open(temp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
    os.rename(temp, path)


def _remove_tree(path: str) -> None:
    """rm -rf, bounded retries against a concurrent reader; whiteout devices and odd modes included."""
    for _ in range(3):
        try:
            shutil.rmtree(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)
    shutil.rmtree(path, ignore_errors=True)


def image_size_text(size: int) -> str:
    n = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1000
    return str(n)
