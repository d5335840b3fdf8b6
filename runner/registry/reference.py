"""Image references, normalised as Docker does (github.com/distribution/reference):

    busybox                      -> docker.io/library/busybox:latest
    user/app:1                   -> docker.io/user/app:1
    localhost:5000/bb            -> localhost:5000/bb:latest
    registry.example/team/app@sha256:<hex>

The first path component is a registry when it has a "." or a ":" or is "localhost"; otherwise the
registry is docker.io (API host registry-1.docker.io). Familiar names (what `image ls` shows and what the
store keys tags by) drop "docker.io/" and "library/", as `docker images` does.
"""

from __future__ import annotations

import re

from libnetwork.errors import InvalidArgument

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_DOMAIN = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?$"
)
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class Reference:
    """A plain class, not a dataclass: the warm pull's fast path imports this (dataclasses costs ~7 ms)."""

    __slots__ = ("registry", "repository", "tag", "digest")

    def __init__(self, registry: str, repository: str, tag: str = "", digest: str = ""):
        self.registry = registry  # docker.io, localhost:5000, registry.example
        self.repository = repository  # library/busybox, team/app
        self.tag = tag  # "" when only a digest is given
        self.digest = digest  # sha256:<hex> or ""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Reference) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __repr__(self) -> str:
        return f"Reference({str(self)!r})"

    @property
    def name(self) -> str:
        """registry/repository, fully qualified."""
        return f"{self.registry}/{self.repository}"

    @property
    def familiar_name(self) -> str:
        if self.registry == DOCKER_HUB:
            repo = self.repository
            return repo[len("library/") :] if repo.startswith("library/") and repo.count("/") == 1 else repo
        return self.name

    @property
    def familiar(self) -> str:
        """What the store tags: NAME:TAG (or NAME@DIGEST when there is no tag)."""
        if self.tag:
            return f"{self.familiar_name}:{self.tag}"
        return f"{self.familiar_name}@{self.digest}"

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def selector(self) -> str:
        """What follows /manifests/ in the API: the digest if given, else the tag."""
        return self.digest or self.tag

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    def with_tag(self, tag: str) -> "Reference":
        return Reference(self.registry, self.repository, tag, "")


def parse(text: str, *, default_tag: str = "latest") -> Reference:
    """A Reference from what a user typed; InvalidArgument (one line) if it is not one."""
    original = text
    if not text or len(text) > 512 or text != text.strip():
        raise InvalidArgument(
            f"invalid image name {original!r}: use [REGISTRY/]NAME[:TAG|@sha256:DIGEST], e.g. busybox:1.36"
        )
    digest = ""
    if "@" in text:
        text, _, digest = text.partition("@")
        if not _DIGEST.match(digest):
            raise InvalidArgument(f"invalid image name {original!r}: a digest is @sha256: and 64 lowercase hex digits")
    tag = ""
    slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > slash:
        text, tag = text[:colon], text[colon + 1 :]
        if not _TAG.match(tag):
            raise InvalidArgument(
                f"invalid image name {original!r}: the tag {tag!r} may have letters, digits, '_', '.', '-', up to 128"
            )
    first, sep, rest = text.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        if not _DOMAIN.match(first):
            raise InvalidArgument(f"invalid image name {original!r}: {first!r} is not a registry HOST[:PORT]")
        registry, path = first, rest
    else:
        registry, path = DOCKER_HUB, text
    if registry == "index.docker.io":
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if not _PATH.match(path) or len(path) > 255:
        raise InvalidArgument(
            f"invalid image name {original!r}: use lowercase letters, digits and separators (. _ __ -), "
            "components joined by /, e.g. busybox or team/app:1"
        )
    if not tag and not digest:
        tag = default_tag
    return Reference(registry, path, tag, digest)


def registry_host(text: str) -> str:
    """`netctl login [REGISTRY]`'s argument -> the registry as references name it (docker.io default)."""
    host = text.strip() or DOCKER_HUB
    for prefix in ("https://", "http://"):
        if host.startswith(prefix):
            host = host[len(prefix) :]
    host = host.split("/", 1)[0]
    if host in ("index.docker.io", DOCKER_HUB_API):
        host = DOCKER_HUB
    if not _DOMAIN.match(host):
        raise InvalidArgument(f"invalid registry {text!r}: use HOST[:PORT], e.g. localhost:5000")
    return host


def is_localhost(registry: str) -> bool:
    """Docker treats loopback registries as insecure by default (plain HTTP allowed)."""
    host = registry.rsplit(":", 1)[0] if not registry.endswith("]") else registry
    host = host.strip("[]")
    return host == "localhost" or host.startswith("127.") or host == "::1"
