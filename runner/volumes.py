"""Named local volumes: directories under the state root, as Docker's `local` driver keeps them.

Layout: ROOT/volumes/NAME/_data is what a container mounts (Docker's Mountpoint), beside it
ROOT/volumes/NAME/volume.json {Name, Driver, Labels, Options, CreatedAt}. Creation is a rename of a
complete temporary directory into place, so a volume is either whole or absent; removal renames it
away first, so a crash leaves a `.removing-*` directory that the next removal or prune deletes.
ROOT/volumes/.lock (flock) orders create, remove and the in-use check.

A volume is in use while a container's config.json names it (Volume.name), running or not, as with
Docker. `netctl run -v NAME:/path` and the Docker API's Binds/Mounts of type volume create a volume
that does not exist yet, as Docker does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from libnetwork import rootdir
from libnetwork.errors import AlreadyExists, InUse, InvalidArgument, NotFound, StoreError

from runner.spec import Volume, check_volume_name, parse_volume

if TYPE_CHECKING:
    from runner.paths import Layout

DRIVER = "local"
LOCK_TIMEOUT_S = 30.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]+$")  # the names a directory here may be a volume by
DATA = "_data"
META = "volume.json"


@dataclass
class VolumeRecord:
    name: str
    mountpoint: str
    created: str
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    driver: str = DRIVER


def is_volume_name(text: str) -> bool:
    """Whether -v's source names a volume (Docker: anything not starting with / or .)."""
    return bool(text) and not text.startswith(("/", "."))


def check_name(name: str) -> str:
    return check_volume_name(name)


def directory(layout: Layout) -> str:
    return os.path.join(layout.root, rootdir.VOLUMES)


def mountpoint(layout: Layout, name: str) -> str:
    return os.path.join(directory(layout), name, DATA)


@contextmanager
def _locked(layout: Layout) -> Iterator[None]:
    from libnetwork import flock

    os.makedirs(directory(layout), mode=0o700, exist_ok=True)
    with flock.held(os.path.join(directory(layout), ".lock"), LOCK_TIMEOUT_S,
                    lambda: StoreError(f"volumes under {directory(layout)} stayed locked for {LOCK_TIMEOUT_S:.0f} s")):
        yield


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _read(layout: Layout, name: str) -> VolumeRecord | None:
    path = os.path.join(directory(layout), name)
    try:
        with open(os.path.join(path, META)) as f:
            meta: dict[str, Any] = json.load(f)
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    return VolumeRecord(name=name, mountpoint=os.path.join(path, DATA), created=str(meta.get("CreatedAt", "")),
                        labels=dict(meta.get("Labels") or {}), options=dict(meta.get("Options") or {}),
                        driver=str(meta.get("Driver") or DRIVER))


def get(layout: Layout, name: str) -> VolumeRecord:
    record = _read(layout, name) if _NAME.match(name) else None
    if record is None:
        raise NotFound(f"volume {name!r} not found; `docker volume ls` lists volumes")
    return record


def list_volumes(layout: Layout) -> list[VolumeRecord]:
    try:
        names = sorted(os.listdir(directory(layout)))
    except FileNotFoundError:
        return []
    return [r for r in (_read(layout, n) for n in names if _NAME.match(n)) if r is not None]


def create(layout: Layout, name: str = "", *, labels: dict[str, str] | None = None,
           options: dict[str, str] | None = None, exist_ok: bool = True) -> tuple[VolumeRecord, bool]:
    """The volume `name` (a new 64-hex name when empty), created if missing: (record, created).
    An existing volume with other labels is Docker's conflict; exist_ok=False refuses any."""
    if options:
        raise InvalidArgument(f"volume option {sorted(options)[0]!r} is not supported: netctl's local volumes are "
                              "plain directories (no type, device or o)")
    name = check_name(name) if name else os.urandom(32).hex()
    with _locked(layout):
        existing = _read(layout, name)
        if existing is not None:
            if not exist_ok:
                raise AlreadyExists(f"volume {name!r} already exists")
            if labels and existing.labels != labels:
                raise AlreadyExists(f"volume {name!r} already exists with other labels")
            return existing, False
        final = os.path.join(directory(layout), name)
        temp = os.path.join(directory(layout), f".creating-{name}-{os.getpid()}")
        shutil.rmtree(temp, ignore_errors=True)
        os.makedirs(os.path.join(temp, DATA), mode=0o755)
        os.chmod(temp, 0o701)
        meta = {"Name": name, "Driver": DRIVER, "Labels": dict(labels or {}), "Options": {}, "CreatedAt": _now()}
        with open(os.path.join(temp, META), "w") as f:
            json.dump(meta, f)
        if os.path.lexists(final):  # a leftover without volume.json (a crash): not a volume
            _discard(layout, final)
        os.rename(temp, final)
        record = _read(layout, name)
        assert record is not None
        return record, True


def users(layout: Layout, name: str) -> list[str]:
    """Ids of the containers whose config names the volume."""
    from runner.state import Records

    point = mountpoint(layout, name)
    return [c.id for c in Records(layout).all()
            if any(v.name == name or v.host == point for v in c.config.volumes)]


def remove(layout: Layout, name: str, *, force: bool = False) -> bool:
    """Remove the volume; InUse while a container uses it (force or not, as Docker), NotFound when
    missing unless `force`. False: it was missing."""
    with _locked(layout):
        if _read(layout, name) is None:
            if force:
                return False
            get(layout, name)
        holders = users(layout, name)
        if holders:
            raise InUse(f"volume {name!r} is in use by container(s) {', '.join(h[:12] for h in holders)}; "
                        "remove them first")
        _discard(layout, os.path.join(directory(layout), name))
        return True


def prune(layout: Layout, keep=None) -> tuple[list[str], int]:
    """Remove every volume no container uses (and `keep(record)` does not keep): (names, bytes freed)."""
    removed, freed = [], 0
    for record in list_volumes(layout):
        if keep is not None and keep(record):
            continue
        size = disk_usage(record.mountpoint)
        try:
            if remove(layout, record.name):
                removed.append(record.name)
                freed += size
        except (InUse, NotFound):
            continue
    _sweep(layout)
    return removed, freed


def _discard(layout: Layout, path: str) -> None:
    away = os.path.join(directory(layout), f".removing-{os.path.basename(path)}-{time.monotonic_ns()}")
    os.rename(path, away)
    shutil.rmtree(away, ignore_errors=True)


def _sweep(layout: Layout) -> None:
    for entry in os.listdir(directory(layout)) if os.path.isdir(directory(layout)) else []:
        if entry.startswith((".removing-", ".creating-")):
            shutil.rmtree(os.path.join(directory(layout), entry), ignore_errors=True)


def disk_usage(path: str) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                pass
    return total


def resolve(layout: Layout, volume: Volume, made: Callable[[str], None] | None = None) -> Volume:
    """A parsed -v whose source is a volume name: the volume's directory, made if missing (its name
    then given to `made`)."""
    name = volume.name
    if not name:
        return volume
    record, created = create(layout, name)
    if created and made is not None:
        made(name)
    volume.host = record.mountpoint
    return volume


def resolve_binds(layout: Layout, specs: list[str], made: Callable[[str], None] | None = None) -> list[Volume]:
    """`-v` arguments (HOST:CONTAINER[:ro] or NAME:CONTAINER[:ro]) as mounts, named volumes made: all
    parsed before any is made, and each one made named to `made` (a failed create's undo removes it)."""
    parsed = [parse_volume(text) for text in specs]
    return [resolve(layout, volume, made) for volume in parsed]


def discard_made(layout: Layout, name: str) -> None:
    """Undo of a volume a failed create made: removed unless a container uses it by now."""
    try:
        remove(layout, name, force=True)
    except InUse:
        pass
