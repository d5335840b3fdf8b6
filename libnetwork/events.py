"""Library events: what front ends (and later the agent's DNS) learn after an operation commits.

An operation emits its events after its transaction has committed, so a subscriber sees the store as
the operation left it and may use the controller itself (read, or take the store's lock). Subscribers
run in the emitting thread, in the order they subscribed. A subscriber that raises is logged and does
not fail the operation, nor keep the other subscribers from running: the operation has happened.

Kinds:

    names-changed    the names reachable from some sandboxes changed: after connect, disconnect,
                     `network rm -f`, sandbox removal, CNI attach/detach, and an overlay reconcile
                     (remote endpoints come and go). network_ids None: any network (a full resync).
    endpoint-joined  an endpoint was connected (event.endpoints holds it, with its addresses and aliases)
    endpoint-left    an endpoint was disconnected or removed with its sandbox or network
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from libnetwork.model import Endpoint

NAMES_CHANGED = "names-changed"
ENDPOINT_JOINED = "endpoint-joined"
ENDPOINT_LEFT = "endpoint-left"
KINDS = (NAMES_CHANGED, ENDPOINT_JOINED, ENDPOINT_LEFT)


@dataclass(frozen=True)
class Event:
    kind: str
    network_ids: frozenset[str] | None  # None: any network may be concerned (a full resync)
    sandbox_ids: frozenset[str] = frozenset()
    endpoints: tuple["Endpoint", ...] = ()  # the endpoints joined or left (names, aliases, addresses)


Subscriber = Callable[[Event], None]


class Events:
    """One controller's subscribers, by kind."""

    def __init__(self) -> None:
        self._subscribers: dict[str, list[Subscriber]] = {}

    def subscribe(self, kind: str, callback: Subscriber) -> Callable[[], None]:
        """Call `callback(event)` after each operation that emits `kind`; returns the unsubscribe."""
        if kind not in KINDS:
            from libnetwork.errors import InvalidArgument

            raise InvalidArgument(f"unknown event kind {kind!r}; kinds: {', '.join(KINDS)}")
        self._subscribers.setdefault(kind, []).append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers.get(kind, []):
                self._subscribers[kind].remove(callback)

        return unsubscribe

    def wanted(self) -> bool:
        """Whether anyone listens (an operation skips building its events otherwise)."""
        return any(self._subscribers.values())

    def emit(self, event: Event) -> None:
        for callback in list(self._subscribers.get(event.kind, ())):
            try:
                callback(event)
            except Exception:  # noqa: BLE001 - the operation committed: a subscriber cannot undo it
                import logging

                logging.getLogger(__name__).exception("subscriber of %s events failed", event.kind)

    def endpoints_changed(self, kind: str, endpoints: Iterable["Endpoint"], *, names: bool = True) -> None:
        """`kind` (joined or left) for `endpoints`, then names-changed for their networks and sandboxes."""
        endpoints = tuple(endpoints)
        if not endpoints or not self.wanted():
            return
        networks = frozenset(e.network_id for e in endpoints)
        sandboxes = frozenset(e.sandbox_id for e in endpoints if e.sandbox_id)
        self.emit(Event(kind, networks, sandboxes, endpoints))
        if names:
            self.emit(Event(NAMES_CHANGED, networks, sandboxes, endpoints))
