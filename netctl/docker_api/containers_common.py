"""What the container endpoints share (containers.py, containers_io.py, containers_stats.py, exec.py):
the monitor request, finding a container as Docker does, its live endpoints, its events."""

from __future__ import annotations

import os
import threading
from typing import Any

from libnetwork.errors import NetctlError, NotFound
from netctl.docker_api.http import bad_request, not_found

ID = r"(?P<ref>[^/]+)"
RESTART_WATCH_S = 70.0  # longer than the restart back-off's maximum (runner/restart.py)


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


LINKS_GONE_S = 3.0


def await_links_gone(event: dict, timeout: float = LINKS_GONE_S) -> None:
    """After an exit the monitor answers before the kernel has removed the container's veth pairs
    (runner/lifecycle.py lets the namespace's end take them); dockerd answers stop, rm and wait after
    its endpoints are gone, and clients check right away (compose down, then nothing may be left)."""
    import os
    import time

    names = [n for n in event.get("links") or [] if isinstance(n, str) and "/" not in n]
    deadline = time.monotonic() + timeout
    delay = 0.002
    while names and time.monotonic() < deadline:
        names = [n for n in names if os.path.exists(f"/sys/class/net/{n}")]
        if names:
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def attributes(container, **extra: Any) -> dict:
    """An event's Actor.Attributes: the image, the name and the labels, as dockerd sends them."""
    return {**container.config.labels, "image": container.config.image, "name": container.config.name, **extra}


def publish(api, container, action: str, **extra: Any) -> None:
    api.events.publish("container", action, container.id, attributes(container, **extra))


def monitor_events(session):
    """The JSON events of a monitor session (output frames and descriptors dropped)."""
    from runner import protocol

    for kind, payload, fds in session.frames():
        for fd in fds:
            os.close(fd)
        if kind == protocol.JSON:
            yield protocol.loads(payload)


def arm_exit_watch(api, container):
    """A `next-exit` wait registered with the monitor before a start (the monitor acks it), for the
    start's watch_exit: a container that exits at once (`run --rm ... true`), and is auto-removed, before
    a waiter registered after the start could ask, would otherwise end with no die and no destroy.
    None when a watcher already follows the container (it follows this start too)."""
    from runner import client, protocol

    if watched(api, container.id):
        return None
    session = client.Session(api.layout, {"op": "wait", "ref": container.id, "condition": "next-exit", "ack": True})
    try:
        first = next(monitor_events(session), None)
        if first is None or first.get("event") != "waiting":
            if first is not None and first.get("event") == "error":
                protocol.raise_error(first)
            raise NetctlError("the container monitor did not register the wait; see its log")
    except BaseException:
        session.close()
        raise
    return session


def _armed_exit(session) -> dict:
    """The exit an armed wait (arm_exit_watch) reports; errors raised as NetctlError."""
    from runner import protocol

    try:
        for event in monitor_events(session):
            if event.get("event") == "error":
                protocol.raise_error(event)
            if event.get("event") != "waiting":
                return event
        raise NetctlError("the container monitor closed the connection without answering; see its log")
    finally:
        session.close()


def watch_exit(api, container, armed=None) -> None:
    """Publish `die` (with the exit code) when a container the API started exits, and, while its
    restart policy starts it again, `start` and the next `die`: a thread per container waiting on the
    monitor, ended by an exit for good, its removal or the agent stopping. `armed`: the start's wait
    from arm_exit_watch, registered before the start (its first exit is read from there)."""

    def watch() -> None:
        from runner.state import Records

        records = Records(api.layout)
        fresh = records.load(container.id)
        last_start = fresh.state.started if fresh is not None else ""
        count = fresh.state.restart_count if fresh is not None else 0
        policy = container.config.restart not in ("", "no")
        for _ in range(10_000):  # bounded: a container restarted this often has long back-offs
            try:
                if first_exit:  # the start's own exit, from the wait armed before it
                    event = _armed_exit(first_exit.pop())
                else:
                    event = monitor_call(api, {"op": "wait", "ref": container.id, "condition": "not-running"})
            except NetctlError:
                return
            if container.id in removing(api):  # docker rm -f: the request publishes kill, die, destroy
                removing(api).discard(container.id)
                return
            publish(api, container, "die", exitCode=event.get("code", 0))
            if container.id in stopping(api):  # a stop request ended it: "stop" follows "die"
                stopping(api).discard(container.id)
                publish(api, container, "stop")
            for tick in range(int(RESTART_WATCH_S * 10)):  # a restart policy's back-off is at most a minute
                current = records.load(container.id)
                if current is None:
                    if container.config.auto_remove:  # --rm: the monitor removed it
                        publish(api, container, "destroy")
                    return
                if current.state.started != last_start:
                    # started again: by the policy (its count grows: publish; it may have exited again
                    # already) or by a client (which published its own start): watch this run too
                    if current.state.restart_count > count:
                        publish(api, current, "start")
                    last_start, count = current.state.started, current.state.restart_count
                    break
                # The monitor marks "restarting" just after it answers the wait: a moment's grace.
                settling = policy and tick < 10 and current.state.status == "exited"
                if current.state.status != "restarting" and not settling:
                    with lock:  # atomic with watch_exit's check: a start now gets a watcher of its own
                        if records.load(container.id) is None or _same_run(records, container.id, last_start):
                            active.discard(container.id)
                            return
                    continue
                if api.stopping.wait(0.1):
                    return
            else:
                return

    active: set[str] = api.__dict__.setdefault("container_watchers", set())
    lock: threading.Lock = api.__dict__.setdefault("container_watchers_lock", threading.Lock())
    with lock:
        if container.id in active:
            if armed is not None:
                armed.close()
            return  # one watcher per container: it follows this start too
        active.add(container.id)
    first_exit = [armed] if armed is not None else []

    def watch_once() -> None:
        try:
            watch()
        finally:
            with lock:
                active.discard(container.id)

    threading.Thread(target=watch_once, name=f"die-{container.id[:12]}", daemon=True).start()


def stopping(api) -> set[str]:
    """Containers a stop request is ending (their watcher publishes "stop" after "die")."""
    return api.__dict__.setdefault("container_stops", set())


def removing(api) -> set[str]:
    """Watched containers a remove request is ending (their watcher publishes nothing more)."""
    return api.__dict__.setdefault("container_removals", set())


def watched(api, container_id: str) -> bool:
    return container_id in api.__dict__.get("container_watchers", set())


def _same_run(records, container_id: str, started: str) -> bool:
    current = records.load(container_id)
    return current is not None and current.state.started == started


def signal_number(text: str | None, default: int) -> int:
    from libnetwork.errors import InvalidArgument
    from runner.spec import parse_signal

    if not text:
        return default
    try:
        return parse_signal(text)
    except InvalidArgument:
        raise bad_request(f"invalid signal: {text}") from None
