"""A handler of the monitor's loop that raises for a descriptor that stays ready must not run again on
every turn (the loop spun at 100% CPU and logged ~11 000 tracebacks in 2 s): the output it reads is let
go. A registration its handler already removed is left alone (its descriptor may be closed)."""

from __future__ import annotations

import os

import pytest

from runner.monitor_watch import ContainerWatcher, Live

TURNS = 3


@pytest.fixture
def watcher():
    w = ContainerWatcher(runtime=None)  # type: ignore[arg-type]  # the loop alone: no container is started
    yield w
    w.selector.close()


def turn(w: ContainerWatcher) -> None:
    w.later(0.05, lambda: None)  # a bound for the select, should nothing be ready
    w._tick()


@pytest.fixture
def output(watcher):
    """Container c1's output pipe, registered and readable: (read end, its Live)."""
    r, w = os.pipe2(os.O_NONBLOCK)
    live = Live(container=None, pid=0, outputs={r: 1})  # type: ignore[arg-type]
    watcher.live["c1"] = live
    watcher.selector.register(r, 1, ("output", "c1"))
    os.write(w, b"hello\n")
    yield r, live
    os.close(w)


def test_an_output_whose_handler_raises_is_read_no_more(watcher, output, caplog):
    r, live = output
    calls = []

    def failing(container_id: str, fd: int) -> None:
        calls.append(fd)
        raise RuntimeError("a bug in the handler")

    watcher._output = failing  # type: ignore[method-assign]
    for _ in range(TURNS):
        turn(watcher)
    assert calls == [r]
    assert live.outputs == {}
    with pytest.raises(KeyError):
        watcher.selector.get_key(r)
    assert "no longer reading an output of c1" in caplog.text


def test_a_registration_its_handler_removed_is_left_alone(watcher, output):
    r, live = output
    dropped = []

    def closes_then_raises(container_id: str, fd: int) -> None:
        watcher._close_output(live, fd)  # unregistered and closed, as at EOF
        raise RuntimeError("a bug after the close")

    watcher._output = closes_then_raises  # type: ignore[method-assign]
    watcher._drop_failed = lambda *a: dropped.append(a)  # type: ignore[method-assign]
    turn(watcher)
    assert dropped == []
