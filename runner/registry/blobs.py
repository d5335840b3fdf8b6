"""Downloading one blob to a file: streamed, hashed and counted as it comes, resumed with a Range
request after a dropped connection (bounded retries with back-off), and checked against its digest
and size before anyone uses it.

The file is ROOT/images/tmp/blobs/<hex>.part, guarded by an flock on <hex>.lock: two pulls of the same
blob at once download it once (the second waits, then finds the layer in place). A pull killed
half-way leaves only the .part file, which no image or layer refers to; the next pull continues it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from contextlib import contextmanager

import requests

from runner.registry.client import Registry, RegistryConnectionError
from runner.registry.errors import DigestMismatch, RegistryError
from runner.registry.progress import Progress

RETRIES = 5
BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 4.0)
CHUNK = 1 << 20
LOCK_WAIT_S = 3600.0  # another pull downloading the same blob: wait for it, bounded


class DownloadInterrupted(RegistryConnectionError):
    """The connection kept failing after every retry; what arrived is kept for the next pull."""


class Cancelled(RegistryError):
    """Another layer of the same pull failed (or ^C): this download stops, its .part file stays."""


def blob_dir(images_tmp: str) -> str:
    path = os.path.join(images_tmp, "blobs")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


@contextmanager
def blob_lock(images_tmp: str, hexdigest: str, *, wait: bool = True):
    """Holds the blob's lock (yields True); with wait=False yields False at once if another holds it."""
    fd = os.open(os.path.join(blob_dir(images_tmp), f"{hexdigest}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    yield False
                    return
                if time.monotonic() > deadline:
                    raise RegistryError(
                        f"blob {hexdigest[:12]} stayed locked by another pull for {LOCK_WAIT_S:.0f} s"
                    ) from None
                time.sleep(0.05)
        yield True
    finally:
        os.close(fd)


def download(
    registry: Registry,
    repository: str,
    digest: str,
    size: int,
    path: str,
    scope: str,
    progress: Progress,
    item: str,
    cancelled=None,
) -> None:
    """Fetch blob `digest` of `size` bytes into `path` (continuing what is there); verified on return."""
    hasher = hashlib.sha256()
    have = 0
    if os.path.exists(path):
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(CHUNK), b""):
                if have + len(chunk) > size:
                    break
                hasher.update(chunk)
                have += len(chunk)
        if have != os.path.getsize(path):  # longer than the blob: start again
            hasher, have = hashlib.sha256(), 0
            os.truncate(path, 0)
    progress.start(item, size, "Downloading")
    progress.advance(item, have)
    failures = 0
    with open(path, "ab") as out:
        while have < size:
            headers = {"Range": f"bytes={have}-"} if have else {}
            try:
                response = registry.request(
                    "GET", f"/v2/{repository}/blobs/{digest}", scope=scope, stream=True, ok=(200, 206), headers=headers
                )
                with response:
                    if have and response.status_code == 200:  # the registry ignored the Range: from the start
                        out.truncate(0)
                        out.seek(0)
                        hasher, have = hashlib.sha256(), 0
                        progress.start(item, size, "Downloading")
                    for chunk in response.iter_content(CHUNK):
                        if cancelled is not None and cancelled.is_set():
                            raise Cancelled(f"download of blob {digest[:19]} stopped")
                        if have + len(chunk) > size:
                            raise DigestMismatch(
                                f"blob {digest[:19]} of {repository} is larger than the {size} bytes "
                                "its manifest states; the registry's copy is corrupt or was tampered with"
                            )
                        out.write(chunk)
                        hasher.update(chunk)
                        have += len(chunk)
                        progress.advance(item, len(chunk))
                out.flush()
                if have < size:
                    raise RegistryConnectionError(f"blob {digest[:19]} ended after {have} of {size} bytes")
            except (RegistryConnectionError, requests.exceptions.RequestException) as err:
                out.flush()
                failures += 1
                if failures > RETRIES:
                    raise DownloadInterrupted(
                        f"downloading blob {digest[:19]} of {repository} from {registry.registry} "
                        f"failed {failures} times "
                        f"({str(err).splitlines()[0][:100]}); {have} of {size} bytes are kept, pull again to continue"
                    ) from None
                progress.event(item, f"Retrying in {BACKOFF_S[failures - 1]:.1f} s ({failures}/{RETRIES})")
                time.sleep(BACKOFF_S[failures - 1])
    got = "sha256:" + hasher.hexdigest()
    if got != digest:
        os.unlink(path)
        raise DigestMismatch(
            f"blob {digest[:19]} of {repository} does not match its digest (got {got[:19]}): the registry's copy is "
            "corrupt or was tampered with; nothing was stored"
        )
