"""Images in and out over the Docker API: load (`docker load`), save (`docker save`), create = pull
from a registry, with Docker's streamed JSON progress.

load: the upload goes to a temporary file under ROOT/images/tmp and is imported by the importer
`netctl image import` uses (runner/image_import.py), which records nothing until every layer is in
place; a client that drops mid-upload leaves nothing (the file is deleted, nothing imported).
save: runner/registry/save.py writes docker-archive to a temporary file, streamed then deleted.
pull: runner/registry/pull.py's pull_into, its progress events turned into Docker's JSON lines.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import re
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

from libnetwork.errors import NetctlError, NotFound
from netctl.docker_api.api import Api
from netctl.docker_api.http import ApiError, Raw, Request, Stream, json_line, not_found, status_of
from netctl.docker_api.images import docker_id, image_store
from runner.registry.progress import Progress

PROGRESS_STEP = 1 << 20  # a Downloading line per this many bytes of a layer, not one per chunk
FIRST_EVENT_WAIT_S = 60.0  # a pull that fails before its first event answers with a status, not a stream


def _temp_dir(api: Api) -> str:
    path = api.layout.images_tmp
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


# --- load ----------------------------------------------------------------------------------------


def load(api: Api, req: Request) -> Stream:
    from runner.image_import import import_path

    quiet = req.flag("quiet")  # dockerd's quiet only drops progress bars, which a load here has none of
    fd, path = tempfile.mkstemp(prefix="docker-load-", suffix=".tar", dir=_temp_dir(api))
    try:
        with os.fdopen(fd, "wb") as out:
            body = req.stream()
            while True:
                chunk = body.read(1 << 20)
                if not chunk:
                    break
                out.write(chunk)
        if os.path.getsize(path) == 0:
            raise ApiError(400, "no image archive in the request body (docker load reads a docker save tar)")
        archive_tags = _archive_tags(path)
        try:
            images = import_path(image_store(api), path)
        except NetctlError as err:
            raise ApiError(400 if status_of(err) == 404 else status_of(err),
                           f"loading the image archive: {err.message}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    lines = []
    for image in images:
        # the tags the archive gave (image.tags now also holds the tags the image had before)
        names = [t for t in image.tags if t in archive_tags] or [docker_id(image)]
        for name in names:
            prefix = "Loaded image ID: " if name == docker_id(image) else "Loaded image: "
            lines.append({"stream": f"{prefix}{name}\n"})
            api.events.publish("image", "load", docker_id(image), {"name": name})
    # Docker answers JSON lines (quiet or not); the CLI prints each "stream" member.
    del quiet
    return Stream(iter([json_line(line) for line in lines]))


def _archive_tags(path: str) -> set[str]:
    """The tags a docker-save archive names (manifest.json RepoTags), normalised as the store keys
    them; empty for other archives (an OCI layout's names, a rootfs tarball)."""
    import tarfile

    from runner.image_refs import familiar_tag_ref
    from runner.images import normalize_reference

    tags: set[str] = set()
    try:
        with tarfile.open(path) as tar:
            member = tar.extractfile("manifest.json")
            manifest = json.loads(member.read(16 << 20)) if member is not None else []
        for entry in manifest if isinstance(manifest, list) else []:
            for tag in (entry.get("RepoTags") or []) if isinstance(entry, dict) else []:
                with contextlib.suppress(NetctlError, TypeError, AttributeError):
                    tags.add(normalize_reference(familiar_tag_ref(tag)))
    except (tarfile.TarError, KeyError, ValueError, OSError):
        pass
    return tags


# --- save ----------------------------------------------------------------------------------------


def _save(api: Api, refs: list[str]) -> Raw:
    from runner.registry.save import save

    if not refs:
        raise ApiError(400, "no image named: give names=IMAGE")
    store = image_store(api)
    for ref in refs:
        try:
            store.get(ref)
        except (NotFound, NetctlError):
            raise not_found(f"No such image: {ref}") from None
    directory = _temp_dir(api)
    path = os.path.join(directory, f"docker-save-{os.urandom(6).hex()}.tar")
    save(store, refs, path, "docker-archive")
    f = open(path, "rb")  # noqa: SIM115  (streamed, then closed by the server)
    os.unlink(path)  # the open file keeps the data until the reply is sent
    return Raw(f, content_type="application/x-tar")


def save_many(api: Api, req: Request) -> Raw:
    return _save(api, req.query.get("names", []))


def save_one(api: Api, req: Request, name: str) -> Raw:
    return _save(api, [name])


# --- create (pull) -------------------------------------------------------------------------------


class JsonProgress(Progress):
    """The pull's progress as dockerd's JSON messages, into a queue the reply streams from."""

    def __init__(self) -> None:
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._totals: dict[str, tuple[int, int, int]] = {}  # item -> (current, total, reported)
        self._lock = threading.Lock()

    def put(self, message: dict[str, Any]) -> None:
        self.queue.put(message)

    def event(self, item: str, text: str) -> None:
        match = re.match(r"^(\S+): Pulling from (.+)$", text) if not item else None
        if match:  # dockerd names the repository without its registry: "Pulling from library/busybox"
            repository = match.group(2).split("/", 1)[1] if "/" in match.group(2) else match.group(2)
            self.put({"status": f"Pulling from {repository}", "id": match.group(1)})
        elif item:
            self.put({"status": text, "progressDetail": {}, "id": item})
        else:
            self.put({"status": text})

    def start(self, item: str, total: int, text: str) -> None:
        with self._lock:
            self._totals[item] = (0, total, 0)
        self.put({"status": "Pulling fs layer", "progressDetail": {}, "id": item})

    def advance(self, item: str, n: int) -> None:
        with self._lock:
            current, total, reported = self._totals.get(item, (0, 0, 0))
            current += n
            report = current - reported >= PROGRESS_STEP or (total and current >= total)
            self._totals[item] = (current, total, current if report else reported)
        if report:
            self.put({"status": "Downloading", "progressDetail": {"current": current, "total": total},
                      "progress": _bar(current, total), "id": item})

    def done(self, item: str, text: str) -> None:
        self.put({"status": text, "progressDetail": {}, "id": item})


def _bar(current: int, total: int) -> str:
    if total <= 0:
        return ""
    filled = min(50, current * 50 // total)
    return "[" + "=" * max(0, filled - 1) + (">" if filled else "") + " " * (50 - filled) + f"] {current}/{total}"


def _refuse_credentials(req: Request) -> None:
    """X-Registry-Auth: the CLI always sends one, "{}" without `docker login`. Credentials in it
    are refused rather than ignored: netctl pulls with those of `netctl login`."""
    header = req.headers.get("X-Registry-Auth") or ""
    if not header:
        return
    try:
        padded = header + "=" * (-len(header) % 4)
        auth = json.loads(base64.urlsafe_b64decode(padded) or b"{}")
    except (ValueError, TypeError):
        raise ApiError(400, "X-Registry-Auth is not base64 JSON") from None
    if isinstance(auth, dict) and any(auth.get(k) for k in ("username", "password", "identitytoken",
                                                            "registrytoken", "auth")):
        raise ApiError(400, "registry credentials through the Docker API (X-Registry-Auth) are not supported; "
                            "run `netctl login REGISTRY` once, then pull")


def create(api: Api, req: Request) -> Stream:
    from runner.registry.pull import pull_into

    if req.arg("fromSrc"):
        raise ApiError(400, "image import (fromSrc) is not supported by netctl; use docker load")
    if req.arg("repo") or req.arg("message") or req.query.get("changes"):
        raise ApiError(400, "image import options (repo, message, changes) are not supported by netctl")
    name = req.arg("fromImage") or ""
    if not name:
        raise ApiError(400, "image create: fromImage is required")
    tag = req.arg("tag") or ""
    if tag.startswith("sha256:"):
        ref = f"{name}@{tag}"
    elif tag and "@" not in name:
        ref = f"{name}:{tag}"
    else:
        ref = name
    _refuse_credentials(req)
    progress = JsonProgress()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["result"] = pull_into(api.layout, ref, progress=progress, platform=req.arg("platform") or None)
        except NetctlError as err:
            outcome["error"] = err
        except Exception as err:  # a bug: its traceback in the agent's log, one line to the client
            import logging

            logging.getLogger("netctl.docker_api").exception("pull of %s failed", ref)
            outcome["error"] = err
        finally:
            progress.queue.put(None)

    worker = threading.Thread(target=work, name="docker-api-pull", daemon=True)
    worker.start()
    try:
        first = progress.queue.get(timeout=FIRST_EVENT_WAIT_S)
    except queue.Empty:
        first = {"status": f"Pulling {ref}"}
    if first is None and "error" in outcome:  # failed before any progress: a status, as dockerd answers
        err = outcome["error"]
        message = getattr(err, "message", str(err))
        raise ApiError(status_of(err), message)

    def produce() -> Iterator[bytes]:
        message = first
        while message is not None:
            yield json_line(message)
            message = progress.queue.get()
        if "error" in outcome:
            text = getattr(outcome["error"], "message", str(outcome["error"]))
            yield json_line({"errorDetail": {"message": text}, "error": text})
            return
        result = outcome["result"]
        reference = result.reference
        shown = reference.familiar if reference.tag else f"{reference.familiar_name}@{result.digest}"
        status = "Downloaded newer image" if result.fetched else "Image is up to date"
        yield json_line({"status": f"Digest: {result.digest}"})
        yield json_line({"status": f"Status: {status} for {shown}"})
        api.events.publish("image", "pull", shown, {"name": shown})

    return Stream(produce())


ROUTES = [
    ("POST", r"/images/create", create),
    ("POST", r"/images/load", load),
    ("GET", r"/images/get", save_many),
    ("GET", r"/images/(?P<name>.+)/get", save_one),
]
