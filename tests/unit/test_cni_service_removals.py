"""cni_plugins/service.py: the agent's background deletions, held by a request until its reply is out.

The steps here touch nothing: they record that they ran (the background thread hands each a Netlink
socket on the test's own namespace, which they do not use)."""

from __future__ import annotations

import threading
import time

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


def test_a_bridge_deletion_waits_for_a_quiet_agent_within_bounds(tmp_path, monkeypatch):
    """later_when_quiet (a removed network's bridge, which holds the kernel's RTNL lock ~20 ms) runs
    once no request is being served and none came for QUIET_S; never later than MAX_WAIT_S, never more
    than MAX_WAITING at once; flush_removals (doctor, gc) and stop run the waiting ones at once."""
    from cni_plugins import service as module

    monkeypatch.setattr(module, "QUIET_S", 0.3)
    service = CniService(str(tmp_path)).start()
    ran: list[str] = []
    served = threading.Event()
    try:
        with service.holding():  # a request being served: the agent is busy
            service.later_when_quiet(lambda host: (ran.append("bridge"), served.set()))
            service.later(lambda host: ran.append("veth"))  # other steps do not wait for quiet
        started = time.monotonic()
        assert served.wait(5) and ran == ["veth", "bridge"]
        assert time.monotonic() - started >= 0.25  # not before QUIET_S after the request

        with service.holding():
            service.later_when_quiet(lambda host: ran.append("flushed"))
            service.flush_removals(timeout=10)  # doctor/gc: no wait for quiet
            assert ran[-1] == "flushed"

        busy, done = threading.Event(), threading.Event()

        def long_request() -> None:  # a request whose reply is not out: the agent is never quiet
            with service.holding():
                done.wait(20)

        requester = threading.Thread(target=long_request)
        requester.start()
        try:
            monkeypatch.setattr(module, "MAX_WAITING", 2)
            for n in range(3):
                service.later_when_quiet(lambda host, n=n: (ran.append(f"many {n}"), busy.set()))
            assert busy.wait(5) and ran[-1] == "many 0"  # the third made the oldest due
            time.sleep(0.4)
            assert "many 1" not in ran  # the other two wait: busy, and not too many

            monkeypatch.setattr(module, "MAX_WAIT_S", 0.5)
            aged = threading.Event()
            service.later_when_quiet(lambda host: aged.set())  # the clock of the first two runs out too
            # four waiting, over MAX_WAITING: one more goes at once; the rest, older than MAX_WAIT_S now
            assert aged.wait(5) and {"many 1", "many 2"} <= set(ran)  # never quiet, none past MAX_WAIT_S

            monkeypatch.setattr(module, "MAX_WAIT_S", 60.0)
            service.later_when_quiet(lambda host: ran.append("at stop"))
            time.sleep(0.2)
            assert ran[-1] != "at stop"
        finally:
            done.set()
            requester.join(10)
        service.stop()
        assert ran[-1] == "at stop"
    finally:
        service.stop()


def test_a_flush_does_not_wait_for_quiet_and_a_stopped_service_does_not_keep_it_waiting(tmp_path):
    """doctor/gc flush from inside their own request: a bridge another request releases meanwhile
    (after the flush's marker was taken) must not wait for a quiet agent, which the flushing request
    itself keeps busy. After stop, a flush returns at once: nothing is left to wait for."""
    service = CniService(str(tmp_path)).start()
    ran: list[str] = []
    release_other, other_released = threading.Event(), threading.Event()

    def other_request() -> None:  # a `network rm` over the Docker API, answered during the flush
        with service.holding() as release:
            service.later_when_quiet(lambda host: (time.sleep(0.05), ran.append("other")))
            release_other.wait(10)
            release()
            other_released.set()

    other = threading.Thread(target=other_request)
    other.start()
    try:
        with service.holding():  # doctor's own request
            flusher = threading.Thread(target=service.flush_removals)
            started = time.monotonic()
            flusher.start()
            time.sleep(0.1)  # the flush's marker is taken; then the other request answers
            release_other.set()
            flusher.join(20)
            assert other_released.is_set() and ran == ["other"]
            assert time.monotonic() - started < 5  # not MAX_WAIT_S (10 s): the flush counts as quiet
    finally:
        release_other.set()
        other.join(10)
        service.stop()
    started = time.monotonic()
    service.flush_removals(timeout=5)
    assert time.monotonic() - started < 1
