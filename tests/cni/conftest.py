"""Fixtures of the CNI tests (helpers.py has the plugin runner and probes)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

import harness
from cni.helpers import REPO, Cni, Service


@pytest.fixture(scope="session")
def plugin_dir(tmp_path_factory) -> str:
    """netctl's plugin executables, installed as a user would (python -m cni_plugins.install DIR)."""
    directory = str(tmp_path_factory.mktemp("cni-bin"))
    subprocess.run([sys.executable, "-m", "cni_plugins.install", directory], check=True, cwd=REPO,
                   capture_output=True, timeout=60)
    return directory


@pytest.fixture
def cni(host, plugin_dir) -> Cni:
    return Cni(host, plugin_dir)


@pytest.fixture(scope="module")
def module_cni(plugin_dir) -> Iterator[Cni]:
    """One host for a whole module of tests that each leave it as they found it (error paths)."""
    reason = harness.missing_host_prerequisites()
    if reason:
        pytest.skip(reason)
    with harness.Host.start("cni-module") as host:
        yield Cni(host, plugin_dir)
        logged = host.tracebacks()
    assert not logged, logged


@pytest.fixture
def service(host) -> Iterator[Service]:
    svc = Service(host)
    yield svc
    if svc.proc.poll() is None:
        svc.stop()
