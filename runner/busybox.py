"""A small image from Debian's busybox-static: one static binary plus a symlink per applet.

The tarball is built deterministically (fixed times, owners and order), so building twice gives the
same layer digest and the same image id: the second build stores nothing new.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import tempfile

from libnetwork.errors import InvalidArgument, NotFound
from runner.image_import import import_path

DEFAULT_BUSYBOX = "/bin/busybox"
DEFAULT_TAG = "busybox:latest"
MTIME = 946684800  # 2000-01-01: any fixed time keeps the digest stable
DIRECTORIES = {
    "bin": 0o755, "sbin": 0o755, "usr": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755, "etc": 0o755,
    "dev": 0o755, "proc": 0o555, "sys": 0o555, "tmp": 0o1777, "root": 0o700, "home": 0o755,
    "var": 0o755, "var/tmp": 0o1777, "run": 0o755,
}  # fmt: skip
FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "etc/hostname": "busybox\n",
    "etc/hosts": "127.0.0.1\tlocalhost\n",
    "etc/resolv.conf": "",
}


def applet_paths(busybox: str) -> list[str]:
    """Where busybox wants each applet, e.g. bin/ls, usr/bin/wc (from `busybox --list-full`)."""
    try:
        out = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError) as err:
        raise InvalidArgument(f"{busybox} does not run as busybox ({err}); install busybox-static") from None
    paths = sorted({line.strip().lstrip("/") for line in out.splitlines() if line.strip()})
    if not paths:
        raise InvalidArgument(f"{busybox} lists no applets; is it really busybox?")
    return paths


def build_tarball(busybox: str, out) -> None:
    """Write the rootfs tar of a busybox image to the binary file `out`."""
    if not os.path.isfile(busybox):
        raise NotFound(f"{busybox} not found; install Debian's busybox-static (apt-get install busybox-static)")
    applets = [p for p in applet_paths(busybox) if p != "bin/busybox"]
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, mode in sorted(DIRECTORIES.items()):
            tar.addfile(_info(name, tarfile.DIRTYPE, mode))
        for name, text in sorted(FILES.items()):
            data = text.encode()
            info = _info(name, tarfile.REGTYPE, 0o644)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = _info("bin/busybox", tarfile.REGTYPE, 0o755)
        info.size = os.path.getsize(busybox)
        with open(busybox, "rb") as f:
            tar.addfile(info, f)
        for path in applets:
            parent = os.path.dirname(path)
            if parent and parent not in DIRECTORIES:
                continue  # an applet in an unusual place: skip rather than invent directories
            link = _info(path, tarfile.SYMTYPE, 0o777)
            link.linkname = "/bin/busybox"
            tar.addfile(link)


def _info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def build_image(store, ref: str = DEFAULT_TAG, busybox: str = DEFAULT_BUSYBOX):
    """Build the tarball in a temporary file and import it as `ref`; returns the Image."""
    os.makedirs(store.layout.images_tmp, mode=0o700, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=store.layout.images_tmp, suffix=".tar") as tmp:
        build_tarball(busybox, tmp)
        tmp.flush()
        images = import_path(store, tmp.name, ref, default_config={"Cmd": ["sh"]})
    return images[0]
