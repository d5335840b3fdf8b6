"""`netctl image pull`: a reference -> manifest (an index resolved to this host's platform, or the one
--platform names) -> config -> the layers the store lacks, downloaded in parallel (3 at a time, as
Docker does), each verified, unpacked with the import's safety checks (runner/layers.py) and moved to
its content address; the image is recorded last, so an interrupted pull leaves no image and no partial
layer visible (only ROOT/images/tmp/blobs/*.part, which the next pull continues).

Layers are skipped by diff id (the config names them), so a layer the store holds from any source -
another pull, an import - is not fetched again.
"""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass

from runner.image_import import config_diff_ids
from runner.layer_blobs import layer_record
from runner.registry_store import RegistryImageStore
from runner.layers import CorruptArchive, unpack
from runner.registry import blobs, manifest
from runner.registry.client import Registry, RegistryConnectionError, read_limited
from runner.registry.config import Settings
from runner.registry.errors import DigestMismatch, RegistryError, Unsupported
from runner.registry.progress import Progress
from runner.registry.reference import Reference, parse

PARALLEL = 3


@dataclass
class PullResult:
    reference: Reference
    digest: str  # the manifest digest the reference resolved to (the index's, when it was an index)
    image_id: str
    fetched: int  # layers downloaded
    present: int  # layers already in the store


def pull(
    store: RegistryImageStore,
    text: str,
    *,
    settings: Settings,
    progress: Progress,
    platform: str | None = None,
    registry: Registry | None = None,
    notice: str = "",
) -> PullResult:
    ref = parse(text)
    want = manifest.parse_platform(platform)
    own = registry is None
    registry = registry or Registry(ref.registry, ref.api_host, settings)
    try:
        job = _Pull(store, ref, want, registry, progress, notice)
        job.explicit_platform = bool(platform)
        return job.run()
    finally:
        if own:
            registry.close()


class _Pull:
    def __init__(
        self,
        store: RegistryImageStore,
        ref: Reference,
        want: manifest.Platform,
        registry: Registry,
        progress: Progress,
        notice: str = "",
    ):
        self.notice = notice
        self.explicit_platform = False
        self.store = store
        self.ref = ref
        self.want = want
        self.registry = registry
        self.progress = progress
        self.scope = f"repository:{ref.repository}:pull"
        self.cancelled = threading.Event()
        self.installed: list[str] = []  # layers this pull moved into the store (undone if it fails)
        self.lock = threading.Lock()

    def run(self) -> PullResult:
        ref, what = self.ref, str(self.ref)
        top = manifest.fetch(self.registry, ref.repository, ref.selector, self.scope, what)
        if self.notice:  # said once the image is known to exist: a failure before is one line
            self.progress.event("", self.notice)
        self.progress.event("", f"{ref.selector if not ref.digest else ref.digest[:19]}: Pulling from {ref.name}")
        image_manifest = top
        if top.media_type in manifest.INDEXES:
            entry = manifest.choose(top, self.want, what)
            chosen = manifest.descriptor_digest(entry, what)
            image_manifest = manifest.fetch(self.registry, ref.repository, chosen, self.scope, f"{what} ({self.want})")
            if image_manifest.media_type not in manifest.MANIFESTS:
                raise Unsupported(f"{what}: the index entry for {self.want} is not an image manifest")
        body = image_manifest.body
        config_desc = body.get("config") or {}
        config_digest = manifest.descriptor_digest(config_desc, what)
        config_raw = self._known_config(config_digest) or self._config(config_digest, int(config_desc["size"]), what)
        config = _parse_config(config_raw, what)
        if self.explicit_platform and image_manifest is top:  # one manifest, no index: it must be what was asked for
            have = manifest.Platform(
                str(config.get("os", "linux")), str(config.get("architecture", "")), str(config.get("variant", ""))
            )
            if (have.os, have.architecture) != (self.want.os, self.want.architecture):
                raise Unsupported(f"{what} is an image for {have} only, not {self.want}; pull it without --platform")
        diff_ids = config_diff_ids(config, f"the config of {what}", RegistryError)
        layers = body.get("layers") or []
        if len(layers) != len(diff_ids):
            raise RegistryError(
                f"{what}: the manifest lists {len(layers)} layers but the config {len(diff_ids)}; the image is broken"
            )
        for layer in layers:
            media = str(layer.get("mediaType", ""))
            if media not in manifest.LAYER_TYPES:
                raise Unsupported(f"{what}: layer of type {media!r} is not a file-system layer netctl can unpack")
            manifest.descriptor_digest(layer, what)
        todo = []
        for layer, diff_id in zip(layers, diff_ids, strict=True):
            item = layer["digest"][7:19]
            if self.store.has_layer(diff_id):
                self.progress.done(item, "Already exists")
            else:
                todo.append((layer, diff_id))
        fetched = self._fetch_all(todo, what) if todo else 0
        tags = [ref.familiar] if ref.tag else []
        digest_ref = f"{ref.familiar_name}@{top.digest}"
        image = self.store.add_image(config_raw, config, diff_ids, "registry", tags, [digest_ref])
        return PullResult(ref, top.digest, image.id, fetched, len(layers) - len(todo))

    def _known_config(self, digest: str) -> bytes | None:
        """The config of an image the store holds (its id is the config's digest): no download."""
        import hashlib

        try:
            with open(self.store.config_file(digest[7:]), "rb") as f:
                raw = f.read(manifest.config_limit() + 1)
        except FileNotFoundError:
            return None
        return raw if "sha256:" + hashlib.sha256(raw).hexdigest() == digest else None

    def _config(self, digest: str, size: int, what: str) -> bytes:
        import hashlib

        limit = manifest.config_limit()
        if size > limit:
            raise RegistryError(f"the config of {what} is {size} bytes, over netctl's limit of {limit}; refusing it")
        response = self.registry.request(
            "GET", f"/v2/{self.ref.repository}/blobs/{digest}", scope=self.scope, stream=True
        )
        raw = read_limited(response, limit, f"the config of {what}")
        got = "sha256:" + hashlib.sha256(raw).hexdigest()
        if got != digest or len(raw) != size:
            raise DigestMismatch(
                f"the config of {what} does not match its digest {digest[:19]} (got {got[:19]}); "
                "the registry's copy is corrupt or was tampered with"
            )
        return raw

    def _fetch_all(self, todo: list[tuple[dict, str]], what: str) -> int:
        self.store.sweep_temp("pull")
        try:
            return self._fetch_all_locked(todo, what)
        except BaseException as err:
            self._undo(todo, keep_partial=isinstance(err, (RegistryConnectionError, KeyboardInterrupt)))
            raise

    def _undo(self, todo: list[tuple[dict, str]], keep_partial: bool) -> None:
        """After a failed pull: the layers it installed go (no image uses them yet), and so do its
        partial downloads unless the failure was the connection's (then the next pull continues them)."""
        self.store.discard_unused_layers(self.installed)
        if keep_partial:
            return
        tmp = self.store.layout.images_tmp
        for layer, _ in todo:
            hexpart = layer["digest"][7:]
            part = os.path.join(blobs.blob_dir(tmp), f"{hexpart}.part")
            if os.path.exists(part):
                with blobs.blob_lock(tmp, hexpart, wait=False) as got:
                    if got and os.path.exists(part):
                        os.unlink(part)

    def _fetch_all_locked(self, todo: list[tuple[dict, str]], what: str) -> int:
        fetched = 0
        with self.store.locked(exclusive=False):  # no `image rm` collects a layer while we add to the store
            with ThreadPoolExecutor(max_workers=PARALLEL, thread_name_prefix="pull") as pool:
                futures = [pool.submit(self._layer, layer, diff_id, what) for layer, diff_id in todo]
                try:
                    done, pending = wait(futures, return_when=FIRST_EXCEPTION)
                except BaseException:  # ^C: stop the other downloads at their next chunk
                    self.cancelled.set()
                    raise
                if pending:
                    self.cancelled.set()
                    for future in pending:
                        future.cancel()
                    wait(pending)
                errors: list[BaseException] = []
                for future in futures:
                    if future.done() and not future.cancelled():
                        error = future.exception()
                        if error is not None:
                            errors.append(error)
                errors.sort(key=lambda e: isinstance(e, blobs.Cancelled))  # the cause first, not what it stopped
                if errors:
                    raise errors[0]
                fetched = sum(1 for f in futures if f.result())
        return fetched

    def _layer(self, layer: dict, diff_id: str, what: str) -> bool:
        """Download, verify, unpack and install one layer; False if another pull installed it first."""
        if self.cancelled.is_set():
            return False
        digest, size = layer["digest"], int(layer["size"])
        item = digest[7:19]
        tmp = self.store.layout.images_tmp
        with blobs.blob_lock(tmp, digest[7:]):
            if self.store.has_layer(diff_id):
                self.progress.done(item, "Already exists")
                return False
            part = os.path.join(blobs.blob_dir(tmp), f"{digest[7:]}.part")
            blobs.download(
                self.registry, self.ref.repository, digest, size, part, self.scope, self.progress, item, self.cancelled
            )
            self.progress.event(item, "Download complete")
            if self.cancelled.is_set():
                return False
            self.progress.event(item, "Extracting")
            temp = self.store.new_temp_dir("pull")
            try:
                os.mkdir(os.path.join(temp, "diff"))
                with open(part, "rb") as f:
                    head = f.read(6)
                    f.seek(0)
                    result = unpack(f, os.path.join(temp, "diff"), f"layer {digest[:19]} of {what}")
                if result.diff_id != diff_id:
                    raise CorruptArchive(
                        f"layer {digest[:19]} of {what} unpacks to diff id sha256:{result.diff_id[:12]}, "
                        f"not the config's sha256:{diff_id[:12]}; the image is broken"
                    )
                from runner.layers import compression_of

                os.rename(part, os.path.join(temp, "blob"))
                record = layer_record(diff_id, result.size, digest[7:], size, compression_of(head))
                record["blob"]["mediaType"] = layer.get("mediaType", "")
                record["blob"]["source"] = f"{self.ref.registry}/{self.ref.repository}"
                with open(os.path.join(temp, "layer.json"), "w") as f:
                    json.dump(record, f, indent=1, sort_keys=True)
                installed = self.store.install_layer(temp, diff_id)
                if installed:
                    with self.lock:
                        self.installed.append(diff_id)
            except BaseException:
                from runner.images import _remove_tree

                _remove_tree(temp)
                if os.path.exists(part):
                    os.unlink(part)  # verified against its digest: the registry's content itself is bad
                raise
        self.progress.done(item, "Pull complete")
        return installed


def _parse_config(raw: bytes, what: str) -> dict:
    config = manifest.json_object(raw, f"the config of {what}")
    if config.get("os", "linux") != "linux":
        raise Unsupported(f"{what} is an image for {config.get('os')}, not linux")
    return config


def pull_into(layout, text: str, *, progress: Progress, platform: str | None = None,
              insecure: tuple[str, ...] = (), notice: str = "") -> PullResult:
    """A pull into the store of `layout` with the registry settings and the endpoint the last pull
    of that registry found (runner/registry/quick.py): what the CLI and the Docker API both run."""
    from runner.registry.quick import known_endpoint, record_endpoint

    store = RegistryImageStore(layout)
    ref = parse(text)
    registry = Registry(ref.registry, ref.api_host, Settings.load(insecure))
    registry.use_known_base(known_endpoint(layout.images, ref.registry).get("base", ""))
    try:
        result = pull(store, text, settings=registry.settings, progress=progress, platform=platform,
                      registry=registry, notice=notice)
        record_endpoint(layout.images, ref.registry, registry.base, anonymous=registry.anonymous)
    finally:
        registry.close()
    return result


def pull_and_report(
    layout,
    text: str,
    *,
    quiet: bool = False,
    platform: str | None = None,
    insecure: tuple[str, ...] = (),
    out=None,
    err=None,
    notice: str = "",
) -> PullResult:
    """A pull as the command line shows it: progress on `err` (bars on a terminal, lines otherwise,
    nothing when quiet), then the digest and status on `out` (with -q only the reference)."""
    import sys

    from runner.registry.progress import for_terminal

    out = out or sys.stdout
    err = err or sys.stderr
    progress = for_terminal(quiet, err)
    try:
        result = pull_into(layout, text, progress=progress, platform=platform, insecure=insecure, notice=notice)
    finally:
        progress.close()
    name = result.reference.familiar if result.reference.tag else f"{result.reference.familiar_name}@{result.digest}"
    if not quiet:
        status = "Downloaded newer image" if result.fetched else "Image is up to date"
        out.write(f"Digest: {result.digest}\nStatus: {status} for {name}\n")
    out.write(f"{result.reference}\n")
    out.flush()
    return result
