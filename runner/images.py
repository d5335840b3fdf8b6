"""The image store: images, their tags, and layers stored once by content (sha256 diff id).

Images come in from files (runner/image_import.py: rootfs tarballs, `docker save` archives, OCI
layouts; every digest they state is checked) and from registries (runner/registry/, through
runner/registry_store.py); layers are unpacked by runner/layers.py, which refuses members that
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
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from libnetwork.errors import InUse, InvalidArgument, NotFound
from runner.image_refs import familiar_digest_ref, familiar_tag_ref
from runner.layer_blobs import write_bytes_atomic
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

    def commit(self, images: builtins.list[Image], override_tags: builtins.list[str] | None) -> None:
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


def image_size_text(size: int, sep: str = "") -> str:
    """Bytes in decimal units, as `docker images` (1.2MB) or, with sep=" ", as pull's progress (1.2 MB)."""
    n = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f}{sep}{unit}" if unit == "B" else f"{n:.1f}{sep}{unit}"
        n /= 1000
    return str(n)
