"""POST /containers/create's body -> the runner's RunRequest (runner/spec.py), the one description of a
container `netctl run` fills too; the runner validates the values (names, paths, limits, capabilities,
restart policy) as it does for the CLI.

Docker clients send every field, mostly as zero values: those are accepted. A field that would change
behaviour netctl does not have is refused with a 400 naming it (never silently ignored); fields that
change nothing here (Docker's defaults, hints such as ArgsEscaped) pass.
"""

from __future__ import annotations

import json
from typing import Any

from netctl.docker_api.http import ApiError, bad_request

# Config fields read below, or harmless here.
_CONFIG_KNOWN = {
    "Image", "Cmd", "Entrypoint", "Env", "WorkingDir", "User", "Labels", "Hostname", "Tty", "OpenStdin",
    "StdinOnce", "AttachStdin", "AttachStdout", "AttachStderr", "StopSignal", "StopTimeout", "ExposedPorts",
    "Healthcheck", "Volumes", "ArgsEscaped", "NetworkDisabled", "MacAddress", "OnBuild", "Shell", "Domainname",
    "HostConfig", "NetworkingConfig", "Platform",
}  # fmt: skip
# HostConfig fields read below.
_HOST_KNOWN = {
    "Binds", "Mounts", "PortBindings", "PublishAllPorts", "NetworkMode", "Memory", "MemorySwap", "NanoCpus",
    "CpuQuota", "CpuPeriod", "PidsLimit", "CapAdd", "CapDrop", "ReadonlyRootfs", "AutoRemove", "RestartPolicy",
    "ExtraHosts", "Dns", "DnsSearch", "DnsOptions", "Init", "Privileged", "Tmpfs", "Sysctls", "LogConfig",
    "CgroupParent", "Ulimits", "ShmSize", "IpcMode", "PidMode", "UTSMode", "UsernsMode", "CgroupnsMode",
    "ConsoleSize", "Links", "VolumesFrom", "SecurityOpt", "OomKillDisable", "GroupAdd", "Runtime",
    "Devices", "DeviceRequests", "DeviceCgroupRules", "MemoryReservation", "MemorySwappiness", "KernelMemory",
    "CpuShares", "CpusetCpus", "CpusetMems", "BlkioWeight", "OomScoreAdj", "Isolation", "ContainerIDFile",
    "VolumeDriver", "MaskedPaths", "ReadonlyPaths", "Annotations", "Cgroup", "CpuCount", "CpuPercent",
    "CpuRealtimePeriod", "CpuRealtimeRuntime", "BlkioWeightDevice", "BlkioDeviceReadBps", "BlkioDeviceWriteBps",
    "BlkioDeviceReadIOps", "BlkioDeviceWriteIOps", "IOMaximumIOps", "IOMaximumBandwidth", "StorageOpt",
}  # fmt: skip
# Zero or Docker's default: accepted; anything else names the field in a 400.
_HOST_DEFAULTS: dict[str, tuple] = {
    "IpcMode": ("", "private", "shareable"), "PidMode": ("",), "UTSMode": ("",), "UsernsMode": ("", "host"),
    "CgroupnsMode": ("", "private"), "Runtime": ("", "runc"), "Isolation": ("", "default"),
    "VolumeDriver": ("", "local"), "Cgroup": ("",), "ContainerIDFile": ("",),
}  # fmt: skip
_HOST_MUST_BE_EMPTY = (
    "Links", "VolumesFrom", "SecurityOpt", "GroupAdd", "Devices", "DeviceRequests", "DeviceCgroupRules",
    "MemoryReservation", "KernelMemory", "CpusetCpus", "CpusetMems", "BlkioWeight", "OomScoreAdj", "MaskedPaths",
    "ReadonlyPaths", "Annotations", "CpuCount", "CpuPercent", "CpuRealtimePeriod", "CpuRealtimeRuntime",
    "BlkioWeightDevice", "BlkioDeviceReadBps", "BlkioDeviceWriteBps", "BlkioDeviceReadIOps",
    "BlkioDeviceWriteIOps", "IOMaximumIOps", "IOMaximumBandwidth", "StorageOpt", "OomKillDisable",
    "Privileged",
)  # fmt: skip
_BIND_OPTIONS_IGNORED = ("z", "Z", "rprivate", "private", "consistent", "cached", "delegated")


_TYPES = {
    "str": (str,), "int": (int,), "bool": (bool,), "list": (list,), "dict": (dict,), "strlist": (list, str),
}
_CONFIG_TYPES = {
    "Image": "str", "Cmd": "strlist", "Entrypoint": "strlist", "Env": "list", "WorkingDir": "str", "User": "str",
    "Labels": "dict", "Hostname": "str", "Tty": "bool", "OpenStdin": "bool", "StdinOnce": "bool",
    "AttachStdin": "bool", "AttachStdout": "bool", "AttachStderr": "bool", "StopSignal": "str", "StopTimeout": "int",
    "ExposedPorts": "dict", "Healthcheck": "dict", "Volumes": "dict", "HostConfig": "dict",
    "NetworkingConfig": "dict", "MacAddress": "str",
}  # fmt: skip
_HOST_TYPES = {
    "Binds": "list", "Mounts": "list", "PortBindings": "dict", "PublishAllPorts": "bool", "NetworkMode": "str",
    "Memory": "int", "MemorySwap": "int", "NanoCpus": "int", "CpuQuota": "int", "CpuPeriod": "int",
    "PidsLimit": "int", "CapAdd": "strlist", "CapDrop": "strlist", "ReadonlyRootfs": "bool", "AutoRemove": "bool",
    "RestartPolicy": "dict", "ExtraHosts": "list", "Dns": "list", "DnsSearch": "list", "DnsOptions": "list",
    "Tmpfs": "dict", "LogConfig": "dict", "CgroupParent": "str", "Ulimits": "list", "ShmSize": "int",
    "Init": "bool", "Privileged": "bool", "Sysctls": "dict", "CpuShares": "int", "MemorySwappiness": "int",
}  # fmt: skip
_WORDS = {"str": "a string", "int": "an integer", "bool": "true or false", "list": "a list", "dict": "an object",
          "strlist": "a list of strings"}  # fmt: skip


def _check_types(values: dict, types: dict[str, str], prefix: str) -> None:
    """400 naming the field whose value has the wrong JSON type (null is always fine)."""
    for key, kind in types.items():
        value = values.get(key)
        if value is None:
            continue
        wrong = not isinstance(value, _TYPES[kind]) or (kind == "int" and isinstance(value, bool))
        if wrong:
            raise bad_request(f"invalid {prefix}{key}: expected {_WORDS[kind]}, got {json.dumps(value)[:60]}")


def refuse(field: str, why: str = "") -> ApiError:
    return bad_request(f"{field} is not supported by netctl{': ' + why if why else ''}")


def _list(value: Any, field: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_request(f"{field} must be a list of strings")
    return list(value)


def run_request(body: dict, name: str, runner_fields: set[str]) -> dict:
    """The RunRequest dict for the monitor. `runner_fields`: RunRequest's fields (so Dns* go through
    when the runner has them, and are refused while it has not)."""
    if not isinstance(body, dict):
        raise bad_request("the container configuration must be a JSON object")
    for key in body:
        if key not in _CONFIG_KNOWN:
            raise refuse(f"Config.{key}")
    _check_types(body, _CONFIG_TYPES, "Config.")
    _check_types(body.get("HostConfig") or {}, _HOST_TYPES, "HostConfig.")
    image = body.get("Image")
    if not isinstance(image, str) or not image:
        raise bad_request("Config.Image is required: the image to create the container from")
    host = body.get("HostConfig") or {}
    if not isinstance(host, dict):
        raise bad_request("HostConfig must be a JSON object")
    if body.get("Domainname"):
        raise refuse("Config.Domainname")
    if body.get("NetworkDisabled"):
        raise refuse("Config.NetworkDisabled", "use NetworkMode none")
    request: dict[str, Any] = {
        "image": image,
        "name": name,
        "command": _list(body.get("Cmd"), "Cmd"),
        "env": [e for e in _list(body.get("Env"), "Env") if "=" in e],
        "workdir": body.get("WorkingDir") or "",
        "user": body.get("User") or "",
        "labels": {str(k): str(v) for k, v in (body.get("Labels") or {}).items()},
        "hostname": body.get("Hostname") or "",
        "tty": bool(body.get("Tty")),
        "interactive": bool(body.get("OpenStdin")),
        "stdin_once": bool(body.get("StdinOnce")),
        "stop_signal": body.get("StopSignal") or "",
        "stop_timeout": body.get("StopTimeout"),
        "detach": True,
    }
    request["healthcheck"] = healthcheck(body.get("Healthcheck") or {})
    if body.get("Entrypoint") is not None:
        request["entrypoint"] = _list(body.get("Entrypoint"), "Entrypoint")
    _host_config(host, request, body, runner_fields)
    _networking(body.get("NetworkingConfig") or {}, body, request)
    # Config.Volumes lists mount points: those a bind or named volume covers are fine (compose sends
    # them all); one left over would be an anonymous volume.
    covered = {v.split(":")[1].rstrip("/") for v in request["volumes"] if v.count(":") >= 1}
    covered |= {t.partition(":")[0].rstrip("/") for t in request["tmpfs"]}
    anonymous = [path for path in (body.get("Volumes") or {}) if path.rstrip("/") not in covered]
    if anonymous:
        raise refuse(f"Config.Volumes {anonymous[0]!r} (an anonymous volume)", f"name it, e.g. -v NAME:{anonymous[0]}")
    request["docker"] = {"Config": {k: v for k, v in body.items() if k not in ("HostConfig", "NetworkingConfig")},
                         "HostConfig": host}  # fmt: skip
    return request


def healthcheck(check: dict) -> dict:
    """Config.Healthcheck -> the runner's form (runner/spec.py parse_healthcheck); NONE disables the
    image's check ({"argv": []}), an empty one inherits it ({})."""
    from runner.spec import parse_healthcheck

    test = check.get("Test") if isinstance(check, dict) else None
    if isinstance(test, list) and test[:1] == ["NONE"]:
        return {"argv": []}
    from libnetwork.errors import InvalidArgument

    try:
        return parse_healthcheck(check, "Config.Healthcheck")
    except InvalidArgument as err:
        raise bad_request(err.message) from None


def _host_config(host: dict, request: dict, body: dict, runner_fields: set[str]) -> None:
    for key, value in host.items():
        if key not in _HOST_KNOWN:
            if value in (None, "", 0, False, [], {}):
                continue  # a newer client's zero value
            raise refuse(f"HostConfig.{key}")
        if key in _HOST_DEFAULTS and (value or "") not in _HOST_DEFAULTS[key]:
            raise refuse(f"HostConfig.{key}={value!r}")
        if key in _HOST_MUST_BE_EMPTY and value not in (None, "", 0, False, [], {}):
            raise refuse(f"HostConfig.{key}", "privileged containers cannot be run" if key == "Privileged" else "")
    if host.get("Init"):
        raise refuse("HostConfig.Init", "the container's command runs as its PID 1")
    volumes = []
    for bind in _list(host.get("Binds"), "HostConfig.Binds"):
        parts = bind.split(":")
        if len(parts) >= 3:
            options = [o for o in parts[2].split(",") if o and o not in _BIND_OPTIONS_IGNORED]
            if any(o not in ("ro", "rw", "nocopy") for o in options):
                raise refuse(f"HostConfig.Binds option {parts[2]!r}", "use ro, rw or nocopy")
            mode = "ro" if "ro" in options else "rw"
            bind = f"{parts[0]}:{parts[1]}:{mode}" + (",nocopy" if "nocopy" in options else "")
        volumes.append(bind)
    tmpfs = [f"{path}:{options}" if options else path for path, options in (host.get("Tmpfs") or {}).items()]
    for mount in host.get("Mounts") or []:
        _check_mount(mount)
        kind, target = mount.get("Type", "volume"), mount.get("Target", "")
        read_only = ":ro" if mount.get("ReadOnly") else ""
        if kind == "bind":
            volumes.append(f"{mount.get('Source', '')}:{target}{read_only}")
        elif kind == "volume":
            if not mount.get("Source"):
                raise refuse("HostConfig.Mounts volume without a Source (anonymous volume)", "name the volume")
            nocopy = ",nocopy" if (mount.get("VolumeOptions") or {}).get("NoCopy") else ""
            volumes.append(f"{mount['Source']}:{target}{read_only or ':rw'}{nocopy}")
        elif kind == "tmpfs":
            tmpfs_options = mount.get("TmpfsOptions") or {}
            parts = []
            if tmpfs_options.get("SizeBytes"):
                parts.append(f"size={int(tmpfs_options['SizeBytes'])}")
            if tmpfs_options.get("Mode"):
                parts.append(f"mode={int(tmpfs_options['Mode']):o}")
            tmpfs.append(f"{target}:{','.join(parts)}" if parts else target)
        else:
            raise refuse(f"HostConfig.Mounts type {kind!r}", "use bind, volume or tmpfs")
    request["volumes"] = volumes
    request["tmpfs"] = tmpfs
    sysctls = host.get("Sysctls") or {}
    if not isinstance(sysctls, dict):
        raise bad_request("invalid HostConfig.Sysctls: expected an object")
    request["sysctls"] = {str(k): str(v) for k, v in sysctls.items()}
    request["read_only"] = bool(host.get("ReadonlyRootfs"))
    request["auto_remove"] = bool(host.get("AutoRemove"))
    request["cap_add"] = _list(host.get("CapAdd"), "HostConfig.CapAdd")
    request["cap_drop"] = _list(host.get("CapDrop"), "HostConfig.CapDrop")
    request["extra_hosts"] = _list(host.get("ExtraHosts"), "HostConfig.ExtraHosts")
    if any("host-gateway" in h for h in request["extra_hosts"]):
        raise refuse("HostConfig.ExtraHosts host-gateway", "give the address")
    _limits(host, request)
    policy = host.get("RestartPolicy") or {}
    _check_types(policy, {"Name": "str", "MaximumRetryCount": "int"}, "HostConfig.RestartPolicy.")
    name = policy.get("Name") or ""
    if name and name != "no":
        count = int(policy.get("MaximumRetryCount") or 0)
        request["restart"] = f"{name}:{count}" if name == "on-failure" and count else name
    if request["auto_remove"] and name not in ("", "no"):
        raise bad_request("conflicting options: AutoRemove and a restart policy cannot be combined")
    for key, field in (("Dns", "dns"), ("DnsSearch", "dns_search"), ("DnsOptions", "dns_options")):
        values = _list(host.get(key), f"HostConfig.{key}")
        if values and field not in runner_fields:
            raise refuse(f"HostConfig.{key}", "the container's DNS server is the agent's")
        if values:
            request[field] = values
    log_config = host.get("LogConfig") or {}
    if log_config.get("Type") not in (None, "", "json-file", "local"):
        raise refuse(f"HostConfig.LogConfig.Type={log_config.get('Type')!r}", "netctl keeps logs itself")
    for option in log_config.get("Config") or {}:  # max-size, max-file...: they would bound the log
        raise refuse(f"HostConfig.LogConfig.Config {option!r}", "netctl keeps a container's whole log, unrotated")
    if host.get("CgroupParent"):
        request["cgroup_parent"] = host["CgroupParent"]
    ulimits = {}
    for ulimit in host.get("Ulimits") or []:
        if not isinstance(ulimit, dict) or not isinstance(ulimit.get("Name"), str):
            raise bad_request("invalid HostConfig.Ulimits: expected [{Name, Soft, Hard}]")
        soft, hard = ulimit.get("Soft", 0), ulimit.get("Hard", ulimit.get("Soft", 0))
        if not isinstance(soft, int) or not isinstance(hard, int):
            raise bad_request(f"invalid HostConfig.Ulimits {ulimit['Name']}: Soft and Hard must be integers")
        ulimits[ulimit["Name"]] = [soft, hard]
    request["ulimits"] = ulimits
    if host.get("ShmSize"):
        request["shm_size"] = int(host["ShmSize"])
    _ports(host, body, request)
    mode = host.get("NetworkMode") or "default"
    if mode.startswith("container:"):
        raise refuse(f"HostConfig.NetworkMode={mode!r}", "join a network instead")
    request["networks"] = ["bridge" if mode == "default" else mode]


_MOUNT_KNOWN = {"Type", "Source", "Target", "ReadOnly", "Consistency", "BindOptions", "VolumeOptions", "TmpfsOptions"}


def _check_mount(mount: Any) -> None:
    """A HostConfig.Mounts entry's options that would change what is mounted: refused by name (only the
    defaults pass: private propagation, a local volume without a subpath)."""
    if not isinstance(mount, dict):
        raise bad_request("invalid HostConfig.Mounts: expected a list of objects")
    for key, value in mount.items():
        if key not in _MOUNT_KNOWN and value not in (None, "", 0, False, [], {}):
            raise refuse(f"HostConfig.Mounts {key}")
    _check_types(mount, {"Type": "str", "Source": "str", "Target": "str", "ReadOnly": "bool", "BindOptions": "dict",
                         "VolumeOptions": "dict", "TmpfsOptions": "dict"}, "HostConfig.Mounts ")  # fmt: skip
    bind = mount.get("BindOptions") or {}
    if bind.get("Propagation") not in (None, "", "rprivate", "private"):
        raise refuse(f"HostConfig.Mounts BindOptions.Propagation={bind['Propagation']!r}", "mounts are private")
    for key, value in bind.items():
        if key != "Propagation" and value:  # NonRecursive, CreateMountpoint, ReadOnlyNonRecursive...
            raise refuse(f"HostConfig.Mounts BindOptions.{key}")
    volume = mount.get("VolumeOptions") or {}
    driver = volume.get("DriverConfig") or {}
    if not isinstance(driver, dict) or driver.get("Name") not in (None, "", "local") or driver.get("Options"):
        raise refuse("HostConfig.Mounts VolumeOptions.DriverConfig", "volumes are local directories")
    for key, value in volume.items():
        if key not in ("DriverConfig", "NoCopy") and value:  # Subpath, Labels (of a volume it would make)...
            raise refuse(f"HostConfig.Mounts VolumeOptions.{key}")
    tmpfs = mount.get("TmpfsOptions") or {}
    for key, value in tmpfs.items():
        if key not in ("SizeBytes", "Mode") and value:
            raise refuse(f"HostConfig.Mounts TmpfsOptions.{key}")


def _limits(host: dict, request: dict) -> None:
    memory = int(host.get("Memory") or 0)
    if memory:
        request["memory"] = str(memory)
    swap = int(host.get("MemorySwap") or 0)
    if swap not in (0, -1) and swap != memory and swap != 2 * memory:
        raise refuse("HostConfig.MemorySwap other than the memory limit", "netctl caps memory+swap at --memory")
    nano = int(host.get("NanoCpus") or 0)
    quota, period = int(host.get("CpuQuota") or 0), int(host.get("CpuPeriod") or 0)
    if nano and quota:
        raise bad_request("conflicting options: NanoCpus and CpuQuota cannot both be set")
    if nano:
        request["cpus"] = str(nano / 1e9)
    elif quota > 0:
        request["cpus"] = str(quota / (period or 100_000))
    pids = host.get("PidsLimit")
    if pids and int(pids) > 0:
        request["pids_limit"] = str(int(pids))
    if host.get("CpuShares") not in (None, 0, 1024):
        raise refuse("HostConfig.CpuShares", "use NanoCpus (--cpus)")
    if host.get("MemorySwappiness") not in (None, -1):
        raise refuse("HostConfig.MemorySwappiness")


def _ports(host: dict, body: dict, request: dict) -> None:
    publish = []
    bindings = dict(host.get("PortBindings") or {})
    if host.get("PublishAllPorts"):
        for port in body.get("ExposedPorts") or {}:
            bindings.setdefault(port, [{"HostIp": "", "HostPort": ""}])
    for key, entries in bindings.items():
        number, _, protocol = str(key).partition("/")
        protocol = protocol or "tcp"
        if protocol not in ("tcp", "udp"):
            raise refuse(f"HostConfig.PortBindings protocol {protocol!r}", "use tcp or udp")
        if not number.isdigit() or not 1 <= int(number) <= 65535:
            raise bad_request(f"invalid port {key!r} in HostConfig.PortBindings")
        for entry in entries or [{}]:
            host_port = (entry or {}).get("HostPort") or "0"
            if "-" in host_port:
                raise refuse(f"HostConfig.PortBindings host port range {host_port!r}", "give one port")
            if not host_port.isdigit() or int(host_port) > 65535:
                raise bad_request(f"invalid host port {host_port!r} for {key}")
            host_ip = (entry or {}).get("HostIp") or ""
            if host_ip in ("0.0.0.0", "::"):
                host_ip = ""
            publish.append({"host_port": int(host_port), "container_port": int(number), "protocol": protocol,
                            "host_ip": host_ip})  # fmt: skip
    request["publish"] = publish


def _networking(networking: dict, body: dict, request: dict) -> None:
    """EndpointsConfig: each network's aliases, static address and MAC address (the primary network,
    NetworkMode, may appear as "default"); API 1.44+ may name several networks."""
    endpoints = networking.get("EndpointsConfig") or {}
    if not isinstance(endpoints, dict):
        raise bad_request("NetworkingConfig.EndpointsConfig must be a JSON object")
    first = request["networks"][0]
    names = list(dict.fromkeys([first] + [n for n in endpoints if n not in ("default", first)]))
    settings_of: dict[str, dict] = {}
    for net, settings in endpoints.items():
        settings = settings or {}
        target = first if net == "default" else net
        where = f"NetworkingConfig.EndpointsConfig[{net!r}]."
        _check_types(settings, {"Aliases": "list", "IPAMConfig": "dict", "MacAddress": "str"}, where)
        ipam = settings.get("IPAMConfig") or {}
        _check_types(ipam, {"IPv4Address": "str", "IPv6Address": "str"}, where + "IPAMConfig.")
        if ipam.get("IPv6Address"):
            raise refuse(f"NetworkingConfig.EndpointsConfig[{net!r}].IPAMConfig.IPv6Address")
        for key in ("Links", "LinkLocalIPs"):
            if settings.get(key) or ipam.get(key):
                raise refuse(f"NetworkingConfig.EndpointsConfig[{net!r}].{key}")
        if target in ("host", "none") and (settings.get("Aliases") or ipam.get("IPv4Address")):
            raise bad_request(f"network mode {target} takes no aliases or addresses")
        settings_of[target] = {"aliases": [a for a in _list(settings.get("Aliases"), where + "Aliases") if a],
                               "ip": ipam.get("IPv4Address") or "", "mac": settings.get("MacAddress") or ""}
    if body.get("MacAddress"):  # before API 1.44: the primary network's
        settings_of.setdefault(first, {"aliases": [], "ip": "", "mac": ""})["mac"] = body["MacAddress"]
    request["networks"] = names
    if first not in ("host", "none"):
        request["endpoints"] = settings_of
