"""The Netlink object: one NETLINK_ROUTE socket, and the operations on links, addresses, routes,
neighbours and FDB entries spoken over it (messages built and read by libnetwork/netlink/codec.py).

A request carries NLM_F_REQUEST|NLM_F_ACK; the kernel answers with zero or more messages, then an
NLMSG_ERROR whose error is 0 (the ACK) or -errno. A dump (NLM_F_DUMP) answers with multipart messages
ending in NLMSG_DONE. The socket asks for extended ACKs, so a refusal may carry the kernel's own reason,
and for strict checking, so dumps are filtered (by table, by link) in the kernel.

A Netlink object is one socket: not thread-safe; use one per thread.
"""

from __future__ import annotations

import errno as _errno
import fcntl
import socket
import struct
from typing import Self

from libnetwork.errors import InvalidArgument
from libnetwork.netlink.codec import (  # the wire format; underscore names are the package's own
    _DUMP_ATTEMPTS, _IFADDRMSG, _IFINFOMSG, _NDMSG, _NLMSGHDR, _RECV_BUFFER, _RTMSG, AF_BRIDGE, AF_INET, AF_INET6,
    IFF_UP, IFLA_ADDRESS, IFLA_BRPORT_MODE, IFLA_EXT_MASK, IFLA_IFNAME, IFLA_INFO_DATA, IFLA_INFO_KIND, IFLA_LINKINFO,
    IFLA_MASTER, IFLA_MTU, IFLA_NET_NS_FD, IFLA_PROTINFO, IFLA_VXLAN_ID, IFLA_VXLAN_LEARNING, IFLA_VXLAN_LINK,
    IFLA_VXLAN_LOCAL, IFLA_VXLAN_LOCAL6, IFLA_VXLAN_PORT, IFLA_VXLAN_PROXY, NDA_DST, NDA_IFINDEX, NDA_LLADDR,
    NETLINK_CAP_ACK, NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK, NLA_F_NESTED, NLM_F_ACK, NLM_F_CAPPED, NLM_F_CREATE,
    NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR,
    NTF_MASTER, NTF_SELF, NUD_NOARP, NUD_PERMANENT, RT_SCOPE_LINK, RT_SCOPE_NOWHERE, RT_SCOPE_UNIVERSE, RT_TABLE_MAIN,
    RTA_DST, RTA_GATEWAY, RTA_OIF, RTA_PRIORITY, RTA_TABLE, RTEXT_FILTER_SKIP_STATS, RTM_DELADDR, RTM_DELLINK,
    RTM_DELNEIGH, RTM_DELROUTE, RTM_GETADDR, RTM_GETLINK, RTM_GETNEIGH, RTM_GETROUTE, RTM_NEWADDR, RTM_NEWLINK,
    RTM_NEWNEIGH, RTM_NEWROUTE, RTM_SETLINK, RTN_UNICAST, RTPROT_BOOT, SIOCGIFINDEX, SOL_NETLINK, VETH_INFO_PEER, Addr,
    Link, Neigh, ADDR_GONE, NetlinkError, NetlinkExists, NetlinkNotFound, Route, _attr, _error, _extack, _ifname,
    _pack_ip, _addr_change, _link_change, _pack_mac, _pad, _parse_addr, _parse_cidr, _parse_link, _parse_neigh,
    _parse_route, _selector, _str, _u8, _u32,
)
from libnetwork.netlink.batch import Batch


class Netlink:
    """One NETLINK_ROUTE socket, bound to the calling thread's network namespace at creation, or to the
    namespace at `netns_path` (the thread enters it, creates the socket, comes back; the socket stays
    bound to the target namespace). Context manager."""

    def __init__(self, netns_path: str | None = None, *, timeout: float = 10.0):
        self.netns_path = netns_path
        self._timeout = timeout
        self._seq = 0
        self._buffer = bytearray(_RECV_BUFFER)
        if netns_path is None:
            self._sock = self._open_socket()
        else:
            from libnetwork import netns

            with netns.entered(netns_path):
                self._sock = self._open_socket()

    def _open_socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        try:
            for option in (NETLINK_EXT_ACK, NETLINK_CAP_ACK, NETLINK_GET_STRICT_CHK):
                try:
                    sock.setsockopt(SOL_NETLINK, option, 1)
                except OSError:
                    pass  # older kernel: plain ACKs, unfiltered dumps (we filter results ourselves too)
            sock.bind((0, 0))
            sock.settimeout(self._timeout)
        except BaseException:
            sock.close()
            raise
        return sock

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transport --------------------------------------------------------------------------------

    def _send(self, msg_type: int, flags: int, body: bytes) -> int:
        self._seq += 1
        header = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), msg_type, flags | NLM_F_REQUEST, self._seq, 0)
        self._sock.send(header + body)
        return self._seq

    def _receive(self, seq: int, what: str):
        """Yield (type, flags, payload) of every message answering request `seq`; skips stale ones."""
        while True:
            try:
                size = self._sock.recv_into(self._buffer, 0, socket.MSG_TRUNC)
            except TimeoutError:
                raise NetlinkError(f"cannot {what}: no answer from the kernel in {self._timeout} s",
                                   errno=_errno.ETIMEDOUT) from None
            if size > len(self._buffer):
                raise NetlinkError(f"cannot {what}: reply of {size} bytes exceeds the buffer", errno=_errno.EMSGSIZE)
            data, offset = bytes(self._buffer[:size]), 0
            while offset + _NLMSGHDR.size <= size:
                length, msg_type, flags, msg_seq, _ = _NLMSGHDR.unpack_from(data, offset)
                if length < _NLMSGHDR.size:
                    break
                if msg_seq == seq:
                    yield msg_type, flags, data[offset + _NLMSGHDR.size : offset + length]
                offset += _pad(length)

    def _request(self, msg_type: int, flags: int, body: bytes, what: str) -> list[tuple[int, bytes]]:
        """Send one request with NLM_F_ACK; return the (type, payload) messages that preceded the ACK."""
        seq = self._send(msg_type, flags | NLM_F_ACK, body)
        replies = []
        for reply_type, reply_flags, payload in self._receive(seq, what):
            if reply_type != NLMSG_ERROR:
                replies.append((reply_type, payload))
                continue
            refusal = _refusal(reply_flags, payload, what)
            if refusal is not None:
                raise refusal
            return replies
        raise AssertionError("unreachable")

    def _request_many(self, requests: list[tuple[int, int, bytes, str, tuple[int, ...]]]) -> None:
        """Batch.commit: every request in one write, then each one's ACK in turn; the first refusal
        (outside a request's `ok` errnos) is raised once all are answered."""
        data, seqs = b"", []
        for msg_type, flags, body, _, _ in requests:
            self._seq += 1
            seqs.append(self._seq)
            data += _NLMSGHDR.pack(_NLMSGHDR.size + len(body), msg_type, flags | NLM_F_REQUEST | NLM_F_ACK,
                                   self._seq, 0) + body
        self._sock.send(data)
        first: NetlinkError | None = None
        for seq, (_, _, _, what, ok) in zip(seqs, requests, strict=True):
            for reply_type, reply_flags, payload in self._receive(seq, what):
                if reply_type == NLMSG_ERROR:
                    refusal = _refusal(reply_flags, payload, what)
                    if refusal is not None and refusal.errno not in ok:
                        first = first or refusal
                    break
        if first is not None:
            raise first

    def _dump(self, msg_type: int, body: bytes, what: str) -> list[bytes]:
        """Payloads of a complete dump, retried if concurrent changes made it inconsistent."""
        for _ in range(_DUMP_ATTEMPTS):
            seq = self._send(msg_type, NLM_F_DUMP, body)
            payloads, interrupted = [], False
            for reply_type, reply_flags, payload in self._receive(seq, what):
                if reply_type in (NLMSG_DONE, NLMSG_ERROR):
                    code = -struct.unpack_from("=i", payload)[0] if len(payload) >= 4 else 0
                    if code:
                        raise _error(code, what, _extack(reply_flags, payload, 4))
                    break
                interrupted |= bool(reply_flags & NLM_F_DUMP_INTR)
                payloads.append(payload)
            if not interrupted:
                return payloads
        raise NetlinkError(f"cannot {what}: the kernel's tables kept changing during the dump; retry",
                           errno=_errno.EAGAIN)

    # --- links ------------------------------------------------------------------------------------

    def link(self, name_or_index: str | int) -> Link | None:
        index, selector = _selector(name_or_index)
        body = _IFINFOMSG.pack(0, 0, index, 0, 0) + selector + _u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)
        try:
            replies = self._request(RTM_GETLINK, 0, body, f"look up link {name_or_index}")
        except NetlinkNotFound:
            return None
        return next((_parse_link(p) for t, p in replies if t == RTM_NEWLINK), None)

    def links(self) -> list[Link]:
        body = _IFINFOMSG.pack(0, 0, 0, 0, 0) + _u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)
        return [_parse_link(p) for p in self._dump(RTM_GETLINK, body, "list links")]

    def _new_link(self, name: str, up: bool, attrs: bytes, what: str) -> int:
        """RTM_NEWLINK with CREATE|EXCL; returns the new link's ifindex, asked by name (index_of, ~2 us):
        the kernel's echo of the new link (NLM_F_ECHO) cost ~60 us to build and parse."""
        flags = IFF_UP if up else 0
        body = _IFINFOMSG.pack(0, 0, 0, flags, flags) + attrs
        self._request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, what)
        index = self.index_of(name)
        if index is None:
            raise NetlinkError(f"cannot {what}: it vanished right after creation", errno=_errno.ENODEV)
        return index

    def add_bridge(self, name: str, *, mtu: int = 0, up: bool = True, mac: str = "") -> int:
        """Create a bridge; returns its ifindex. A fixed `mac` keeps the bridge's address from following
        its ports (by default the kernel gives it the lowest port MAC, which changes as ports come and go)."""
        attrs = _str(IFLA_IFNAME, _ifname(name))
        attrs += _u32(IFLA_MTU, mtu) if mtu else b""
        attrs += _attr(IFLA_ADDRESS, _pack_mac(mac)) if mac else b""
        attrs += _attr(IFLA_LINKINFO, _str(IFLA_INFO_KIND, "bridge"))
        return self._new_link(name, up, attrs, f"create bridge {name}")

    def add_veth(self, name: str, peer_name: str, *, peer_netns_fd: int | None = None, mtu: int = 0,
                 peer_mac: str = "", master: int = 0, up: bool = True, mac: str = "", peer_up: bool = False) -> int:
        """Create a veth pair in one request; returns the host side's ifindex. The peer is created directly
        inside `peer_netns_fd`'s namespace (moving it afterwards costs ~30 ms in the kernel). `mtu` applies
        to both ends; `master` and `up` to this side (the kernel applies them in the same request and
        unregisters both ends if enslaving fails)."""
        peer_flags = IFF_UP if peer_up else 0
        peer = _IFINFOMSG.pack(0, 0, 0, peer_flags, peer_flags) + _str(IFLA_IFNAME, _ifname(peer_name))
        peer += _u32(IFLA_MTU, mtu) if mtu else b""
        peer += _attr(IFLA_ADDRESS, _pack_mac(peer_mac)) if peer_mac else b""
        peer += _u32(IFLA_NET_NS_FD, peer_netns_fd) if peer_netns_fd is not None else b""
        attrs = _str(IFLA_IFNAME, _ifname(name))
        attrs += _u32(IFLA_MTU, mtu) if mtu else b""
        attrs += _attr(IFLA_ADDRESS, _pack_mac(mac)) if mac else b""
        attrs += _u32(IFLA_MASTER, master) if master else b""
        info = _str(IFLA_INFO_KIND, "veth") + _attr(IFLA_INFO_DATA, _attr(VETH_INFO_PEER, peer))
        attrs += _attr(IFLA_LINKINFO, info)
        return self._new_link(name, up, attrs, f"create veth {name} (peer {peer_name})")

    def add_vxlan(self, name: str, vni: int, *, local: str = "", port: int = 4789, dev: int = 0,
                  learning: bool = False, proxy: bool = False, mtu: int = 0, up: bool = False,
                  netns_fd: int | None = None) -> int:
        """Create a VXLAN device (no multicast group: remotes come from static FDB entries); returns its
        ifindex. `proxy`: the device answers ARP requests and IPv6 neighbour solicitations itself from
        its neighbour table, so they never need to be flooded to other hosts.

        With `netns_fd` the device is created inside that namespace while its UDP socket (and the
        routing of its packets) stays in this one, as Docker's overlay does by moving it, without the
        cost of a move. Its index is not known here (index_of asks this namespace): 0 is returned, look
        the device up from inside."""
        data = _u32(IFLA_VXLAN_ID, vni) + _u8(IFLA_VXLAN_LEARNING, int(learning))
        data += _u8(IFLA_VXLAN_PROXY, 1) if proxy else b""
        data += _attr(IFLA_VXLAN_PORT, struct.pack("!H", port))  # network byte order
        if local:
            family, packed = _pack_ip(local, f"create vxlan {name}")
            data += _attr(IFLA_VXLAN_LOCAL if family == AF_INET else IFLA_VXLAN_LOCAL6, packed)
        data += _u32(IFLA_VXLAN_LINK, dev) if dev else b""
        attrs = _str(IFLA_IFNAME, _ifname(name)) + (_u32(IFLA_MTU, mtu) if mtu else b"")
        attrs += _attr(IFLA_LINKINFO, _str(IFLA_INFO_KIND, "vxlan") + _attr(IFLA_INFO_DATA, data))
        what = f"create vxlan {name} (vni {vni})"
        if netns_fd is None:
            return self._new_link(name, up, attrs, what)
        flags = IFF_UP if up else 0
        body = _IFINFOMSG.pack(0, 0, 0, flags, flags) + attrs + _u32(IFLA_NET_NS_FD, netns_fd)
        self._request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, what)
        return 0

    def set_link(self, name_or_index: str | int, *, up: bool | None = None, master: int | None = None,
                 mtu: int | None = None, mac: str | None = None, name: str | None = None) -> None:
        """Change a link in one request (rename first, state last, as the kernel orders them).
        master=0 releases the link from its bridge. Renaming needs the link down (before Linux 6.2)."""
        what = f"change link {name_or_index}"
        if name is not None and not isinstance(name_or_index, int):
            # IFLA_IFNAME now carries the new name, so address the link by index
            index = self.index_of(name_or_index)
            if index is None:
                raise _error(_errno.ENODEV, what)
            name_or_index = index
        self._request(RTM_NEWLINK, 0, _link_change(name_or_index, up, master, mtu, mac, name), what)

    def index_of(self, name: str) -> int | None:
        """The ifindex of link `name` in this socket's namespace, or None: the SIOCGIFINDEX ioctl on the
        netlink socket itself, which the kernel answers from the socket's namespace (not the calling
        thread's). ~2 us where an RTM_GETLINK round trip is 120-300 us."""
        try:
            answer = fcntl.ioctl(self._sock.fileno(), SIOCGIFINDEX, struct.pack("16si", _ifname(name).encode(), 0))
        except OSError as err:
            if err.errno == _errno.ENODEV:
                return None
            raise _error(err.errno or _errno.EIO, f"look up link {name}") from None
        return struct.unpack("16si", answer)[1]

    def batch(self) -> Batch:
        """Changes sent in one write (see Batch)."""
        return Batch(self)

    def del_link(self, name_or_index: str | int, *, missing_ok: bool = True) -> bool:
        """Delete a link (a veth takes its peer along). True if it existed."""
        index, selector = _selector(name_or_index)
        body = _IFINFOMSG.pack(0, 0, index, 0, 0) + selector
        try:
            self._request(RTM_DELLINK, 0, body, f"delete link {name_or_index}")
        except NetlinkNotFound:
            if missing_ok:
                return False
            raise
        return True

    def set_bridge_port(self, index: int, *, hairpin: bool) -> None:
        """Hairpin mode on a bridge port: frames may leave by the port they came in (needed for a
        container reaching itself through a published port)."""
        protinfo = _attr(IFLA_PROTINFO | NLA_F_NESTED, _u8(IFLA_BRPORT_MODE, int(hairpin)))
        body = _IFINFOMSG.pack(AF_BRIDGE, 0, index, 0, 0) + protinfo
        self._request(RTM_SETLINK, 0, body, f"set hairpin {'on' if hairpin else 'off'} on bridge port {index}")

    # --- addresses --------------------------------------------------------------------------------

    def add_addr(self, index: int, cidr: str) -> None:
        """Add an address ("10.0.0.1/24", "fd00::1/64"); already present is fine."""
        what = f"add address {cidr} to link {index}"
        try:
            self._request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, _addr_change(index, cidr, what), what)
        except NetlinkExists:
            pass

    def del_addr(self, index: int, cidr: str, *, missing_ok: bool = True) -> bool:
        what = f"delete address {cidr} from link {index}"
        try:
            self._request(RTM_DELADDR, 0, _addr_change(index, cidr, what), what)
        except NetlinkError as err:
            if missing_ok and err.errno in ADDR_GONE:
                return False
            raise
        return True

    def addrs(self, index: int | None = None) -> list[Addr]:
        body = _IFADDRMSG.pack(0, 0, 0, 0, index or 0)
        found = [_parse_addr(p) for p in self._dump(RTM_GETADDR, body, "list addresses")]
        return [a for a in found if index is None or a.index == index]

    # --- routes -----------------------------------------------------------------------------------

    def _route_message(self, dst: str, gateway: str, oif: int, table: int, metric: int, protocol: int,
                       scope: int, rtype: int, what: str) -> bytes:
        gateway_family, gateway_packed = _pack_ip(gateway, what) if gateway else (0, b"")
        if dst == "default":
            family, packed, prefix = gateway_family or AF_INET, b"", 0
        else:
            family, packed, prefix = _parse_cidr(dst, what)
        if gateway and gateway_family != family:
            raise InvalidArgument(f"cannot {what}: gateway {gateway} is not of the destination's IP version")
        attrs = _attr(RTA_DST, packed) if prefix else b""
        attrs += _attr(RTA_GATEWAY, gateway_packed) if gateway else b""
        attrs += _u32(RTA_OIF, oif) if oif else b""
        attrs += _u32(RTA_PRIORITY, metric) if metric else b""
        attrs += _u32(RTA_TABLE, table)
        header = _RTMSG.pack(family, prefix, 0, 0, table if table < 256 else 0, protocol, scope, rtype, 0)
        return header + attrs

    def add_route(self, dst: str, *, gateway: str = "", oif: int = 0, table: int = RT_TABLE_MAIN,
                  metric: int = 0, protocol: int = RTPROT_BOOT) -> None:
        """Add a route; dst is "default", "0.0.0.0/0", "::/0" or a CIDR. Already present is fine."""
        what = f"add route {dst}" + (f" via {gateway}" if gateway else "") + (f" dev {oif}" if oif else "")
        scope = RT_SCOPE_UNIVERSE if gateway else RT_SCOPE_LINK
        body = self._route_message(dst, gateway, oif, table, metric, protocol, scope, RTN_UNICAST, what)
        try:
            self._request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body, what)
        except NetlinkExists:
            pass

    def del_route(self, dst: str, *, gateway: str = "", oif: int = 0, table: int = RT_TABLE_MAIN,
                  metric: int = 0, missing_ok: bool = True) -> bool:
        """Delete the route matching the given fields (unset ones match anything). True if it existed."""
        what = f"delete route {dst}"
        body = self._route_message(dst, gateway, oif, table, metric, 0, RT_SCOPE_NOWHERE, 0, what)
        try:
            self._request(RTM_DELROUTE, 0, body, what)
        except NetlinkError as err:
            if missing_ok and err.errno in (_errno.ESRCH, _errno.ENOENT, _errno.ENODEV):
                return False
            raise
        return True

    def routes(self, family: int = 0, table: int = RT_TABLE_MAIN) -> list[Route]:
        """Routes of `table` (0: every table) for `family` (0: IPv4 and IPv6)."""
        header = _RTMSG.pack(family, 0, 0, 0, table if 0 < table < 256 else 0, 0, 0, 0, 0)
        try:
            found = self._dump(RTM_GETROUTE, header + (_u32(RTA_TABLE, table) if table else b""), "list routes")
        except NetlinkNotFound:  # the table does not exist (yet)
            return []
        wanted = (family,) if family else (AF_INET, AF_INET6)  # AF_UNSPEC also dumps multicast routing
        return [r for r in map(_parse_route, found) if r.family in wanted and (not table or r.table == table)]

    # --- neighbours and FDB (VXLAN overlay) ---------------------------------------------------------

    def neigh_replace(self, index: int, ip: str, mac: str) -> None:
        """Permanent ARP/NDP entry: `ip` is at `mac` on link `index`."""
        what = f"set neighbour {ip} at {mac} on link {index}"
        family, packed = _pack_ip(ip, what)
        body = _NDMSG.pack(family, index, NUD_PERMANENT, 0, 0) + _attr(NDA_DST, packed)
        self._request(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, body + _attr(NDA_LLADDR, _pack_mac(mac)), what)

    def neigh_del(self, index: int, ip: str, *, missing_ok: bool = True) -> bool:
        what = f"delete neighbour {ip} on link {index}"
        family, packed = _pack_ip(ip, what)
        return self._delete_neigh(_NDMSG.pack(family, index, 0, 0, 0) + _attr(NDA_DST, packed), what, missing_ok)

    def neighs(self, index: int | None = None, family: int = 0) -> list[Neigh]:
        found: list[Neigh] = []
        for fam in (family,) if family else (AF_INET, AF_INET6):
            body = _NDMSG.pack(fam, 0, 0, 0, 0) + (_u32(NDA_IFINDEX, index) if index else b"")
            found += map(_parse_neigh, self._dump(RTM_GETNEIGH, body, "list neighbours"))
        return [n for n in found if index is None or n.index == index]

    def fdb_replace(self, index: int, mac: str, dst_ip: str) -> None:
        """Static FDB entry on a VXLAN device: frames for `mac` go to the VTEP at `dst_ip`."""
        what = f"set fdb entry {mac} to {dst_ip} on link {index}"
        _, packed = _pack_ip(dst_ip, what)
        body = _NDMSG.pack(AF_BRIDGE, index, NUD_PERMANENT, NTF_SELF, 0) + _attr(NDA_LLADDR, _pack_mac(mac))
        self._request(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, body + _attr(NDA_DST, packed), what)

    def bridge_fdb_static(self, port_index: int, mac: str) -> None:
        """A static entry in the bridge's FDB (`bridge fdb replace MAC dev PORT master static`): frames
        for `mac` go to that port, learnt or not. It goes away with the port."""
        what = f"set bridge fdb entry {mac} on port {port_index}"
        body = _NDMSG.pack(AF_BRIDGE, port_index, NUD_NOARP, NTF_MASTER, 0) + _attr(NDA_LLADDR, _pack_mac(mac))
        self._request(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, body, what)

    def fdb_del(self, index: int, mac: str, dst_ip: str = "", *, missing_ok: bool = True) -> bool:
        what = f"delete fdb entry {mac} on link {index}"
        body = _NDMSG.pack(AF_BRIDGE, index, 0, NTF_SELF, 0) + _attr(NDA_LLADDR, _pack_mac(mac))
        body += _attr(NDA_DST, _pack_ip(dst_ip, what)[1]) if dst_ip else b""
        return self._delete_neigh(body, what, missing_ok)

    def fdbs(self, index: int) -> list[Neigh]:
        body = _NDMSG.pack(AF_BRIDGE, index, 0, 0, 0)  # strict dumps filter on ndm_ifindex
        found = map(_parse_neigh, self._dump(RTM_GETNEIGH, body, f"list fdb of link {index}"))
        return [n for n in found if n.index == index]

    def _delete_neigh(self, body: bytes, what: str, missing_ok: bool) -> bool:
        try:
            self._request(RTM_DELNEIGH, 0, body, what)
        except NetlinkError as err:
            if missing_ok and err.errno in (_errno.ENOENT, _errno.ENODEV):
                return False
            raise
        return True


def _refusal(reply_flags: int, payload: bytes, what: str) -> NetlinkError | None:
    """The error an NLMSG_ERROR carries, or None for an ACK."""
    code = -struct.unpack_from("=i", payload)[0]
    if not code:
        return None
    # With NETLINK_CAP_ACK only the request's header is echoed (capped); TLVs follow it.
    skip = _NLMSGHDR.size if reply_flags & NLM_F_CAPPED else _pad(struct.unpack_from("=I", payload, 4)[0])
    return _error(code, what, _extack(reply_flags, payload, 4 + skip))

