"""Manifests from a registry: fetched with a size limit and checked against their digest; the kinds
netctl reads (Docker schema 2, OCI image manifest, Docker manifest list, OCI index) told apart, schema 1
refused, and the platform picked out of an index.
"""

from __future__ import annotations

import hashlib
import json
import platform as platform_mod
from dataclasses import dataclass

from runner.registry.client import Registry, read_limited
from runner.registry.errors import DigestMismatch, RegistryError, Unsupported

import os

# Size limits (bytes) on what is read whole into memory. Real manifests are a few kB, indexes a few tens,
# configs rarely over 100 kB. The registry itself serves no manifest over 4 MiB (the OCI spec's floor).
# NETCTL_MAX_MANIFEST_BYTES / NETCTL_MAX_CONFIG_BYTES change them.
MANIFEST_LIMIT = 4 << 20
CONFIG_LIMIT = 8 << 20


def manifest_limit() -> int:
    return _env_int("NETCTL_MAX_MANIFEST_BYTES", MANIFEST_LIMIT)


def config_limit() -> int:
    return _env_int("NETCTL_MAX_CONFIG_BYTES", CONFIG_LIMIT)


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "")
    if not text:
        return default
    if not text.isdigit() or int(text) < 1024:
        from runner.registry.errors import Unsupported

        raise Unsupported(f"{name}={text!r}: use a number of bytes, at least 1024")
    return int(text)


OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
INDEXES = (OCI_INDEX, DOCKER_LIST)
MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
ACCEPT = ", ".join(MANIFESTS + INDEXES + SCHEMA1)
LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": "",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar": "",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd": "zstd",
}
CONFIG_TYPES = ("application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json")


@dataclass
class Fetched:
    raw: bytes
    media_type: str
    digest: str  # sha256:<hex> of raw
    body: dict


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")


def host_platform() -> Platform:
    machine = platform_mod.machine()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm", "i686": "386"}.get(
        machine, machine
    )
    variant = {"armv7l": "v7", "armv6l": "v6"}.get(machine, "")
    return Platform("linux", arch, variant)


def parse_platform(text: str | None) -> Platform:
    if not text:
        return host_platform()
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise Unsupported(f"--platform {text!r}: use OS/ARCH[/VARIANT], e.g. linux/arm64 or linux/arm/v7")
    return Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else "")


def fetch(registry: Registry, repository: str, selector: str, scope: str, what: str) -> Fetched:
    response = registry.request(
        "GET", f"/v2/{repository}/manifests/{selector}", scope=scope, stream=True, headers={"Accept": ACCEPT}
    )
    header_type = response.headers.get("Content-Type", "").split(";")[0].strip()
    raw = read_limited(response, manifest_limit(), f"the manifest of {what}")
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    if selector.startswith("sha256:") and digest != selector:
        raise DigestMismatch(
            f"the manifest of {what} does not match its digest {selector[:19]} (got {digest[:19]}); "
            "the registry's copy is corrupt or was tampered with"
        )
    body = json_object(raw, f"the manifest of {what}")
    media_type = str(body.get("mediaType") or header_type)
    if body.get("schemaVersion") == 1 or media_type in SCHEMA1:
        raise Unsupported(
            f"{what} is a Docker schema 1 manifest, which netctl refuses (deprecated and unverifiable); "
            "push the image again with a current client (docker, skopeo, netctl) to get schema 2 or OCI"
        )
    if media_type not in MANIFESTS + INDEXES:
        if "manifests" in body:
            media_type = OCI_INDEX
        elif "layers" in body and "config" in body:
            media_type = OCI_MANIFEST
        else:
            raise Unsupported(f"{what} has a manifest of type {media_type or 'unknown'!r}, which is not an image")
    return Fetched(raw, media_type, digest, body)


def choose(index: Fetched, want: Platform, what: str) -> dict:
    """The index entry for `want` (os, architecture, and the variant when one is asked for)."""
    entries = [
        m for m in index.body.get("manifests") or [] if isinstance(m, dict) and isinstance(m.get("platform"), dict)
    ]
    matching = []
    for entry in entries:
        p = entry["platform"]
        if p.get("os") != want.os or p.get("architecture") != want.architecture:
            continue
        if (
            want.variant
            and p.get("variant", "") not in (want.variant, "")
            and not (want.architecture == "arm64" and want.variant == "v8")
        ):
            continue
        matching.append(entry)
    if not matching:
        have = sorted(
            {
                str(
                    Platform(
                        e["platform"].get("os", "?"),
                        e["platform"].get("architecture", "?"),
                        e["platform"].get("variant", ""),
                    )
                )
                for e in entries
            }
            - {"unknown/unknown"}
        )
        raise Unsupported(
            f"{what} has no image for {want}; it has {', '.join(have) or 'none'}: pick one with --platform"
        )
    if want.variant:  # an exact variant beats an unspecified one
        matching.sort(key=lambda e: e["platform"].get("variant", "") != want.variant)
    return matching[0]


def descriptor_digest(descriptor: dict, what: str) -> str:
    digest = str(descriptor.get("digest", ""))
    hexpart = digest[7:]
    if not digest.startswith("sha256:") or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise Unsupported(f"{what} names a blob by {digest[:80]!r}; netctl reads sha256 digests only")
    size = descriptor.get("size")
    if not isinstance(size, int) or size < 0:
        raise RegistryError(f"{what}: descriptor {digest[:19]} has no valid size")
    return digest


def json_object(raw: bytes, what: str) -> dict:
    """A document from the registry (a manifest, a config) as a JSON object; RegistryError naming
    `what` ("the manifest of IMAGE") if it is not one."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise RegistryError(f"{what} is not valid JSON") from None
    if not isinstance(body, dict):
        raise RegistryError(f"{what} is not a JSON object")
    return body
