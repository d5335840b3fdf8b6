"""What the container endpoints share (containers.py, containers_io.py, containers_stats.py, exec.py):
the monitor request, finding a container as Docker does, its live endpoints, its events."""

from __future__ import annotations

import signal
import threading
from typing import Any

from libnetwork.errors import NetctlError, NotFound
from netctl.docker_api.http import bad_request, not_found

ID = r"(?P<ref>[^/]+)"


def monitor_call(api, request: dict) -> dict:
    """One request to the host's monitor (started if none runs); its errors raise as NetctlError."""
    from runner import client

    return client.call(api.layout, request)


def find(api, ref: str):
    """The container by id, name or id prefix, or Docker's 404 'No such container'."""
    from runner.state import Records

    try:
        return Records(api.layout).find(ref.lstrip("/"))
    except NotFound:
        raise not_found(f"No such container: {ref}") from None
    except NetctlError as err:
        raise bad_request(err.message) from None


def live_networks(api, container) -> dict[str, dict]:
    """Endpoint views of a running container, read now (network connect/disconnect change them)."""
    if container.state.status != "running" or not container.config.sandbox_id:
        return {}
    from runner.lifecycle import Runtime

    try:
        with api.controller() as ctl:
            return Runtime(api.layout, ctl).network_views(container.config)
    except NetctlError:
        return dict(container.state.networks or {})


def attributes(container, **extra: Any) -> dict:
    """An event's Actor.Attributes: the image, the name and the labels, as dockerd sends them."""
    return {**container.config.labels, "image": container.config.image, "name": container.config.name, **extra}


def publish(api, container, action: str, **extra: Any) -> None:
    api.events.publish("container", action, container.id, attributes(container, **extra))


def watch_exit(api, container) -> None:
    """Publish `die` (with the exit code) when a container the API started exits; a thread per
    container waiting on the monitor, ended by the exit (or by the agent stopping)."""

    def wait() -> None:
        try:
            event = monitor_call(api, {"op": "wait", "ref": container.id, "condition": "not-running"})
        except NetctlError:
            return
        publish(api, container, "die", exitCode=event.get("code", 0))

    threading.Thread(target=wait, name=f"die-{container.id[:12]}", daemon=True).start()


def signal_number(text: str | None, default: int) -> int:
    if not text:
        return default
    name = text.upper()
    if name.isdigit():
        number = int(name)
        if 1 <= number < signal.NSIG:
            return number
    else:
        name = name if name.startswith("SIG") else "SIG" + name
        if hasattr(signal.Signals, name):
            return int(signal.Signals[name])
    raise bad_request(f"invalid signal: {text}")
