"""rtnetlink spoken directly over a NETLINK_ROUTE socket, with the standard library only.

Why not pyroute2 here: importing it costs ~130 ms, more than a whole CNI ADD may take. pyroute2 stays
for tests (to cross-check what the kernel holds) and for cold paths.

    codec.py      the wire format: constants, message and attribute layout, the records replies
                  decode into (Link, Route, Addr, Neigh), the errors refusals become
    rtnetlink.py  Netlink: one socket (request/ACK, dumps) and the operations on links, addresses,
                  routes, neighbours and FDB entries

What callers use is importable from here (``from libnetwork.netlink import Netlink``); the protocol's
constants are in codec.py.
"""

from libnetwork.netlink.codec import NetlinkError, NetlinkExists, NetlinkNotFound
from libnetwork.netlink.rtnetlink import Addr, Link, Neigh, Netlink, Route

__all__ = ["Addr", "Link", "Neigh", "Netlink", "NetlinkError", "NetlinkExists", "NetlinkNotFound", "Route"]
