"""cni_plugins/service.py: the agent's background deletions, held by a request until its reply is out.

The steps here touch nothing: they record that they ran (the background thread hands each a Netlink
socket on the test's own namespace, which they do not use)."""

from __future__ import annotations

import threading

from cni_plugins.service import CniService


def test_held_steps_wait_for_release_and_flush_waits_for_held_steps(tmp_path):
    service = CniService(str(tmp_path)).start()
    ran: list[str] = []
    done = threading.Event()
    try:
        with service.holding() as release:
            service.later(lambda host: ran.append("held"), "a held step")
            flushed = threading.Event()
            flusher = threading.Thread(target=lambda: (service.flush_removals(timeout=10), flushed.set()))
            flusher.start()
            assert not flushed.wait(0.2), "flush_removals returned while a step was still held"
            assert ran == []  # held: not queued yet
            release()
            flusher.join(10)
            assert flushed.is_set() and ran == ["held"]
            service.later(lambda host: (ran.append("after"), done.set()), "a step after the release")
            assert done.wait(10)  # released: later() queues at once for the rest of the block
        other_ran = threading.Event()
        other = threading.Thread(target=lambda: service.later(lambda host: (ran.append("other"), other_ran.set())))
        with service.holding():
            service.later(lambda host: ran.append("at the block's end"))
            other.start()
            assert other_ran.wait(10)  # holding is per thread: another thread's step runs meanwhile
            assert "at the block's end" not in ran
        service.flush_removals(timeout=10)
        assert ran[-1] == "at the block's end"
        with service.holding():
            service.later(lambda host: ran.append("flushed by its own thread"))
            service.flush_removals(timeout=10)  # the thread's own held steps go now: no wait for itself
            assert ran[-1] == "flushed by its own thread"
    finally:
        service.stop()


def test_steps_released_after_the_service_stopped_run_in_the_releasing_thread(tmp_path):
    service = CniService(str(tmp_path)).start()
    ran: list[str] = []
    with service.holding() as release:
        service.later(lambda host: ran.append(threading.current_thread().name))
        stopper = threading.Thread(target=service.stop)
        stopper.start()  # waits (bounded) for the held step before it ends the background thread
        assert ran == []
        release()  # the reply is out
        stopper.join(20)
    assert not stopper.is_alive()
    assert ran == ["cni-link-remover"]  # released before the end: the background thread ran it
    with service.holding():
        service.later(lambda host: ran.append(threading.current_thread().name))
    assert ran[-1] == threading.current_thread().name  # stopped: run at once by the releasing thread
