"""Layers: unpack one tar stream safely into a directory, in the form overlayfs reads.

Safety rules (an image is untrusted input, and we unpack it as root):
  * a member's name is taken relative to the layer root; a leading "/" is dropped (tar's own rule), but
    a name that climbs out with ".." is refused;
  * nothing is ever written through a symlink: the member's parent directory, resolved, must lie inside
    the layer root, and whatever already sits at the member's own path is replaced, not followed;
  * a symlink may point anywhere *inside* the rootfs: an absolute target is read relative to the
    container's root at run time and is fine; a relative target that climbs above the root is refused;
  * hard links must name a member already unpacked in the same layer;
  * device nodes (character or block) are refused; FIFOs are allowed;
  * owners are numeric (never looked up in the host's /etc/passwd); modes, setuid bits included, are kept.

OCI/Docker whiteouts become overlayfs whiteouts: `.wh.NAME` -> a 0:0 character device NAME, and
`.wh..wh..opq` -> the directory's `trusted.overlay.opaque` xattr, exactly what overlayfs expects of a
lower layer (Docker's overlay2 driver does the same).

The layer's diff id is the sha256 of the uncompressed tar stream, computed while it is read.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import stat
import tarfile
from dataclasses import dataclass

from libnetwork.errors import InvalidArgument

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
CHUNK = 1 << 20


class UnsafeArchive(InvalidArgument):
    """An archive member would escape the rootfs or create a device node."""


class CorruptArchive(InvalidArgument):
    """An archive cannot be read: truncated, bad compression, wrong digest."""


class HashingReader(io.RawIOBase):
    """A read-only stream that hashes (sha256) and counts everything read through it."""

    def __init__(self, inner):
        self.inner = inner
        self.hash = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.inner.read(len(buffer))
        if not data:
            return 0
        n = len(data)
        buffer[:n] = data
        self.hash.update(data)
        self.size += n
        return n

    def drain(self) -> None:
        """Read to the end, so the hash covers the whole stream (tar padding included)."""
        while self.inner is not None:
            data = self.inner.read(CHUNK)
            if not data:
                return
            self.hash.update(data)
            self.size += len(data)

    def hexdigest(self) -> str:
        return self.hash.hexdigest()


def decompressed(raw, what: str):
    """A reader of `raw` without its compression (gzip, zstd, bzip2, xz or none), detected by magic bytes."""
    head = raw.peek(6)[:6] if hasattr(raw, "peek") else b""
    if head.startswith(b"\x1f\x8b"):
        import gzip

        return gzip.GzipFile(fileobj=raw, mode="rb")
    if head.startswith(b"BZh"):
        import bz2

        return bz2.BZ2File(raw, mode="rb")
    if head.startswith(b"\xfd7zXZ\x00"):
        import lzma

        return lzma.LZMAFile(raw, mode="rb")
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    return raw


def compression_of(head: bytes) -> str:
    """gzip, zstd, bzip2, xz or "" (uncompressed), from a stream's first bytes."""
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if head.startswith(b"BZh"):
        return "bzip2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    return ""


@dataclass
class LayerResult:
    diff_id: str  # hex sha256 of the uncompressed tar stream
    size: int  # bytes of the uncompressed tar stream
    blob_digest: str = ""  # hex sha256 of the stream as stored (compressed), when asked for


def unpack(fileobj, dest: str, what: str, *, want_blob_digest: bool = False) -> LayerResult:
    """Unpack the (possibly compressed) tar stream `fileobj` into the existing directory `dest`.

    Raises UnsafeArchive or CorruptArchive with one line naming `what` and the member; the caller
    removes `dest` on failure.
    """
    import gzip
    import lzma
    import zlib

    raw = HashingReader(fileobj) if want_blob_digest else fileobj
    buffered = io.BufferedReader(raw if isinstance(raw, io.RawIOBase) else _Raw(raw), CHUNK)
    stream = HashingReader(decompressed(buffered, what))
    try:
        with tarfile.open(fileobj=stream, mode="r|", errorlevel=2) as archive:
            _Unpacker(archive, os.path.realpath(dest), what).run()
        stream.drain()
        if isinstance(raw, HashingReader):
            raw.drain()
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile) as err:
        raise CorruptArchive(f"{what} is corrupt or not a tar archive ({_reason(err)}); check the file") from None
    except OSError as err:
        if err.errno is None:  # bz2 and friends report bad data as an OSError without errno
            raise CorruptArchive(f"{what} is corrupt ({_reason(err)}); check the file") from None
        raise
    except Exception as err:
        if type(err).__name__ != "ZstdError":  # zstandard's errors are plain Exceptions
            raise
        raise CorruptArchive(f"{what} is corrupt ({_reason(err)}); check the file") from None
    blob = raw.hexdigest() if isinstance(raw, HashingReader) else ""
    return LayerResult(diff_id=stream.hexdigest(), size=stream.size, blob_digest=blob)


class _Raw(io.RawIOBase):
    """Adapts any object with read() to RawIOBase, so it can be buffered (and peeked)."""

    def __init__(self, inner):
        self.inner = inner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.inner.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _reason(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    return text.splitlines()[0][:120]


class _Unpacker:
    def __init__(self, archive: tarfile.TarFile, root: str, what: str):
        self.archive = archive
        self.root = root
        self.what = what
        self.dir_times: list[tuple[str, tarfile.TarInfo]] = []

    def run(self) -> None:
        count = 0
        for member in self.archive:
            count += 1
            self._one(member)
        if count == 0:
            raise CorruptArchive(f"{self.what} is empty or not a tar archive; check the file")
        # Directory times last: unpacking their contents changed them.
        for path, member in reversed(self.dir_times):
            try:
                os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)
            except OSError:
                pass

    def refuse(self, member: tarfile.TarInfo, why: str) -> None:
        raise UnsafeArchive(f"{self.what}: member {member.name!r} {why}; refusing to import this archive")

    def _one(self, member: tarfile.TarInfo) -> None:
        name = self._relative_name(member)
        if name is None:
            return  # the root itself ("./")
        parent, base = posixpath.split(name)
        parent_path = self._safe_parent(member, parent)
        if base == OPAQUE_MARKER:
            os.setxattr(parent_path, OPAQUE_XATTR, b"y")
            return
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(member, parent_path, base[len(WHITEOUT_PREFIX):])
            return
        if member.ischr() or member.isblk():
            self.refuse(member, "is a device node")
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk() or member.isfifo()):
            self.refuse(member, f"has an unsupported type {member.type!r}")
        target = os.path.join(parent_path, base)
        if member.issym():
            self._check_symlink(member, name)
        if member.islnk():
            member = self._checked_hardlink(member)
        self._clear(target, member)
        member = member.replace(name=os.path.relpath(target, self.root), deep=False)
        self.archive.extract(member, self.root, set_attrs=True, numeric_owner=True, filter="fully_trusted")
        if member.isdir():
            self.dir_times.append((target, member))

    def _relative_name(self, member: tarfile.TarInfo) -> str | None:
        name = member.name.lstrip("/")
        if not name or "\x00" in name:
            if not name:
                return None
            self.refuse(member, "has a NUL byte in its name")
        normal = posixpath.normpath(name)
        if normal == ".":
            return None
        if normal == ".." or normal.startswith("../"):
            self.refuse(member, "climbs out of the rootfs with '..'")
        return normal

    def _safe_parent(self, member: tarfile.TarInfo, parent: str) -> str:
        """The member's parent directory, created if missing, never reached through a symlink that
        leaves the layer."""
        path = os.path.join(self.root, parent) if parent else self.root
        real = os.path.realpath(path)
        if real != self.root and not real.startswith(self.root + os.sep):
            self.refuse(member, "would be written through a symlink that points outside the rootfs")
        if not os.path.isdir(real):
            if os.path.lexists(real):
                self.refuse(member, "has a parent that is not a directory")
            os.makedirs(real, mode=0o755, exist_ok=True)
        return real

    def _check_symlink(self, member: tarfile.TarInfo, name: str) -> None:
        target = member.linkname
        if "\x00" in target or not target:
            self.refuse(member, "is a symlink with an empty or invalid target")
        if target.startswith("/"):
            return  # read inside the container's root at run time; /.. is / there
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
        if resolved == ".." or resolved.startswith("../"):
            self.refuse(member, f"is a symlink to {target!r}, which points outside the rootfs")

    def _checked_hardlink(self, member: tarfile.TarInfo) -> tarfile.TarInfo:
        linkname = posixpath.normpath(member.linkname.lstrip("/"))
        if linkname in (".", "..") or linkname.startswith("../"):
            self.refuse(member, f"is a hard link to {member.linkname!r}, outside the rootfs")
        source = os.path.join(self.root, linkname)
        parent_real = os.path.realpath(os.path.dirname(source))
        if parent_real != self.root and not parent_real.startswith(self.root + os.sep):
            self.refuse(member, f"is a hard link to {member.linkname!r}, through a symlink outside the rootfs")
        if not os.path.lexists(source):
            self.refuse(member, f"is a hard link to {member.linkname!r}, which is not in this layer")
        relative = os.path.relpath(os.path.join(parent_real, os.path.basename(source)), self.root)
        return member.replace(linkname=relative, deep=False)

    def _clear(self, target: str, member: tarfile.TarInfo) -> None:
        """Replace what a member overwrites, so nothing is ever followed (a file over a symlink)."""
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if member.isdir():
                return
            import shutil

            shutil.rmtree(target)
        else:
            os.unlink(target)

    def _whiteout(self, member: tarfile.TarInfo, parent_path: str, hidden: str) -> None:
        if not hidden or hidden in (".", "..") or "/" in hidden:
            self.refuse(member, "is a malformed whiteout")
        target = os.path.join(parent_path, hidden)
        if os.path.lexists(target):
            return  # the same layer re-creates it: the whiteout only hides lower layers
        os.mknod(target, 0o600 | stat.S_IFCHR, os.makedev(0, 0))
