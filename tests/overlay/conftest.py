"""Fixtures of the overlay tests: a real etcd on loopback (one per session, wiped before each test;
private ones for tests that stop or kill it), and multi-host labs with etcd inside the lab's switch
(`overlay_lab`; for a module-scoped lab use `overlay.lab.netctl_lab` as a context manager)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from overlay.etcd_server import ETCD, EtcdServer, etcdctl

if TYPE_CHECKING:
    from overlay.lab import NetctlLab


def _require_etcd() -> None:
    if not os.access(ETCD, os.X_OK) or shutil.which("etcdctl") is None:
        pytest.skip("etcd and etcdctl are not installed; run: sudo bash scripts/bootstrap.sh")
    pytest.importorskip("etcd3gw", reason="the etcd3gw client is not installed (.venv/bin/pip install etcd3gw)")


@pytest.fixture(scope="session")
def etcd_session_server() -> Iterator[EtcdServer]:
    _require_etcd()
    server = EtcdServer("netctl-session")
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def etcd(etcd_session_server: EtcdServer) -> str:
    """URL of a running etcd with no netctl keys in it."""
    server = etcd_session_server
    if server.proc is None or server.proc.poll() is not None:
        server.start()  # a previous test's failure took it down
    etcdctl(server.url, "del", "--prefix", "/netctl/")
    return server.url


@pytest.fixture
def etcd_server() -> Iterator[Callable[[], EtcdServer]]:
    """Factory of private etcd servers (for tests that stop, kill or compact them); all removed afterwards."""
    _require_etcd()
    made: list[EtcdServer] = []

    def make() -> EtcdServer:
        server = EtcdServer(f"netctl-private-{len(made)}")
        made.append(server)
        return server.start()

    try:
        yield make
    finally:
        for server in made:
            server.close()


@pytest.fixture
def overlay_lab() -> Iterator[Callable[..., "NetctlLab"]]:
    """Factory of multi-host labs with etcd INSIDE the switch namespace (198.18.0.254:2379):
    `overlay_lab(3)` -> NetctlLab with .switch, .hosts (h1..h3, registered), .etcd_url, .etcd (stop/
    start/kill), .netctl(host, ...). Everything is removed after the test, also when it fails."""
    import harness

    missing = harness.missing_host_prerequisites()
    if missing:
        pytest.skip(missing)
    _require_etcd()
    from overlay.lab import netctl_lab

    with contextlib.ExitStack() as stack:

        def make(n: int = 3, **kw) -> "NetctlLab":
            return stack.enter_context(netctl_lab(n, **kw))

        yield make
