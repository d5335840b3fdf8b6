"""Which handler answers a request: every API module's ROUTES, and dockerd's version negotiation.

A module lists `ROUTES = [(METHOD, path regex with named groups, handler), ...]`; the regex matches
the path without its /v1.NN prefix. A path no route matches is 404 "page not found"; a path that some
route matches under another method is 405, as dockerd answers.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

from netctl.docker_api.http import ApiError, version_tuple

# The newest API version served (Docker 27.x), and the oldest: docker CLI 20.10 speaks 1.41 and
# negotiates down to the server's; docker-py 7 and compose 1.29 ask 1.24 at least.
MAX_VERSION = "1.47"
MIN_VERSION = "1.24"

MODULES = ("system", "networks", "volumes", "images", "images_transfer", "containers", "archive", "exec")

_VERSION_PREFIX = re.compile(r"^/v(\d+\.\d+)(/.*)$")

Handler = Callable[..., Any]


def split_version(path: str) -> tuple[str, str]:
    """(negotiated version, path without its prefix). Too old or too new: 400 with dockerd's words."""
    match = _VERSION_PREFIX.match(path)
    if match is None:
        return MAX_VERSION, path
    version, rest = match.group(1), match.group(2)
    if version_tuple(version) > version_tuple(MAX_VERSION):
        raise ApiError(400, f"client version {version} is too new. Maximum supported API version is {MAX_VERSION}")
    if version_tuple(version) < version_tuple(MIN_VERSION):
        raise ApiError(400, f"client version {version} is too old. Minimum supported API version is "
                            f"{MIN_VERSION}, please upgrade your client to a newer version")
    return version, rest


class Router:
    def __init__(self, modules: tuple[str, ...] = MODULES):
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []
        for name in modules:
            module = importlib.import_module(f"netctl.docker_api.{name}")
            for method, pattern, handler in getattr(module, "ROUTES", []):
                self.routes.append((method.upper(), re.compile(f"^{pattern}$"), handler))

    def find(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        other_method = False
        for route_method, pattern, handler in self.routes:
            match = pattern.match(path)
            if match is None:
                continue
            if route_method == method or (method == "HEAD" and route_method == "GET"):
                return handler, match.groupdict()
            other_method = True
        if other_method:
            raise ApiError(405, f"method {method} is not allowed on {path}")
        raise ApiError(404, "page not found")
