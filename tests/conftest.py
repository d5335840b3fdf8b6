"""Fixtures and session guards shared by every test.

- ``host`` / ``hosts`` / ``upstream``: throwaway hosts (see harness.py); tests using them are marked
  ``kernel`` automatically and skipped with a reason when not root.
- Root-namespace guard: the machine's own links, addresses, routes, nftables ruleset, /run/netns, mounts
  and netctl cgroups are snapshotted at session start and end; any difference fails the run.
- Per-test timeout (setup and call phases) without extra dependencies: SIGALRM, default 300 s,
  ``--test-timeout N`` / NETCTL_TEST_TIMEOUT / ``@pytest.mark.timeout(N)``; 0 disables.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator

import pytest

import harness
from harness import Host, Upstream, require_cmd  # noqa: F401  (re-exported for tests)

HOST_FIXTURES = {"host", "hosts", "upstream"}
DEFAULT_TEST_TIMEOUT = 300.0

_root_before = pytest.StashKey[dict]()
_root_diff = pytest.StashKey[str]()


# ---- options and markers --------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("netctl")
    group.addoption(
        "--test-timeout",
        type=float,
        default=float(os.environ.get("NETCTL_TEST_TIMEOUT", DEFAULT_TEST_TIMEOUT)),
        help="seconds a test's setup or body may take before it fails (0: no limit)",
    )
    group.addoption(
        "--no-root-guard",
        action="store_true",
        default=os.environ.get("NETCTL_ROOT_GUARD", "1") == "0",
        help="do not compare the machine's own network state before and after the session",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "kernel: needs root and creates kernel objects inside a throwaway host namespace"
    )
    config.addinivalue_line("markers", "timeout(seconds): per-test time limit overriding --test-timeout")
    _teardown_on_sigterm()


def _teardown_on_sigterm() -> None:
    """SIGTERM (`timeout`, a CI job cancelled, a supervisor) ends the session as ^C does, through
    pytest's teardown: by default it killed the process on the spot, and what only a fixture's
    teardown removes stayed on the machine (a test's cgroup parent: a host dies with its holder, its
    cgroups do not). In this process and in every xdist worker (a signal to the group reaches them)."""
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set there; such a process keeps the default

    def interrupt(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends it at once
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}: tearing down")

    signal.signal(signal.SIGTERM, interrupt)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = None
    for item in items:
        if HOST_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.kernel)
        if item.get_closest_marker("kernel"):
            if reason is None:
                reason = harness.missing_host_prerequisites()
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


# ---- root-namespace guard (controller / non-xdist process only) -----------------------------------


def _guards_root(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput") and not config.getoption("no_root_guard")


def _root_snapshot() -> dict:
    # A session run by one of the suite's own tests shares the cgroup trees with the suite's workers.
    return harness.root_snapshot(test_cgroups=not os.environ.get(harness.NESTED_SESSION_ENV))


def pytest_sessionstart(session: pytest.Session) -> None:
    if _guards_root(session.config):
        session.config.stash[_root_before] = _root_snapshot()


# trylast: after pytest's own sessionfinish, which tears down what an interrupted session left set up.
@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    before = config.stash.get(_root_before, None)
    if before is None:
        return
    diff = harness.diff_snapshots(before, _root_snapshot())
    if diff:
        config.stash[_root_diff] = diff
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    diff = config.stash.get(_root_diff, "")
    if diff:
        terminalreporter.section("root namespace guard: FAILED", sep="=", red=True, bold=True)
        terminalreporter.write_line("The machine's own state changed during the test session:")
        terminalreporter.write_line(diff)


# ---- per-test timeout -----------------------------------------------------------------------------


def _timeout_for(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    return float(item.config.getoption("test_timeout"))


@contextlib.contextmanager
def _alarm(item: pytest.Item, phase: str) -> Iterator[None]:
    seconds = _timeout_for(item)
    # SIGALRM only works in the main thread; elsewhere (rare plugins) run without a limit.
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        pytest.fail(f"{phase} of {item.nodeid} exceeded the {seconds:g}s test timeout", pytrace=True)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# Teardown is not limited: it must run to the end, and the harness bounds its own waits.
@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    with _alarm(item, "setup"):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    with _alarm(item, "test body"):
        return (yield)


# ---- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def host() -> Iterator[Host]:
    """A throwaway host: own netns, mount ns (fresh /run), pid ns; NETCTL_ROOT=/run/netctl."""
    with Host.start("host") as h:
        yield h
        logged = h.tracebacks()
    assert not logged, logged


@pytest.fixture
def hosts() -> Iterator[Callable[[int], list[Host]]]:
    """Factory: ``hosts(n)`` returns n more throwaway hosts (h1, h2, ...); all removed afterwards."""
    made: list[Host] = []

    def make(n: int) -> list[Host]:
        new = []
        try:
            for _ in range(n):
                new.append(Host.start(f"h{len(made) + len(new) + 1}"))
        finally:
            made.extend(new)
        return new

    logged = []
    try:
        yield make
    finally:
        for h in made:
            logged.append(h.tracebacks())
            h.close()
    assert not any(logged), "\n".join(logged)


@pytest.fixture
def upstream(host: Host) -> Upstream:
    """A fake internet inside ``host``: veth eth0 198.51.100.1/24 <-> upstream 198.51.100.2/24,
    the host's default route via upstream, upstream's default route back."""
    return harness.add_upstream(host)
