"""The CNI protocol, shared by every netctl plugin (spec 1.1, and what runtimes really send).

    run(plugin, env, stdin, context) -> (exit status, stdout bytes, stderr bytes)

reads the six CNI_* variables and the configuration on stdin, validates them in the order the Go
reference skel does (so a runtime sees the same error codes), hands a `Request` to the plugin, and
renders what the plugin returns in the shape of the request's cniVersion (1.1.0 and 1.0.0; 0.4.0 and
0.3.x with `ips[].version`; the legacy 0.2.0/0.1.0 `ip4`/`ip6`). Every failure, including a bug, is a
spec error object on stdout with a non-zero status, never a traceback: libcni parses stdout.

`run` is a pure function of its arguments apart from the plugin's own work, so the same code serves
the plugin executable (cni_plugins/launch.py, in-process), the CNI service (cni_plugins/service.py,
one warm process for many requests) and the fuzz tests. It is given the plugin: this module imports
none of them (they import it; cni_plugins/plugins.py finds one by name).
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from libnetwork.errors import (
    CNI_DECODING_FAILURE,
    CNI_INCOMPATIBLE_VERSION,
    CNI_INTERNAL,
    CNI_INVALID_CONFIG,
    CNI_INVALID_ENV,
    CNI_IO_FAILURE,
    NetctlError,
)
from libnetwork.rootdir import DEFAULT_ROOT

if TYPE_CHECKING:
    from libnetwork.controller import Controller

SPEC_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
CURRENT = "1.1.0"
ROOT_KEY = "netctlRoot"  # optional config key naming netctl's state root (else NETCTL_ROOT, else DEFAULT_ROOT)

# Variables each command needs (spec §2), plus CNI_PATH where the Go skel asks for it (runtimes
# always send it, and delegation needs it). An empty variable counts as missing: libcni exports all six.
REQUIRED_ENV = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "GC": ("CNI_PATH",),
    "STATUS": (),
    "VERSION": (),
}
MIN_VERSION = {"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}
# CNI_ARGS keys understood without IgnoreUnknown; K8S_POD_* are what every Kubernetes runtime sends.
KNOWN_ARGS = ("IgnoreUnknown", "IP", "MAC", "K8S_POD_NAMESPACE", "K8S_POD_NAME", "K8S_POD_INFRA_CONTAINER_ID",
              "K8S_POD_UID")

_ID = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*")  # container ids and network names (spec §2, §1)
_IFNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")  # drivers/bridge.py validate_ifname's rule
_MAX_SHOWN = 120  # characters of a hostile value quoted back in a message


class CNIError(Exception):
    """A spec error: `code` from the spec's table, `msg` one line, `details` optional."""

    def __init__(self, code: int, msg: str, details: str = ""):
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details


def shown(value: Any) -> str:
    """A value quoted in a message, cut short: configs can be hostile."""
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


@dataclass
class Request:
    """One plugin invocation, validated."""

    command: str
    container_id: str
    netns: str
    ifname: str
    args: dict[str, str]  # CNI_ARGS
    path: list[str]  # CNI_PATH
    config: dict[str, Any]  # stdin
    stdin: bytes  # verbatim, for delegated plugins (spec: same stdin)
    env: dict[str, str]  # the whole environment, for delegated plugins

    @property
    def version(self) -> str:
        return self.config["cniVersion"]

    @property
    def name(self) -> str:
        return self.config["name"]

    def at_least(self, version: str) -> bool:
        return version_key(self.version) >= version_key(version)


@dataclass
class Context:
    """What a plugin may use beyond its request: netctl's controller (per state root, made on first
    use), the link remover of a long-running caller, and a log that ends up on stderr."""

    controllers: dict[str, "Controller"] = field(default_factory=dict)
    remove_links: Callable | None = None  # see Controller.detach_container
    log: list[str] = field(default_factory=list)

    def controller(self, req: Request) -> "Controller":
        from libnetwork.controller import Controller

        root = state_root(req.config, req.env)
        if root not in self.controllers:
            # netctl-bridge, -ipam and -null serve local networks: a host whose etcd is away (it has
            # overlay networks too) must still ADD, DEL and GC them. A new network's name is still
            # checked against the global ones when etcd answers (Controller._refuse_global_name).
            self.controllers[root] = Controller(root, find_global=False)
        return self.controllers[root]

    def close(self) -> None:
        for controller in self.controllers.values():
            controller.close()
        self.controllers.clear()


def state_root(config: dict[str, Any], env: dict[str, str]) -> str:
    root = config.get(ROOT_KEY)
    if root is None:
        return env.get("NETCTL_ROOT") or DEFAULT_ROOT
    if not isinstance(root, str) or not root.startswith("/") or "\0" in root:
        raise CNIError(CNI_INVALID_CONFIG, f"{ROOT_KEY} must be an absolute path, not {shown(root)}")
    return root


# --- the request ----------------------------------------------------------------------------------


def parse_request(env: dict[str, str], stdin: bytes) -> Request:
    command = env.get("CNI_COMMAND", "")
    if command not in REQUIRED_ENV:
        raise CNIError(CNI_INVALID_ENV, f"unknown CNI_COMMAND: {command[:_MAX_SHOWN]}")
    missing = [name for name in REQUIRED_ENV[command] if not env.get(name)]
    if missing:
        raise CNIError(CNI_INVALID_ENV, f"required env variables [{' '.join(missing)}] missing")
    config = decode_config(stdin)
    version = config.setdefault("cniVersion", "0.1.0")  # spec: a config without one is 0.1.0
    if not isinstance(version, str):
        raise CNIError(CNI_DECODING_FAILURE, f"cniVersion must be a string, not {shown(version)}")
    if version == "":
        config["cniVersion"] = "0.1.0"
    check_network_name(config.get("name"))
    request = Request(
        command=command,
        container_id=env.get("CNI_CONTAINERID", ""),
        netns=env.get("CNI_NETNS", ""),
        ifname=env.get("CNI_IFNAME", ""),
        args={},
        path=[d for d in env.get("CNI_PATH", "").split(":") if d],
        config=config,
        stdin=stdin,
        env=env,
    )
    if command in ("ADD", "CHECK", "DEL"):
        check_container_id(request.container_id)
        check_ifname(request.ifname)
    if request.version not in SPEC_VERSIONS:
        raise CNIError(CNI_INCOMPATIBLE_VERSION, "incompatible CNI versions",
                       f'config is "{request.version[:_MAX_SHOWN]}", plugin supports {list(SPEC_VERSIONS)}')
    if command in MIN_VERSION and not request.at_least(MIN_VERSION[command]):
        raise CNIError(CNI_INCOMPATIBLE_VERSION, f"config version does not allow {command}",
                       f"{command} needs cniVersion {MIN_VERSION[command]} or later, config is {request.version}")
    request.args = parse_cni_args(env.get("CNI_ARGS", ""))
    return request


def decode_config(stdin: bytes) -> dict[str, Any]:
    try:
        config = json.loads(stdin.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise CNIError(CNI_DECODING_FAILURE, f"error unmarshall network config: not UTF-8 ({err.reason})") from None
    except (ValueError, RecursionError) as err:
        raise CNIError(CNI_DECODING_FAILURE, f"error unmarshall network config: {str(err)[:_MAX_SHOWN]}") from None
    if not isinstance(config, dict):
        raise CNIError(CNI_DECODING_FAILURE,
                       f"error unmarshall network config: a JSON object is needed, not {type(config).__name__}")
    return config


def check_network_name(name: Any) -> None:
    if name is None or name == "":
        raise CNIError(CNI_INVALID_CONFIG, "missing network name")
    if not isinstance(name, str) or not _ID.fullmatch(name):
        raise CNIError(CNI_INVALID_CONFIG, "invalid characters found in network name", shown(name))


def check_container_id(container_id: str) -> None:
    if not _ID.fullmatch(container_id):
        raise CNIError(CNI_INVALID_ENV, "invalid characters in containerID", container_id[:_MAX_SHOWN])


def check_ifname(ifname: str) -> None:
    """CNI_IFNAME as the kernel takes it: 1-15 bytes, not . or .., no '/', ':' or whitespace."""
    if len(ifname.encode(errors="surrogateescape")) > 15:
        raise CNIError(CNI_INVALID_ENV, "interface name is too long", "CNI_IFNAME should be less than 16 characters")
    if ifname in (".", ".."):
        raise CNIError(CNI_INVALID_ENV, "interface name is . or ..", "CNI_IFNAME")
    if any(c in "/:" or c.isspace() for c in ifname):
        raise CNIError(CNI_INVALID_ENV, "interface name contains / or : or whitespace characters",
                       f"CNI_IFNAME {shown(ifname)}")
    if not _IFNAME.fullmatch(ifname):  # stricter than the kernel: netctl's names need no quoting anywhere
        raise CNIError(CNI_INVALID_ENV, f"CNI_IFNAME {shown(ifname)} is not a name netctl can use",
                       "use letters, digits, '_', '.' or '-', starting with a letter or digit")


def parse_cni_args(text: str) -> dict[str, str]:
    """CNI_ARGS "K=V;K2=V2" (libcni types.LoadArgs): unknown keys are refused unless IgnoreUnknown."""
    args: dict[str, str] = {}
    for pair in text.split(";"):
        if not pair:
            continue  # a trailing ';' is harmless
        parts = pair.split("=")
        if len(parts) != 2:
            raise CNIError(CNI_INVALID_ENV, f"CNI_ARGS: invalid pair {shown(pair)}",
                           "CNI_ARGS pairs are KEY=VALUE separated by ';'")
        args[parts[0]] = parts[1]
    unknown = [f"{k}={v}" for k, v in args.items() if k not in KNOWN_ARGS]
    if unknown and args.get("IgnoreUnknown", "").lower() not in ("1", "true"):
        raise CNIError(CNI_INVALID_ENV, f"CNI_ARGS: unknown args {shown(unknown)}",
                       "set IgnoreUnknown=1 to ignore them")
    return args


# --- results --------------------------------------------------------------------------------------
# Inside netctl a result is always the 1.1.0 shape: {"interfaces", "ips", "routes", "dns"}.

_INTERFACE_1_1_KEYS = ("mtu", "socketPath", "pciID")
_ROUTE_1_1_KEYS = ("mtu", "advmss", "priority", "table", "scope")


def family(cidr_or_ip: str) -> int:
    return 6 if ":" in cidr_or_ip else 4


def render_result(result: dict[str, Any], version: str) -> dict[str, Any]:
    """`result` in the shape of `version` (a full result, or an IPAM one without interfaces)."""
    if version_key(version) < (0, 3, 0):
        return _legacy_result(result, version)
    out: dict[str, Any] = {"cniVersion": version}
    modern = version_key(version) >= (1, 1, 0)
    if "interfaces" in result:
        out["interfaces"] = [
            {k: v for k, v in i.items() if modern or k not in _INTERFACE_1_1_KEYS} for i in result["interfaces"]
        ]
    ips = []
    for ip in result.get("ips", []):
        entry = dict(ip)
        if version_key(version) < (1, 0, 0):
            entry["version"] = str(family(ip["address"]))
        ips.append(entry)
    out["ips"] = ips
    out["routes"] = [{k: v for k, v in r.items() if modern or k not in _ROUTE_1_1_KEYS}
                     for r in result.get("routes", [])]
    if result.get("dns"):
        out["dns"] = result["dns"]
    return out


def _legacy_result(result: dict[str, Any], version: str) -> dict[str, Any]:
    out: dict[str, Any] = {"cniVersion": version}
    for fam, key in ((4, "ip4"), (6, "ip6")):
        ips = [ip for ip in result.get("ips", []) if family(ip["address"]) == fam]
        if len(ips) > 1:
            raise CNIError(CNI_INCOMPATIBLE_VERSION,
                           f"CNI version {version} does not support more than 1 address per family")
        if not ips:
            continue
        entry: dict[str, Any] = {"ip": ips[0]["address"]}
        if ips[0].get("gateway"):
            entry["gateway"] = ips[0]["gateway"]
        routes = [{k: r[k] for k in ("dst", "gw") if k in r}
                  for r in result.get("routes", []) if family(r["dst"]) == fam]
        if routes:
            entry["routes"] = routes
        out[key] = entry
    if result.get("dns"):
        out["dns"] = result["dns"]
    return out


def parse_result(obj: Any, default_version: str, what: str = "prevResult") -> dict[str, Any]:
    """A result of any version (prevResult, a delegated plugin's answer) in netctl's 1.1.0 shape,
    type-checked as strictly as libcni does: a runtime would refuse what we would pass on."""
    if not isinstance(obj, dict):
        raise CNIError(CNI_DECODING_FAILURE, f"{what} must be a JSON object, not {shown(obj)}")
    version = obj.get("cniVersion") or default_version
    if version not in SPEC_VERSIONS:
        raise CNIError(CNI_INCOMPATIBLE_VERSION, f"{what} has an unsupported cniVersion {shown(version)}")
    try:
        if version_key(version) < (0, 3, 0):
            result = _parse_legacy(obj)
        else:
            result = {
                "interfaces": [_interface(i) for i in _list(obj.get("interfaces"))],
                "ips": [_ip(i) for i in _list(obj.get("ips"))],
                "routes": [_route(r) for r in _list(obj.get("routes"))],
            }
            if not obj.get("interfaces"):
                del result["interfaces"]
        result["dns"] = parse_dns(obj.get("dns"))
    except (TypeError, ValueError, KeyError) as err:
        raise CNIError(CNI_DECODING_FAILURE, f"invalid {what}: {str(err)[:_MAX_SHOWN]}") from None
    return result


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {shown(value)}")
    return value


def _dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {shown(value)}")
    return value


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {shown(value)}")
    return value


def _cidr(value: Any, what: str) -> str:
    text = _string(value, what)
    if "/" not in text:
        raise ValueError(f"{what} {shown(text)} is not in CIDR form")
    ipaddress.ip_interface(text)  # raises ValueError
    return text


def _address(value: Any, what: str) -> str:
    text = _string(value, what)
    ipaddress.ip_address(text)
    return text


def _interface(value: Any) -> dict[str, Any]:
    entry = dict(_dict(value))
    _string(entry.get("name"), "interface name")
    for key in ("mac", "sandbox", "socketPath", "pciID"):
        if key in entry:
            _string(entry[key], f"interface {key}")
    if "mtu" in entry and (not isinstance(entry["mtu"], int) or isinstance(entry["mtu"], bool)):
        raise TypeError(f"interface mtu must be an integer, got {shown(entry['mtu'])}")
    return entry


def _ip(value: Any) -> dict[str, Any]:
    source = _dict(value)
    entry: dict[str, Any] = {"address": _cidr(source.get("address"), "ip address")}
    if source.get("gateway"):
        entry["gateway"] = _address(source["gateway"], "ip gateway")
    if "interface" in source and source["interface"] is not None:
        index = source["interface"]
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise TypeError(f"ip interface must be an index, got {shown(index)}")
        entry["interface"] = index
    return entry


def _route(value: Any) -> dict[str, Any]:
    entry = dict(_dict(value))
    entry["dst"] = _cidr(entry.get("dst"), "route dst")
    if entry.get("gw"):
        _address(entry["gw"], "route gw")
    elif "gw" in entry:
        del entry["gw"]
    return entry


def parse_dns(value: Any) -> dict[str, Any]:
    if not value:
        return {}
    source = _dict(value)
    dns: dict[str, Any] = {}
    for key in ("nameservers", "search", "options"):
        if source.get(key):
            dns[key] = [_string(v, f"dns {key}") for v in _list(source[key])]
    if source.get("domain"):
        dns["domain"] = _string(source["domain"], "dns domain")
    return dns


def _parse_legacy(obj: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {"ips": [], "routes": []}
    for key in ("ip4", "ip6"):
        if not obj.get(key):
            continue
        section = _dict(obj[key])
        ip = {"address": _cidr(section.get("ip"), f"{key} ip")}
        if section.get("gateway"):
            ip["gateway"] = _address(section["gateway"], f"{key} gateway")
        result["ips"].append(ip)
        result["routes"] += [_route(r) for r in _list(section.get("routes"))]
    return result


def prev_result(req: Request) -> dict[str, Any] | None:
    """The request's prevResult in netctl's shape, or None (first plugin of a chain, or a DEL
    without a cached result)."""
    if not req.config.get("prevResult"):
        return None
    return parse_result(req.config["prevResult"], req.version)


# --- running a plugin -----------------------------------------------------------------------------


def encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def version_reply(stdin: bytes = b"") -> bytes:
    from cni_plugins import version_reply as reply  # one implementation, the launcher's too

    return reply(stdin)


def error_reply(err: CNIError, version: str) -> bytes:
    reply: dict[str, Any] = {"cniVersion": version if version in SPEC_VERSIONS else CURRENT, "code": err.code,
                             "msg": err.msg}
    if err.details:
        reply["details"] = err.details
    return encode(reply)


def as_cni_error(err: BaseException) -> CNIError:
    if isinstance(err, CNIError):
        return err
    if isinstance(err, NetctlError):
        return CNIError(err.cni_code, err.message, err.details)
    if isinstance(err, OSError):
        return CNIError(CNI_IO_FAILURE if err.errno is not None else CNI_INTERNAL, f"netctl: {err}")
    # A bug: still a spec error, with enough to file it; the traceback goes to stderr with NETCTL_DEBUG.
    return CNIError(CNI_INTERNAL, f"netctl internal error: {type(err).__name__}: {str(err)[:_MAX_SHOWN]}")


def run(plugin: Any, env: dict[str, str], stdin: bytes, context: Context) -> tuple[int, bytes, bytes]:
    """One plugin invocation: (exit status, stdout, stderr). `plugin` has handle(request, context)."""
    version = CURRENT
    try:
        if env.get("CNI_COMMAND") == "VERSION":
            return 0, version_reply(stdin), b""
        request = parse_request(env, stdin)
        version = request.version
        result = plugin.handle(request, context)
        out = encode(render_result(result, version)) if result is not None else b""
        return 0, out, _log(context)
    except Exception as err:  # every failure becomes a spec error; KeyboardInterrupt/SystemExit pass
        if env.get("NETCTL_DEBUG"):
            import traceback

            context.log.append(traceback.format_exc())
        return 1, error_reply(as_cni_error(err), version), _log(context)


def _log(context: Context) -> bytes:
    text = "".join(line if line.endswith("\n") else line + "\n" for line in context.log)
    context.log.clear()
    return text.encode(errors="replace")
