"""Network-namespace handles: create, delete, enter, open.

A handle is a file bind-mounted onto a namespace's nsfs inode (what `ip netns add` makes under
/run/netns); it keeps the namespace alive with no process in it. netctl keeps its handles under
ROOT/netns/. Python 3.11 has neither os.unshare nor os.setns, so both come from libc through ctypes,
imported only when a namespace is actually created or entered.

Everything here acts on the calling *thread*: unshare(CLONE_NEWNET) and setns() change the network
namespace of one thread only, and a socket belongs to the namespace its creating thread was in. Code
inside `entered()` must therefore not hand work to other threads and expect it to run in the namespace.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
from collections.abc import Iterator
from typing import Any

from libnetwork.errors import AlreadyExists, KernelError, NotFound

CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 0x100000
MNT_DETACH = 2
NS_GET_NSTYPE = 0xB703  # ioctl on an nsfs file: which kind of namespace it is
THREAD_NETNS = "/proc/thread-self/ns/net"
_MAX_STACKED_MOUNTS = 16  # bound on the umount loop in delete()


SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1  # linux/sockios.h, linux/if.h


@functools.cache  # the loaded library, not state: same answer on every call
def _libc() -> Any:
    import ctypes

    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    # Prototypes matter: without them ctypes passes a C int where mount() expects an unsigned long.
    libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.unshare.argtypes = [ctypes.c_int]
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    return libc


def _check(result: int) -> None:
    """Turn a libc -1 into OSError carrying errno."""
    if result != 0:
        import ctypes

        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _setns(fd: int, what: str) -> None:
    try:
        _check(_libc().setns(fd, CLONE_NEWNET))
    except OSError as err:
        raise KernelError(f"cannot {what}: {err.strerror}") from None


def _mount(source: str, target: str, fstype: str | None, flags: int) -> None:
    _check(_libc().mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags, None))


def _umount_detach(path: str) -> None:
    _check(_libc().umount2(path.encode(), MNT_DETACH))


def current_ns_id() -> tuple[int, int]:
    """(st_dev, st_ino) of the calling thread's network namespace: equal ids, same namespace."""
    st = os.stat(THREAD_NETNS)
    return st.st_dev, st.st_ino


def _is_netns_fd(fd: int) -> bool:
    try:
        return fcntl.ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNET
    except OSError:  # ENOTTY: an ordinary file, e.g. a handle whose mount is gone
        return False


def is_netns(path: str) -> bool:
    """True if `path` is a mounted handle of a network namespace."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        return _is_netns_fd(fd)
    finally:
        os.close(fd)


def open_fd(path: str) -> int:
    """An O_CLOEXEC fd of the network namespace at `path`; the caller closes it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise NotFound(f"network namespace {path} does not exist; was its sandbox deleted?") from None
    except OSError as err:
        raise KernelError(f"cannot open network namespace {path}: {err.strerror}") from None
    if not _is_netns_fd(fd):
        os.close(fd)
        raise NotFound(f"{path} is not a network namespace handle (not mounted); `netctl gc` removes such leftovers")
    return fd


@contextlib.contextmanager
def entered(path: str) -> Iterator[None]:
    """Run the body with the calling thread inside the namespace at `path`; always come back."""
    target = open_fd(path)
    try:
        original = os.open(THREAD_NETNS, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target, f"enter network namespace {path}")
            try:
                yield
            finally:
                _setns(original, f"return from network namespace {path}")
        finally:
            os.close(original)
    finally:
        os.close(target)


def create(path: str) -> None:
    """Create a network namespace with lo up, bound at `path`. On failure nothing is left behind."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, mode=0o755, exist_ok=True)
        _ensure_shared_mount(parent)
    except OSError as err:
        raise KernelError(f"cannot prepare {parent} for network namespace handles: {err.strerror}") from None
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444))
    except FileExistsError:
        raise AlreadyExists(f"network namespace handle {path} already exists; delete it first") from None
    except OSError as err:
        raise KernelError(f"cannot create network namespace handle {path}: {err.strerror}") from None
    try:
        _bind_new_netns(path)
    except BaseException:
        delete(path)
        raise


def _bind_new_netns(path: str) -> None:
    """unshare a fresh netns on this thread, bind it at `path`, bring lo up, then go back."""
    original = os.open(THREAD_NETNS, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            _check(_libc().unshare(CLONE_NEWNET))
        except OSError as err:
            raise KernelError(f"cannot create network namespace {path}: {err.strerror}") from None
        try:
            try:
                _mount(THREAD_NETNS, path, None, MS_BIND)
            except OSError as err:
                raise KernelError(f"cannot bind network namespace at {path}: {err.strerror}") from None
            try:
                _loopback_up()  # the thread is inside the new namespace right now
            except OSError as err:
                raise KernelError(f"cannot bring lo up in network namespace {path}: {err.strerror}") from None
        finally:
            _setns(original, f"return from new network namespace {path}")
    finally:
        os.close(original)


def _loopback_up() -> None:
    """`ip link set lo up` in the current thread's namespace, by the SIOC[GS]IFFLAGS ioctls: two
    syscalls, and no import of libnetwork.netlink, which imports this module (one way only)."""
    import socket
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # made here: in the new namespace
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def _ensure_shared_mount(directory: str) -> None:
    """Make `directory` a shared mount point, as `ip netns add` does for /run/netns.

    Why: mount namespaces created later (containers, `unshare -m`) get a copy of each handle's mount. If
    the directory is shared, deleting a handle here unmounts those copies too, so the namespace is really
    freed, and handles made later show up there as well.
    """
    try:
        _mount("none", directory, None, MS_SHARED | MS_REC)
        return
    except OSError as err:
        if err.errno != errno.EINVAL:  # EINVAL: not a mount point yet
            raise
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # two first-time creators must not stack two bind mounts
        try:
            _mount("none", directory, None, MS_SHARED | MS_REC)
        except OSError as err:
            if err.errno != errno.EINVAL:
                raise
            _mount(directory, directory, "none", MS_BIND | MS_REC)
            _mount("none", directory, None, MS_SHARED | MS_REC)
    finally:
        os.close(fd)  # releases the lock


def delete(path: str) -> bool:
    """Unmount and remove the handle at `path`. Idempotent; True if there was something to remove."""
    existed = False
    for _ in range(_MAX_STACKED_MOUNTS):  # a handle bound twice needs two unmounts
        try:
            _umount_detach(path)
            existed = True
        except OSError as err:
            if err.errno in (errno.EINVAL, errno.ENOENT):  # not (or no longer) a mount point / no file
                break
            raise KernelError(f"cannot unmount network namespace {path}: {err.strerror}") from None
    try:
        os.unlink(path)
        existed = True
    except FileNotFoundError:
        pass
    except OSError as err:
        raise KernelError(f"cannot remove network namespace handle {path}: {err.strerror}") from None
    return existed
