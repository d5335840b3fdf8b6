"""What a container is asked to be (RunRequest, from the command line) and what it was made as
(ContainerConfig, written to ROOT/containers/<id>/config.json), with the validation of every flag.

Everything here is pure: parsing and checking, no kernel and no store, so it is unit-tested directly.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from libnetwork.errors import InvalidArgument
from runner.cgroups import Limits
from runner.runopts import parse_env, read_env_file  # noqa: F401  (defined where `run` needs them cheaply)

# Docker's default capability set for containers.
DEFAULT_CAPS = (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP",
    "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
)  # fmt: skip
CAPABILITIES = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6,
    "SETUID": 7, "SETPCAP": 8, "LINUX_IMMUTABLE": 9, "NET_BIND_SERVICE": 10, "NET_BROADCAST": 11,
    "NET_ADMIN": 12, "NET_RAW": 13, "IPC_LOCK": 14, "IPC_OWNER": 15, "SYS_MODULE": 16, "SYS_RAWIO": 17,
    "SYS_CHROOT": 18, "SYS_PTRACE": 19, "SYS_PACCT": 20, "SYS_ADMIN": 21, "SYS_BOOT": 22, "SYS_NICE": 23,
    "SYS_RESOURCE": 24, "SYS_TIME": 25, "SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28, "AUDIT_WRITE": 29,
    "AUDIT_CONTROL": 30, "SETFCAP": 31, "MAC_OVERRIDE": 32, "MAC_ADMIN": 33, "SYSLOG": 34, "WAKE_ALARM": 35,
    "BLOCK_SUSPEND": 36, "AUDIT_READ": 37, "PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40,
}  # fmt: skip
NETWORK_NONE = "none"
NETWORK_HOST = "host"
DEFAULT_NOFILE = 1048576  # what Docker asks for; clipped to the caller's hard limit
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


@dataclass
class Volume:
    host: str
    container: str
    read_only: bool = False
    name: str = ""  # a named volume (runner/volumes.py); host is then its directory, filled at create
    nocopy: bool = False  # a named volume found empty is not filled with the image's files at the path

    def __str__(self) -> str:
        options = ",".join(o for o, on in (("ro", self.read_only), ("nocopy", self.nocopy)) if on)
        return f"{self.name or self.host}:{self.container}" + (f":{options}" if options else "")


@dataclass
class NetworkAttachment:
    network: str  # name or id as given
    ip: str = ""
    aliases: list[str] = field(default_factory=list)
    ports: list[dict] = field(default_factory=list)  # PortMapping.__dict__
    mac: str = ""  # "" derives one from the address


@dataclass
class RunRequest:
    """`netctl run` flags, as typed (validated by build_config)."""

    image: str
    command: list[str] = field(default_factory=list)
    name: str = ""
    hostname: str = ""
    env: list[str] = field(default_factory=list)
    env_files: list[str] = field(default_factory=list)
    workdir: str = ""
    user: str = ""
    read_only: bool = False
    volumes: list[str] = field(default_factory=list)
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    memory: str = ""
    cpus: str = ""
    pids_limit: str = ""
    networks: list[str] = field(default_factory=list)
    ip: str = ""
    network_aliases: list[str] = field(default_factory=list)
    publish: list[dict[str, Any]] = field(default_factory=list)  # PortMapping fields, parsed by the CLI
    tty: bool = False
    interactive: bool = False
    detach: bool = False
    auto_remove: bool = False
    entrypoint: str | list[str] | None = None  # a list from the Docker API
    cgroup_parent: str = ""
    caller_nofile: int = 0  # the CLI's hard RLIMIT_NOFILE: the container never gets more
    dns: list[str] = field(default_factory=list)  # --dns: where the embedded name server forwards for it
    dns_search: list[str] = field(default_factory=list)  # --dns-search: resolv.conf's search (after netctl.internal)
    dns_options: list[str] = field(default_factory=list)  # --dns-option: resolv.conf's options
    # Docker Engine API fields (netctl/docker_api/containers.py fills them; the CLI leaves the defaults)
    labels: dict[str, str] = field(default_factory=dict)
    restart: str = ""  # no | always | unless-stopped | on-failure[:N]
    stop_signal: str = ""  # e.g. SIGTERM (default) or SIGQUIT
    stop_timeout: int | None = None  # seconds between the stop signal and SIGKILL (default 10)
    stdin_once: bool = False  # close the container's stdin when the first attached client's ends
    tmpfs: list[str] = field(default_factory=list)  # PATH[:OPTIONS]
    extra_hosts: list[str] = field(default_factory=list)  # NAME:ADDRESS lines for /etc/hosts
    docker: dict[str, Any] = field(default_factory=dict)  # the API's Config/HostConfig as sent, for inspect
    endpoints: dict[str, dict] = field(default_factory=dict)  # the API's per network: aliases, ip, mac
    healthcheck: dict[str, Any] = field(default_factory=dict)  # argv, interval, timeout, retries, start_period (s)
    sysctls: dict[str, str] = field(default_factory=dict)  # namespaced kernel settings (check_sysctls)
    ulimits: dict[str, list[int]] = field(default_factory=dict)  # --ulimit NAME=SOFT[:HARD] (check_ulimits)
    shm_size: int = 0  # bytes of /dev/shm; 0: 64 MiB

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunRequest":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class ContainerConfig:
    """A container as made: immutable after creation."""

    id: str
    name: str
    created: str
    image: str  # as the user named it
    image_id: str
    layers: list[str]  # diff ids, bottom first
    argv: list[str]
    env: list[str]
    workdir: str
    user: str
    hostname: str
    tty: bool = False
    interactive: bool = False
    auto_remove: bool = False
    read_only: bool = False
    volumes: list[Volume] = field(default_factory=list)
    capabilities: list[str] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    network_mode: str = "bridge"  # bridge (netctl networks) | none | host
    networks: list[NetworkAttachment] = field(default_factory=list)
    sandbox_id: str = ""
    cgroup_path: str = ""
    cgroup: dict = field(default_factory=dict)  # Hierarchy.to_dict()
    nofile: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    restart: str = ""  # the restart policy, parsed by parse_restart
    stop_signal: str = ""
    stop_timeout: int | None = None
    stdin_once: bool = False
    tmpfs: list[str] = field(default_factory=list)
    extra_hosts: list[str] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    dns_options: list[str] = field(default_factory=list)
    docker: dict[str, Any] = field(default_factory=dict)
    healthcheck: dict[str, Any] = field(default_factory=dict)
    sysctls: dict[str, str] = field(default_factory=dict)
    ulimits: dict[str, list[int]] = field(default_factory=dict)
    shm_size: int = 0

    @property
    def short_id(self) -> str:
        return self.id[:12]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return data

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ContainerConfig":
        d = dict(d)
        d["volumes"] = [Volume(**v) for v in d.get("volumes", [])]
        d["networks"] = [NetworkAttachment(**n) for n in d.get("networks", [])]
        d["limits"] = Limits.from_dict(d.get("limits") or {})
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in known})


# --- parsing of individual flags ---------------------------------------------------------------------


def merge_env(*layers: list[str]) -> list[str]:
    """Later KEY=VALUE entries override earlier ones; order of first appearance is kept."""
    merged: dict[str, str] = {}
    for layer in layers:
        for entry in layer:
            key, _, value = entry.partition("=")
            merged[key] = value
    return [f"{k}={v}" for k, v in merged.items()]


_VOLUME_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]+$")  # Docker's volume name rule (2 characters at least)


def check_volume_name(name: str) -> str:
    if not _VOLUME_NAME.match(name) or len(name) > 255:
        raise InvalidArgument(f"volume name {name!r} is invalid: use 2 or more letters, digits, '_', '.' or '-', "
                              "starting with a letter or digit")
    return name


def parse_volume(spec: str) -> Volume:
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise InvalidArgument(f"-v {spec!r} must have the form HOST:CONTAINER[:ro]")
    host, container = parts[0], parts[1]
    options = parts[2].split(",") if len(parts) == 3 else ["rw"]
    if any(o not in ("ro", "rw", "nocopy") for o in options) or ("ro" in options and "rw" in options):
        raise InvalidArgument(f"-v {spec!r}: options are ro or rw, and nocopy for a named volume")
    mode = "ro" if "ro" in options else "rw"
    if "nocopy" in options and host.startswith(("/", ".")):
        raise InvalidArgument(f"-v {spec!r}: nocopy is for a named volume, not a host path")
    if not host.startswith("/") and host.startswith("."):
        raise InvalidArgument(f"-v {spec!r}: the host path must be absolute, or a volume name")
    if not container.startswith("/") or ".." in container.split("/"):
        raise InvalidArgument(f"-v {spec!r}: the container path must be absolute and without '..'")
    if os.path.normpath(container) == "/":
        raise InvalidArgument(f"-v {spec!r}: cannot mount over the container's root")
    if not host.startswith("/"):  # a named volume: its directory is runner/volumes.py's, made at create
        return Volume(host="", container=os.path.normpath(container), read_only=mode == "ro",
                      name=check_volume_name(host), nocopy="nocopy" in options)
    if not os.path.exists(host):
        raise InvalidArgument(f"-v {spec!r}: host path {host} does not exist")
    return Volume(host=os.path.realpath(host), container=os.path.normpath(container), read_only=mode == "ro")


RESTART_POLICIES = ("no", "always", "unless-stopped", "on-failure")


def parse_signal(text: str) -> int:
    """A signal by name (TERM, SIGTERM, any case) or number: docker kill -s, --stop-signal, STOPSIGNAL."""
    import signal

    name = text.strip().upper()
    if name.isdigit():
        if 1 <= int(name) < signal.NSIG:
            return int(name)
    else:
        name = name if name.startswith("SIG") else "SIG" + name
        if name in signal.Signals.__members__:
            return int(signal.Signals[name])
    raise InvalidArgument(f"signal {text!r} is unknown; use a name like TERM, KILL, HUP or a number")


def parse_restart(text: str) -> tuple[str, int]:
    """--restart no|always|unless-stopped|on-failure[:N] -> (policy, maximum retries; 0: unbounded)."""
    name, _, count = (text or "no").partition(":")
    if name not in RESTART_POLICIES:
        raise InvalidArgument(f"restart policy {text!r} is unknown; use no, always, unless-stopped or on-failure[:N]")
    if count and (name != "on-failure" or not count.isdigit()):
        raise InvalidArgument(f"restart policy {text!r}: only on-failure takes a retry count, e.g. on-failure:3")
    return name, int(count or 0)


def parse_healthcheck(check: dict, where: str = "HEALTHCHECK") -> dict:
    """A Docker healthcheck ({"Test", "Interval", "Timeout", "StartPeriod", "StartInterval" in ns,
    "Retries"}: the API's Config.Healthcheck, an image's) -> {"argv", "interval", "timeout",
    "start_period", "start_interval" (seconds), "retries"}; {} for none (an empty Test, or NONE)."""
    test = check.get("Test") or []
    if not isinstance(test, list) or not all(isinstance(t, str) for t in test):
        raise InvalidArgument(f"{where}.Test must be a list of strings")
    if not test or test[0] == "NONE":
        return {}
    if test[0] == "CMD" and len(test) > 1:
        argv = test[1:]
    elif test[0] == "CMD-SHELL" and len(test) == 2:
        argv = ["/bin/sh", "-c", test[1]]
    else:
        raise InvalidArgument(f"{where}.Test {test!r}: use [\"CMD\", ARGS...] or [\"CMD-SHELL\", COMMAND]")
    out: dict[str, Any] = {"argv": argv}
    for key, name in (("Interval", "interval"), ("Timeout", "timeout"), ("StartPeriod", "start_period"),
                       ("StartInterval", "start_interval")):  # fmt: skip
        value = check.get(key) or 0
        if not isinstance(value, int) or value < 0:
            raise InvalidArgument(f"{where}.{key} must be a duration in nanoseconds")
        if value and value < 1_000_000:
            raise InvalidArgument(f"{where}.{key} cannot be less than 1ms")
        if value:
            out[name] = value / 1e9
    retries = check.get("Retries") or 0
    if not isinstance(retries, int) or retries < 0:
        raise InvalidArgument(f"{where}.Retries must be 0 or more")
    if retries:
        out["retries"] = retries
    return out


ULIMITS = ("core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc", "rss",
           "rtprio", "rttime", "sigpending", "stack")  # Docker's names


def check_ulimits(ulimits: dict[str, list[int]]) -> dict[str, list[int]]:
    """{name: [soft, hard]}: a known resource, 0 <= soft <= hard (-1: unlimited)."""
    out = {}
    for name, values in ulimits.items():
        if name not in ULIMITS:
            raise InvalidArgument(f"ulimit {name!r} is unknown; use one of {', '.join(ULIMITS)}")
        soft, hard = (int(v) for v in values)
        soft = 2**64 - 1 if soft == -1 else soft
        hard = 2**64 - 1 if hard == -1 else hard
        if soft < 0 or hard < 0 or soft > hard:
            raise InvalidArgument(f"ulimit {name}={soft}:{hard}: the soft limit must be 0 or more and at most the hard")
        out[name] = [soft, hard]
    return out


NAMESPACED_SYSCTLS = ("net.", "kernel.shm", "kernel.msg", "kernel.sem", "fs.mqueue.")  # Docker's list


def check_sysctls(sysctls: dict[str, str], network_mode: str) -> dict[str, str]:
    """--sysctl KEY=VALUE: only settings of the container's own namespaces (as Docker: net.*, IPC's);
    net.* not with the host's network, whose settings they would change."""
    out = {}
    for key, value in sysctls.items():
        key, value = str(key).strip(), str(value).strip()
        if not key.startswith(NAMESPACED_SYSCTLS) or not re.match(r"^[a-z0-9_.-]+$", key) or ".." in key:
            raise InvalidArgument(f"sysctl {key!r} is not one of a container's own namespaces "
                                  "(net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*)")
        if key.startswith("net.") and network_mode == NETWORK_HOST:
            raise InvalidArgument(f"sysctl {key!r} cannot be set with --network host: it would change the host's")
        if not value or "\n" in value:
            raise InvalidArgument(f"sysctl {key!r} needs a value")
        out[key] = value
    return out


def parse_tmpfs(text: str) -> tuple[str, str]:
    """--tmpfs PATH[:OPTIONS] -> (path, mount options); options from Docker's set only."""
    path, _, options = text.partition(":")
    if not path.startswith("/") or ".." in path.split("/") or os.path.normpath(path) == "/":
        raise InvalidArgument(f"--tmpfs {text!r}: the path must be absolute, without '..' and not /")
    allowed = ("size=", "mode=", "uid=", "gid=", "nr_inodes=", "nr_blocks=")
    flags = ("ro", "rw", "noexec", "exec", "nosuid", "suid", "nodev", "dev")
    for option in filter(None, options.split(",")):
        if option not in flags and not option.startswith(allowed):
            raise InvalidArgument(f"--tmpfs {text!r}: option {option!r} is not supported")
    return os.path.normpath(path), options


def parse_extra_host(text: str) -> tuple[str, str]:
    """--add-host NAME:ADDRESS (Docker also takes NAME=ADDRESS) -> (name, address)."""
    import ipaddress

    sep = "=" if "=" in text else ":"
    name, _, address = text.partition(sep)
    address = address.strip("[]")
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise InvalidArgument(f"extra host {text!r} must have the form NAME:IP-ADDRESS") from None
    if not name or not _HOSTNAME.match(name):
        raise InvalidArgument(f"extra host {text!r}: {name!r} is not a valid host name")
    return name, address


def parse_user(text: str) -> str:
    """-u UID[:GID] or NAME[:GROUP] (names are looked up in the container's /etc/passwd at start)."""
    if not text:
        return ""
    user, _, group = text.partition(":")
    for part, what in ((user, "user"), (group, "group")):
        if part and not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$", part):
            raise InvalidArgument(f"-u {text!r}: {what} {part!r} is not a valid name or number")
        if part.isdigit() and int(part) > 0xFFFFFFFE:
            raise InvalidArgument(f"-u {text!r}: {what} id {part} is out of range")
    if not user:
        raise InvalidArgument(f"-u {text!r}: give a user, e.g. -u 1000 or -u 1000:1000")
    return text


def capability_set(add: list[str], drop: list[str]) -> list[str]:
    """Docker's default set with --cap-add/--cap-drop applied; ALL works on either side."""

    def names(values: list[str], flag: str) -> list[str]:
        out = []
        for value in values:
            name = value.upper().removeprefix("CAP_")
            if name != "ALL" and name not in CAPABILITIES:
                raise InvalidArgument(f"{flag} {value!r} is not a capability (e.g. NET_ADMIN, SYS_TIME, ALL)")
            out.append(name)
        return out

    adds, drops = names(add, "--cap-add"), names(drop, "--cap-drop")
    caps = set(DEFAULT_CAPS)
    if "ALL" in drops:
        caps = set()
    caps -= set(drops)
    if "ALL" in adds:
        caps = set(CAPABILITIES)
    caps |= {a for a in adds if a != "ALL"}
    return sorted(caps, key=lambda n: CAPABILITIES[n])


def check_hostname(text: str) -> str:
    if len(text) > 64 or not _HOSTNAME.match(text):
        raise InvalidArgument(f"--hostname {text!r} is not a valid host name "
                              "(letters, digits, '-' and '.', at most 64)")
    return text


def check_workdir(text: str) -> str:
    if text and not text.startswith("/"):
        raise InvalidArgument(f"-w {text!r} must be an absolute path")
    return os.path.normpath(text) if text else ""


def nofile_limit(hard: int) -> int:
    """RLIMIT_NOFILE for the container: Docker's value, but never above the caller's hard limit."""
    import resource

    if hard == resource.RLIM_INFINITY:
        return DEFAULT_NOFILE
    return min(DEFAULT_NOFILE, hard)


def dns_settings(request: RunRequest) -> dict[str, Any]:
    """--dns (addresses), --dns-search (domain names, or "."), --dns-option (NAME[:VALUE]), checked."""
    import ipaddress

    for server in request.dns:
        try:
            ipaddress.ip_address(server.split("%", 1)[0])
        except ValueError:
            raise InvalidArgument(f"--dns {server!r} is not an IP address; pass a name server's address") from None
    for domain in request.dns_search:
        if domain != "." and not _HOSTNAME.match(domain.rstrip(".")):
            raise InvalidArgument(f"--dns-search {domain!r} is not a domain name")
    for option in request.dns_options:
        if not option or any(c.isspace() for c in option):
            raise InvalidArgument(f"--dns-option {option!r} must be one resolv.conf option, e.g. ndots:2")
    return {"dns": list(request.dns), "dns_search": list(request.dns_search), "dns_options": list(request.dns_options)}


def resolve_argv(entrypoint: list[str] | None, cmd: list[str] | None, request: RunRequest) -> list[str]:
    """Docker's rule: ENTRYPOINT + (the command given, else the image's CMD); --entrypoint replaces
    the image's entrypoint and drops its CMD."""
    if isinstance(request.entrypoint, list):  # the Docker API's Entrypoint: a list, [] or [""] for none
        entry = [part for part in request.entrypoint if part] if request.entrypoint != [""] else []
        argv = entry + (list(request.command) if request.command or entry else list(cmd or []))
    elif request.entrypoint is not None:
        entry = [request.entrypoint] if request.entrypoint else []
        argv = entry + list(request.command)
    else:
        argv = list(entrypoint or []) + (list(request.command) if request.command else list(cmd or []))
    if not argv:
        raise InvalidArgument(
            f"no command given and image {request.image!r} has none; add it after the image, e.g. "
            f"netctl run {request.image} sh -c 'echo hello'"
        )
    return argv
