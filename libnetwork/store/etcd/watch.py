"""Watches of a key prefix, and a local mirror kept equal to etcd's by one."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Self

from libnetwork.errors import StoreError
from libnetwork.store.etcd.client import (
    DEFAULT_TIMEOUT_S,
    Compacted,
    _decode_kv,
    _Etcd,
    _key_b64,
)
from libnetwork.store.etcd.failures import _FailureRun
from libnetwork.store.etcd.keys import prefix_end

log = logging.getLogger(__name__)

WATCH_IDLE_S = 30.0  # a quiet watch stream is re-opened after this long (cheap; catches dead connections)


@dataclass
class WatchEvent:
    kind: str  # "put" | "delete"
    key: str
    value: Any  # decoded JSON; None for a delete
    revision: int  # the etcd revision that made the change
    prev_value: Any = None



class Watch:
    """One watch stream on a key prefix, from a revision on. Iterate for batches of events (one batch
    never splits an etcd revision); `close()` from any thread ends the iteration.

    etcd3gw's own Watcher drops `compact_revision` and `canceled`, without which a watcher cannot tell
    that it missed history, so the stream is read here (through etcd3gw's session and URL).
    The iteration also ends, quietly, after `idle_timeout` seconds without a message: the caller opens
    a new watch from its last revision, which also replaces a connection that died without a word.
    """

    def __init__(self, url: str, prefix: str, start_revision: int, *, idle_timeout: float = WATCH_IDLE_S,
                 timeout: float = DEFAULT_TIMEOUT_S):
        self.prefix = prefix
        self.start_revision = start_revision
        self.last_revision = start_revision - 1  # every change up to here has been delivered
        self._etcd = _Etcd(url, timeout)
        self._closed = threading.Event()
        self._response: Any = None  # a requests.Response once the watch is open
        body: dict[str, Any] = {"create_request": {"key": _key_b64(prefix), "range_end": _key_b64(prefix_end(prefix)),
                                   "start_revision": start_revision, "prev_kv": True}}
        import requests

        try:
            self._response = self._etcd.client.session.post(
                self._etcd.url_for("/watch"), json=body, stream=True, timeout=(timeout, idle_timeout)
            )
        except requests.RequestException as err:
            self._etcd.close()
            raise self._etcd.unreachable(err) from None
        except BaseException:
            self._etcd.close()
            raise
        if self._response.status_code != 200:
            text = self._response.text
            self.close()
            raise StoreError(f"etcd at {self._etcd.url} refused a watch on {prefix}: {text.strip()}")

    def __iter__(self) -> Iterator[list[WatchEvent]]:
        import requests

        try:
            for line in self._response.iter_lines():
                if not line.strip():
                    continue
                batch = self._parse(json.loads(line))
                if batch:
                    self.last_revision = max(self.last_revision, max(e.revision for e in batch))
                    yield batch
        except requests.RequestException as err:
            if self._closed.is_set() or "timed out" in str(err).lower():
                return
            raise self._etcd.unreachable(err) from None
        except (AttributeError, ValueError, OSError) as err:  # the socket was shut under us by close()
            if self._closed.is_set():
                return
            raise StoreError(f"watch on etcd at {self._etcd.url} broke: {err}") from None
        if not self._closed.is_set():
            raise StoreError(
                f"etcd at {self._etcd.url} is unreachable: it closed the watch stream; start it or pass --store"
            )

    def _parse(self, message: dict[str, Any]) -> list[WatchEvent]:
        if "error" in message:
            raise StoreError(f"etcd at {self._etcd.url} broke the watch on {self.prefix}: {message['error']}")
        result = message.get("result", {})
        compact = int(result.get("compact_revision", 0) or 0)
        if compact:
            raise Compacted(
                f"etcd at {self._etcd.url} compacted history up to revision {compact}, past revision "
                f"{self.start_revision} this watch resumed from; re-read everything",
                compact_revision=compact,
            )
        if result.get("canceled"):
            raise StoreError(f"etcd at {self._etcd.url} cancelled the watch on {self.prefix}: "
                             f"{result.get('cancel_reason', 'no reason given')}")
        events = []
        for raw in result.get("events", []):
            kv = _decode_kv(raw["kv"])
            prev = _decode_kv(raw["prev_kv"]).value if raw.get("prev_kv") else None
            kind = "delete" if raw.get("type") == "DELETE" else "put"
            events.append(WatchEvent(kind, kv.key, kv.value if kind == "put" else None, kv.mod_revision, prev))
        return events

    def close(self) -> None:
        """Idempotent; safe from another thread while one iterates."""
        if self._closed.is_set():
            return
        self._closed.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                import socket

                # Shut the socket itself: closing the response object alone does not wake a reader
                # blocked in recv() on another thread.
                sock = socket.socket(fileno=_dup_fd(response))
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            with contextlib.suppress(Exception):
                response.close()
        self._etcd.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _dup_fd(response: Any) -> int:
    import os

    return os.dup(response.raw.fileno())


class PrefixMirror:
    """A local copy of every key under a prefix, kept equal to etcd's: what a reconcile loop reads.

    `follow()` runs until `stop()`: it reads the whole prefix, then watches from the next revision; a
    lost connection (etcd restarted) is re-watched from the last revision seen, so nothing in between
    is missed; a compaction past that revision forces a full re-read (resync), so deletes that happened
    meanwhile are not missed either. `on_change(mirror, events)` is called after each applied batch,
    with events None after a full (re)read.
    """

    def __init__(self, url: str, prefix: str, *, idle_timeout: float = WATCH_IDLE_S,
                 retry_min_s: float = 0.1, retry_max_s: float = 2.0, timeout: float = DEFAULT_TIMEOUT_S):
        self.url = url
        self.prefix = prefix
        self.items: dict[str, Any] = {}
        self.revision = 0  # everything up to this revision is reflected in items
        self.resyncs = 0  # full reads so far (the first one included)
        self.reconnects = 0  # watches re-opened after an error
        self._idle_timeout = idle_timeout
        self._retry = (retry_min_s, retry_max_s)
        self._timeout = timeout
        self._stop = threading.Event()
        self._watch: Watch | None = None
        self._lock = threading.Lock()

    def resync(self) -> None:
        etcd = _Etcd(self.url, self._timeout)
        try:
            kvs, revision = etcd.range(self.prefix, end=prefix_end(self.prefix), what=f"a read of {self.prefix}")
        finally:
            etcd.close()
        self.items = {kv.key: kv.value for kv in kvs}
        self.revision = revision
        self.resyncs += 1

    def apply(self, events: list[WatchEvent]) -> None:
        # Copy, change, swap: a reader in another thread always sees a whole dict, old or new.
        items = dict(self.items)
        for event in events:
            if event.kind == "put":
                items[event.key] = event.value
            else:
                items.pop(event.key, None)
        self.items = items
        self.revision = max([self.revision] + [e.revision for e in events])

    def follow(self, on_change: Callable[[PrefixMirror, list[WatchEvent] | None], None]) -> None:
        """Keep the mirror in step until stop(); store errors are logged and retried with capped
        backoff (an exception raised by on_change ends the loop: the caller owns its own failures).
        A mirror that has been read already (revision > 0) continues from there."""
        need_resync = self.revision == 0
        delay = self._retry[0]
        failures = _FailureRun(f"watch on {self.prefix}")
        while not self._stop.is_set():
            try:
                if need_resync:
                    self.resync()
                    need_resync = False
                    failures.succeeded()
                    on_change(self, None)
                watch = Watch(self.url, self.prefix, self.revision + 1, idle_timeout=self._idle_timeout,
                              timeout=self._timeout)
                failures.succeeded()  # etcd answered the watch
                with self._lock:
                    self._watch = watch
                if self._stop.is_set():
                    watch.close()
                with watch:
                    for events in watch:
                        self.apply(events)
                        delay = self._retry[0]
                        on_change(self, events)
            except Compacted as err:
                log.info("%s", err)
                need_resync = True
            except StoreError as err:
                failures.failed(err, f"retrying in {delay:.1f} s")
                self.reconnects += 1
                self._stop.wait(delay)
                delay = min(delay * 2, self._retry[1])
            finally:
                with self._lock:
                    self._watch = None

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            if self._watch is not None:
                self._watch.close()

