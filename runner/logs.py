"""container.log: one JSON object per chunk the container wrote, appended by the monitor.

    {"t": 1764300000.123456, "s": 1, "d": "hello\\n"}      s: 1 stdout (or the terminal), 2 stderr

Bytes that are not UTF-8 are kept with the surrogateescape error handler, so reading the log back
gives exactly the bytes written, split however the reads split them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator

FOLLOW_POLL_S = 0.1


def records(path: str, follow: bool = False, still_running: Callable[[], bool] = lambda: False) -> Iterator[dict]:
    """Every record of the log; with follow, keep waiting for more while still_running()."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return
    with f:
        partial = b""
        while True:
            line = f.readline()
            if line.endswith(b"\n"):
                try:
                    yield json.loads((partial + line).decode("utf-8", "surrogatepass"))
                except ValueError:
                    pass  # a torn record (the monitor died mid-write): skip it
                partial = b""
                continue
            partial += line
            if not follow:
                return
            if not still_running():
                # One last look: the monitor writes the final output before it records the exit.
                rest = f.read()
                for tail in (partial + rest).splitlines():
                    try:
                        yield json.loads(tail.decode("utf-8", "surrogatepass"))
                    except ValueError:
                        pass
                return
            time.sleep(FOLLOW_POLL_S)


def show(path: str, *, follow: bool = False, timestamps: bool = False,
         still_running: Callable[[], bool] = lambda: False) -> None:
    for record in records(path, follow, still_running):
        data = str(record.get("d", "")).encode("utf-8", "surrogateescape")
        if timestamps:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.get("t", 0)))
            data = f"{stamp}Z ".encode() + data
        fd = 2 if record.get("s") == 2 else 1
        view = memoryview(data)
        while view:
            try:
                n = os.write(fd, view)
            except BrokenPipeError:
                return
            view = view[n:]
