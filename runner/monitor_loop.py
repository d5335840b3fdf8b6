"""The monitor's event loop: one selector on the main thread (sockets, pipes, pidfds, the wake pipe that
SIGCHLD and other threads write to), timers, and one worker thread for the slow, blocking steps.

Threads: the main thread runs the loop and is the only one that touches the monitor's bookkeeping; the
worker runs the slow steps (store transactions, netlink, mounts, fork) in order, and hands results back
to the main thread through call_soon(). Kept apart from what the monitor does with the events
(runner/monitor_clients.py, runner/monitor_watch.py, runner/monitor.py) because this part knows
nothing of containers or clients.
"""

from __future__ import annotations

import heapq
import logging
import os
import queue
import selectors
import signal
import threading
import time
from typing import Callable

log = logging.getLogger("netctl.monitor")


class EventLoop:
    """Selector registrations carry (kind, object): "wake" is the loop's own; every other kind goes to
    _event(), which the layers above implement."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.timers: list[tuple[float, int, Callable[[], None]]] = []
        self.timer_seq = 0
        self.calls: queue.SimpleQueue = queue.SimpleQueue()
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.running = True

    def call_soon(self, fn: Callable[[], None]) -> None:
        """From any thread: run fn on the main thread."""
        self.calls.put(fn)
        try:
            os.write(self.wake_w, b"c")
        except BlockingIOError:
            pass

    def submit(self, job: Callable[[], None]) -> None:
        """Run job on the worker thread (in submission order)."""
        self.jobs.put(job)

    def later(self, delay: float, fn: Callable[[], None]) -> None:
        self.timer_seq += 1
        heapq.heappush(self.timers, (time.monotonic() + delay, self.timer_seq, fn))

    def start_worker(self) -> None:
        self.selector.register(self.wake_r, selectors.EVENT_READ, ("wake", None))
        threading.Thread(target=self._worker, name="worker", daemon=True).start()

    def _worker(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])  # SIGCHLD is the main thread's
        while True:
            job = self.jobs.get()
            if job is None:
                return
            try:
                job()
            except Exception:  # noqa: BLE001 - a bug in one job must not stop the others
                log.exception("worker job failed")

    # --- the loop -------------------------------------------------------------------------------

    def _tick(self) -> None:
        timeout = None
        if self.timers:
            timeout = max(0.0, self.timers[0][0] - time.monotonic())
        for key, events in self.selector.select(timeout):
            kind, obj = key.data
            try:
                if kind == "wake":
                    self._wake()
                else:
                    self._event(kind, obj, key.fd, events)
            except Exception:  # noqa: BLE001
                log.exception("event %s failed", kind)
                self._after_failure(key)
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _, _, fn = heapq.heappop(self.timers)
            fn()

    def _event(self, kind: str, obj: object, fd: int, events: int) -> None:
        """One ready registration of `kind` (not "wake")."""
        raise NotImplementedError(kind)

    def _after_failure(self, key: selectors.SelectorKey) -> None:
        """_event() raised for `key`. Still registered and still ready, a descriptor would fail again on
        every turn of the loop (level-triggered: a spinning loop, a log growing by megabytes), so the
        layer that owns its kind lets go of it (_drop_failed). A registration the handler already
        removed is left alone: its descriptor may be closed, its number someone else's."""
        try:
            current = self.selector.get_key(key.fd)
        except (KeyError, ValueError):
            return
        if current.data != key.data:  # the same registration, not a new one on a reused number
            return
        kind, obj = key.data
        try:
            self._drop_failed(kind, obj, key.fd)
        except Exception:  # noqa: BLE001
            log.exception("dropping %s after its failure", kind)

    def _drop_failed(self, kind: str, obj: object, fd: int) -> None:
        """Let go of a registration whose handler raised. By default keep it: the listener or a pidfd
        failing once (out of descriptors, say) must not end the monitor's service; layers above drop
        the kinds that can go."""

    def _wake(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        self._woken()
        while True:
            try:
                fn = self.calls.get_nowait()
            except queue.Empty:
                break
            try:
                fn()
            except Exception:  # noqa: BLE001
                log.exception("callback failed")

    def _woken(self) -> None:
        """On every wake-up (a signal, such as SIGCHLD, or call_soon), before the queued calls run."""


def safely(fn: Callable[[], None]) -> None:
    """Run a clean-up step; a failure is logged, not raised (the steps after it still run)."""
    try:
        fn()
    except Exception:  # noqa: BLE001
        log.exception("clean-up failed")
