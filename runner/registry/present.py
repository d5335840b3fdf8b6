"""Is an image present? The one registry-related question `netctl run` asks on its hot path, so this
module imports nothing beyond os, runner.image_refs (pure functions, no imports) and runner.protocol's
C-accelerated JSON (no re, no json package, no requests): a present image costs one small file read.

The answer is conservative: True only when the reference is a tag in repositories.json (after
Docker's normalisation of docker.io names), a NAME@DIGEST in digests.json, or looks like an image id
(the monitor resolves ids); anything else is "missing" and a pull is tried.
"""

from __future__ import annotations

import os

from runner.image_refs import familiar_digest_ref, familiar_tag_ref

_HEX = frozenset("0123456789abcdef")


def familiar(ref: str) -> str:
    """docker.io/library/busybox -> busybox:latest; localhost:5000/bb -> localhost:5000/bb:latest."""
    if "@" in ref:
        return familiar_digest_ref(ref)
    name = familiar_tag_ref(ref)
    if name.rfind(":") <= name.rfind("/"):
        name += ":latest"
    return name


def _read(path: str) -> dict:
    from runner.protocol import loads

    try:
        with open(path, "rb") as f:
            data = loads(f.read().decode().strip())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def is_present(images_dir: str, ref: str) -> bool:
    bare = ref[len("sha256:") :] if ref.startswith("sha256:") else ref
    if 12 <= len(bare) <= 64 and all(c in _HEX for c in bare):
        return True
    key = familiar(ref)
    if "@" in key:
        return key in _read(os.path.join(images_dir, "digests.json"))
    return key in _read(os.path.join(images_dir, "repositories.json"))


PULL_POLICIES = ("missing", "always", "never")


def ensure_image(layout, image: str, policy: str, platform: str = "") -> None:
    """`run --pull POLICY`: pull IMAGE first when it is missing (or always); never pull with "never"
    (the monitor then reports a missing image). Loads the registry code only when it pulls."""
    if policy not in PULL_POLICIES:
        from libnetwork.errors import InvalidArgument

        raise InvalidArgument(f"--pull {policy!r}: use missing, always or never")
    if policy == "never" or (policy == "missing" and not platform and is_present(layout.images, image)):
        return
    import sys

    from runner.registry.pull import pull_and_report

    if policy != "missing" or platform:
        pull_and_report(layout, image, platform=platform or None, out=sys.stderr)
        return
    from runner.registry.client import RegistryConnectionError
    from runner.registry.errors import ImageNotFound

    try:
        pull_and_report(layout, image, out=sys.stderr, notice=f"Unable to find image '{image}' locally")
    except (ImageNotFound, RegistryConnectionError) as err:
        from libnetwork.errors import NotFound

        raise NotFound(f"image {image!r} not found locally, and pulling it failed: {err.message}") from None
