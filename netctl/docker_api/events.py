"""The Docker API's event bus: what `docker events` and compose watch.

Handlers publish (type, action, actor id, attributes) as they act; each `/events` request subscribes
and reads its own bounded queue. A recent history (bounded) serves `since` without a store: events of
before the agent started are not kept, as netctl keeps no event log.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

HISTORY = 1024  # events kept for `since`
QUEUE_SIZE = 4096  # a subscriber slower than this loses the oldest events, never blocks a publisher


@dataclass(frozen=True)
class Event:
    type: str
    action: str
    actor_id: str
    attributes: dict[str, str] = field(default_factory=dict)
    time_nano: int = 0

    def to_docker(self) -> dict[str, Any]:
        seconds = self.time_nano // 1_000_000_000
        out: dict[str, Any] = {
            "Type": self.type,
            "Action": self.action,
            "Actor": {"ID": self.actor_id, "Attributes": dict(self.attributes)},
            "scope": "local",
            "time": seconds,
            "timeNano": self.time_nano,
        }
        if self.type == "container":  # the pre-1.22 fields the CLI's default format still reads
            out.update({"status": self.action, "id": self.actor_id, "from": self.attributes.get("image", "")})
        return out


class Subscription:
    def __init__(self, bus: EventBus):
        self._bus = bus
        self._queue: queue.Queue[Event] = queue.Queue(QUEUE_SIZE)

    def put(self, event: Event) -> None:
        while True:
            try:
                self._queue.put_nowait(event)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    pass

    def get(self, timeout: float) -> Event | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self._bus._unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Subscription] = []
        self._history: collections.deque[Event] = collections.deque(maxlen=HISTORY)

    def publish(self, type: str, action: str, actor_id: str, attributes: dict[str, Any] | None = None) -> None:
        event = Event(type, action, actor_id, {str(k): str(v) for k, v in (attributes or {}).items()},
                      time.time_ns())
        with self._lock:
            self._history.append(event)
            subscribers = list(self._subscribers)
        for sub in subscribers:
            sub.put(event)

    def subscribe(self, since_nano: int | None = None) -> tuple[Subscription, list[Event]]:
        """A new subscription and the kept events at or after `since_nano` (none when None), taken
        atomically so that no event falls between the two."""
        sub = Subscription(self)
        with self._lock:
            self._subscribers.append(sub)
            past = [] if since_nano is None else [e for e in self._history if e.time_nano >= since_nano]
        return sub, past

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)

    def history(self) -> Iterator[Event]:
        with self._lock:
            return iter(list(self._history))
