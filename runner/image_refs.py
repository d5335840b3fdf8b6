"""Image names as the store keys them: Docker's familiar form (docker.io/library/busybox:1 is busybox:1,
docker.io/user/app is user/app), for tags and for NAME@DIGEST references. Pure functions, standard
library only (the image store and the registry code both use them)."""

from __future__ import annotations


def familiar_tag_ref(ref: str) -> str:
    """docker.io/library/busybox:1 -> busybox:1, docker.io/user/app -> user/app (how tags are keyed)."""
    for prefix in ("docker.io/", "index.docker.io/"):
        if ref.startswith(prefix):
            ref = ref[len(prefix) :]
            if ref.startswith("library/") and "/" not in ref[len("library/") :]:
                ref = ref[len("library/") :]
            break
    return ref


def familiar_digest_ref(ref: str) -> str:
    name, _, digest = ref.partition("@")
    name = name.rsplit(":", 1)[0] if name.rfind(":") > name.rfind("/") else name
    return f"{familiar_tag_ref(name)}@{digest}"
