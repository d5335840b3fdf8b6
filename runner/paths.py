"""Where the runner keeps things under a host's root (NETCTL_ROOT, default /var/lib/netctl).

    ROOT/images/.lock                      flock: exclusive for import/rm, shared while a run resolves
    ROOT/images/repositories.json          {"busybox:latest": "<image id hex>"}
    ROOT/images/images/<id>.json           an image: its config (env, cmd, ...) and layer diff ids
    ROOT/images/layers/<diff id>/diff/     one layer, extracted, whiteouts in overlayfs form
    ROOT/images/tmp/                       imports in progress (removed on failure)
    ROOT/containers/<id>/                  config.json, state.json, container.log, hosts, hostname,
                                           resolv.conf, upper/ and work/ (overlayfs), rootfs/ (mount point)
    ROOT/containers/.names/<name>          symlink -> <id>: container names, claimed atomically
    ROOT/monitor.sock, monitor.lock, monitor.log   the per-host monitor (see runner/monitor.py)
"""

from __future__ import annotations

import os

from libnetwork import rootdir


class Layout:
    """Paths under one root. A plain class, not a dataclass: `netctl run` imports this on its hot path."""

    __slots__ = ("root",)

    def __init__(self, root: str):
        self.root = root

    def __repr__(self) -> str:
        return f"Layout({self.root!r})"

    @classmethod
    def of(cls, root: str | None = None) -> "Layout":
        return cls(rootdir.resolve(root))

    # images
    @property
    def images(self) -> str:
        return os.path.join(self.root, "images")

    @property
    def images_lock(self) -> str:
        return os.path.join(self.images, ".lock")

    @property
    def repositories(self) -> str:
        return os.path.join(self.images, "repositories.json")

    def image_file(self, image_id: str) -> str:
        return os.path.join(self.images, "images", image_id + ".json")

    def layer_dir(self, diff_id: str) -> str:
        return os.path.join(self.images, "layers", diff_id)

    def layer_diff(self, diff_id: str) -> str:
        return os.path.join(self.layer_dir(diff_id), "diff")

    @property
    def images_tmp(self) -> str:
        return os.path.join(self.images, "tmp")

    # containers
    @property
    def containers(self) -> str:
        return os.path.join(self.root, "containers")

    @property
    def names(self) -> str:
        return os.path.join(self.containers, ".names")

    def container(self, container_id: str) -> str:
        return os.path.join(self.containers, container_id)

    # monitor
    @property
    def monitor_socket(self) -> str:
        return os.path.join(self.root, "monitor.sock")

    @property
    def monitor_lock(self) -> str:
        return os.path.join(self.root, "monitor.lock")

    @property
    def monitor_log(self) -> str:
        return os.path.join(self.root, "monitor.log")
