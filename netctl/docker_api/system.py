"""System endpoints: /_ping, /version, /info, /events, /system/df, and the refusals of what netctl
does not do (build, swarm, plugins...)."""

from __future__ import annotations

import os
import platform
import socket
import time
from collections.abc import Iterator

from netctl.docker_api.api import Api
from netctl.docker_api.events import Event
from netctl.docker_api.http import ApiError, Json, Raw, Request, Stream, check_filters, json_line, unsupported
from netctl.docker_api.routing import MAX_VERSION, MIN_VERSION

ENGINE_VERSION = "27.5.1"  # the Docker Engine release whose API (MAX_VERSION) netctl serves
EVENT_FILTERS = {"type", "container", "network", "volume", "image", "label", "event", "scope", "daemon"}
EVENT_POLL_S = 0.5  # how often a quiet event stream checks for its client having left


def ping(api: Api, req: Request) -> Raw:
    # dockerd's headers: the CLI negotiates its version from API-Version; Builder-Version "1" says
    # "no BuildKit" (and build itself is refused below).
    return Raw(b"OK", content_type="text/plain; charset=utf-8",
               headers={"Builder-Version": "1", "Cache-Control": "no-cache, no-store, must-revalidate",
                        "Pragma": "no-cache"})


def _netctl_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("netctl")
    except metadata.PackageNotFoundError:
        return "0"


def version(api: Api, req: Request) -> Json:
    uname = os.uname()
    details = {"ApiVersion": MAX_VERSION, "MinAPIVersion": MIN_VERSION, "GitCommit": "netctl",
               "GoVersion": f"python{platform.python_version()}", "Os": "linux", "Arch": _go_arch(),
               "KernelVersion": uname.release, "BuildTime": "", "Experimental": "false"}
    return Json({
        "Platform": {"Name": f"netctl {_netctl_version()} (Docker Engine API)"},
        "Components": [{"Name": "Engine", "Version": ENGINE_VERSION, "Details": details}],
        "Version": ENGINE_VERSION,
        **{k: v for k, v in details.items() if k != "Experimental"},
        "Experimental": False,
    })


def _go_arch() -> str:
    from runner.images import go_arch

    return go_arch()


def _container_counts(api: Api) -> tuple[int, int, int]:
    from runner.state import RUNNING, Records, is_alive

    total = running = 0
    for container in Records(api.layout).all():
        total += 1
        if container.state.status == RUNNING and is_alive(container.state):
            running += 1
    return total, running, total - running


def _image_count(api: Api) -> int:
    from netctl.docker_api.images import image_store

    return len(image_store(api).list())


def mem_total() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"


def info(api: Api, req: Request) -> Json:
    from libnetwork import rootdir

    total, running, stopped = _container_counts(api)
    uname = os.uname()
    cgroup2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    return Json({
        "ID": rootdir.host_id(api.root),
        "Containers": total, "ContainersRunning": running, "ContainersPaused": 0, "ContainersStopped": stopped,
        "Images": _image_count(api),
        "Driver": "overlay2", "DriverStatus": [["Backing Filesystem", "overlayfs"]],
        "Plugins": {"Volume": ["local"], "Network": ["bridge", "null", "overlay"], "Authorization": None,
                    "Log": ["json-file"]},
        "MemoryLimit": True, "SwapLimit": False, "KernelMemory": False, "KernelMemoryTCP": False,
        "CpuCfsPeriod": True, "CpuCfsQuota": True, "CPUShares": True, "CPUSet": True, "PidsLimit": True,
        "IPv4Forwarding": True, "BridgeNfIptables": False, "BridgeNfIp6tables": False, "Debug": False,
        "NFd": 0, "OomKillDisable": False, "NGoroutines": 0, "SystemTime": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "LoggingDriver": "json-file", "CgroupDriver": "cgroupfs", "CgroupVersion": "2" if cgroup2 else "1",
        "NEventsListener": 0, "KernelVersion": uname.release, "OperatingSystem": _os_name(), "OSVersion": "",
        "OSType": "linux", "Architecture": uname.machine, "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {"AllowNondistributableArtifactsCIDRs": [], "AllowNondistributableArtifactsHostnames": [],
                           "InsecureRegistryCIDRs": [], "IndexConfigs": {}, "Mirrors": []},
        "NCPU": os.cpu_count() or 1, "MemTotal": mem_total(), "GenericResources": None,
        "DockerRootDir": api.root, "HttpProxy": "", "HttpsProxy": "", "NoProxy": "", "Name": socket.gethostname(),
        "Labels": [], "ExperimentalBuild": False, "ServerVersion": ENGINE_VERSION,
        "Runtimes": {"runc": {"path": "netctl"}}, "DefaultRuntime": "runc",
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": False,
                  "Error": "", "RemoteManagers": None},
        "LiveRestoreEnabled": False, "Isolation": "", "InitBinary": "", "ContainerdCommit": {"ID": ""},
        "RuncCommit": {"ID": ""}, "InitCommit": {"ID": ""}, "SecurityOptions": [], "CDISpecDirs": [],
        "Warnings": [],
    })


# --- events --------------------------------------------------------------------------------------


def _parse_time(value: str | None, what: str) -> int | None:
    """Docker's since/until: Unix seconds with an optional fraction (the CLI converts durations and
    dates before sending). Nanoseconds since the epoch."""
    if value is None or value == "":
        return None
    try:
        seconds, _, fraction = value.partition(".")
        nanos = int(seconds) * 1_000_000_000
        if fraction:
            nanos += int(fraction.ljust(9, "0")[:9])
        return nanos
    except ValueError:
        raise ApiError(400, f"invalid value for {what!r}: {value!r} is not a Unix timestamp") from None


def event_matches(event: Event, filters: dict[str, list[str]]) -> bool:
    if filters.get("type") and event.type not in filters["type"]:
        return False
    if filters.get("event") and event.action not in filters["event"] \
            and event.action.split(":")[0] not in filters["event"]:
        return False
    for kind in ("container", "network", "volume", "image"):
        wanted = filters.get(kind)
        if wanted:
            if event.type != kind:
                return False
            name = event.attributes.get("name", "")
            if not any(w == event.actor_id or w == name or (len(w) >= 3 and event.actor_id.startswith(w))
                       for w in wanted):
                return False
    for label in filters.get("label", []):
        key, sep, value = label.partition("=")
        if key not in event.attributes or (sep and event.attributes[key] != value):
            return False
    if filters.get("scope") and "local" not in filters["scope"]:
        return False
    return True


def events(api: Api, req: Request) -> Stream:
    filters = req.filters()
    check_filters(filters, EVENT_FILTERS)
    since = _parse_time(req.arg("since"), "since")
    until = _parse_time(req.arg("until"), "until")
    sub, past = api.events.subscribe(since)

    def produce() -> Iterator[bytes]:
        with sub:
            for event in past:
                if until is not None and event.time_nano > until:
                    return
                if event_matches(event, filters):
                    yield json_line(event.to_docker())
            yield b""  # the headers go out now: clients wait for them before they show anything
            while not api.stopping.is_set():
                if until is not None and time.time_ns() > until:
                    return
                new = sub.get(EVENT_POLL_S)
                if new is None:
                    if req.client_gone():
                        return
                    continue
                if until is not None and new.time_nano > until:
                    return
                if event_matches(new, filters):
                    yield json_line(new.to_docker())

    return Stream(produce())


def system_df(api: Api, req: Request) -> Json:
    from netctl.docker_api import images, volumes

    return Json({"LayersSize": images.layers_size(api), "Images": images.image_summaries(api, {}),
                 "Containers": [], "Volumes": volumes.volume_views(api, {}), "BuildCache": []})


def build_prune(api: Api, req: Request) -> Json:
    """netctl builds nothing, so it has no build cache: pruning it frees nothing (what `docker system
    prune` asks after containers, networks and images)."""
    return Json({"CachesDeleted": [], "SpaceReclaimed": 0})


def refuse(what: str):
    def handler(api: Api, req: Request, **groups: str) -> Json:
        raise unsupported(what)

    return handler


ROUTES = [
    ("GET", r"/_ping", ping),
    ("HEAD", r"/_ping", ping),
    ("GET", r"/version", version),
    ("GET", r"/info", info),
    ("GET", r"/events", events),
    ("GET", r"/system/df", system_df),
    ("POST", r"/build", refuse("image build (POST /build)")),
    ("POST", r"/build/prune", build_prune),
    ("POST", r"/session", refuse("BuildKit sessions (POST /session)")),
    ("POST", r"/commit", refuse("commit (POST /commit)")),
    ("GET", r"/swarm", refuse("swarm")),
    ("POST", r"/swarm/.*", refuse("swarm")),
    ("GET", r"/(nodes|services|tasks|secrets|configs)(/.*)?", refuse("swarm")),
    ("POST", r"/(nodes|services|tasks|secrets|configs)(/.*)?", refuse("swarm")),
    ("DELETE", r"/(nodes|services|secrets|configs)(/.*)?", refuse("swarm")),
    ("GET", r"/plugins(/.*)?", refuse("plugins")),
    ("POST", r"/plugins(/.*)?", refuse("plugins")),
    ("DELETE", r"/plugins(/.*)?", refuse("plugins")),
    ("POST", r"/auth", refuse("registry login through the API (POST /auth); use `netctl login`")),
    ("GET", r"/distribution/(?P<name>.+)/json", refuse("distribution inspect")),
]
