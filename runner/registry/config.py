"""Where registry settings come from: credentials, insecure registries, CA certificates.

    netctl's config dir    NETCTL_CONFIG, else $XDG_CONFIG_HOME/netctl, else ~/.config/netctl
      auth.json            {"auths": {"HOST[:PORT]": {"auth": base64("user:password")}}}, mode 0600,
                           written by `netctl login`, read first
      registries.json      {"insecure-registries": ["HOST[:PORT]", ...]}: HTTPS without certificate
                           verification, else plain HTTP (as Docker's insecure-registries); loopback
                           registries may use plain HTTP without being named
      certs.d/HOST[:PORT]/ ca.crt (and any *.crt), client.cert + client.key: as Docker's certs.d
    ~/.docker/config.json  Docker's "auths" (what users already have), read after ours
    /etc/docker/certs.d/HOST[:PORT]/   Docker's CA convention

Credential helpers (credsStore) are not run: only inline "auth" entries are read.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass, field

from libnetwork.errors import InvalidArgument
from runner.registry.reference import DOCKER_HUB, is_localhost

DOCKER_CERTS_D = "/etc/docker/certs.d"
_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")


def config_dir() -> str:
    if os.environ.get("NETCTL_CONFIG"):
        return os.environ["NETCTL_CONFIG"]
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "netctl")


def auth_file() -> str:
    return os.path.join(config_dir(), "auth.json")


def docker_config_file() -> str:
    base = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return os.path.join(base, "config.json")


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise InvalidArgument(f"{path} is not readable JSON ({err}); fix or remove it") from None
    return data if isinstance(data, dict) else {}


def _keys_for(registry: str) -> list[str]:
    keys = [registry, f"https://{registry}", f"http://{registry}", f"https://{registry}/v1/", f"https://{registry}/v2/"]
    if registry == DOCKER_HUB:
        keys = list(_HUB_KEYS) + keys
    return keys


def _decode(entry: object, path: str) -> tuple[str, str] | None:
    if not isinstance(entry, dict):
        return None
    if entry.get("auth"):
        try:
            user, sep, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise InvalidArgument(f"{path}: the auth entry is not base64 of user:password; log in again") from None
        return (user, password) if sep else None
    if entry.get("username") and entry.get("password"):
        return str(entry["username"]), str(entry["password"])
    return None


@dataclass
class Credentials:
    username: str
    password: str
    source: str  # the file they came from, for error messages


def credentials(registry: str) -> Credentials | None:
    """netctl's own login first, then Docker's ~/.docker/config.json."""
    for path in (auth_file(), docker_config_file()):
        auths = _read_json(path).get("auths") or {}
        if not isinstance(auths, dict):
            continue
        for key in _keys_for(registry):
            found = _decode(auths.get(key), path)
            if found:
                return Credentials(found[0], found[1], path)
    return None


def _write_private_json(path: str, data: dict) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    temp = f"{path}.{secrets.token_hex(4)}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
    os.rename(temp, path)


def store_credentials(registry: str, username: str, password: str) -> str:
    path = auth_file()
    data = _read_json(path)
    auths = data.setdefault("auths", {})
    auths[registry] = {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}
    _write_private_json(path, data)
    return path


def remove_credentials(registry: str) -> bool:
    path = auth_file()
    data = _read_json(path)
    auths = data.get("auths") or {}
    if registry not in auths:
        return False
    del auths[registry]
    _write_private_json(path, data)
    return True


@dataclass
class Settings:
    """What one pull or push needs to know about registries, from flags and the config dir."""

    insecure: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, insecure_flags: tuple[str, ...] | list[str] = ()) -> "Settings":
        data = _read_json(os.path.join(config_dir(), "registries.json"))
        listed = data.get("insecure-registries") or []
        return cls(insecure={str(x) for x in listed} | {str(x) for x in insecure_flags})

    def named_insecure(self, registry: str) -> bool:
        """Named by --insecure-registry or registries.json: HTTPS without verification, then plain HTTP."""
        host = registry.rsplit(":", 1)[0] if ":" in registry and not registry.endswith("]") else registry
        return registry in self.insecure or host in self.insecure

    def plain_http_allowed(self, registry: str) -> bool:
        """Named insecure, or a loopback registry (as Docker): plain HTTP after HTTPS failed. A loopback
        registry that does speak TLS is still verified (stricter than Docker, which skips verification)."""
        return self.named_insecure(registry) or is_localhost(registry)

    def certs_dirs(self, registry: str) -> list[str]:
        """Docker's certs.d, then netctl's: every *.crt is a CA, client.cert/client.key a client cert."""
        return [os.path.join(DOCKER_CERTS_D, registry), os.path.join(config_dir(), "certs.d", registry)]
