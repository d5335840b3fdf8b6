"""Containers in Docker's shapes: GET /containers/{id}/json (inspect) and GET /containers/json (list, with
its filters), from the runner's records (config.json, state.json) and, for a running container, its
live endpoints. Pure functions of those records, so the shapes are unit-tested directly.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from typing import Any

from netctl.docker_api.http import check_filters

NEVER = "0001-01-01T00:00:00Z"
LIST_FILTERS = {"label", "name", "status", "network", "id", "ancestor", "exited", "before", "since", "health",
                "volume", "publish", "expose", "is-task"}  # fmt: skip
STATUSES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")


def rfc3339(iso: str) -> str:
    if not iso:
        return NEVER
    try:
        moment = datetime.fromisoformat(iso).astimezone(timezone.utc)
    except ValueError:
        return NEVER
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def unix_time(iso: str) -> int:
    try:
        return int(datetime.fromisoformat(iso).timestamp())
    except ValueError:
        return 0


def human_duration(seconds: float) -> str:
    """go-units HumanDuration, which `docker ps` shows."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(s / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def _since(iso: str) -> float:
    try:
        return time.time() - datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return 0.0


def docker_status(state) -> str:
    """Docker's State.Status: a paused container is "paused" (netctl's record keeps it running)."""
    return "paused" if state.paused and state.status == "running" else state.status


def status_text(state) -> str:
    if state.status == "running":
        health = (state.health or {}).get("Status")
        suffix = {"starting": " (health: starting)", "healthy": " (healthy)", "unhealthy": " (unhealthy)"}
        if state.paused:  # as dockerd's State.String: no health then
            return f"Up {human_duration(_since(state.started))} (Paused)"
        return f"Up {human_duration(_since(state.started))}{suffix.get(health or '', '')}"
    if state.status == "restarting":
        return f"Restarting ({state.exit_code or 0}) {human_duration(_since(state.finished))} ago"
    if state.status == "exited":
        return f"Exited ({state.exit_code or 0}) {human_duration(_since(state.finished))} ago"
    return state.status.capitalize()


def parse_port(text: str) -> dict[str, Any]:
    """'[HOSTIP:]HOSTPORT->PORT/PROTO' (runner/views.py's form) -> its parts."""
    host, _, inner = text.partition("->")
    port, _, protocol = inner.partition("/")
    host_ip, _, host_port = host.rpartition(":")
    return {"host_ip": host_ip, "host_port": int(host_port or 0), "port": int(port or 0), "protocol": protocol}


def ports_map(config, networks: dict[str, dict]) -> dict[str, Any]:
    """NetworkSettings.Ports: every exposed or published port, with its host bindings (None if none)."""
    out: dict[str, Any] = {}
    for key in (config.docker.get("Config", {}).get("ExposedPorts") or {}):
        out.setdefault(key if "/" in key else f"{key}/tcp", None)
    for view in networks.values():
        for text in view.get("Ports", []):
            p = parse_port(text)
            bindings = out.get(f"{p['port']}/{p['protocol']}") or []
            ips = [p["host_ip"]] if p["host_ip"] else ["0.0.0.0", "::"]
            bindings += [{"HostIp": ip, "HostPort": str(p["host_port"])} for ip in ips]
            out[f"{p['port']}/{p['protocol']}"] = bindings
    return out


def list_ports(networks: dict[str, dict]) -> list[dict]:
    out = []
    for view in networks.values():
        for text in view.get("Ports", []):
            p = parse_port(text)
            for ip in [p["host_ip"]] if p["host_ip"] else ["0.0.0.0", "::"]:
                out.append({"IP": ip, "PrivatePort": p["port"], "PublicPort": p["host_port"], "Type": p["protocol"]})
    return out


def network_entry(view: dict, short_id: str = "", static_ip: str = "") -> dict:
    """One network of a container; on a user network its short id is an alias too, as dockerd shows
    (compose 1.29 reads it to tell a container it connected itself). `static_ip`: the address asked
    for (--ip, EndpointsConfig IPAMConfig), shown in IPAMConfig as dockerd does."""
    if short_id:
        view = {**view, "Aliases": list(view.get("Aliases") or []) + [short_id]}
    address = view.get("IPv4Address", "")
    ip, _, prefix = address.partition("/")
    ip6, _, prefix6 = view.get("IPv6Address", "").partition("/")
    return {
        "IPAMConfig": {"IPv4Address": static_ip} if static_ip else None, "Links": None,
        "Aliases": view.get("Aliases") or None,
        "MacAddress": view.get("MacAddress", ""), "DriverOpts": None,
        "NetworkID": view.get("NetworkID", ""), "EndpointID": view.get("EndpointID", ""),
        "Gateway": view.get("Gateway", ""), "IPAddress": ip, "IPPrefixLen": int(prefix or 0),
        "IPv6Gateway": "", "GlobalIPv6Address": ip6, "GlobalIPv6PrefixLen": int(prefix6 or 0),
        "DNSNames": [view.get("Name", "")] + list(view.get("Aliases") or []) if view.get("Name") else None,
    }  # fmt: skip


def _planned_networks(config) -> dict[str, dict]:
    """A container that does not run has no endpoints: its networks as planned, without addresses."""
    if config.network_mode != "bridge":
        return {config.network_mode: {}}
    return {a.network: {"Aliases": list(a.aliases)} for a in config.networks}


def mounts(config) -> list[dict]:
    out = []
    for volume in config.volumes:
        name = getattr(volume, "name", "")
        entry = {"Type": "volume" if name else "bind", "Source": volume.host, "Destination": volume.container,
                 "Mode": "ro" if volume.read_only else "", "RW": not volume.read_only, "Propagation": "rprivate"}
        if name:
            entry.update({"Name": name, "Driver": "local", "Propagation": ""})
        out.append(entry)
    for text in config.tmpfs:
        out.append({"Type": "tmpfs", "Source": "", "Destination": text.partition(":")[0], "Mode": "",
                    "RW": True, "Propagation": ""})  # fmt: skip
    return out


def host_config(config) -> dict:
    given = dict(config.docker.get("HostConfig") or {})
    name, _, count = (config.restart or "no").partition(":")
    network_mode = config.network_mode if config.network_mode != "bridge" else (
        config.networks[0].network if config.networks else "bridge")
    given.update({
        "Binds": [str(v) for v in config.volumes] or None,
        "NetworkMode": given.get("NetworkMode") or network_mode,
        "Memory": config.limits.memory, "NanoCpus": int(config.limits.cpus * 1e9),
        "PidsLimit": config.limits.pids or None, "ReadonlyRootfs": config.read_only,
        "AutoRemove": config.auto_remove, "RestartPolicy": {"Name": name, "MaximumRetryCount": int(count or 0)},
        "ExtraHosts": config.extra_hosts or None,
        "Tmpfs": {t.partition(":")[0]: t.partition(":")[2] for t in config.tmpfs} or None,
        "LogConfig": {"Type": "json-file", "Config": {}}, "Privileged": False,
        "CgroupParent": config.cgroup_path.rpartition("/")[0],
        "CapAdd": given.get("CapAdd"), "CapDrop": given.get("CapDrop"),
        "PortBindings": given.get("PortBindings") or {},
    })  # fmt: skip
    return given


def container_config(config, image_run: dict | None = None) -> dict:
    """Config as dockerd shows it: what the client gave over the image's (`image_run`: its config),
    Entrypoint and Cmd apart."""
    given = dict(config.docker.get("Config") or {})
    out = {
        "Hostname": config.hostname, "Domainname": "", "User": config.user,
        "AttachStdin": False, "AttachStdout": False, "AttachStderr": False,
        "ExposedPorts": None, "Tty": config.tty, "OpenStdin": config.interactive, "StdinOnce": config.stdin_once,
        "Env": config.env, "Cmd": config.argv, "Image": config.image, "Volumes": None,
        "WorkingDir": config.workdir if config.workdir != "/" else "", "Entrypoint": None, "OnBuild": None,
        "Labels": dict(config.labels),
    }  # fmt: skip
    for key in ("AttachStdin", "AttachStdout", "AttachStderr", "ExposedPorts", "Entrypoint", "StopSignal",
                "Healthcheck"):
        if key in given:
            out[key] = given[key]
    if image_run is not None and given.get("Entrypoint") is None:
        out["Entrypoint"] = image_run.get("Entrypoint") or None
    if image_run is not None and "ExposedPorts" not in given and image_run.get("ExposedPorts"):
        out["ExposedPorts"] = image_run["ExposedPorts"]
    entry = [part for part in out.get("Entrypoint") or [] if part]
    if "Cmd" in given and given["Cmd"] is not None:
        out["Cmd"] = given["Cmd"]
    elif config.docker:
        out["Cmd"] = config.argv[len(entry):] or None
    if config.stop_signal:
        out["StopSignal"] = config.stop_signal
    if config.stop_timeout is not None:
        out["StopTimeout"] = config.stop_timeout
    return out


def inspect(container, networks: dict[str, dict], directory: str, netns_dir: str = "",
            image_run: dict | None = None) -> dict:
    """`netns_dir`: where the library keeps sandboxes' namespaces (SandboxKey is the running one's);
    `image_run`: the image's config (its Entrypoint, Cmd and ExposedPorts show where not given)."""
    config, state = container.config, container.state
    running = state.status == "running" and bool(config.sandbox_id)
    shown = networks or _planned_networks(config)
    static = {a.network: a.ip for a in config.networks if a.ip}
    entries = {name: network_entry(view, config.id[:12] if name != "bridge" else "", static.get(name, ""))
               for name, view in shown.items()}  # fmt: skip
    first = next(iter(entries.values()), {})
    return {
        "Id": config.id,
        "Created": rfc3339(config.created),
        "Path": config.argv[0] if config.argv else "",
        "Args": config.argv[1:],
        "State": {
            "Status": docker_status(state), "Running": state.status == "running", "Paused": state.paused,
            "Restarting": state.status == "restarting", "OOMKilled": state.oom_killed, "Dead": False,
            "Pid": state.pid, "ExitCode": state.exit_code or 0, "Error": state.error,
            "StartedAt": rfc3339(state.started), "FinishedAt": rfc3339(state.finished),
            **({"Health": _health(state)} if config.healthcheck.get("argv") else {}),
        },  # fmt: skip
        "Image": f"sha256:{config.image_id}",
        "ResolvConfPath": os.path.join(directory, "resolv.conf"),
        "HostnamePath": os.path.join(directory, "hostname"),
        "HostsPath": os.path.join(directory, "hosts"),
        "LogPath": os.path.join(directory, "container.log"),
        "Name": "/" + config.name,
        "RestartCount": state.restart_count,
        "Driver": "overlay2",
        "Platform": "linux",
        "MountLabel": "", "ProcessLabel": "", "AppArmorProfile": "", "ExecIDs": None,
        "HostConfig": host_config(config),
        "GraphDriver": {"Name": "overlay2", "Data": {"UpperDir": os.path.join(directory, "upper"),
                                                      "WorkDir": os.path.join(directory, "work")}},
        "Mounts": mounts(config),
        "Config": container_config(config, image_run),
        "NetworkSettings": {
            "Bridge": "", "SandboxID": config.sandbox_id if running else "",
            "SandboxKey": os.path.join(netns_dir, config.sandbox_id) if running and netns_dir else "",
            "HairpinMode": False, "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0,
            "Ports": ports_map(config, networks),
            "EndpointID": first.get("EndpointID", ""), "Gateway": first.get("Gateway", ""),
            "GlobalIPv6Address": first.get("GlobalIPv6Address", ""), "GlobalIPv6PrefixLen": 0,
            "IPAddress": first.get("IPAddress", ""), "IPPrefixLen": first.get("IPPrefixLen", 0),
            "IPv6Gateway": "", "MacAddress": first.get("MacAddress", ""),
            "Networks": entries,
        },  # fmt: skip
    }


def _health(state) -> dict:
    health = dict(state.health or {"Status": "starting" if state.status == "running" else "unhealthy",
                                   "FailingStreak": 0, "Log": []})
    health["Log"] = [{**entry, "Start": rfc3339(entry.get("Start", "")), "End": rfc3339(entry.get("End", ""))}
                     for entry in health.get("Log", [])]  # fmt: skip
    return health


def health_of(container) -> str:
    """The `health` list filter's value: none, starting, healthy or unhealthy."""
    if not container.config.healthcheck.get("argv"):
        return "none"
    return (container.state.health or {}).get("Status") or "starting"


def list_entry(container, networks: dict[str, dict]) -> dict:
    config, state = container.config, container.state
    shown = networks or _planned_networks(config)
    mode = host_config(config)["NetworkMode"]
    return {
        "Id": config.id,
        "Names": ["/" + config.name],
        "Image": config.image,
        "ImageID": f"sha256:{config.image_id}",
        "Command": " ".join(config.argv),
        "Created": unix_time(config.created),
        "Ports": list_ports(networks),
        "Labels": dict(config.labels),
        "State": docker_status(state),
        "Status": status_text(state),
        "HostConfig": {"NetworkMode": mode},
        "NetworkSettings": {"Networks": {name: network_entry(view) for name, view in shown.items()}},
        "Mounts": mounts(config),
    }


def check_list_filters(filters: dict[str, list[str]]) -> None:
    """400 for a filter dockerd does not know or a value not of its kind, whatever the containers."""
    from netctl.docker_api.http import bad_request

    check_filters(filters, LIST_FILTERS)
    for value in filters.get("status", []):
        if value not in STATUSES:
            raise bad_request(f"invalid filter 'status={value}'")
    for value in filters.get("exited", []):
        if not value.lstrip("-").isdigit():
            raise bad_request(f"invalid filter 'exited={value}'")
    for value in filters.get("is-task", []):
        if value not in ("true", "false", "1", "0"):
            raise bad_request(f"invalid filter 'is-task={value}'")


def matches(container, filters: dict[str, list[str]], networks: dict[str, dict], image_ids: dict[str, str],
            created_of: dict[str, str] | None = None) -> bool:
    """Docker's list filters; `image_ids`: ancestor references resolved to image ids; `created_of`: the
    before/since references' creation times."""
    check_list_filters(filters)
    config, state = container.config, container.state
    created_of = created_of or {}
    volumes = {m.get("Name") or m["Source"] for m in mounts(config)} | {m["Destination"] for m in mounts(config)}
    tests = {
        "id": lambda v: config.id.startswith(v),
        "name": lambda v: v.lstrip("/") in config.name or _regex(v.lstrip("/"), config.name),
        "status": lambda v: docker_status(state) == v,
        "label": lambda v: _label(config.labels, v),
        "network": lambda v: v in (networks or _planned_networks(config)) or any(
            view.get("NetworkID", "").startswith(v) for view in networks.values()),
        "ancestor": lambda v: image_ids.get(v) == config.image_id or config.image == v,
        "exited": lambda v: state.status == "exited" and str(state.exit_code or 0) == v,
        "health": lambda v: health_of(container) == v,
        "before": lambda v: config.created < created_of[v],
        "since": lambda v: config.created > created_of[v],
        "volume": lambda v: v in volumes,
        "publish": lambda v: _port_in(v, [(p["port"], p["protocol"]) for p in map(parse_port, _published(networks))]),
        "expose": lambda v: _port_in(v, _exposed(config, networks)),
        "is-task": lambda v: v in ("false", "0"),  # no swarm tasks here
    }
    for key, values in filters.items():
        test = tests.get(key)
        if test is None or not values:
            continue
        if key == "label":  # dockerd: every label filter must match; other keys match any of their values
            if not all(test(v) for v in values):
                return False
        elif not any(test(v) for v in values):
            return False
    return True


def _published(networks: dict[str, dict]) -> list[str]:
    return [text for view in networks.values() for text in view.get("Ports", [])]


def _exposed(config, networks: dict[str, dict]) -> list[tuple[int, str]]:
    ports = [(p["port"], p["protocol"]) for p in map(parse_port, _published(networks))]
    for key in ports_map(config, {}):
        number, _, protocol = key.partition("/")
        ports.append((int(number), protocol or "tcp"))
    return ports


def _port_in(text: str, ports: list[tuple[int, str]]) -> bool:
    """publish/expose filters: PORT[-PORT][/PROTO] (tcp when no protocol is given), as dockerd."""
    from netctl.docker_api.http import bad_request

    span, _, protocol = text.partition("/")
    low, _, high = span.partition("-")
    if not low.isdigit() or (high and not high.isdigit()):
        raise bad_request(f"invalid filter: {text!r} is not a port or a port range")
    return any(int(low) <= port <= int(high or low) and proto == (protocol or "tcp") for port, proto in ports)


def _label(labels: dict[str, str], text: str) -> bool:
    key, eq, value = text.partition("=")
    return key in labels and (not eq or labels[key] == value)


def _regex(pattern: str, name: str) -> bool:
    import re

    try:
        return re.search(pattern, name) is not None
    except re.error:
        return False
