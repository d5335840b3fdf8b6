"""rtnetlink's wire format: message and attribute layout, the constants, the records a reply decodes
into (Link, Route, Addr, Neigh) and the errors a refusal becomes. Pure: no socket here.

Message layout (host byte order; every part padded to 4 bytes):

    nlmsghdr    len:u32 type:u16 flags:u16 seq:u32 pid:u32                         16 bytes
    then one family header:
      ifinfomsg family:u8 pad:u8 type:u16 index:i32 flags:u32 change:u32          links, 16
      ifaddrmsg family:u8 prefixlen:u8 flags:u8 scope:u8 index:u32                addresses, 8
      rtmsg     family dst_len src_len tos table protocol scope type:u8 flags:u32 routes, 12
      ndmsg     family:u8 pad:3 ifindex:i32 state:u16 flags:u8 type:u8            neighbours/FDB, 12
    then attributes: len:u16 type:u16 payload (type|0x8000: payload is nested attributes)

Separate from the socket and its operations (libnetwork/netlink/rtnetlink.py) so that each can be read
alone: this is the byte layout, that is the conversation with the kernel. Names with a leading
underscore are private to the libnetwork.netlink package.
"""

from __future__ import annotations

import errno as _errno
import os
import socket
import struct
from dataclasses import dataclass

from libnetwork.errors import AlreadyExists, InvalidArgument, KernelError, NotFound

NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_ECHO, NLM_F_DUMP_INTR, NLM_F_DUMP = 0x1, 0x4, 0x8, 0x10, 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLM_F_CAPPED, NLM_F_ACK_TLVS = 0x100, 0x200  # on NLMSG_ERROR
SOL_NETLINK, NETLINK_CAP_ACK, NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK = 270, 10, 11, 12
NLMSGERR_ATTR_MSG, NLA_F_NESTED = 1, 0x8000
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER, IFLA_PROTINFO = 1, 3, 4, 5, 10, 12
IFLA_LINKINFO, IFLA_NET_NS_FD, IFLA_EXT_MASK, IFLA_LINK_NETNSID = 18, 28, 29, 37
IFLA_AF_SPEC, IFLA_INET_CONF = 26, 1  # per-family settings of a link; AF_INET's devconf (ipv4/conf/DEV)
IPV4_DEVCONF_ROUTE_LOCALNET = 26  # net.ipv4.conf.DEV.route_localnet, as an IFLA_INET_CONF attribute
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER, IFLA_BRPORT_MODE = 1, 2, 1, 4
IFLA_VXLAN_ID, IFLA_VXLAN_LINK, IFLA_VXLAN_LOCAL, IFLA_VXLAN_LEARNING, IFLA_VXLAN_PROXY = 1, 3, 4, 7, 11
IFLA_VXLAN_PORT, IFLA_VXLAN_LOCAL6 = 15, 17
RTEXT_FILTER_SKIP_STATS = 1 << 3
IFF_UP, IFF_RUNNING, IFF_LOWER_UP = 0x1, 0x40, 0x10000
SIOCGIFINDEX = 0x8933  # ioctl: a link's index by name
ADDR_GONE = (_errno.EADDRNOTAVAIL, _errno.ENODEV, _errno.ENOENT)  # deleting an address that is not there
IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST, IFA_FLAGS, IFA_F_NODAD = 1, 2, 4, 8, 0x2
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_TABLE = 1, 4, 5, 6, 15
RTPROT_BOOT, RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RT_SCOPE_NOWHERE, RTN_UNICAST = 3, 0, 253, 255, 1
RT_TABLE_MAIN = 254
NDA_DST, NDA_LLADDR, NDA_IFINDEX = 1, 2, 8
NUD_PERMANENT, NUD_NOARP, NTF_SELF, NTF_MASTER = 0x80, 0x40, 0x2, 0x4
AF_INET, AF_INET6, AF_BRIDGE = socket.AF_INET, socket.AF_INET6, 7

_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")
_NDMSG = struct.Struct("=BxxxiHBB")
_RECV_BUFFER = 1 << 16  # the kernel fills dump datagrams up to 32 KiB
_DUMP_ATTEMPTS = 3  # a dump interrupted by concurrent changes (NLM_F_DUMP_INTR) is retried


class NetlinkError(KernelError):
    """The kernel refused a netlink request; `.errno` says why."""

    def __init__(self, message: str, *, errno: int):
        super().__init__(message)
        self.errno = errno


class NetlinkExists(NetlinkError, AlreadyExists):
    """EEXIST: the name or object is taken."""

    exit_code, cni_code = AlreadyExists.exit_code, AlreadyExists.cni_code


class NetlinkNotFound(NetlinkError, NotFound):
    """ENODEV/ENOENT: the link (or table) does not exist."""

    exit_code, cni_code = NotFound.exit_code, NotFound.cni_code


def _error(code: int, what: str, reason: str = "") -> NetlinkError:
    cls = {_errno.EEXIST: NetlinkExists, _errno.ENODEV: NetlinkNotFound, _errno.ENOENT: NetlinkNotFound}
    text = f"cannot {what}: {os.strerror(code)}" + (f" ({reason})" if reason else "")
    return cls.get(code, NetlinkError)(text, errno=code)


@dataclass
class Link:
    index: int
    name: str
    kind: str  # "" if none; "veth", "bridge", "vxlan", ...
    mtu: int
    mac: str
    up: bool  # administratively up (IFF_UP)
    master: int  # 0 if none
    link_netnsid: int | None  # set when the peer/lower device lives in another namespace
    link_index: int = 0  # IFLA_LINK: the veth peer's or lower device's index (in that namespace)
    lower_up: bool = False  # carrier (IFF_LOWER_UP)
    running: bool = False  # operationally up (IFF_RUNNING): the kernel's linkwatch has put it in service


@dataclass
class Route:
    family: int
    dst: str  # "0.0.0.0/0" / "::/0" for default, else CIDR
    gateway: str  # "" if none
    oif: int
    table: int
    protocol: int
    scope: int
    metric: int = 0
    type: int = RTN_UNICAST


@dataclass
class Addr:
    family: int
    index: int
    address: str  # "10.0.0.1/24"
    scope: int = 0  # 253 = link (fe80::/64)


@dataclass
class Neigh:
    family: int  # AF_INET/AF_INET6 for neighbours, AF_BRIDGE for FDB entries
    index: int
    ip: str  # neighbour address, or an FDB entry's remote (VXLAN dst); "" if none
    mac: str
    state: int
    flags: int


# --- encoding -------------------------------------------------------------------------------------


def _pad(n: int) -> int:
    return (n + 3) & ~3


def _attr(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind) + payload + bytes(_pad(size) - size)


def _u32(kind: int, value: int) -> bytes:
    return _attr(kind, struct.pack("=I", value))


def _u8(kind: int, value: int) -> bytes:
    return _attr(kind, bytes([value]))


def _str(kind: int, value: str) -> bytes:
    return _attr(kind, value.encode() + b"\0")


def _parse_attrs(data: bytes, offset: int = 0) -> dict[int, bytes]:
    attrs: dict[int, bytes] = {}
    while offset + 4 <= len(data):
        size, kind = struct.unpack_from("=HH", data, offset)
        if size < 4:
            break
        attrs[kind & 0x3FFF] = data[offset + 4 : offset + size]
        offset += _pad(size)
    return attrs


def _cstr(data: bytes | None) -> str:
    return (data or b"").split(b"\0", 1)[0].decode(errors="replace")


def _u32v(data: bytes | None) -> int:
    return struct.unpack("=I", data[:4])[0] if data else 0


def _ifname(name: str) -> str:
    if not 0 < len(name.encode()) < 16 or "/" in name or any(c.isspace() for c in name):
        raise InvalidArgument(f"interface name {name!r} is invalid: use 1-15 characters, no '/' or spaces")
    return name


def _pack_ip(ip: str, what: str) -> tuple[int, bytes]:
    family = AF_INET6 if ":" in ip else AF_INET
    try:
        return family, socket.inet_pton(family, ip)
    except OSError:
        raise InvalidArgument(f"cannot {what}: {ip!r} is not an IP address") from None


def _parse_cidr(cidr: str, what: str) -> tuple[int, bytes, int]:
    ip, slash, length = cidr.partition("/")
    family, packed = _pack_ip(ip, what)
    bits = len(packed) * 8
    if not slash:
        return family, packed, bits
    if not length.isdigit() or int(length) > bits:
        raise InvalidArgument(f"cannot {what}: {cidr!r} has an invalid prefix length (0-{bits})")
    return family, packed, int(length)


def _ntop(family: int, data: bytes) -> str:
    return socket.inet_ntop(family, data)


def _pack_mac(mac: str) -> bytes:
    packed = bytes.fromhex(mac.replace(":", "")) if len(mac) == 17 else b""
    if len(packed) != 6:
        raise InvalidArgument(f"MAC address {mac!r} is invalid; write it as 02:42:ac:11:00:02")
    return packed


def _mac(data: bytes | None) -> str:
    return ":".join(f"{b:02x}" for b in data or b"")


def _broadcast(packed: bytes, prefix: int) -> bytes:
    host_bits = (1 << (32 - prefix)) - 1
    return (int.from_bytes(packed, "big") | host_bits).to_bytes(4, "big")


def _selector(name_or_index: str | int) -> tuple[int, bytes]:
    """ifi_index plus attributes naming a link: by index, or by IFLA_IFNAME with index 0."""
    if isinstance(name_or_index, int):
        return name_or_index, b""
    return 0, _str(IFLA_IFNAME, _ifname(name_or_index))


def _link_change(name_or_index: str | int, up: bool | None, master: int | None = None, mtu: int | None = None,
                 mac: str | None = None, name: str | None = None, ipv4_conf: dict[int, int] | None = None) -> bytes:
    """An RTM_NEWLINK body changing an existing link (`name` renames it: then address it by index).
    `ipv4_conf`: IPV4_DEVCONF_* values, as writing net.ipv4.conf.DEV.* would set them (without the
    /proc write: ~90 us each on a 2-vCPU VM, here part of a message already sent)."""
    index, selector = _selector(name_or_index)
    attrs = _str(IFLA_IFNAME, _ifname(name)) if name is not None else b""
    attrs += _u32(IFLA_MASTER, master) if master is not None else b""
    attrs += _u32(IFLA_MTU, mtu) if mtu is not None else b""
    attrs += _attr(IFLA_ADDRESS, _pack_mac(mac)) if mac is not None else b""
    if ipv4_conf:
        conf = b"".join(_u32(key, value) for key, value in ipv4_conf.items())
        attrs += _attr(IFLA_AF_SPEC, _attr(AF_INET, _attr(IFLA_INET_CONF, conf)))
    flags, change = (IFF_UP if up else 0), (IFF_UP if up is not None else 0)
    return _IFINFOMSG.pack(0, 0, index, flags, change) + selector + attrs


def _addr_change(index: int, cidr: str, what: str) -> bytes:
    """An RTM_NEWADDR/RTM_DELADDR body for `cidr` on link `index`."""
    family, packed, prefix = _parse_cidr(cidr, what)
    if family == AF_INET:
        attrs = _attr(IFA_LOCAL, packed) + _attr(IFA_ADDRESS, packed)
        attrs += _attr(IFA_BROADCAST, _broadcast(packed, prefix)) if prefix < 31 else b""
        return _IFADDRMSG.pack(family, prefix, 0, 0, index) + attrs
    # No duplicate address detection: the address is usable at once, not "tentative" for ~1 s.
    attrs = _attr(IFA_ADDRESS, packed) + _u32(IFA_FLAGS, IFA_F_NODAD)
    return _IFADDRMSG.pack(family, prefix, IFA_F_NODAD, 0, index) + attrs


# --- decoding -------------------------------------------------------------------------------------


def _parse_link(payload: bytes) -> Link:
    _, _, index, flags, _ = _IFINFOMSG.unpack_from(payload)
    attrs = _parse_attrs(payload, _IFINFOMSG.size)
    info = _parse_attrs(attrs.get(IFLA_LINKINFO, b""))
    netnsid = attrs.get(IFLA_LINK_NETNSID)
    return Link(
        index=index,
        name=_cstr(attrs.get(IFLA_IFNAME)),
        kind=_cstr(info.get(IFLA_INFO_KIND)),
        mtu=_u32v(attrs.get(IFLA_MTU)),
        mac=_mac(attrs.get(IFLA_ADDRESS)),
        up=bool(flags & IFF_UP),
        master=_u32v(attrs.get(IFLA_MASTER)),
        link_netnsid=struct.unpack("=i", netnsid)[0] if netnsid else None,
        link_index=_u32v(attrs.get(IFLA_LINK)),
        lower_up=bool(flags & IFF_LOWER_UP),
        running=bool(flags & IFF_RUNNING),
    )


def _parse_addr(payload: bytes) -> Addr:
    family, prefix, _, scope, index = _IFADDRMSG.unpack_from(payload)
    attrs = _parse_attrs(payload, _IFADDRMSG.size)
    packed = attrs.get(IFA_LOCAL) or attrs[IFA_ADDRESS]  # v4 and peer addresses: LOCAL is ours
    return Addr(family, index, f"{_ntop(family, packed)}/{prefix}", scope)


def _parse_route(payload: bytes) -> Route:
    family, dst_len, _, _, table, protocol, scope, rtype, _ = _RTMSG.unpack_from(payload)
    attrs = _parse_attrs(payload, _RTMSG.size)
    dst = _ntop(family, attrs[RTA_DST]) if RTA_DST in attrs else ("0.0.0.0" if family == AF_INET else "::")
    gateway = _ntop(family, attrs[RTA_GATEWAY]) if RTA_GATEWAY in attrs else ""
    table = _u32v(attrs.get(RTA_TABLE)) or table
    return Route(family, f"{dst}/{dst_len}", gateway, _u32v(attrs.get(RTA_OIF)), table, protocol, scope,
                 _u32v(attrs.get(RTA_PRIORITY)), rtype)


def _parse_neigh(payload: bytes) -> Neigh:
    family, index, state, flags, _ = _NDMSG.unpack_from(payload)
    attrs = _parse_attrs(payload, _NDMSG.size)
    dst = attrs.get(NDA_DST, b"")
    ip = _ntop(AF_INET6 if len(dst) == 16 else AF_INET, dst) if len(dst) in (4, 16) else ""
    return Neigh(family, index, ip, _mac(attrs.get(NDA_LLADDR)), state, flags)


def _extack(flags: int, payload: bytes, offset: int) -> str:
    """The kernel's own explanation attached to an error, if it gave one."""
    if not flags & NLM_F_ACK_TLVS:
        return ""
    return _cstr(_parse_attrs(payload, offset).get(NLMSGERR_ATTR_MSG))
