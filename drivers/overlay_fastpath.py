"""The overlay's fast path: frames between a container and the VXLAN device skip the bridge and the
veth's backlog queue.

Why: a container's frame on an overlay network crosses, on each host, its veth pair (the kernel
queues it on a per-CPU backlog and picks it up again in a softirq), then the network's bridge, then
the VXLAN device. Against raw kernel VXLAN that costs ~12 % of a TCP stream's throughput. What
Cilium does for the same hop (bpf_redirect_peer, kernel 5.10+) removes most of it:

- on the VXLAN device's ingress, a frame for a local container is handed straight to the
  container's side of its veth (bpf_redirect_peer: no bridge, no backlog);
- on the ingress of each local veth's segment side, a frame for a remote endpoint goes straight out
  of the VXLAN device (bpf_redirect), one for another local container straight into it.

One small eBPF program (assembled below, no compiler needed) and one hash map per network, in the
network's namespace: map[destination MAC] = ifindex of the local veth end, or of the VXLAN device
for a remote endpoint. The program is attached with tcx (kernel 6.6+) to the VXLAN device and to
every local veth end; both go away with the devices.

The bridge stays and stays in charge of everything else: broadcast and multicast (ARP, ND, DHCP),
any MAC the map lacks, and every frame when the kernel has no BPF or no tcx. An entry missing or
late costs speed, never a frame. An entry must not outlive its veth (the kernel drops a frame
redirected to a device that is gone), so a leave deletes the entry before the veth, and a crash's
leftovers are swept at the next reconcile (the daemon resyncs every 30 s at least). Remote
entries never replace local ones.

Every step runs in the calling thread's network namespace (the driver enters the network's first),
under the driver's fast-path lock (two processes installing at once would attach two programs).
Finding our program again takes CAP_SYS_ADMIN (BPF_PROG_GET_FD_BY_ID), as netctl has.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import socket
import struct

log = logging.getLogger(__name__)

PROGRAM_NAME = b"netctl_ovl_v1"  # how we find our program among a device's tcx programs; v: map layout
MAP_NAME = b"netctl_ovl_macs"
MAX_ATTACHED = 64  # tcx's own limit of programs per device and direction
MAX_ENTRIES = 65536  # local + remote endpoints of one network; beyond, the bridge carries the rest

# bpf(2) commands, types and constants (include/uapi/linux/bpf.h)
BPF_MAP_CREATE, BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_ELEM, BPF_MAP_DELETE_ELEM, BPF_MAP_GET_NEXT_KEY = 0, 1, 2, 3, 4
BPF_PROG_LOAD, BPF_PROG_ATTACH = 5, 8
BPF_PROG_GET_FD_BY_ID, BPF_MAP_GET_FD_BY_ID, BPF_OBJ_GET_INFO_BY_FD, BPF_PROG_QUERY = 13, 14, 15, 16
BPF_MAP_TYPE_HASH, BPF_F_NO_PREALLOC = 1, 1
BPF_NOEXIST = 1
BPF_PROG_TYPE_SCHED_CLS = 3
BPF_TCX_INGRESS = 46
BPF_PSEUDO_MAP_FD = 1
HELPER_MAP_LOOKUP_ELEM, HELPER_REDIRECT, HELPER_REDIRECT_PEER = 1, 23, 155
TCX_NEXT = -1
SKB_IFINDEX, SKB_DATA, SKB_DATA_END = 40, 76, 80  # offsets in struct __sk_buff
ETH_HLEN = 14
ATTR_SIZE = 128
SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(os.uname().machine)
ENOTSUPP = 524  # the kernel's own "not supported" (not in errno)
VERIFIER_LOG_SIZE = 1 << 20

# Asking a device for its tcx programs fails with these where the kernel has no BPF or no tcx (before
# 6.6: EINVAL, an unknown attach type) or the process may not: the bridge then carries everything.
UNSUPPORTED = {errno.ENOSYS, errno.EINVAL, errno.EPERM, errno.EOPNOTSUPP, ENOTSUPP}


class FastPathUnavailable(Exception):
    """The kernel cannot run the fast path here; the bridge carries the traffic."""


_libc = None


def _bpf_call(cmd: int, buf: ctypes.Array) -> int:
    """bpf(2) on an attribute buffer the kernel may write back into."""
    global _libc
    if SYS_BPF is None:
        raise OSError(errno.ENOSYS, f"bpf(2) number unknown on {os.uname().machine}")
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    result = _libc.syscall(ctypes.c_long(SYS_BPF), ctypes.c_long(cmd), buf, ctypes.c_long(ATTR_SIZE))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def _bpf(cmd: int, attr: bytes) -> int:
    return _bpf_call(cmd, ctypes.create_string_buffer(attr, ATTR_SIZE))


# --- the program ------------------------------------------------------------------------------------


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def program(map_fd: int, vxlan_index: int) -> bytes:
    """The eBPF instructions. In C:

        if (data + 14 > data_end || dst[0] & 1) return TCX_NEXT;     // short, broadcast, multicast
        target = map[dst MAC];  if (!target) return TCX_NEXT;          // unknown: the bridge decides
        if (target == VXLAN) return skb->ifindex == VXLAN ? TCX_NEXT : bpf_redirect(VXLAN, 0);
        if (target == skb->ifindex) return TCX_NEXT;                   // to where it came from
        return bpf_redirect_peer(target, 0);                           // into a local container
    """
    LDXW, LDXH, LDXB, STXW, STXH, STH = 0x61, 0x69, 0x71, 0x63, 0x6B, 0x6A
    MOV, MOV_IMM, ADD_IMM, AND_IMM = 0xBF, 0xB7, 0x07, 0x57
    JGT_REG, JNE_IMM, JEQ_IMM, JEQ_REG, CALL, EXIT, LD_IMM64 = 0x2D, 0x55, 0x15, 0x1D, 0x85, 0x95, 0x18
    PASS = 31  # index of the final "return TCX_NEXT"
    code = [
        _insn(MOV, 6, 1),  # 0: r6 = skb
        _insn(LDXW, 2, 6, SKB_DATA),  # 1
        _insn(LDXW, 3, 6, SKB_DATA_END),  # 2
        _insn(MOV, 4, 2),  # 3
        _insn(ADD_IMM, 4, imm=ETH_HLEN),  # 4
        _insn(JGT_REG, 4, 3, PASS - 6),  # 5: too short for an Ethernet header
        _insn(LDXB, 4, 2, 0),  # 6
        _insn(AND_IMM, 4, imm=1),  # 7
        _insn(JNE_IMM, 4, off=PASS - 9, imm=0),  # 8: group address (broadcast, multicast)
        _insn(LDXW, 4, 2, 0),  # 9: key = destination MAC, zero-padded to 8 bytes, on the stack
        _insn(STXW, 10, 4, -8),  # 10
        _insn(LDXH, 4, 2, 4),  # 11
        _insn(STXH, 10, 4, -4),  # 12
        _insn(STH, 10, off=-2, imm=0),  # 13
        _insn(LD_IMM64, 1, BPF_PSEUDO_MAP_FD, imm=map_fd),  # 14-15: r1 = the map
        _insn(0),
        _insn(MOV, 2, 10),  # 16
        _insn(ADD_IMM, 2, imm=-8),  # 17
        _insn(CALL, imm=HELPER_MAP_LOOKUP_ELEM),  # 18
        _insn(JEQ_IMM, 0, off=PASS - 20, imm=0),  # 19: not in the map
        _insn(LDXW, 1, 0, 0),  # 20: r1 = target ifindex
        _insn(LDXW, 7, 6, SKB_IFINDEX),  # 21: r7 = the device this frame arrived on
        _insn(JEQ_IMM, 1, off=27 - 23, imm=vxlan_index),  # 22: remote endpoint
        _insn(JEQ_REG, 1, 7, PASS - 24),  # 23: hairpin: leave it to the bridge
        _insn(MOV_IMM, 2, imm=0),  # 24
        _insn(CALL, imm=HELPER_REDIRECT_PEER),  # 25
        _insn(EXIT),  # 26
        _insn(JEQ_IMM, 7, off=PASS - 28, imm=vxlan_index),  # 27: from the VXLAN device, never back out
        _insn(MOV_IMM, 2, imm=0),  # 28
        _insn(CALL, imm=HELPER_REDIRECT),  # 29
        _insn(EXIT),  # 30
        _insn(MOV_IMM, 0, imm=TCX_NEXT),  # 31 = PASS
        _insn(EXIT),  # 32
    ]
    return b"".join(code)


# --- kernel objects -----------------------------------------------------------------------------


def _create_map() -> int:
    attr = struct.pack("<IIIIIII16s", BPF_MAP_TYPE_HASH, 8, 4, MAX_ENTRIES, BPF_F_NO_PREALLOC, 0, 0, MAP_NAME)
    return _bpf(BPF_MAP_CREATE, attr)


def _load_program(map_fd: int, vxlan_index: int) -> int:
    insns = program(map_fd, vxlan_index)
    code = ctypes.create_string_buffer(insns, len(insns))
    license_ = ctypes.create_string_buffer(b"GPL")

    def load(log_size: int) -> int:
        verifier_log = ctypes.create_string_buffer(log_size) if log_size else None
        attr = struct.pack("<IIQQIIQII16sII", BPF_PROG_TYPE_SCHED_CLS, len(insns) // 8, ctypes.addressof(code),
                           ctypes.addressof(license_), 1 if log_size else 0, log_size,
                           ctypes.addressof(verifier_log) if verifier_log else 0, 0, 0, PROGRAM_NAME, 0,
                           BPF_TCX_INGRESS)
        try:
            return _bpf(BPF_PROG_LOAD, attr)
        except OSError as err:
            if verifier_log is not None and err.errno in (errno.EACCES, errno.EINVAL):
                tail = verifier_log.value.decode(errors="replace").strip()[-400:]
                raise OSError(err.errno, f"{err.strerror}; verifier: {tail}") from None
            raise

    try:
        return load(0)  # no log: a long log alone can fail a load (ENOSPC) on newer kernels
    except OSError as err:
        if err.errno not in (errno.EACCES, errno.EINVAL):
            raise
    return load(VERIFIER_LOG_SIZE)  # again, to say why


def _attach(program_fd: int, ifindex: int) -> None:
    _bpf(BPF_PROG_ATTACH, struct.pack("<IIIII", ifindex, program_fd, BPF_TCX_INGRESS, 0, 0))


def _attached_program_ids(ifindex: int) -> list[int]:
    ids = (ctypes.c_uint32 * MAX_ATTACHED)()
    attr = bytearray(struct.pack("<IIIIQI", ifindex, BPF_TCX_INGRESS, 0, 0, ctypes.addressof(ids), len(ids)))
    buf = ctypes.create_string_buffer(bytes(attr), ATTR_SIZE)
    _bpf_call(BPF_PROG_QUERY, buf)
    count = struct.unpack_from("<I", buf.raw, 24)[0]
    return list(ids[: min(count, len(ids))])


def _prog_info(program_fd: int) -> tuple[str, list[int]]:
    """(name, map ids) of a loaded program."""
    map_ids = (ctypes.c_uint32 * 4)()
    info = bytearray(96)
    struct.pack_into("<I", info, 52, len(map_ids))
    struct.pack_into("<Q", info, 56, ctypes.addressof(map_ids))
    info_buf = ctypes.create_string_buffer(bytes(info), len(info))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, struct.pack("<IIQ", program_fd, len(info), ctypes.addressof(info_buf)))
    nr_maps = struct.unpack_from("<I", info_buf.raw, 52)[0]
    name = info_buf.raw[64:80].split(b"\0")[0].decode()
    return name, list(map_ids[: min(nr_maps, len(map_ids))])


def _our_program(vxlan_index: int) -> tuple[int, int] | None:
    """(program fd, map fd) of the fast path attached to the VXLAN device, or None. Caller closes both."""
    for program_id in _attached_program_ids(vxlan_index):
        program_fd = _bpf(BPF_PROG_GET_FD_BY_ID, struct.pack("<I", program_id))
        try:
            name, map_ids = _prog_info(program_fd)
            if name == PROGRAM_NAME.decode()[:15] and map_ids:
                return program_fd, _bpf(BPF_MAP_GET_FD_BY_ID, struct.pack("<I", map_ids[0]))
        except BaseException:
            os.close(program_fd)
            raise
        os.close(program_fd)
    return None


def _key(mac: str) -> ctypes.Array:
    return ctypes.create_string_buffer(bytes.fromhex(mac.replace(":", "")) + b"\0\0", 8)


def _map_update(map_fd: int, mac: str, ifindex: int, flags: int = 0) -> None:
    key, value = _key(mac), ctypes.c_uint32(ifindex)
    _bpf(BPF_MAP_UPDATE_ELEM, struct.pack("<IIQQQ", map_fd, 0, ctypes.addressof(key), ctypes.addressof(value), flags))


def _map_lookup(map_fd: int, mac: str) -> int | None:
    key, value = _key(mac), ctypes.c_uint32()
    try:
        _bpf(BPF_MAP_LOOKUP_ELEM, struct.pack("<IIQQ", map_fd, 0, ctypes.addressof(key), ctypes.addressof(value)))
    except FileNotFoundError:
        return None
    return value.value


def _map_delete(map_fd: int, mac: str) -> None:
    key = _key(mac)
    try:
        _bpf(BPF_MAP_DELETE_ELEM, struct.pack("<IIQ", map_fd, 0, ctypes.addressof(key)))
    except FileNotFoundError:
        pass


def _map_entries(map_fd: int) -> dict[str, int]:
    entries: dict[str, int] = {}
    key, next_key, value = ctypes.create_string_buffer(8), ctypes.create_string_buffer(8), ctypes.c_uint32()
    first = True
    for _ in range(MAX_ENTRIES + 1):  # bounded: a map holds at most MAX_ENTRIES keys
        try:
            _bpf(BPF_MAP_GET_NEXT_KEY, struct.pack("<IIQQ", map_fd, 0, 0 if first else ctypes.addressof(key),
                                                   ctypes.addressof(next_key)))
        except FileNotFoundError:
            break  # the last key
        first = False
        ctypes.memmove(key, next_key, 8)
        try:
            _bpf(BPF_MAP_LOOKUP_ELEM, struct.pack("<IIQQ", map_fd, 0, ctypes.addressof(key), ctypes.addressof(value)))
        except FileNotFoundError:
            continue  # deleted meanwhile
        entries[":".join(f"{b:02x}" for b in key.raw[:6])] = value.value
    return entries


class _Handles:
    """The fast path of one network (fds of its program and map), or None-like when it is absent."""

    def __init__(self, vxlan_index: int):
        self.vxlan_index = vxlan_index
        found = _our_program(vxlan_index)
        self.program_fd, self.map_fd = found if found else (-1, -1)

    def __bool__(self) -> bool:
        return self.program_fd >= 0

    def __enter__(self) -> "_Handles":
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in (self.program_fd, self.map_fd):
            if fd >= 0:
                os.close(fd)


# --- what the driver calls (inside the network's namespace) -------------------------------------------


def install(vxlan_index: int) -> None:
    """Load the network's map and program and attach the program to its VXLAN device (once).
    FastPathUnavailable: the kernel (or the process) has no BPF or no tcx; any other OSError is ours."""
    try:
        with _Handles(vxlan_index) as handles:
            if handles:
                return
    except OSError as err:
        if err.errno in UNSUPPORTED:
            raise FastPathUnavailable(
                f"no eBPF/tcx fast path here ({err.strerror}); the bridge carries all frames") from err
        raise
    map_fd = _create_map()
    try:
        program_fd = _load_program(map_fd, vxlan_index)
        try:
            _attach(program_fd, vxlan_index)
        finally:
            os.close(program_fd)
    finally:
        os.close(map_fd)


def add_port(vxlan_index: int, port_index: int, mac: str) -> bool:
    """Map the container's MAC to its veth end, then attach the program there (frames from it take
    the fast path only once frames to it can); False if the network has no fast path. A crash's
    leftovers are the reconcile's to sweep (sync_remotes), not every join's."""
    with _Handles(vxlan_index) as handles:
        if not handles:
            return False
        _map_update(handles.map_fd, mac.lower(), port_index)
        try:
            _attach(handles.program_fd, port_index)
        except BaseException:
            _map_delete(handles.map_fd, mac.lower())
            raise
        return True


def remove_port(vxlan_index: int, port_index: int) -> None:
    """Before a local veth end goes: drop every entry that points at it."""
    with _Handles(vxlan_index) as handles:
        if handles:
            for mac, target in _map_entries(handles.map_fd).items():
                if target == port_index:
                    _map_delete(handles.map_fd, mac)


def sync_remotes(vxlan_index: int, remote_macs: set[str]) -> None:
    """The map's remote entries := remote_macs (the MACs of the VXLAN device's static FDB)."""
    with _Handles(vxlan_index) as handles:
        if not handles:
            return
        _sweep_gone(handles)
        entries = _map_entries(handles.map_fd)
        for mac, target in entries.items():
            if target == vxlan_index and mac not in remote_macs:
                _map_delete(handles.map_fd, mac)
        for mac in sorted(remote_macs - set(entries)):
            try:  # NOEXIST: a local entry for the same MAC, even one added meanwhile, wins
                _map_update(handles.map_fd, mac, vxlan_index, BPF_NOEXIST)
            except FileExistsError:
                pass


def entries(vxlan_index: int) -> dict[str, int] | None:
    """{MAC: target ifindex} of the network's fast path, None if it has none (for doctor and tests)."""
    with _Handles(vxlan_index) as handles:
        return _map_entries(handles.map_fd) if handles else None


def _sweep_gone(handles: _Handles) -> None:
    for mac, target in _map_entries(handles.map_fd).items():
        if target != handles.vxlan_index and not _link_exists(target):
            _map_delete(handles.map_fd, mac)


def _link_exists(ifindex: int) -> bool:
    try:
        socket.if_indextoname(ifindex)
        return True
    except OSError:
        return False
