"""Files into and out of a container as tar archives (`docker cp`: the Docker API's /containers/{id}/archive).

Run as its own process, `python -I -m runner.archive OP ROOT CONTAINER PATH`, because it changes its
mount namespace, which a threaded process (the agent) cannot do:

    stat   print the path's stat as JSON (Docker's ContainerPathStat)
    get    print that JSON on a line, then a tar of the path (its entries named after the path's base)
    put    extract the tar on stdin into the directory PATH (--no-overwrite-dir-non-dir as Docker's flag)

The process sees what Docker's copy sees: the container's root file system with its volumes, bind
mounts and /etc files, and nothing of the kernel's (no /proc, /sys, /dev: through the host PID
namespace's /proc a path could reach the host's files). That view is its root, so the container's
symlinks, absolute ones too, resolve inside it:
- a running container: it joins the init's mount namespace (whose root is the pivoted rootfs), then a
  private copy of it with /proc, /sys and /dev detached;
- a stopped or created one: the init's own mounts (runner/rootfs.prepare) in a private mount namespace,
  /proc and /dev detached, then chroot; they vanish with the process. A --read-only container's root
  is read-only there too, its volumes keep their own flags.
Nothing from the container is loaded as code: -I keeps "/" off sys.path, the decompressors are
imported before entering, and user and group names are never looked up (NSS would load the container's
libraries; Docker's CVE-2019-14271).

Failures are one line on stderr and an exit status the caller maps to an HTTP status (EXIT_*); for a
missing path the line is "not found: PATH", which the caller words as Docker does.
"""

from __future__ import annotations

import base64
import bz2  # noqa: F401  (imported before entering the container: tarfile imports these lazily)
import errno
import json
import lzma  # noqa: F401
import os
import shutil
import stat
import sys
import tarfile
import zlib  # noqa: F401
from datetime import datetime, timezone

EXIT_NOT_FOUND = 2  # 404
EXIT_BAD_REQUEST = 3  # 400: not a directory, a bad archive, an entry leaving the destination
EXIT_READ_ONLY = 4  # 403: a read-only root file system or volume
STAT_HEADER = "X-Docker-Container-Path-Stat"
KERNEL_MOUNTS = ("/proc", "/sys", "/dev")

# Go's os.FileMode type bits, which Docker clients read from the stat (docker cp decides by them).
_GO_TYPE_BITS = {stat.S_IFDIR: 1 << 31, stat.S_IFLNK: 1 << 27, stat.S_IFBLK: 1 << 26,
                 stat.S_IFCHR: (1 << 26) | (1 << 21), stat.S_IFIFO: 1 << 25, stat.S_IFSOCK: 1 << 24}  # fmt: skip
_GO_SETUID, _GO_SETGID, _GO_STICKY = 1 << 23, 1 << 22, 1 << 20


class Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def go_file_mode(mode: int) -> int:
    result = (mode & 0o777) | _GO_TYPE_BITS.get(stat.S_IFMT(mode), 0)
    result |= _GO_SETUID if mode & stat.S_ISUID else 0
    result |= _GO_SETGID if mode & stat.S_ISGID else 0
    return result | (_GO_STICKY if mode & stat.S_ISVTX else 0)


def absolute(path: str) -> str:
    """The path as Docker takes it: absolute in the container, a trailing "/" or "/." kept (they mean
    "the directory itself, following a symlink" and "its contents")."""
    joined = os.path.normpath("/" + path.lstrip("/"))  # (normpath keeps POSIX's "//" prefix)
    if path.endswith("/.") or path == ".":
        return joined.rstrip("/") + "/."
    if path.endswith("/") and joined != "/":
        return joined + "/"
    return joined


def base_name(path: str) -> str:
    """Go's filepath.Base: trailing slashes dropped; "/" for the root."""
    stripped = path.rstrip("/")
    return os.path.basename(stripped) if stripped else "/"


def _not_found(path: str) -> Refused:
    return Refused(EXIT_NOT_FOUND, f"not found: {path}")


def path_stat(path: str) -> dict:
    """Docker's ContainerPathStat of `path` (already absolute: see absolute()), inside the container."""
    try:
        info = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise _not_found(path) from None
    link = os.path.realpath(path) if stat.S_ISLNK(info.st_mode) else ""
    mtime = datetime.fromtimestamp(info.st_mtime, timezone.utc).isoformat().replace("+00:00", "Z")
    return {"name": base_name(path), "size": info.st_size, "mode": go_file_mode(info.st_mode), "mtime": mtime,
            "linkTarget": link}


def encoded_stat(info: dict) -> str:
    return base64.b64encode(json.dumps(info).encode()).decode()


def write_archive(path: str, out) -> None:
    """A tar of `path` (not following it if it is a symlink), its top entry named after the path's
    base as Docker rebases it; the root's entries are named "/", "/bin", ... as Docker's are. A file
    that vanishes or cannot be read meanwhile is skipped, as Docker skips it, so the tar stays whole."""
    name = base_name(path)
    top = "/" if path == "/" else "." if name == "." else name
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        todo = [(path, top)]
        while todo:
            source, arcname = todo.pop()
            try:
                info = tar.gettarinfo(source, arcname)
            except OSError:
                continue
            if info is None:  # a socket: not archivable, as with tar(1)
                continue
            if top == "/":  # tarfile drops leading slashes from names: Docker's root entries keep theirs
                info.name = "/" + info.name.lstrip("/")
                if info.islnk():
                    info.linkname = "/" + info.linkname.lstrip("/")
            if info.isreg():
                try:
                    with open(source, "rb") as f:
                        tar.addfile(info, f)
                except (FileNotFoundError, PermissionError):
                    continue
            else:
                tar.addfile(info)
            if info.isdir():
                try:
                    children = sorted(os.listdir(source), reverse=True)  # popped in name order
                except OSError:
                    continue
                prefix = "" if arcname == "/" else arcname + "/"
                todo += [(os.path.join(source, child), prefix + child) for child in children]


def extract_archive(directory: str, source, *, no_overwrite_dir_non_dir: bool) -> int:
    """Extract the tar (plain, gzip, bzip2 or xz) on `source` into `directory`; returns the entry count.
    Owners (numeric) and modes as the archive says, Docker's default, which `docker cp` relies on."""
    try:
        info = os.stat(directory)  # the last element followed: a symlink to a directory is a directory
    except (FileNotFoundError, NotADirectoryError):
        raise _not_found(directory) from None
    if not stat.S_ISDIR(info.st_mode):
        raise Refused(EXIT_BAD_REQUEST, f"extraction point {directory} is not a directory")
    if not os.access(directory, os.W_OK):  # before reading a byte: an empty archive is refused too
        read_only = os.statvfs(directory).f_flag & os.ST_RDONLY
        where = "container rootfs" if os.stat("/").st_dev == info.st_dev else "mounted volume"
        raise Refused(EXIT_READ_ONLY if read_only else EXIT_BAD_REQUEST,
                      f"{where} is marked read-only" if read_only else f"{directory} is not writable")
    count = 0
    try:
        with tarfile.open(fileobj=source, mode="r|*") as tar:
            for member in tar:
                if not _prepare_member(directory, member, no_overwrite_dir_non_dir):
                    continue
                # Inside the container's root: what the entry names stays in the container whatever its
                # links say (_prepare_member keeps names under `directory`, as Docker's breakout check).
                tar.extract(member, path=directory, numeric_owner=True, filter="fully_trusted")
                count += 1
    except tarfile.TarError as err:
        raise Refused(EXIT_BAD_REQUEST, f"the archive cannot be read as tar: {err}") from None
    return count


def _inside(name: str, member: tarfile.TarInfo, directory: str) -> str:
    """`name` relative to the destination; an entry that climbs out is refused."""
    relative = os.path.normpath(name.lstrip("/"))
    if relative == ".." or relative.startswith("../"):
        raise Refused(EXIT_BAD_REQUEST, f"archive entry {member.name!r} would land outside {directory}; "
                                        "nothing after it was extracted")
    return relative


def _prepare_member(directory: str, member: tarfile.TarInfo, no_overwrite_dir_non_dir: bool) -> bool:
    """Docker's rules for one entry: its name (and a hard link's target) made relative to and kept under
    the destination (an absolute name lands under it too); with no_overwrite_dir_non_dir a directory
    never replaces a non-directory nor the reverse; otherwise whatever is in the way and is not a
    directory meeting a directory goes first (a file is replaced, a symlink or fifo never written
    through). False: skip the entry ("." itself: the destination keeps its own mode and owner)."""
    member.name = _inside(member.name, member, directory)
    if member.islnk():
        member.linkname = _inside(member.linkname, member, directory)
    if member.name == ".":
        return False
    target = os.path.join(directory, member.name)
    try:
        existing = os.lstat(target)
    except (FileNotFoundError, NotADirectoryError):
        return True
    is_dir = stat.S_ISDIR(existing.st_mode)
    if no_overwrite_dir_non_dir and is_dir != member.isdir():
        what = "a directory with a non-directory" if is_dir else "a non-directory with a directory"
        raise Refused(EXIT_BAD_REQUEST, f"cannot overwrite {what}: {target}")
    if is_dir and member.isdir():
        return True
    if is_dir:
        shutil.rmtree(target)
    else:
        os.unlink(target)
    return True


# --- entering the container's file system --------------------------------------------------------


def enter(root: str, container_id: str) -> None:
    """Become a process whose "/" is the container's file system as Docker's copy sees it (module doc)."""
    from runner import linux, rootfs
    from runner.container_plan import init_spec
    from runner.paths import Layout
    from runner.state import Records, is_alive

    layout = Layout(root)
    records = Records(layout)
    container = records.load(container_id)
    if container is None:
        raise Refused(EXIT_NOT_FOUND, f"No such container: {container_id}")
    if container.state.running and is_alive(container.state):
        fd = os.open(f"/proc/{container.state.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if is_alive(container.state):  # still the init we read (its pid could have been reused)
                linux.setns(fd, linux.CLONE_NEWNS)
                os.chdir("/")
                linux.unshare(linux.CLONE_NEWNS)  # a copy of its mounts (private in it), to take from
                _detach_kernel_mounts("")
                return
        finally:
            os.close(fd)
    spec = init_spec(layout, records.directory(container_id), container.config)
    linux.unshare(linux.CLONE_NEWNS)
    rootfs.prepare(spec.rootfs, spec.lowerdirs, spec.upper, spec.work, etc_files=spec.etc_files,
                   volumes=spec.volumes)  # fmt: skip
    _detach_kernel_mounts(spec.rootfs)
    if spec.read_only:  # the root only: volumes mounted on it keep their own flags
        linux.mount("none", spec.rootfs, None, linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY)
    os.chroot(spec.rootfs)
    os.chdir("/")


def _detach_kernel_mounts(rootfs: str) -> None:
    from runner import linux

    for path in KERNEL_MOUNTS:
        try:
            linux.umount(rootfs + path, linux.MNT_DETACH)
        except OSError as err:
            if err.errno not in (errno.EINVAL, errno.ENOENT):  # not mounted there: nothing to hide
                raise


def main(argv: list[str]) -> int:
    op, root, container_id, path = argv[:4]
    flags = set(argv[4:])
    tarfile.pwd = tarfile.grp = None  # type: ignore[attr-defined]  # no name lookups: numeric owners
    try:
        enter(root, container_id)
        path = absolute(path)
        if op == "stat":
            print(json.dumps(path_stat(path)), flush=True)
        elif op == "get":
            info = path_stat(path)
            sys.stdout.buffer.write(json.dumps(info).encode() + b"\n")
            write_archive(path, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        elif op == "put":
            extract_archive(path, sys.stdin.buffer, no_overwrite_dir_non_dir="--no-overwrite-dir-non-dir" in flags)
        else:
            raise Refused(EXIT_BAD_REQUEST, f"unknown operation {op!r}")
    except Refused as err:
        print(err, file=sys.stderr)
        return err.status
    except OSError as err:
        if err.errno == errno.EROFS:
            print("container rootfs is marked read-only", file=sys.stderr)
            return EXIT_READ_ONLY
        if err.errno == errno.EPIPE:  # the client went away
            return 1
        print(f"{err.strerror}: {err.filename or path}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
