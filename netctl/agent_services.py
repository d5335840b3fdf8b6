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
    starters.append(("containers left running", settle_left_containers))
    return starters


def settle_left_containers(root: str, options: Any, stopping: threading.Event) -> None:
    """Like dockerd at its start: containers an earlier boot (or a killed monitor) left "running" are
    settled by the container monitor (runner/monitor_adopt.py): dead ones marked exited (255) and torn
    down, the ones whose restart policy says so (always, unless-stopped, on-failure) started again.
    Before, they waited for the first container command after a reboot, and `netctl ps` showed them
    Up meanwhile. The monitor is started only when such a record exists and none runs; an agent
    started on first use leaves it to that first use (its command is often a container's)."""
    if getattr(options, "auto", False):
        return None
    from libnetwork import ipc
    from runner import client
    from runner.paths import Layout
    from runner.state import RESTARTING, RUNNING, Records

    layout = Layout(root)
    left = [c.name for c in Records(layout).all() if c.state.status in (RUNNING, RESTARTING)]
    if not left:
        return None
    monitor = ipc.try_connect(layout.monitor_socket)
    if monitor is not None:  # it runs (the agent alone was restarted): it watches them already
        monitor.close()
        return None
    client.spawn_monitor(layout)
    log.info("containers left running by an earlier boot or a monitor that was killed (%s): the container "
             "monitor was started to settle them and apply their restart policies", ", ".join(sorted(left)))
    return None


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
