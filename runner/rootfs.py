"""The container's file system, built inside its own mount namespace by its init before exec:

    overlayfs (image layers read-only + the container's upper dir) at ROOT/containers/<id>/rootfs
    /etc/hostname, /etc/hosts, /etc/resolv.conf   bind mounts of the container's own files
    -v HOST:CONT[:ro]                             bind mounts
    /proc (masked and read-only parts like Docker's), /sys read-only
    /dev: tmpfs with null zero full random urandom tty, /dev/pts (new instance), /dev/shm, /dev/mqueue
    pivot_root into it, the old root detached; --read-only makes / read-only at the end

In two parts: prepare() needs nothing of the network, so the init runs it while the monitor is still
making the sandbox; finish() (/sys, whose net class shows the devices of its mounter's network
namespace, and the pivot) once the init has joined the sandbox's namespace.

Mounting inside the container's mount namespace (not the host's) means the kernel removes every mount
when the container's last process exits: nothing to unmount, nothing to leak if a monitor dies.
Paths inside the rootfs are resolved with secure_join, which follows symlinks as the container would
(its root as "/"), so an image cannot redirect a mount onto the host.
"""

from __future__ import annotations

import errno
import os
import stat

from runner import linux
from runner.linux import MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_REC, MS_REMOUNT

MAX_SYMLINKS = 40
DEVICES = (  # name, major, minor (runc's default set)
    ("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0),
)  # fmt: skip
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
             ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"), ("core", "/proc/kcore"))  # fmt: skip
MASKED = ("/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
          "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
          "/sys/devices/virtual/powercap")  # fmt: skip
READ_ONLY = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


def secure_join(root: str, path: str) -> str:
    """`path` inside `root`, symlinks resolved with `root` as "/" (like filepath-securejoin).

    The result always lies inside root; components that do not exist yet are appended as they are.
    """
    root = root.rstrip("/") or "/"
    parts = [p for p in path.split("/") if p and p != "."]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            resolved.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > MAX_SYMLINKS:
                raise OSError(errno.ELOOP, f"too many symlinks resolving {path}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


def _ensure(path: str, directory: bool) -> None:
    """Make a mount point: a directory, or an empty file (for file bind mounts)."""
    if directory:
        os.makedirs(path, mode=0o755, exist_ok=True)
        return
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    if not os.path.lexists(path):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))


def bind(source: str, target: str, read_only: bool = False, recursive: bool = True) -> None:
    linux.mount(source, target, None, MS_BIND | (MS_REC if recursive else 0))
    if read_only:
        linux.mount(source, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | (MS_REC if recursive else 0))


def overlay_options(lowerdirs: list[str], upper: str, work: str) -> str:
    return f"lowerdir={':'.join(lowerdirs)},upperdir={upper},workdir={work}"


def build(
    rootfs: str,
    lowerdirs: list[str],
    upper: str,
    work: str,
    *,
    etc_files: dict[str, str],
    volumes: list,
    console: str = "",
    read_only: bool = False,
) -> None:
    """Everything above, then pivot_root. Runs in the container's init, in its new mount namespace."""
    prepare(rootfs, lowerdirs, upper, work, etc_files=etc_files, volumes=volumes, console=console)
    finish(rootfs, read_only=read_only)


def prepare(
    rootfs: str,
    lowerdirs: list[str],
    upper: str,
    work: str,
    *,
    etc_files: dict[str, str],
    volumes: list,
    console: str = "",
    tmpfs: list | tuple = (),
    shm_size: int = 0,
) -> None:
    """The overlay, /etc files, volumes, tmpfs mounts, /proc and /dev: the mounts that do not depend on
    the network."""
    linux.mount("none", "/", None, MS_REC | linux.MS_PRIVATE)  # nothing we do leaks to the host
    linux.mount("overlay", rootfs, "overlay", 0, overlay_options(lowerdirs, upper, work))
    for name, source in etc_files.items():
        target = secure_join(rootfs, f"/etc/{name}")
        _ensure(target, directory=False)
        bind(source, target, recursive=False)
    for volume in volumes:
        target = secure_join(rootfs, volume.container)
        if getattr(volume, "name", "") and not getattr(volume, "nocopy", False):
            populate(target, volume.host)
        _ensure(target, directory=os.path.isdir(volume.host))
        bind(volume.host, target, read_only=volume.read_only)
    for path, options in tmpfs:
        target = secure_join(rootfs, path)
        _ensure(target, directory=True)
        flags, data = tmpfs_options(options)
        linux.mount("tmpfs", target, "tmpfs", flags, data)
    proc = secure_join(rootfs, "/proc")
    _ensure(proc, directory=True)
    linux.mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _build_dev(secure_join(rootfs, "/dev"), console, shm_size)


def populate(source: str, volume: str) -> None:
    """An empty named volume gets what the image has at its mount point (files, links, modes, owners,
    times; fifos and devices are not data), as Docker fills a volume on its first use unless told
    nocopy; one with anything in it is left. Written through directory descriptors, O_NOFOLLOW and
    O_EXCL: another container using the volume meanwhile cannot send a write out of it by a symlink
    (the copy stops at the first name it finds taken)."""
    if not os.path.isdir(source) or os.path.islink(source):
        return
    top = os.open(volume, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if os.listdir(top):
            return
        try:
            _copy_into(source, top)
        except FileExistsError:
            return
        _own(top, os.lstat(source))
    finally:
        os.close(top)


def _own(fd: int, info: os.stat_result) -> None:
    os.fchown(fd, info.st_uid, info.st_gid)
    os.fchmod(fd, stat.S_IMODE(info.st_mode))  # after the chown, which clears set-id bits
    os.utime(fd, ns=(info.st_atime_ns, info.st_mtime_ns))


def _copy_into(source: str, dir_fd: int, depth: int = 0) -> None:
    import shutil

    if depth > 128:  # deeper than any image's tree: stop
        return
    opened = os.O_NOFOLLOW | os.O_CLOEXEC
    with os.scandir(source) as entries:
        for entry in entries:
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                os.mkdir(entry.name, 0o700, dir_fd=dir_fd)
                fd = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | opened, dir_fd=dir_fd)
                try:
                    _copy_into(entry.path, fd, depth + 1)
                    _own(fd, info)
                finally:
                    os.close(fd)
            elif stat.S_ISLNK(info.st_mode):
                os.symlink(os.readlink(entry.path), entry.name, dir_fd=dir_fd)
                os.chown(entry.name, info.st_uid, info.st_gid, dir_fd=dir_fd, follow_symlinks=False)
            elif stat.S_ISREG(info.st_mode):
                fd = os.open(entry.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | opened, 0o600, dir_fd=dir_fd)
                try:
                    with open(entry.path, "rb") as src, open(fd, "wb", closefd=False) as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                    _own(fd, info)
                finally:
                    os.close(fd)


def tmpfs_options(options: str) -> tuple[int, str]:
    """Docker's --tmpfs options -> (mount flags, data); noexec, nosuid and nodev unless undone."""
    switches = {"ro": (MS_RDONLY, True), "rw": (MS_RDONLY, False), "noexec": (MS_NOEXEC, True),
                "exec": (MS_NOEXEC, False), "nosuid": (MS_NOSUID, True), "suid": (MS_NOSUID, False),
                "nodev": (MS_NODEV, True), "dev": (MS_NODEV, False)}  # fmt: skip
    flags = MS_NOEXEC | MS_NOSUID | MS_NODEV
    data = []
    for option in filter(None, options.split(",")):
        if option in switches:
            bit, on = switches[option]
            flags = flags | bit if on else flags & ~bit
        else:
            data.append(option)
    return flags, ",".join(data)


def finish(rootfs: str, *, read_only: bool = False) -> None:
    """/sys (read-only), pivot_root, the masked and read-only parts of /proc, a read-only root."""
    sys_dir = secure_join(rootfs, "/sys")
    _ensure(sys_dir, directory=True)
    linux.mount("sysfs", sys_dir, "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _pivot(rootfs)
    _mask_and_protect()
    if read_only:
        linux.mount("none", "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY)


def _build_dev(dev: str, console: str, shm_size: int = 0) -> None:
    _ensure(dev, directory=True)
    linux.mount("tmpfs", dev, "tmpfs", MS_NOSUID | linux.MS_STRICTATIME, "mode=755,size=65536k")
    for name, major, minor in DEVICES:
        os.mknod(os.path.join(dev, name), 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(os.path.join(dev, name), 0o666)  # mknod honours the umask
    for name, target in DEV_LINKS:
        os.symlink(target, os.path.join(dev, name))
    pts = os.path.join(dev, "pts")
    os.mkdir(pts, 0o755)
    linux.mount("devpts", pts, "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5")
    shm = os.path.join(dev, "shm")
    os.mkdir(shm, 0o1777)
    size = f"{shm_size}" if shm_size > 0 else "65536k"
    linux.mount("shm", shm, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=" + size)
    mqueue = os.path.join(dev, "mqueue")
    os.mkdir(mqueue, 0o755)
    try:
        linux.mount("mqueue", mqueue, "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError:
        os.rmdir(mqueue)  # kernels without POSIX message queues
    if console:
        path = os.path.join(dev, "console")
        _ensure(path, directory=False)
        bind(console, path, recursive=False)


def _pivot(rootfs: str) -> None:
    """pivot_root(".", ".") then detach the old root: no directory for it is needed (runc's way)."""
    os.chdir(rootfs)
    linux.pivot_root(".", ".")
    linux.umount(".", linux.MNT_DETACH)
    os.chdir("/")


def _mask_and_protect() -> None:
    for path in MASKED:
        try:
            st = os.stat(path)
        except OSError:
            continue
        try:
            if stat.S_ISDIR(st.st_mode):
                linux.mount("tmpfs", path, "tmpfs", MS_RDONLY, "size=0")
            else:
                bind("/dev/null", path, recursive=False)
        except OSError:
            pass
    for path in READ_ONLY:
        if os.path.exists(path):
            bind(path, path, read_only=True)
