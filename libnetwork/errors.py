"""One exception hierarchy for all of netctl.

Every error a user can cause maps to a CLI exit code and a CNI error code, and its message is one
line: what is wrong, which object, and what to do. Front ends print ``str(err)`` and exit with
``err.exit_code``; CNI plugins send ``err.cni_code`` in the spec's error JSON.
"""

from __future__ import annotations

# CNI spec error codes (SPEC.md "Error" section).
CNI_UNKNOWN = 0
CNI_INCOMPATIBLE_VERSION = 1
CNI_UNSUPPORTED_FIELD = 2
CNI_UNKNOWN_CONTAINER = 3
CNI_INVALID_ENV = 4
CNI_IO_FAILURE = 5
CNI_DECODING_FAILURE = 6
CNI_INVALID_CONFIG = 7
CNI_INVALID_NETNS = 8
CNI_TRY_AGAIN = 11
CNI_INTERNAL = 999


class NetctlError(Exception):
    """Base of every error netctl reports to a user."""

    exit_code = 1
    cni_code = CNI_INTERNAL

    def __init__(self, message: str, *, details: str = ""):
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidArgument(NetctlError):
    """The request itself is wrong: bad name, CIDR, option, flag combination."""

    exit_code = 2
    cni_code = CNI_INVALID_CONFIG


class NotFound(NetctlError):
    """A named network, endpoint or sandbox does not exist."""

    exit_code = 3
    cni_code = CNI_UNKNOWN_CONTAINER


class AlreadyExists(NetctlError):
    """A name or address is already taken."""

    exit_code = 4
    cni_code = CNI_INVALID_CONFIG


class InUse(NetctlError):
    """The object is still used (a network with endpoints, an address in use)."""

    exit_code = 5
    cni_code = CNI_INVALID_CONFIG


class Overlap(InvalidArgument):
    """A subnet clashes with another network or with a route of the host."""


class PoolExhausted(NetctlError):
    """No address or subnet left to hand out."""

    exit_code = 6
    cni_code = CNI_INTERNAL


class KernelError(NetctlError):
    """The kernel refused an operation (netlink, nftables, mount, sysctl)."""

    exit_code = 7
    cni_code = CNI_INTERNAL


class StoreError(NetctlError):
    """The state store is unreadable, of an unknown schema, or locked for too long."""

    exit_code = 8
    cni_code = CNI_TRY_AGAIN
