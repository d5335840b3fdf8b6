"""Volumes over the Docker API: create, list, inspect, remove, prune (runner/volumes.py's local
volumes, the ones `netctl run -v NAME:/path` mounts)."""

from __future__ import annotations

from typing import Any

from libnetwork.errors import AlreadyExists, InUse, NotFound
from netctl.docker_api.api import Api
from netctl.docker_api.filters import label_filter, labels_match
from netctl.docker_api.http import ApiError, Empty, Json, Request, check_filters, conflict, not_found
from runner import volumes

LIST_FILTERS = {"name", "label", "driver", "dangling"}
PRUNE_FILTERS = {"label", "label!", "all"}
ANONYMOUS = "com.docker.volume.anonymous"  # Docker's mark of a volume made for a container's mount
CREATE_FIELDS = {"Name", "Driver", "DriverOpts", "Labels", "ClusterVolumeSpec"}


def volume_view(record: volumes.VolumeRecord, *, usage: bool = False, users: int = -1) -> dict[str, Any]:
    view: dict[str, Any] = {
        "CreatedAt": record.created,
        "Driver": record.driver,
        "Labels": dict(record.labels),
        "Mountpoint": record.mountpoint,
        "Name": record.name,
        "Options": dict(record.options),
        "Scope": "local",
    }
    if usage:
        view["UsageData"] = {"Size": volumes.disk_usage(record.mountpoint), "RefCount": users}
    return view


def volume_views(api: Api, filters: dict[str, list[str]], *, usage: bool = True) -> list[dict[str, Any]]:
    out = []
    for record in volumes.list_volumes(api.layout):
        users = len(volumes.users(api.layout, record.name)) if (usage or "dangling" in filters) else -1
        if filters.get("name") and not any(n in record.name for n in filters["name"]):
            continue
        if filters.get("driver") and record.driver not in filters["driver"]:
            continue
        if not labels_match(record.labels, filters.get("label", [])):
            continue
        for dangling in filters.get("dangling", []):
            if dangling.lower() not in ("true", "false", "1", "0"):
                raise ApiError(400, f"invalid filter 'dangling={dangling}'")
            if (users == 0) != (dangling.lower() in ("true", "1")):
                break
        else:
            out.append(volume_view(record, usage=usage, users=users))
    return out


def list_volumes(api: Api, req: Request) -> Json:
    filters = req.filters()
    check_filters(filters, LIST_FILTERS)
    return Json({"Volumes": volume_views(api, filters, usage=False), "Warnings": []})


def create(api: Api, req: Request) -> Json:
    body = req.json_object()
    unknown = set(body) - CREATE_FIELDS
    if unknown:
        raise ApiError(400, f"volume create: field {sorted(unknown)[0]!r} is not supported")
    if body.get("ClusterVolumeSpec"):
        raise ApiError(400, "volume create: cluster volumes (ClusterVolumeSpec) are not supported by netctl")
    driver = body.get("Driver") or volumes.DRIVER
    if driver != volumes.DRIVER:
        raise ApiError(400, f"volume driver {driver!r} is not supported; netctl has the local driver only")
    name = body.get("Name") or ""
    labels = body.get("Labels") or {}
    options = body.get("DriverOpts") or {}
    if not isinstance(name, str) or not isinstance(labels, dict) or not isinstance(options, dict):
        raise ApiError(400, "volume create: Name must be a string, Labels and DriverOpts objects")
    try:
        record, created = volumes.create(api.layout, name, labels={str(k): str(v) for k, v in labels.items()},
                                         options={str(k): str(v) for k, v in options.items()})
    except AlreadyExists as err:
        raise conflict(err.message) from None
    if created:
        api.events.publish("volume", "create", record.name, {"driver": record.driver})
    return Json(volume_view(record), status=201)


def inspect(api: Api, req: Request, name: str) -> Json:
    try:
        return Json(volume_view(volumes.get(api.layout, name)))
    except NotFound:
        raise not_found(f"get {name}: no such volume") from None


def remove(api: Api, req: Request, name: str) -> Empty:
    try:
        removed = volumes.remove(api.layout, name, force=req.flag("force"))
    except NotFound:
        raise not_found(f"get {name}: no such volume") from None
    except InUse:
        users = ", ".join(volumes.users(api.layout, name))
        raise conflict(f"remove {name}: volume is in use - [{users}]") from None
    if removed:
        api.events.publish("volume", "destroy", name, {"driver": volumes.DRIVER})
    return Empty(204)


def prune(api: Api, req: Request) -> Json:
    filters = req.filters()
    check_filters(filters, PRUNE_FILTERS)
    matches = label_filter(filters)
    every = any(v.lower() in ("1", "true") for v in filters.get("all", []))
    # API 1.42 on: only anonymous volumes unless all=true (docker volume prune -a), as dockerd.
    anonymous_only = req.version_at_least("1.42") and not every

    def keep(record: volumes.VolumeRecord) -> bool:
        return not matches(record.labels) or (anonymous_only and ANONYMOUS not in record.labels)

    removed, freed = volumes.prune(api.layout, keep)
    for name in removed:
        api.events.publish("volume", "destroy", name, {"driver": volumes.DRIVER})
    return Json({"VolumesDeleted": removed, "SpaceReclaimed": freed})


def update(api: Api, req: Request, name: str) -> Json:
    raise ApiError(400, "volume update is for cluster volumes, which netctl does not have")


_NAME = r"(?P<name>[^/]+)"
ROUTES = [
    ("GET", r"/volumes", list_volumes),
    ("POST", r"/volumes/create", create),
    ("POST", r"/volumes/prune", prune),
    ("GET", rf"/volumes/{_NAME}", inspect),
    ("DELETE", rf"/volumes/{_NAME}", remove),
    ("PUT", rf"/volumes/{_NAME}", update),
]
