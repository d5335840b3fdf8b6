"""Files into and out of a container as tar archives (`docker cp`: the Docker API's /containers/{id}/archive).

Run as its own process, `python -m runner.archive OP ROOT CONTAINER PATH`, because it changes its
mount namespace, which a threaded process (the agent) cannot do:

    stat   print the path's stat as JSON (Docker's ContainerPathStat)
    get    print that JSON on a line, then a tar of the path (its entries named after the path's base)
    put    extract the tar on stdin into the directory PATH (--no-overwrite-dir-non-dir as Docker's flag)

The process sees the container's file system as the container does, with the container's root as its
own, so symlinks in the container (absolute ones too) resolve inside it and never on the host:
- a running container: it joins the init's mount namespace (whose root is the pivoted rootfs);
- a stopped or created one: it builds the same mounts in a private mount namespace of its own (overlay,
  /etc files, volumes: runner/rootfs.prepare, the init's own code) and chroots into them; they vanish
  with the process. --read-only containers get a read-only root there too, their volumes stay writable.

Failures are one line on stderr and an exit status the caller maps to an HTTP status (EXIT_*); a
"Could not find the file PATH" line is completed by the caller with " in container NAME", as Docker's.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import stat
import sys
import tarfile
from datetime import datetime, timezone

EXIT_NOT_FOUND = 2  # 404
EXIT_BAD_REQUEST = 3  # 400: not a directory, a bad archive, an entry leaving the destination
EXIT_READ_ONLY = 4  # 403: a read-only root file system (or mount)
STAT_HEADER = "X-Docker-Container-Path-Stat"

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


def path_stat(path: str) -> dict:
    """Docker's ContainerPathStat of `path` (already absolute: see absolute()), inside the container."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise Refused(EXIT_NOT_FOUND, f"Could not find the file {path}") from None
    except NotADirectoryError:
        raise Refused(EXIT_NOT_FOUND, f"Could not find the file {path} (a parent is not a directory)") from None
    link = os.path.realpath(path) if stat.S_ISLNK(info.st_mode) else ""
    mtime = datetime.fromtimestamp(info.st_mtime, timezone.utc).isoformat().replace("+00:00", "Z")
    return {"name": base_name(path), "size": info.st_size, "mode": go_file_mode(info.st_mode), "mtime": mtime,
            "linkTarget": link}


def encoded_stat(info: dict) -> str:
    return base64.b64encode(json.dumps(info).encode()).decode()


def write_archive(path: str, out) -> None:
    """A tar of `path` (not following it if it is a symlink), its top entry named after the path's
    base as Docker rebases it ("." for "/dir/." and the root)."""
    name = base_name(path)
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        tar.add(path, arcname="." if name in ("/", ".") else name, recursive=True)


def extract_archive(directory: str, source, *, no_overwrite_dir_non_dir: bool) -> int:
    """Extract the tar (plain, gzip, bzip2 or xz) on `source` into `directory`; returns the entry count.
    Owners and modes as the archive says (Docker's default, which `docker cp` relies on)."""
    try:
        info = os.stat(directory)  # the last element followed: a symlink to a directory is a directory
    except FileNotFoundError:
        raise Refused(EXIT_NOT_FOUND, f"Could not find the file {directory}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise Refused(EXIT_BAD_REQUEST, f"extraction point {directory} is not a directory")
    count = 0
    try:
        with tarfile.open(fileobj=source, mode="r|*") as tar:
            for member in tar:
                _check_member(directory, member, no_overwrite_dir_non_dir)
                # Inside the container's root: what the entry names stays in the container whatever its
                # links say (the check above keeps names under `directory`, as Docker's breakout check).
                tar.extract(member, path=directory, numeric_owner=True, filter="fully_trusted")
                count += 1
    except tarfile.TarError as err:
        raise Refused(EXIT_BAD_REQUEST, f"the archive cannot be read as tar: {err}") from None
    return count


def _check_member(directory: str, member: tarfile.TarInfo, no_overwrite_dir_non_dir: bool) -> None:
    name = os.path.normpath(member.name.lstrip("/"))
    if name == ".." or name.startswith("../"):
        raise Refused(EXIT_BAD_REQUEST, f"archive entry {member.name!r} would land outside {directory}; "
                                        "nothing after it was extracted")
    if member.islnk():
        target = os.path.normpath(member.linkname.lstrip("/"))
        if target == ".." or target.startswith("../"):
            raise Refused(EXIT_BAD_REQUEST, f"archive entry {member.name!r} links to {member.linkname!r}, outside "
                                            f"{directory}")
    if no_overwrite_dir_non_dir and name != ".":
        try:
            existing = os.lstat(os.path.join(directory, name))
        except (FileNotFoundError, NotADirectoryError):
            return
        if stat.S_ISDIR(existing.st_mode) != member.isdir():
            what = "a directory with a non-directory" if stat.S_ISDIR(existing.st_mode) else \
                "a non-directory with a directory"
            raise Refused(EXIT_BAD_REQUEST, f"cannot overwrite {what}: {os.path.join(directory, name)}")


# --- entering the container's file system --------------------------------------------------------


def enter(root: str, container_id: str) -> None:
    """Become a process whose "/" is the container's root file system (see the module doc)."""
    from runner import linux
    from runner.container_plan import init_spec
    from runner.paths import Layout
    from runner.state import Records, is_alive

    layout = Layout(root)
    container = Records(layout).load(container_id)
    if container is None:
        raise Refused(EXIT_NOT_FOUND, f"No such container: {container_id}")
    if container.state.running and is_alive(container.state):
        fd = os.open(f"/proc/{container.state.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        try:
            linux.setns(fd, linux.CLONE_NEWNS)
        finally:
            os.close(fd)
        os.chdir("/")
        return
    from runner import rootfs

    spec = init_spec(layout, Records(layout).directory(container_id), container.config)
    linux.unshare(linux.CLONE_NEWNS)
    rootfs.prepare(spec.rootfs, spec.lowerdirs, spec.upper, spec.work, etc_files=spec.etc_files,
                   volumes=spec.volumes)  # fmt: skip
    if spec.read_only:  # the root only: volumes mounted on it keep their own flags
        linux.mount("none", spec.rootfs, None, linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY)
    os.chroot(spec.rootfs)
    os.chdir("/")


def main(argv: list[str]) -> int:
    op, root, container_id, path = argv[:4]
    flags = set(argv[4:])
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
            print(f"container rootfs is marked read-only: {err.filename or path}", file=sys.stderr)
            return EXIT_READ_ONLY
        if err.errno == errno.EPIPE:  # the client went away
            return 1
        print(f"{err.strerror}: {err.filename or path}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
