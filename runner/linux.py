"""The Linux system calls the runner needs and Python 3.11 lacks: mount, umount2, pivot_root, unshare,
setns, prctl, capget/capset. Through ctypes, loaded on first use (importing this module costs nothing).

Every wrapper raises OSError carrying errno, like the os module does, so callers can look at
err.errno; turning that into a user-facing error is the caller's job (it knows which object it was).
"""

from __future__ import annotations

import functools
import os
import platform
from typing import Any

# clone/unshare/setns flags
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount flags
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_STRICTATIME = 0x1000000
MNT_DETACH = 0x2

# prctl options
PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

# ioctl
TIOCSCTTY = 0x540E

_SYSCALLS = {  # name -> number, per architecture (the only ones glibc does not wrap)
    "x86_64": {"pivot_root": 155, "capget": 125, "capset": 126},
    "aarch64": {"pivot_root": 41, "capget": 90, "capset": 91},
}
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


@functools.cache  # the loaded library, not state
def _libc() -> Any:
    import ctypes

    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    libc.unshare.argtypes = [ctypes.c_int]
    libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    libc.syscall.restype = ctypes.c_long
    return libc


def _check(result: int) -> int:
    if result < 0:
        import ctypes

        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def _syscall_number(name: str) -> int:
    table = _SYSCALLS.get(platform.machine())
    if table is None:
        raise OSError(38, f"{name}: unsupported architecture {platform.machine()}")  # ENOSYS
    return table[name]


def mount(source: str, target: str, fstype: str | None = None, flags: int = 0, data: str | None = None) -> None:
    _check(
        _libc().mount(
            source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
            data.encode() if data else None,
        )
    )


def umount(target: str, flags: int = 0) -> None:
    _check(_libc().umount2(target.encode(), flags))


def unshare(flags: int) -> None:
    _check(_libc().unshare(flags))


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc().setns(fd, nstype))


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_libc().prctl(option, arg2, arg3, arg4, arg5))


def pivot_root(new_root: str, put_old: str) -> None:
    import ctypes

    _check(_libc().syscall(_syscall_number("pivot_root"), ctypes.c_char_p(new_root.encode()),
                           ctypes.c_char_p(put_old.encode())))


def set_capabilities(caps: set[int]) -> None:
    """Make `caps` the effective, permitted and inheritable sets of the calling thread (capset(2))."""
    import ctypes

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    mask = 0
    for cap in caps:
        mask |= 1 << cap
    header = Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (Data * 2)()
    for i in range(2):
        word = (mask >> (32 * i)) & 0xFFFFFFFF
        data[i].effective = data[i].permitted = data[i].inheritable = word
    _check(_libc().syscall(_syscall_number("capset"), ctypes.byref(header), ctypes.byref(data)))


@functools.cache  # a kernel constant
def last_capability() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return 40


def drop_bounding_set(keep: set[int]) -> None:
    """Remove every capability not in `keep` from the bounding set: no exec can regain them."""
    for cap in range(last_capability() + 1):
        if cap not in keep:
            prctl(PR_CAPBSET_DROP, cap)
