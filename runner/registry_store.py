"""The image store as the registry code (runner/registry) uses it: kept configs and layer blobs, layers
installed one by one from a pull's temporary directories, images recorded once their layers are in
place, tags and NAME@DIGEST references. A subclass of ImageStore, so runner/images.py keeps only the
import machinery and `netctl run` never loads this module.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import secrets
from collections.abc import Sequence
from typing import Any

from libnetwork.errors import InvalidArgument, NotFound
from runner.image_refs import familiar_tag_ref
from runner.images import (
    LAYER_BLOB,
    MAX_LAYERS,
    Image,
    ImageStore,
    _remove_tree,
    _write_json_atomic,
    normalize_reference,
    now,
)


class RegistryImageStore(ImageStore):
    def raw_config(self, image: Image) -> bytes:
        """The config bytes whose sha256 is the image id (as imported or pulled)."""
        import hashlib

        candidates = []
        with contextlib.suppress(FileNotFoundError):
            with open(self.config_file(image.id), "rb") as f:
                candidates.append(f.read())
        candidates.append(json.dumps(image.config, sort_keys=True, separators=(",", ":")).encode())  # rootfs tarballs
        for raw in candidates:
            if hashlib.sha256(raw).hexdigest() == image.id:
                return raw
        raise NotFound(
            f"the config of image {image.short_id} was not kept (imported by an older netctl); re-import the image"
        )

    def layer_info(self, diff_id: str) -> dict[str, Any]:
        """layer.json: diff_id, size and, for layers imported or pulled since blobs are kept, blob
        {digest, size, compression} with the blob at layer_blob(diff_id)."""
        try:
            with open(os.path.join(self.layout.layer_dir(diff_id), "layer.json")) as f:
                return json.load(f)
        except FileNotFoundError:
            raise NotFound(f"layer {diff_id[:12]} is missing; re-import or pull the image") from None

    def layer_blob(self, diff_id: str) -> str:
        return os.path.join(self.layout.layer_dir(diff_id), LAYER_BLOB)

    def has_layer(self, diff_id: str) -> bool:
        return os.path.isdir(self.layout.layer_diff(diff_id))

    def new_temp_dir(self, prefix: str) -> str:
        """A fresh directory under ROOT/images/tmp named PREFIX-<pid>-<random> (see sweep_temp)."""
        os.makedirs(self.layout.images_tmp, mode=0o700, exist_ok=True)
        path = os.path.join(self.layout.images_tmp, f"{prefix}-{os.getpid()}-{secrets.token_hex(6)}")
        os.makedirs(path, mode=0o700)
        return path

    def sweep_temp(self, prefix: str) -> None:
        """Remove PREFIX-<pid>-* directories whose process is gone (a pull killed half-way)."""
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.layout.images_tmp):
                parts = name.split("-")
                if len(parts) == 3 and parts[0] == prefix and parts[1].isdigit() and not _pid_alive(int(parts[1])):
                    _remove_tree(os.path.join(self.layout.images_tmp, name))

    def install_layer(self, temp: str, diff_id: str) -> bool:
        """Move a complete layer directory (diff/, blob, layer.json) to its content address. False
        when the layer was there already (the temp directory is removed then)."""
        target = self.layout.layer_dir(diff_id)
        os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
        if os.path.isdir(target):
            _remove_tree(temp)
            return False
        try:
            os.rename(temp, target)
        except OSError:
            if not os.path.isdir(target):
                raise
            _remove_tree(temp)  # a concurrent pull put it there first
            return False
        return True

    def add_image(self, raw_config: bytes, config: dict[str, Any], layers: Sequence[str], source: str,
                  tags: Sequence[str], digest_refs: Sequence[str] = ()) -> Image:  # fmt: skip
        """Record an image whose layers are in place (a pull); tags and NAME@DIGEST refs point at it."""
        import hashlib

        if len(layers) > MAX_LAYERS:
            raise InvalidArgument(f"image has {len(layers)} layers; netctl supports at most {MAX_LAYERS}")
        with self.locked(exclusive=True):
            missing = [d for d in layers if not self.has_layer(d)]
            if missing:
                raise NotFound(f"layer {missing[0][:12]} was removed while the image was being added; pull again")
            size = sum(int(self.layer_info(d).get("size", 0)) for d in layers)
            image = Image(id=hashlib.sha256(raw_config).hexdigest(), layers=list(layers), config=config, size=size,
                          imported=now(), source=source, raw_config=raw_config)  # fmt: skip
            self.commit([image], [normalize_reference(t) for t in tags])
            if digest_refs:
                digests = self._digests()
                digests.update({ref: image.id for ref in digest_refs})
                _write_json_atomic(self._digests_file, dict(sorted(digests.items())))
        return image

    def discard_unused_layers(self, diff_ids: Sequence[str]) -> builtins.list[str]:
        """Remove those of `diff_ids` no image uses (a failed pull's layers); what was removed."""
        with self.locked(exclusive=True):
            return self._collect_layers(builtins.list(diff_ids), users_of_layer=set())

    def tag(self, source: str, target: str) -> Image:
        """`image tag SOURCE TARGET`: TARGET (NAME[:TAG]) names SOURCE's image too."""
        tag = normalize_reference(familiar_tag_ref(target))
        with self.locked(exclusive=True):
            image = self.get(source)
            repos = self._repositories()
            repos[tag] = image.id
            self._write_repositories(repos)
            image.tags = sorted(t for t, i in repos.items() if i == image.id)
        return image

    def record_digest(self, digest_ref: str, image_id: str) -> None:
        with self.locked(exclusive=True):
            digests = self._digests()
            digests[digest_ref] = image_id
            _write_json_atomic(self._digests_file, dict(sorted(digests.items())))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
