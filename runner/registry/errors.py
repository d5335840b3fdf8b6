"""Registry errors, in libnetwork's hierarchy (one line each: what, which object, what to do)."""

from __future__ import annotations

from libnetwork.errors import InvalidArgument, NetctlError, NotFound


class RegistryError(NetctlError):
    """The registry could not be reached or answered something unusable (exit 1)."""


class AuthError(RegistryError):
    """Credentials missing or wrong, or access denied."""


class ImageNotFound(NotFound):
    """No such repository, tag or digest in the registry."""


class DigestMismatch(RegistryError):
    """A manifest or blob does not hash to the digest it was asked for (tampered or corrupt)."""


class Unsupported(InvalidArgument):
    """A manifest kind netctl refuses (schema 1) or a platform the index lacks."""
