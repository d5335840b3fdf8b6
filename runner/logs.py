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

from runner.state import DONE, DRAINING, GROWING, ContainerState, output_phase

FOLLOW_POLL_S = 0.1
# How long a follower waits for a record that says running after its init is gone. The monitor drains
# an exited init's pipes for at most 2 s (OUTPUT_DRAIN_S) before it records the exit; a record that
# stays "running" longer (its write failed) must not hold a follower forever.
DRAIN_WAIT_S = 10.0


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


def follow_condition(load_state: Callable[[], ContainerState | None]) -> Callable[[], bool]:
    """`still_running` for records(follow=True), from the container's record as load_state() reads it
    (None: removed): true while its output may grow (runner.state.output_phase), for at most
    DRAIN_WAIT_S of the phase after the init is gone."""
    draining_since: float | None = None

    def still_running() -> bool:
        nonlocal draining_since
        state = load_state()
        phase = output_phase(state) if state is not None else DONE
        if phase != DRAINING:
            draining_since = None
            return phase == GROWING
        if draining_since is None:
            draining_since = time.monotonic()
        return time.monotonic() - draining_since < DRAIN_WAIT_S

    return still_running


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


def lines(source: Iterator[dict]) -> Iterator[dict]:
    """The records split at newlines (Docker's logs count and stamp lines, the monitor records reads);
    a line cut across two reads stays two records, as dockerd's would."""
    for record in source:
        text = str(record.get("d", ""))
        for part in text.splitlines(keepends=True):
            yield {"t": record.get("t", 0), "s": record.get("s", 1), "d": part}


def read(path: str, *, since: float = 0.0, until: float = 0.0, tail: int = -1, follow: bool = False,
         still_running: Callable[[], bool] = lambda: False) -> Iterator[dict]:
    """Docker's logs options over the log: lines written at or after `since` and before `until` (0: no
    bound), only the last `tail` of those there now (-1: all), then with `follow` what comes next."""
    from collections import deque

    def wanted(record: dict) -> bool:
        t = float(record.get("t", 0))
        return t >= since and (not until or t < until)

    skip = 0
    if tail >= 0:
        kept: deque = deque(maxlen=tail or 1)
        for record in records(path):
            skip += 1
            for line in lines(iter([record])):
                if wanted(line):
                    kept.append(line)
        if tail:
            yield from kept
        if not follow:
            return
    seen = 0
    for record in records(path, follow, still_running):
        seen += 1
        if seen <= skip:
            continue
        for line in lines(iter([record])):
            if wanted(line):
                yield line


def stamp(moment: float) -> str:
    """RFC 3339 with nanoseconds, as Docker's --timestamps."""
    whole = int(moment)
    nanos = int(round((moment - whole) * 1e9))
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{nanos:09d}Z"
