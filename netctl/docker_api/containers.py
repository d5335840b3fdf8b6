"""Docker's container endpoints, on the runner: every change is a request to the host's monitor
(runner/monitor.py: create, start, stop, kill, rm, rename, resize, wait: the same requests `netctl run`,
`stop`, `kill`, `rm` send), reads come from the records (runner/state.py). Attach and logs are in
containers_io.py, stats and top in containers_stats.py, the shapes in containers_view.py and the
translation of create's body in containers_config.py.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

from libnetwork.errors import AlreadyExists, InUse, NetctlError, NotFound
from netctl.docker_api import containers_config, containers_io, containers_stats, containers_view
from netctl.docker_api.containers_common import (
    ID,
    arm_exit_watch,
    await_links_gone,
    find,
    live_networks,
    monitor_call,
    publish,
    removing,
    signal_number,
    stopping,
    monitor_events,
    watched,
    watch_exit,
)
from netctl.docker_api.http import ApiError, Empty, Json, Request, Stream, bad_request, conflict, json_line, not_found

log = logging.getLogger("netctl.docker_api")



# --- create, start, stop, kill, restart, rename, resize, remove ---------------------------------------


def create(api, req: Request) -> Json:
    from runner.spec import RunRequest

    name = (req.arg("name") or "").lstrip("/")
    body = req.json_object()
    host = body.get("HostConfig")
    if isinstance(host, dict) and host.get("PublishAllPorts"):  # a HostConfig of another type: 400 below
        body = _with_image_ports(api, body)
    try:
        request = containers_config.run_request(body, name, set(RunRequest.__dataclass_fields__))
    except (TypeError, ValueError, AttributeError) as err:  # a value of a shape no Docker client sends
        raise bad_request(f"invalid container configuration: {err}") from None
    parent = os.environ.get("NETCTL_CGROUP_PARENT", "")
    if parent:
        request["cgroup_parent"] = parent  # the agent's own placement wins (tests isolate cgroups so)
    if req.arg("platform") and req.arg("platform") not in ("linux", "linux/amd64", "linux/x86_64"):
        raise containers_config.refuse(f"platform {req.arg('platform')!r}")
    try:
        event = monitor_call(api, {"op": "create", "request": request})
    except NotFound as err:
        if "image" in err.message.lower():
            raise not_found(f"No such image: {body.get('Image')}") from None
        raise
    except AlreadyExists as err:
        holder = find(api, name).id if name and "name" in err.message else ""
        if not holder:
            raise
        raise conflict(f'Conflict. The container name "/{name}" is already in use by container "{holder}". You '
                       "have to remove (or rename) that container to be able to reuse that name.") from None
    container = find(api, event["id"])
    publish(api, container, "create")
    return Json({"Id": event["id"], "Warnings": []}, status=201)


def _with_image_ports(api, body: dict) -> dict:
    """PublishAllPorts publishes the image's EXPOSE'd ports too, as dockerd does."""
    from runner.images import ImageStore

    try:
        exposed = ImageStore(api.layout).get(str(body.get("Image", ""))).run_config.get("ExposedPorts") or {}
    except NetctlError:
        return body  # an unknown image is create's 404 below
    return {**body, "ExposedPorts": {**exposed, **(body.get("ExposedPorts") or {})}}


def start(api, req: Request, ref: str) -> Empty:
    container = find(api, ref)
    armed = arm_exit_watch(api, container)
    try:
        event = monitor_call(api, {"op": "start", "ref": container.id})
    except BaseException:
        if armed is not None:
            armed.close()
        raise
    if event.get("already"):
        if armed is not None:
            armed.close()
        return Empty(304)
    publish(api, container, "start")
    watch_exit(api, container, armed)
    return Empty(204)


def _stop(api, container, timeout: int | None, sig: int | None = None) -> None:
    request: dict[str, Any] = {"op": "stop", "ref": container.id, "timeout": timeout}
    if sig:
        request["signal"] = sig
    publish(api, container, "kill", signal=sig or 15)
    stops = stopping(api)
    stops.add(container.id)  # the watcher of its exit publishes die, then stop: dockerd's order
    try:
        event = monitor_call(api, request)
    except BaseException:
        stops.discard(container.id)
        raise
    await_links_gone(event)
    if not watched(api, container.id) and container.id in stops:  # no watcher (started by netctl run)
        stops.discard(container.id)
        publish(api, container, "die", exitCode=event.get("code", 0))
        publish(api, container, "stop")


def stop(api, req: Request, ref: str) -> Empty:
    container = find(api, ref)
    if container.state.status not in ("running", "restarting"):
        return Empty(304)
    timeout = req.int_arg("t", req.int_arg("timeout"))
    sig = signal_number(req.arg("signal"), 0) if req.arg("signal") else None
    _stop(api, container, timeout, sig)
    return Empty(204)


def kill(api, req: Request, ref: str) -> Empty:
    container = find(api, ref)
    number = signal_number(req.arg("signal"), int(signal.SIGKILL))
    if container.state.status != "running":
        raise conflict(f"Cannot kill container: {ref}: container {container.id} is not running")
    try:
        monitor_call(api, {"op": "kill", "ref": container.id, "signal": number})
    except InUse:
        raise conflict(f"Cannot kill container: {ref}: container {container.id} is not running") from None
    publish(api, container, "kill", signal=number)
    return Empty(204)


def restart(api, req: Request, ref: str) -> Empty:
    container = find(api, ref)
    if container.state.status in ("running", "restarting"):
        _stop(api, container, req.int_arg("t", req.int_arg("timeout")))
    armed = arm_exit_watch(api, container)
    try:
        monitor_call(api, {"op": "start", "ref": container.id})
    except BaseException:
        if armed is not None:
            armed.close()
        raise
    publish(api, container, "start")
    publish(api, container, "restart")
    watch_exit(api, container, armed)
    return Empty(204)


def pause(api, req: Request, ref: str) -> Empty:
    return _freeze(api, ref, "pause")


def unpause(api, req: Request, ref: str) -> Empty:
    return _freeze(api, ref, "unpause")


def _freeze(api, ref: str, op: str) -> Empty:
    """The monitor freezes or thaws the container's cgroup (runner/monitor_pause.py); dockerd's 409s."""
    container = find(api, ref)
    state = container.state
    if op == "unpause":
        if not (state.status == "running" and state.paused):
            raise ApiError(500, f"Container {container.id} is not paused")  # dockerd's: a plain error
    elif state.status == "restarting":
        raise conflict(f"Container {container.id} is restarting, wait until the container is running")
    elif state.status != "running":
        raise conflict(f"container {container.id} is not running")
    elif state.paused:
        raise conflict(f"container {container.id} is already paused")
    try:
        monitor_call(api, {"op": op, "ref": container.id})
    except InUse as err:  # changed since it was read: a pause or unpause, a stop, in between
        raise ApiError(500 if op == "unpause" else 409, err.message) from None
    publish(api, container, op)
    return Empty(204)


def rename(api, req: Request, ref: str) -> Empty:
    container = find(api, ref)
    new = req.arg("name") or ""
    if not new:
        raise bad_request("rename needs ?name=NEW_NAME")
    monitor_call(api, {"op": "rename", "ref": container.id, "name": new})
    publish(api, container, "rename", oldName="/" + container.name, name=new.lstrip("/"))
    return Empty(204)


def resize(api, req: Request, ref: str) -> Empty:
    container = find(api, ref)
    if container.state.status != "running":
        raise conflict(f"Container {container.id} is not running")
    monitor_call(api, {"op": "resize", "ref": container.id, "h": req.int_arg("h", 0), "w": req.int_arg("w", 0)})
    return Empty(200)


def remove(api, req: Request, ref: str) -> Empty:
    container = find(api, ref)
    force = req.flag("force")
    if container.state.status in ("running", "restarting") and not force:
        status = containers_view.docker_status(container.state)
        raise conflict(f"You cannot remove a {status} container {container.id}. Stop the container before "
                       "attempting removal or force remove")
    if req.flag("link"):
        raise containers_config.refuse("link removal")
    running = container.state.status == "running"
    if running and watched(api, container.id):
        removing(api).add(container.id)  # kill, die, destroy in that order: from here, not its watcher
    try:
        await_links_gone(monitor_call(api, {"op": "rm", "ref": container.id, "force": force}))
    except NotFound:
        removing(api).discard(container.id)
        raise not_found(f"No such container: {ref}") from None
    except BaseException:
        removing(api).discard(container.id)
        raise
    if running:
        publish(api, container, "kill", signal=9)
        publish(api, container, "die", exitCode=137)
    publish(api, container, "destroy")
    return Empty(204)


def prune(api, req: Request) -> Json:
    from netctl.docker_api.filters import label_filter, until_filter
    from runner.state import Records

    filters = req.filters()
    from netctl.docker_api.http import check_filters

    check_filters(filters, {"label", "label!", "until"})
    labels_wanted, older = label_filter(filters), until_filter(filters)
    deleted = []
    for container in Records(api.layout).all():
        if container.state.status not in ("exited", "created", "dead"):
            continue
        if not (labels_wanted(container.config.labels) and older(container.config.created)):
            continue
        try:
            monitor_call(api, {"op": "rm", "ref": container.id})
        except NetctlError as err:
            log.info("prune left container %s: %s", container.id[:12], err.message)
            continue
        publish(api, container, "destroy")
        deleted.append(container.id)
    return Json({"ContainersDeleted": deleted or None, "SpaceReclaimed": 0})


# --- wait -----------------------------------------------------------------------------------------------


def wait(api, req: Request, ref: str) -> Stream:
    """The reply's headers go out at once, the body when the condition is met (as dockerd: the docker
    CLI sends this before start). The monitor has the waiter registered before this returns."""
    from runner import client, protocol

    container = find(api, ref)
    condition = req.arg("condition") or "not-running"
    if condition not in ("not-running", "next-exit", "removed"):
        raise bad_request(f"invalid condition: {condition!r}")
    session = client.Session(api.layout, {"op": "wait", "ref": container.id, "condition": condition, "ack": True})
    events = monitor_events(session)
    try:
        first = next(events, None)  # "waiting" (registered: the client may start it now) or the exit
    except BaseException:
        session.close()
        raise
    if first is not None and first.get("event") == "error":
        session.close()
        protocol.raise_error(first)

    def body():
        try:
            for event in [first] if first is not None and first.get("event") != "waiting" else []:
                yield json_line({"StatusCode": int(event.get("code", 0)), "Error": None})
                return
            for event in events:
                if event.get("event") == "error":
                    yield json_line({"StatusCode": -1, "Error": {"Message": event.get("message", "")}})
                    return
                await_links_gone(event)
                yield json_line({"StatusCode": int(event.get("code", 0)), "Error": None})
                return
        finally:
            session.close()

    return Stream(body())


# --- reads ------------------------------------------------------------------------------------------------


def inspect(api, req: Request, ref: str) -> Json:
    container = find(api, ref)
    from libnetwork import rootdir

    from runner.images import ImageStore

    try:
        image_run = ImageStore(api.layout).get(container.config.image_id).run_config
    except NetctlError:
        image_run = None  # its image is gone (netctl image rm --force): what the container recorded
    view = containers_view.inspect(container, live_networks(api, container), api.layout.container(container.id),
                                   rootdir.path(api.root, rootdir.NETNS), image_run)  # fmt: skip
    if req.flag("size"):
        view["SizeRw"], view["SizeRootFs"] = 0, 0
    return Json(view)


def list_containers(api, req: Request) -> Json:
    from runner.state import Records

    filters = req.filters()
    containers_view.check_list_filters(filters)
    show_all = req.flag("all") or bool(filters.get("status")) or bool(filters.get("exited"))
    image_ids = _ancestors(api, filters.get("ancestor", []))
    created_of = {ref: find(api, ref).config.created for ref in filters.get("before", []) + filters.get("since", [])}
    out = []
    containers = [c for c in Records(api.layout).all() if show_all or c.state.status == "running"]
    live = _live_views(api, [c for c in containers if c.state.status == "running"])
    for container in containers:
        networks = live.get(container.id, {})
        if not containers_view.matches(container, filters, networks, image_ids, created_of):
            continue
        out.append(containers_view.list_entry(container, networks))
    limit = req.int_arg("limit", -1) or -1
    if limit > 0:
        out = out[:limit]
    return Json(out)


def _live_views(api, running: list) -> dict[str, dict]:
    """{container id: endpoint views} read now (network connect/disconnect change them), in one turn
    of the warm controller; the views recorded at start if the store cannot be read."""
    if not running:
        return {}
    from runner.lifecycle import Runtime

    try:
        with api.controller() as ctl:
            runtime = Runtime(api.layout, ctl)
            return {c.id: runtime.network_views(c.config) for c in running if c.config.sandbox_id}
    except NetctlError:
        return {c.id: dict(c.state.networks or {}) for c in running}


def _ancestors(api, refs: list[str]) -> dict[str, str]:
    if not refs:
        return {}
    from runner.images import ImageStore

    store = ImageStore(api.layout)
    out = {}
    for ref in refs:
        try:
            out[ref] = store.get(ref).id
        except NetctlError:
            pass
    return out


ROUTES = [
    ("POST", "/containers/create", create),
    ("GET", "/containers/json", list_containers),
    ("POST", "/containers/prune", prune),
    ("GET", f"/containers/{ID}/json", inspect),
    ("POST", f"/containers/{ID}/start", start),
    ("POST", f"/containers/{ID}/stop", stop),
    ("POST", f"/containers/{ID}/kill", kill),
    ("POST", f"/containers/{ID}/restart", restart),
    ("POST", f"/containers/{ID}/rename", rename),
    ("POST", f"/containers/{ID}/pause", pause),
    ("POST", f"/containers/{ID}/unpause", unpause),
    ("POST", f"/containers/{ID}/resize", resize),
    ("POST", f"/containers/{ID}/wait", wait),
    ("DELETE", f"/containers/{ID}", remove),
    ("POST", f"/containers/{ID}/attach", containers_io.attach),
    ("GET", f"/containers/{ID}/logs", containers_io.logs),
    ("GET", f"/containers/{ID}/stats", containers_stats.stats),
    ("GET", f"/containers/{ID}/top", containers_stats.top),
]
