"""Every example of topology_examples/ (but the scale one, see test_scale.py): up -> test passes ->
status -> down leaves the host as it was."""

from __future__ import annotations

import os

import pytest

from lab.conftest import EXAMPLES
from lab.test_lab import full_cycle

pytestmark = pytest.mark.kernel


@pytest.mark.parametrize("example", ["two-hosts", "three-hosts", "cut-link"])
def test_example(lab_host, example):
    report = full_cycle(lab_host, os.path.join(EXAMPLES, f"{example}.yaml"))
    assert report["missing_containers"] == []
    assert all(h["daemon_alive"] and h["lease_ttl"] > 0 for h in report["hosts"]), report["hosts"]
