"""An exclusive flock of a file, waited for within a bound: netctl's locks between processes."""

from __future__ import annotations

import errno
import fcntl
import os
import time
from contextlib import contextmanager

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the CLI's hot path
if TYPE_CHECKING:
    from typing import Callable, Iterator

POLL_S = (0.001, 0.005)  # first and longest sleep between tries: the same for every waiter


@contextmanager
def held(path: str, timeout_s: float, timed_out: "Callable[[], Exception]") -> "Iterator[None]":
    """Hold an exclusive flock of `path` (created 0600 if missing) for the body. Every waiter polls
    every few milliseconds alike, so none starves behind newcomers (SQLite's busy handler backs off
    to 100 ms); after `timeout_s` raise timed_out(). The lock goes with the descriptor, so a killed
    holder releases it. OSError: `path` cannot be opened."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline, pause = time.monotonic() + timeout_s, POLL_S[0]
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                    raise timed_out() from None
            time.sleep(pause)
            pause = min(pause * 2, POLL_S[1])
        yield
    finally:
        os.close(fd)
