"""`netctl image push`: an image of the store to a registry, as Docker pushes one.

Each layer is pushed as the blob the store kept when it was imported or pulled (ROOT/images/layers/
<diff id>/blob), so its digest and the image's config (whose sha256 is the image id) stay what they
were: pushing and pulling back gives the same image. Per blob: HEAD first (the registry has it: nothing
sent), else a cross-repository mount when the blob came from another repository of the same registry,
else an upload - monolithic (one PUT) up to --chunk-size, chunked (PATCH ... PUT) above it. The config
goes next and the manifest last, so a registry never holds a manifest whose blobs are missing.
A Docker schema 2 manifest, or OCI when a layer is zstd-compressed (schema 2 has no zstd type).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urljoin

from libnetwork.errors import InvalidArgument, NotFound
from runner.registry_store import RegistryImageStore
from runner.registry import manifest
from runner.registry.client import Registry
from runner.registry.config import Settings
from runner.registry.errors import RegistryError
from runner.registry.progress import Progress
from runner.registry.reference import Reference, parse

PARALLEL = 3
DEFAULT_CHUNK = 64 << 20  # blobs up to this size go in one PUT
_DOCKER_LAYER = {
    "gzip": "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "": "application/vnd.docker.image.rootfs.diff.tar",
}
_OCI_LAYER = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "": "application/vnd.oci.image.layer.v1.tar",
}


@dataclass
class PushResult:
    reference: Reference
    digest: str
    size: int  # of the manifest
    sent: int  # blobs uploaded
    skipped: int  # blobs the registry had or mounted


@dataclass
class _Blob:
    digest: str
    size: int
    path: str | None  # a file, or
    data: bytes | None  # bytes in memory (the config)
    media_type: str
    source: str = ""  # registry/repository it was pulled from, for a mount
    oci: bool = False  # pulled with an OCI media type


def push(
    store: RegistryImageStore,
    local: str,
    *,
    settings: Settings,
    progress: Progress,
    target: str = "",
    chunk_size: int = DEFAULT_CHUNK,
) -> PushResult:
    image = store.get(local)
    ref = parse(target or local)
    if ref.digest:
        raise InvalidArgument(f"push {ref}: push to a tag, not a digest (NAME[:TAG])")
    layers = _layer_blobs(store, image.layers, local)
    oci = any(b.media_type == "zstd" or b.oci for b in layers)  # zstd, or pulled as OCI: stay OCI
    table = _OCI_LAYER if oci else _DOCKER_LAYER
    for blob in layers:
        if blob.media_type not in table:
            raise InvalidArgument(
                f"layer {blob.digest[:19]} of {local} is {blob.media_type}-compressed; registries take "
                "gzip, zstd or uncompressed layers: re-import it as one of those"
            )
        blob.media_type = table[blob.media_type]
    raw_config = store.raw_config(image)
    config = _Blob(
        "sha256:" + hashlib.sha256(raw_config).hexdigest(),
        len(raw_config),
        None,
        raw_config,
        "application/vnd.oci.image.config.v1+json" if oci else "application/vnd.docker.container.image.v1+json",
    )
    body = {
        "schemaVersion": 2,
        "mediaType": manifest.OCI_MANIFEST if oci else manifest.DOCKER_MANIFEST,
        "config": {"mediaType": config.media_type, "size": config.size, "digest": config.digest},
        "layers": [{"mediaType": b.media_type, "size": b.size, "digest": b.digest} for b in layers],
    }
    raw_manifest = json.dumps(body, indent=3).encode()
    registry = Registry(ref.registry, ref.api_host, settings)
    try:
        uploader = _Uploader(registry, ref, progress, chunk_size)
        progress.event("", f"The push refers to repository [{ref.name}]")
        with ThreadPoolExecutor(max_workers=PARALLEL, thread_name_prefix="push") as pool:
            results = list(pool.map(uploader.blob, layers))
        results.append(uploader.blob(config))
        response = registry.request(
            "PUT",
            f"/v2/{ref.repository}/manifests/{ref.tag}",
            scope=uploader.scope,
            ok=(201, 200),
            data=raw_manifest,
            headers={"Content-Type": body["mediaType"]},
        )
        response.close()
    finally:
        registry.close()
    digest = "sha256:" + hashlib.sha256(raw_manifest).hexdigest()
    store.record_digest(f"{ref.familiar_name}@{digest}", image.id)
    sent = sum(1 for r in results if r)
    return PushResult(ref, digest, len(raw_manifest), sent, len(results) - sent)


def _layer_blobs(store: RegistryImageStore, diff_ids: list[str], local: str) -> list[_Blob]:
    out = []
    for diff_id in diff_ids:
        info = store.layer_info(diff_id)
        blob = info.get("blob") or {}
        path = store.layer_blob(diff_id)
        if not blob.get("digest") or not os.path.exists(path):
            raise NotFound(
                f"layer {diff_id[:12]} of {local} has no kept archive (stored by an older netctl); "
                "re-import or pull the image, then push"
            )
        out.append(
            _Blob(
                blob["digest"],
                int(blob["size"]),
                path,
                None,
                blob.get("compression", ""),
                blob.get("source", ""),
                str(blob.get("mediaType", "")).startswith("application/vnd.oci."),
            )
        )
    return out


class _Uploader:
    def __init__(self, registry: Registry, ref: Reference, progress: Progress, chunk_size: int):
        self.registry = registry
        self.ref = ref
        self.progress = progress
        self.chunk_size = chunk_size
        self.scope = f"repository:{ref.repository}:pull,push"

    def blob(self, blob: _Blob) -> bool:
        """Push one blob unless the registry has it; True if bytes were sent."""
        item = blob.digest[7:19]
        repo = self.ref.repository
        head = self.registry.request("HEAD", f"/v2/{repo}/blobs/{blob.digest}", scope=self.scope, ok=(200, 404))
        head.close()
        if head.status_code == 200:
            self.progress.done(item, "Layer already exists")
            return False
        scope = self.scope
        query = ""
        source_registry, _, source_repo = blob.source.partition("/")
        if source_repo and source_registry == self.ref.registry and source_repo != repo:
            scope = f"{self.scope} repository:{source_repo}:pull"
            query = f"?mount={blob.digest}&from={source_repo}"
        start = self.registry.request(
            "POST", f"/v2/{repo}/blobs/uploads/{query}", scope=scope, ok=(201, 202), headers={"Content-Length": "0"}
        )
        start.close()
        if start.status_code == 201:
            self.progress.done(item, f"Mounted from {source_repo}")
            return False
        location = self._location(start)
        self.progress.start(item, blob.size, "Pushing")
        if blob.size <= self.chunk_size:
            with self._open(blob) as body:
                reader = _Counting(body, lambda n: self.progress.advance(item, n))
                headers = {"Content-Type": "application/octet-stream", "Content-Length": str(blob.size)}
                self._finish(location, blob, headers, data=reader)
        else:
            offset = 0
            with self._open(blob) as body:
                while offset < blob.size:
                    chunk = body.read(self.chunk_size)
                    end = offset + len(chunk) - 1
                    response = self.registry.request(
                        "PATCH",
                        "",
                        url=location,
                        scope=self.scope,
                        ok=(202,),
                        data=chunk,
                        headers={
                            "Content-Type": "application/octet-stream",
                            "Content-Range": f"{offset}-{end}",
                            "Content-Length": str(len(chunk)),
                        },
                    )
                    response.close()
                    location = self._location(response)
                    offset += len(chunk)
                    self.progress.advance(item, len(chunk))
            self._finish(location, blob, {"Content-Length": "0"})
        self.progress.done(item, "Pushed")
        return True

    def _finish(self, location: str, blob: _Blob, headers: dict[str, str], data=None) -> None:
        """The PUT that closes an upload session with the blob's digest: the whole blob in its body
        (a monolithic upload), or nothing after the chunks were PATCHed."""
        response = self.registry.request(
            "PUT",
            "",
            url=_with_digest(location, blob.digest),
            scope=self.scope,
            ok=(201,),
            data=data,
            headers=headers,
        )
        response.close()

    def _location(self, response) -> str:
        location = response.headers.get("Location")
        if not location:
            raise RegistryError(f"registry {self.registry.registry} started an upload without a Location")
        return urljoin(self.registry.base + "/", location)

    @staticmethod
    def _open(blob: _Blob):
        if blob.data is not None:
            return io.BytesIO(blob.data)
        assert blob.path is not None  # a blob is bytes (the config) or a file (a layer)
        return open(blob.path, "rb")


class _Counting(io.RawIOBase):
    """A file read by requests while uploading, reporting progress; seekable to the start for a retry."""

    def __init__(self, inner, report):
        self.inner = inner
        self.report = report

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        # urllib3 asks for 16 KiB at a time; 1 MiB per read sends the same bytes with 1/64 of the calls
        # (and of the progress updates). Its loop takes whatever a read returns.
        data = self.inner.read(max(n, 1 << 20) if n and n > 0 else 1 << 20)
        if data:
            self.report(len(data))
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.inner.seek(offset, whence)

    def tell(self) -> int:
        return self.inner.tell()


def _with_digest(location: str, digest: str) -> str:
    return f"{location}{'&' if '?' in location else '?'}digest={digest}"
