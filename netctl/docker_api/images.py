"""Images over the Docker API: list, inspect, history, tag, remove, prune (the store of
runner/images.py and runner/registry_store.py, the one `netctl image ...` uses). Moving images in and
out (load, save, pull) is images_transfer.py's."""

from __future__ import annotations

import fnmatch
from datetime import datetime
from typing import Any

from libnetwork.errors import InUse, InvalidArgument, NotFound
from netctl.docker_api.api import Api
from netctl.docker_api.filters import labels_match
from netctl.docker_api.http import ApiError, Empty, Json, Request, check_filters, conflict, not_found
from runner.images import Image
from runner.registry_store import RegistryImageStore

LIST_FILTERS = {"reference", "dangling", "label", "before", "since", "until"}
PRUNE_FILTERS = {"dangling", "label", "label!", "until"}
CONFIG_DEFAULTS: dict[str, Any] = {
    "Hostname": "", "Domainname": "", "User": "", "AttachStdin": False, "AttachStdout": False,
    "AttachStderr": False, "Tty": False, "OpenStdin": False, "StdinOnce": False, "Env": None, "Cmd": None,
    "Image": "", "Volumes": None, "WorkingDir": "", "Entrypoint": None, "OnBuild": None, "Labels": None,
}  # fmt: skip


def image_store(api: Api) -> RegistryImageStore:
    return RegistryImageStore(api.layout)


def docker_id(image: Image) -> str:
    return f"sha256:{image.id}"


def _created(image: Image) -> str:
    return str(image.config.get("created") or image.imported or "1970-01-01T00:00:00Z")


def _unix(text: str) -> int:
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")[:32]).timestamp())
    except ValueError:
        return 0


def _labels(image: Image) -> dict[str, str]:
    return dict((image.config.get("config") or {}).get("Labels") or {})


def _containers_using(api: Api) -> dict[str, list[tuple[str, bool]]]:
    """{image id: [(container name, running), ...]}."""
    from runner.state import RUNNING, Records, is_alive

    out: dict[str, list[tuple[str, bool]]] = {}
    for c in Records(api.layout).all():
        running = c.state.status == RUNNING and is_alive(c.state)
        out.setdefault(c.config.image_id, []).append((c.name, running))
    return out


def summary(image: Image, store: RegistryImageStore, users: int = -1, *, legacy: bool = True) -> dict[str, Any]:
    view: dict[str, Any] = {
        "Id": docker_id(image),
        "ParentId": "",
        "RepoTags": list(image.tags),
        "RepoDigests": store.repo_digests(image.id),
        "Created": _unix(_created(image)),
        "Size": image.size,
        "SharedSize": -1,
        "Labels": _labels(image),
        "Containers": users,
    }
    if legacy:
        view["VirtualSize"] = image.size
    return view


def image_summaries(api: Api, filters: dict[str, list[str]], *, legacy: bool = True) -> list[dict[str, Any]]:
    store = image_store(api)
    users = _containers_using(api)
    images = store.list()
    by_ref = {}
    for key in ("before", "since"):
        for ref in filters.get(key, []):
            try:
                by_ref[key] = _unix(_created(store.get(ref)))
            except NotFound:
                raise not_found(f"No such image: {ref}") from None
    out = []
    dangling = _dangling(filters)
    for image in images:
        if filters.get("reference") and not any(_reference_matches(image, p) for p in filters["reference"]):
            continue
        if dangling is not None and (not image.tags) != dangling:
            continue
        if not labels_match(_labels(image), filters.get("label", [])):
            continue
        created = _unix(_created(image))
        if "before" in by_ref and created >= by_ref["before"]:
            continue
        if "since" in by_ref and created <= by_ref["since"]:
            continue
        view = summary(image, store, len(users.get(image.id, [])), legacy=legacy)
        if filters.get("reference"):  # dockerd shows only the tags the filter matched
            view["RepoTags"] = [t for t in image.tags
                                if any(_tag_matches(t, p) for p in filters["reference"])]
        out.append(view)
    return out


def _tag_matches(tag: str, pattern: str) -> bool:
    """Docker's reference filter: a glob on NAME or NAME:TAG (NAME alone means NAME:latest's NAME)."""
    name = tag.rsplit(":", 1)[0] if tag.rfind(":") > tag.rfind("/") else tag
    return fnmatch.fnmatchcase(tag, pattern) or fnmatch.fnmatchcase(name, pattern)


def _reference_matches(image: Image, pattern: str) -> bool:
    return any(_tag_matches(tag, pattern) for tag in image.tags)


def list_images(api: Api, req: Request) -> Json:
    filters = req.filters()
    check_filters(filters, LIST_FILTERS)
    if req.arg("filter"):  # the pre-1.25 name filter
        filters.setdefault("reference", []).append(req.arg("filter") or "")
    return Json(image_summaries(api, filters, legacy=not req.version_at_least("1.44")))


def layers_size(api: Api) -> int:
    return sum(i.size for i in image_store(api).list())


def find(api: Api, ref: str) -> Image:
    try:
        return image_store(api).get(ref)
    except (NotFound, InvalidArgument):
        raise not_found(f"No such image: {ref}") from None


def inspect_view(image: Image, store: RegistryImageStore, *, legacy: bool = True) -> dict[str, Any]:
    config = dict(CONFIG_DEFAULTS)
    config.update(image.config.get("config") or {})
    view: dict[str, Any] = {
        "Id": docker_id(image),
        "RepoTags": list(image.tags),
        "RepoDigests": store.repo_digests(image.id),
        "Parent": "",
        "Comment": "",
        "Created": _created(image),
        "DockerVersion": "",
        "Author": str(image.config.get("author", "")),
        "Config": config,
        "Architecture": str(image.config.get("architecture", "")),
        "Variant": image.config.get("variant"),
        "Os": str(image.config.get("os", "linux")),
        "Size": image.size,
        "GraphDriver": {"Name": "overlay2", "Data": None},
        "RootFS": {"Type": "layers", "Layers": [f"sha256:{d}" for d in image.layers]},
        "Metadata": {"LastTagTime": image.imported or "0001-01-01T00:00:00Z"},
    }
    if view["Variant"] is None:
        del view["Variant"]
    if legacy:
        view["VirtualSize"] = image.size
        view["Container"] = ""
        view["ContainerConfig"] = dict(CONFIG_DEFAULTS)
    return view


def inspect(api: Api, req: Request, name: str) -> Json:
    return Json(inspect_view(find(api, name), image_store(api), legacy=not req.version_at_least("1.44")))


def history(api: Api, req: Request, name: str) -> Json:
    image = find(api, name)
    entries = [h for h in image.config.get("history") or [] if isinstance(h, dict)]
    out = []
    for i, entry in enumerate(reversed(entries)):
        out.append({"Id": docker_id(image) if i == 0 else "<missing>", "Created": _unix(str(entry.get("created", ""))),
                    "CreatedBy": str(entry.get("created_by", "")), "Tags": list(image.tags) if i == 0 else None,
                    "Size": 0, "Comment": str(entry.get("comment", ""))})
    if not out:
        out.append({"Id": docker_id(image), "Created": _unix(_created(image)), "CreatedBy": "",
                    "Tags": list(image.tags), "Size": image.size, "Comment": ""})
    return Json(out)


def tag(api: Api, req: Request, name: str) -> Empty:
    repo = req.arg("repo") or ""
    tag_name = req.arg("tag") or ""
    if not repo:
        raise ApiError(400, "image tag: repo is required")
    target = f"{repo}:{tag_name}" if tag_name else repo
    find(api, name)
    try:
        image = image_store(api).tag(name, target)
    except NotFound:
        raise not_found(f"No such image: {name}") from None
    api.events.publish("image", "tag", docker_id(image), {"name": _familiar(target)})
    return Empty(201)


def _familiar(ref: str) -> str:
    """NAME:TAG as the store keys it and Docker's events name it (docker.io/library/x:1 -> x:1)."""
    from runner.image_refs import familiar_tag_ref
    from runner.images import normalize_reference

    try:
        return normalize_reference(familiar_tag_ref(ref))
    except InvalidArgument:
        return ref


def remove(api: Api, req: Request, name: str) -> Json:
    store = image_store(api)
    image = find(api, name)
    force = req.flag("force")
    running = [n for n, up in _containers_using(api).get(image.id, []) if up]
    if running and force:
        raise conflict(f"conflict: unable to delete {image.short_id} (cannot be forced) - image is being used by "
                       f"running container {running[0]}")

    def containers() -> list[tuple[str, str, list[str]]]:
        from runner.state import Records

        return [(c.name, c.config.image_id, c.config.layers) for c in Records(api.layout).all()]

    try:
        done = store.remove(name, force=force, containers=containers)
    except InUse as err:
        raise conflict(f"conflict: unable to remove repository reference {name!r} (must force) - {err.message}") \
            from None
    except NotFound:
        raise not_found(f"No such image: {name}") from None
    return Json(_removal_report(api, image, done))


def _removal_report(api: Api, image: Image, done: list[str]) -> list[dict[str, str]]:
    """store.remove's lines ("untagged X", "deleted ID", "deleted layer D") as Docker's
    [{"Untagged": X}, {"Deleted": "sha256:ID"}], with their events."""
    report = []
    for line in done:
        if line.startswith("untagged "):
            tag_name = line[len("untagged "):]
            report.append({"Untagged": tag_name})
            api.events.publish("image", "untag", docker_id(image), {"name": tag_name})
        elif line.startswith("deleted layer "):
            report.append({"Deleted": f"sha256:{line[len('deleted layer '):]}"})
        elif line.startswith("deleted "):
            report.append({"Deleted": f"sha256:{line[len('deleted '):]}"})
            api.events.publish("image", "delete", docker_id(image), {"name": docker_id(image)})
    return report


def _dangling(filters: dict[str, list[str]]) -> bool | None:
    """The `dangling` filter's value (the last one given), None when not given; 400 if not a boolean."""
    values = filters.get("dangling", [])
    for value in values:
        if value.lower() not in ("true", "false", "1", "0"):
            raise ApiError(400, f"invalid filter 'dangling={value}'")
    return values[-1].lower() in ("true", "1") if values else None


def prune(api: Api, req: Request) -> Json:
    from netctl.docker_api.filters import label_filter, until_filter

    filters = req.filters()
    check_filters(filters, PRUNE_FILTERS)
    dangling_only = _dangling(filters) is not False  # dockerd: dangling ones only unless dangling=false (-a)
    matches, older = label_filter(filters), until_filter(filters)
    store = image_store(api)
    used = _containers_using(api)
    deleted: list[dict[str, str]] = []
    freed = 0
    for image in store.list():
        if image.id in used or (dangling_only and image.tags):
            continue
        if not matches(_labels(image)) or not older(_created(image)):
            continue

        def containers() -> list[tuple[str, str, list[str]]]:
            from runner.state import Records

            return [(c.name, c.config.image_id, c.config.layers) for c in Records(api.layout).all()]

        try:  # by id: every tag goes with the image
            done = store.remove(image.id, force=False, containers=containers)
        except (InUse, NotFound):
            continue
        deleted += _removal_report(api, image, done)
        freed += image.size
    return Json({"ImagesDeleted": deleted or None, "SpaceReclaimed": freed})


def refuse(what: str):
    def handler(api: Api, req: Request, **groups: str) -> Json:
        raise ApiError(400, f"{what} is not supported by netctl")

    return handler


ROUTES = [
    ("GET", r"/images/json", list_images),
    ("POST", r"/images/prune", prune),
    ("GET", r"/images/search", refuse("registry search (GET /images/search)")),
    ("GET", r"/images/(?P<name>.+)/json", inspect),
    ("GET", r"/images/(?P<name>.+)/history", history),
    ("POST", r"/images/(?P<name>.+)/tag", tag),
    ("POST", r"/images/(?P<name>.+)/push", refuse("image push through the API; use `netctl push`")),
    ("DELETE", r"/images/(?P<name>.+)", remove),
]
