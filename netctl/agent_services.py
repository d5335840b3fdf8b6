"""What the host agent serves besides ROOT/netctl.sock: the embedded DNS server (netctl/dns/) and
the Docker Engine API (netctl/docker_api/). Each is started here, after repair and before the request
server, and stopped in reverse order when the agent stops.

A starter takes (root, options, stopping) and returns an object with stop(), or None when it has
nothing to serve. A starter that fails logs one line and the agent goes on without that service: the
netctl protocol and CNI requests must not depend on DNS or the Docker API being up.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger("netctl.daemon")


class Service(Protocol):
    def stop(self) -> None: ...


Starter = Callable[[str, Any, threading.Event], "Service | None"]


def _starters() -> list[tuple[str, Starter]]:
    """(name, starter), in start order. Imported here, not at the top: each service's imports are
    its own and a failing import costs only that service."""
    starters: list[tuple[str, Starter]] = []
    from netctl.dns import service as dns_service

    starters.append(("embedded DNS", dns_service.start))
    from netctl.docker_api import server as docker_api_server

    starters.append(("Docker Engine API", docker_api_server.start))
    return starters


def start_all(root: str, options: Any, stopping: threading.Event) -> list[Service]:
    started: list[Service] = []
    for name, starter in _starters():
        try:
            service = starter(root, options, stopping)
        except Exception as err:  # noqa: BLE001  one service failing must not take the agent down
            log.error("%s not served: %s", name, err)
            continue
        if service is not None:
            started.append(service)
    return started


def stop_all(services: list[Service]) -> None:
    for service in reversed(services):
        try:
            service.stop()
        except Exception as err:  # noqa: BLE001
            log.warning("stopping %s: %s", type(service).__name__, err)
