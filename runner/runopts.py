"""The options of `netctl run` and `netctl exec`, defined once: the click commands
(netctl/containers_cli.py) are generated from these tables, and so is the click-free parser of
runner/fastcli.py, which skips importing click (~80 ms of a ~130 ms CLI start on a small VM). For
`run` both turn the options into the same request dict (the fields of runner.spec.RunRequest).

Standard library only, and neither dataclasses (it imports inspect, ~12 ms) nor re (~5 ms): this
module is on the hot path of every `netctl run`.
"""

from __future__ import annotations

import os

from libnetwork.errors import InvalidArgument

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the hot path
if TYPE_CHECKING:
    from collections.abc import Mapping

    from libnetwork.model import PortMapping

FLAG, VALUE, MULTI = "flag", "value", "multi"

# (flags, dest, kind, metavar, help). dest is the RunRequest field.
RUN_OPTIONS: tuple[tuple[tuple[str, ...], str, str, str, str], ...] = (
    (("--name",), "name", VALUE, "NAME", "Container name (default: a generated one)."),
    (("--hostname",), "hostname", VALUE, "NAME", "Host name inside (default: the short id)."),
    (("-e", "--env"), "env", MULTI, "KEY[=VALUE]", "Environment variable (KEY alone copies ours)."),
    (("--env-file",), "env_files", MULTI, "FILE", "File of KEY=VALUE lines."),
    (("-w", "--workdir"), "workdir", VALUE, "DIR", "Working directory inside (absolute)."),
    (("-u", "--user"), "user", VALUE, "UID[:GID]", "User (and group) to run as; names from the image's /etc/passwd."),
    (("--read-only",), "read_only", FLAG, "", "Mount the container's root file system read-only."),
    (("-v", "--volume"), "volumes", MULTI, "HOST|NAME:CONT[:OPTS]",
     "Bind-mount a host path, or a named volume (made if missing; filled with the image's files at CONT "
     "while empty). OPTS: ro or rw, nocopy (leave a volume empty)."),
    (("--cap-add",), "cap_add", MULTI, "CAP", "Add a capability to Docker's default set (or ALL)."),
    (("--cap-drop",), "cap_drop", MULTI, "CAP", "Drop a capability from it (or ALL)."),
    (("-m", "--memory"), "memory", VALUE, "SIZE", "Memory limit, e.g. 16m, 1g."),
    (("--cpus",), "cpus", VALUE, "N", "CPU limit, e.g. 0.5."),
    (("--pids-limit",), "pids_limit", VALUE, "N", "Maximum number of processes."),
    (("--network", "--net"), "networks", MULTI, "NET",
     "netctl network to join (repeatable), or none, or host. Default: bridge."),
    (("--ip",), "ip", VALUE, "ADDRESS", "IPv4 address on the first network."),
    (("--network-alias",), "network_aliases", MULTI, "NAME", "Extra name on the container's networks."),
    (("--dns",), "dns", MULTI, "ADDRESS", "Name server the embedded DNS forwards this container's other names to."),
    (("--dns-search",), "dns_search", MULTI, "DOMAIN", "Search domain in its resolv.conf (after netctl.internal)."),
    (("--dns-option",), "dns_options", MULTI, "OPTION", "Option in its resolv.conf, e.g. ndots:2."),
    (("-p", "--publish"), "publish", MULTI, "[HOSTIP:]HOSTPORT:PORT[/PROTO]", "Publish a port (first network)."),
    (("-t", "--tty"), "tty", FLAG, "", "Give the container a terminal."),
    (("-i", "--interactive"), "interactive", FLAG, "", "Keep stdin open (pass ours to the container)."),
    (("-d", "--detach"), "detach", FLAG, "", "Start it in the background and print its id."),
    (("--rm",), "auto_remove", FLAG, "", "Remove the container when it exits."),
    (("--restart",), "restart", VALUE, "POLICY",
     "Start it again when it exits: no (default), always, unless-stopped, on-failure[:N] (Docker's back-off). "
     "A host agent started by hand starts the ones left running again after a reboot."),
    (("--entrypoint",), "entrypoint", VALUE, "CMD", "Replace the image's entrypoint."),
    (("--pull",), "pull", VALUE, "missing|always|never",
     "Pull the image from its registry: when missing (default), always, or never."),
    (("--platform",), "platform", VALUE, "OS/ARCH[/VARIANT]",
     "Pull (always) this platform of a multi-platform image; default: this host's, pulled when missing."),
)
CLIENT_SIDE = ("pull", "platform")  # run options the CLI acts on itself (pulling); not sent to the monitor
EXEC_OPTIONS: tuple[tuple[tuple[str, ...], str, str, str, str], ...] = (
    (("-i", "--interactive"), "interactive", FLAG, "", "Pass our stdin."),
    (("-t", "--tty"), "tty", FLAG, "", "Give the process a terminal."),
    (("-e", "--env"), "env", MULTI, "KEY[=VALUE]", "Extra environment variable."),
    (("-u", "--user"), "user", VALUE, "UID[:GID]", "User (default: the container's)."),
    (("-w", "--workdir"), "workdir", VALUE, "DIR", "Working directory (default: the container's)."),
)
_ENV_NAME_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_ENV_NAME_REST = _ENV_NAME_FIRST | frozenset("0123456789")


def is_env_name(key: str) -> bool:
    """What a shell accepts as a variable name: [A-Za-z_][A-Za-z0-9_]*."""
    return bool(key) and key[0] in _ENV_NAME_FIRST and all(c in _ENV_NAME_REST for c in key)


def defaults(table=RUN_OPTIONS) -> dict:
    values: dict = {}
    for _, dest, kind, _, _ in table:
        values[dest] = False if kind == FLAG else [] if kind == MULTI else ""
    if table is RUN_OPTIONS:
        values["entrypoint"] = None
    return values


class NotForUs(Exception):
    """The command line needs the full CLI (help, an unknown option): fall back to click."""


def parse_run(args: list[str], table=RUN_OPTIONS) -> tuple[dict, str, list[str]]:
    """click's rules for `run [OPTIONS] IMAGE [COMMAND]...` (and `exec [OPTIONS] CONTAINER COMMAND...`
    with table=EXEC_OPTIONS): options end at the first argument; short flags combine (-it, -dit);
    -xVALUE, -x VALUE, --opt VALUE, --opt=VALUE."""
    by_flag = {flag: (dest, kind) for flags, dest, kind, _, _ in table for flag in flags}
    values = defaults(table)
    i = 0

    def take(dest: str, kind: str, value: str) -> None:
        if kind == MULTI:
            values[dest].append(value)
        else:
            values[dest] = value

    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        if arg in ("-h", "--help"):
            raise NotForUs(arg)
        if arg.startswith("--"):
            flag, eq, inline = arg.partition("=")
            if flag not in by_flag:
                raise NotForUs(arg)
            dest, kind = by_flag[flag]
            if kind == FLAG:
                if eq:
                    raise NotForUs(arg)
                values[dest] = True
            elif eq:
                take(dest, kind, inline)
            else:
                if i + 1 >= len(args):
                    raise NotForUs(arg)
                i += 1
                take(dest, kind, args[i])
            i += 1
            continue
        # short flags, possibly combined
        j = 1
        while j < len(arg):
            flag = "-" + arg[j]
            if flag not in by_flag:
                raise NotForUs(arg)
            dest, kind = by_flag[flag]
            if kind == FLAG:
                values[dest] = True
                j += 1
                continue
            rest = arg[j + 1:]
            if rest:
                take(dest, kind, rest)
            else:
                if i + 1 >= len(args):
                    raise NotForUs(arg)
                i += 1
                take(dest, kind, args[i])
            break
        i += 1
    if i >= len(args):
        raise NotForUs("no image")
    return values, args[i], args[i + 1:]


def build_request(values: dict, image: str, command: list[str], environ: Mapping[str, str] | None = None) -> dict:
    """The request the monitor receives (RunRequest's fields), from parsed options. Reads env files
    and our environment here: they belong to the caller, not to the monitor."""
    import resource

    environ = os.environ if environ is None else environ
    env = []
    for path in values["env_files"]:
        env += read_env_file(path, environ)
    env += parse_env(list(values["env"]), environ)
    request = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in values.items()
               if k != "env_files" and k not in CLIENT_SIDE}  # fmt: skip
    request.update(
        image=image,
        command=list(command),
        env=env,
        env_files=[],
        caller_nofile=resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        cgroup_parent=environ.get("NETCTL_CGROUP_PARENT", ""),
    )
    return request


def parse_env(values: list[str], environ: Mapping[str, str] | None = None) -> list[str]:
    """-e KEY=VALUE, or -e KEY to copy KEY from the caller's environment (skipped when unset)."""
    environ = os.environ if environ is None else environ
    out = []
    for value in values:
        key, sep, val = value.partition("=")
        if not is_env_name(key):
            raise InvalidArgument(f"-e {value!r}: {key!r} is not a valid variable name; use KEY=VALUE")
        if sep:
            out.append(f"{key}={val}")
        elif key in environ:
            out.append(f"{key}={environ[key]}")
    return out


def read_env_file(path: str, environ: Mapping[str, str] | None = None) -> list[str]:
    """--env-file: KEY=VALUE lines; blank lines and # comments ignored; KEY alone copies from env."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as err:
        raise InvalidArgument(f"--env-file {path}: {err.strerror}") from None
    values = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        key = text.partition("=")[0]
        if not is_env_name(key):
            raise InvalidArgument(f"--env-file {path} line {number}: {key!r} is not a valid variable name")
        values.append(line.lstrip() if "=" in text else text)
    return parse_env(values, environ)


def parse_port(spec: str) -> PortMapping:
    """-p of `netctl run` and of `netctl network connect`: [HOSTIP:]HOSTPORT:PORT[/tcp|udp] ->
    PortMapping; IPv6 host addresses go in brackets."""
    from libnetwork.model import PortMapping

    body, _, protocol = spec.partition("/")
    protocol = protocol or "tcp"
    if protocol not in ("tcp", "udp"):
        raise InvalidArgument(f"port {spec!r}: protocol must be tcp or udp")
    host_ip = ""
    if body.startswith("["):
        host_ip, _, body = body[1:].partition("]")
        body = body.lstrip(":")
    else:
        parts = body.split(":")
        if len(parts) == 3:
            host_ip, body = parts[0], ":".join(parts[1:])
    host_port, sep, container_port = body.partition(":")
    if not sep:
        raise InvalidArgument(f"port {spec!r} must have the form [HOSTIP:]HOSTPORT:PORT[/tcp|udp]")
    numbers = []
    for text in (host_port, container_port):
        if not text.isdigit() or not 1 <= int(text) <= 65535:
            raise InvalidArgument(f"port {spec!r}: {text!r} is not a port number (1-65535)")
        numbers.append(int(text))
    if host_ip:
        import ipaddress

        try:
            ipaddress.ip_address(host_ip)
        except ValueError:
            raise InvalidArgument(f"port {spec!r}: host address {host_ip!r} is not an IP address") from None
    return PortMapping(host_port=numbers[0], container_port=numbers[1], protocol=protocol, host_ip=host_ip)
