"""Progress of a pull or push, three ways:

  * a terminal on stderr: one tqdm bar per layer (bytes, rate), as `docker pull` draws them;
  * anything else: one line per event ("3f2a1c9e0b7d: Pull complete"), never one per chunk;
  * quiet (-q): nothing.

Thread-safe: the parallel downloads report from their own threads.
"""

from __future__ import annotations

import sys
import threading

from runner.images import image_size_text


class Progress:
    """The quiet kind, and the interface: event(layer, text), start(layer, total), advance(layer, n)."""

    def event(self, item: str, text: str) -> None:
        pass

    def start(self, item: str, total: int, text: str) -> None:
        pass

    def advance(self, item: str, n: int) -> None:
        pass

    def done(self, item: str, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class LineProgress(Progress):
    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.lock = threading.Lock()

    def _line(self, item: str, text: str) -> None:
        with self.lock:
            self.stream.write(f"{item}: {text}\n" if item else f"{text}\n")
            self.stream.flush()

    def event(self, item: str, text: str) -> None:
        self._line(item, text)

    def start(self, item: str, total: int, text: str) -> None:
        self._line(item, f"{text} ({image_size_text(total, ' ')})")

    def done(self, item: str, text: str) -> None:
        self._line(item, text)


class BarProgress(Progress):
    """tqdm bars, one per layer, in the order layers start."""

    def __init__(self, stream=None):
        from tqdm import tqdm

        self._tqdm = tqdm
        self.stream = stream or sys.stderr
        self.lock = threading.Lock()
        self.bars: dict = {}
        self.position = 0
        import shutil

        size = shutil.get_terminal_size((100, 24))
        self.columns = min(size.columns or 100, 120)
        self.rows = size.lines or 24  # a terminal that reports 0 rows would hide every bar

    def _bar(self, item: str, total: int | None, text: str):
        bar = self.bars.get(item)
        if bar is None:
            bar = self._tqdm(
                total=total,
                desc=f"{item}: {text}",
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                position=self.position,
                leave=True,
                file=self.stream,
                ncols=self.columns,
                nrows=self.rows,
                bar_format=_WITH_BAR if total else "{desc}",
            )
            self.position += 1
            self.bars[item] = bar
        return bar

    def event(self, item: str, text: str) -> None:
        with self.lock:
            if not item:
                self._tqdm.write(text, file=self.stream)
                return
            self._bar(item, None, text).set_description_str(f"{item}: {text}")

    def start(self, item: str, total: int, text: str) -> None:
        with self.lock:
            bar = self._bar(item, total, text)
            bar.bar_format = _WITH_BAR
            bar.reset(total=total)
            bar.set_description_str(f"{item}: {text}")

    def advance(self, item: str, n: int) -> None:
        with self.lock:
            bar = self.bars.get(item)
            if bar is not None:
                bar.update(n)

    def done(self, item: str, text: str) -> None:
        with self.lock:
            bar = self._bar(item, None, text)
            bar.set_description_str(f"{item}: {text}")
            bar.refresh()

    def close(self) -> None:
        with self.lock:
            for bar in self.bars.values():
                bar.close()
            self.bars.clear()


_WITH_BAR = "{desc:<34} {bar:30} {n_fmt:>6}/{total_fmt:<6} {rate_fmt:>10}"


def for_terminal(quiet: bool, stream=None) -> Progress:
    stream = stream or sys.stderr
    if quiet:
        return Progress()
    if stream.isatty():
        return BarProgress(stream)
    return LineProgress(stream)
